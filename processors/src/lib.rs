//! Switchboard's stream processors. Each is a plain per-record step (easy to unit-test,
//! knows nothing about Kafka) wrapped in the shared at-least-once loop of
//! `switchboard-runtime`.
//!
//! - [`normalize`]: `wa.webhooks.raw` → canonical `wa.events` (+ `wa.webhooks.dlq`),
//!   deduplicated through [`dedupe`];
//! - [`route`]: `wa.send.requests` → BSP send APIs → `wa.events` (+ `wa.send.dlq`);
//! - [`fanout`]: `wa.events` → client webhook endpoints (+ retry topics, DLQ, delivery log);
//! - [`replay`]: any topic over a range into a stage's own code (backfill, repair,
//!   re-drive), and dead letters for operators; the `switchboard` CLI, the `replayer`
//!   and the gateway's admin API all call it;
//! - [`guarded`]: the HTTP client for URLs tenants and webhooks choose;
//! - [`db`]: the send path's PostgreSQL schema, and the owners of its shared tables
//!   (`outbound_messages`, `endpoints`), which the gateway uses too.

pub mod db;
pub mod dedupe;
pub mod fanout;
pub mod guarded;
pub mod media;
pub mod normalize;
pub mod replay;
pub mod route;
