//! The fan-out: `wa.events` → each tenant's matching webhook endpoints, signed per the
//! Standard Webhooks spec, with retries through `wa.deliveries.retry.<delay>` and
//! `wa.deliveries.dlq`, and every attempt in `wa.deliveries.attempts`.
//!
//! One delivery goes through the stages in this order:
//!
//! - [`dispatch`]: the two consumers (first attempts, retries) and a delivery's way
//!   through the stages below;
//! - [`admit`]: whether a delivery may take capacity now (the tenant's share, its turn in
//!   the conversation via [`order`], the endpoint's slot) or waits on a delay topic;
//! - [`deliver`]: one HTTP attempt through the endpoint's breaker, and what the answer
//!   means;
//! - [`record`]: the delivery log line, the next step (again in place, a delay topic, the
//!   dead-letter topic), and producing both;
//! - [`health`]: failing-since and auto-disable.
//!
//! Beside them: [`payload`] (the webhook body of each event type), [`endpoints`]
//! (per-endpoint secrets, limits and health) and [`baseline`] (the fan-out's own lag and
//! typical answer time, what endpoints and tenants are judged against). Its writes to the `endpoints` table go
//! through that table's owner, `crate::db::endpoints`.

pub mod admit;
pub mod baseline;
mod config;
pub mod deliver;
pub mod dispatch;
pub mod endpoints;
mod health;
pub mod order;
pub mod payload;
pub mod record;

pub use config::{parse_schedule, Config};
