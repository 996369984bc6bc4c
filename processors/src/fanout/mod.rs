//! The fan-out: `wa.events` → each tenant's matching webhook endpoints, signed per the
//! Standard Webhooks spec, with retries through `wa.deliveries.retry.<delay>` and
//! `wa.deliveries.dlq`, and every attempt in `wa.deliveries.attempts`.
//!
//! - [`payload`]: the webhook body of each event type;
//! - [`admit`]: whether a delivery may take capacity now (per tenant, strict endpoint);
//! - [`endpoints`]: per-endpoint secrets, limits and health;
//! - [`order`]: per-conversation order per endpoint with many events in flight;
//! - [`deliver`]: one HTTP attempt and what its answer means;
//! - [`handler`]: first attempts, retries, the delivery log, auto-disable;
//! - [`store`]: the few PostgreSQL writes (failing-since, disable).

pub mod admit;
mod config;
pub mod deliver;
pub mod endpoints;
pub mod handler;
pub mod order;
pub mod payload;
pub mod store;

pub use config::{parse_schedule, Config};
