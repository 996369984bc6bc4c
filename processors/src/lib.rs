//! Switchboard's stream processors. Each is a plain per-record step (easy to unit-test,
//! knows nothing about Kafka) wrapped in the shared at-least-once loop of
//! `switchboard-runtime`.
//!
//! - [`normalize`]: `wa.webhooks.raw` → canonical `wa.events` (+ `wa.webhooks.dlq`),
//!   deduplicated through [`dedupe`];
//! - [`route`]: `wa.send.requests` → BSP send APIs → `wa.events` (+ `wa.send.dlq`);
//! - [`fanout`]: `wa.events` → client webhook endpoints (+ retry topics, DLQ, delivery log).

pub mod dedupe;
pub mod fanout;
pub mod normalize;
pub mod route;
