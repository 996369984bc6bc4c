//! The normalizer: `wa.webhooks.raw` → canonical events on `wa.events`, keyed by
//! conversation, with duplicates removed; anything unusable → `wa.webhooks.dlq`.
//!
//! Guarantees (on top of the stream loop's at-least-once):
//! - every raw record ends as events on `wa.events`, a DLQ record with its reason, or
//!   both (a webhook with some unusable items); the partition never stalls on bad data;
//! - an event id reaches `wa.events` once per dedupe retention (14 days by default),
//!   except after a crash between produce and dedupe mark, when the same ids may repeat.
//! - an event whose time is outside the window around the webhook's receipt
//!   (`SWITCHBOARD_EVENT_TIME_MAX_AGE` before, `..._MAX_AHEAD` after) is dead-lettered
//!   as `bad_timestamp` and reaches no store;
//! - a batch is retried whole only for infrastructure trouble (registry, broker or
//!   PostgreSQL unreachable); a record that fails permanently (say, too large to
//!   produce) is isolated by the stream loop and dead-lettered.

mod config;
mod handler;
mod step;

pub use config::{default_max_age, default_max_ahead, Config};
pub use handler::{Deferral, Normalizer};
pub use step::{normalize_record, Outcome, TimeWindow};
