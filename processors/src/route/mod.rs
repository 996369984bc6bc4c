//! The router: `wa.send.requests` → a BSP's send API → `send accepted` / `send failed`
//! on `wa.events` (+ `wa.send.dlq`).
//!
//! - [`limiter`]: per-sender-number throughput at its tier;
//! - [`breaker`]: per-BSP circuit breakers;
//! - [`outbox`]: the per-message state machine in PostgreSQL (intent before the call,
//!   outcome after it);
//! - [`handler`]: one request end to end, with retries, failover and the DLQ;
//! - [`scheduler`]: scheduled sends and retries back into the stream when due.

pub mod breaker;
mod config;
pub mod handler;
pub mod limiter;
pub mod outbox;
pub mod scheduler;

pub use config::Config;
