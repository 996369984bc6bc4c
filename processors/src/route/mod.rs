//! The router: `wa.send.requests` → a BSP's send API → `send accepted` / `send failed`
//! on `wa.events` (+ `wa.send.dlq`).
//!
//! One request goes through the stages in this order:
//!
//! - [`dispatch`]: the consumer, and a request's way through the stages below;
//! - [`admit`]: due or not, whose number, a rate token or a parked place, the claim;
//! - [`policy`]: the send rules (window, opt-outs) again, right before the call;
//! - [`call`]: the BSP (or its failover) through its breaker, with the tenant's
//!   credentials;
//! - [`settle`]: the outcome in the outbox, its event, a dead letter, or a retry later.
//!
//! Beside them: [`limiter`] (per-sender-number throughput at its tier), [`pair`]
//! (per number-and-customer pacing), [`breaker`]
//! (per-BSP circuit breakers), [`scheduler`] (scheduled sends and retries back into the
//! stream when due), [`campaigns`] (campaign recipients released as sends), [`templates`] (the WABAs' message templates, synced), and the per-message state machine in PostgreSQL (intent before the
//! call, outcome after it), which lives with its table in `crate::db::outbox`.

pub mod admit;
pub mod breaker;
pub mod call;
pub mod campaigns;
mod config;
pub mod dispatch;
pub mod limiter;
pub mod pair;
pub mod policy;
pub mod scheduler;
pub mod settle;
pub mod templates;

pub use config::{default_media_store, Config};
