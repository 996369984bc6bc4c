//! The normalizer: `wa.webhooks.raw` → canonical events on `wa.events`, keyed by
//! conversation, with duplicates removed; anything unusable → `wa.webhooks.dlq`.
//!
//! Guarantees (on top of the stream loop's at-least-once):
//! - every raw record ends as events on `wa.events`, a DLQ record with its reason, or
//!   both (a webhook with some unusable items); the partition never stalls on bad data;
//! - an event id reaches `wa.events` once per dedupe retention (14 days by default),
//!   except after a crash between produce and dedupe mark, when the same ids may repeat.
//! - a batch fails (and is retried whole) only for infrastructure trouble: registry,
//!   broker or PostgreSQL unreachable.

mod config;
mod handler;
mod step;

pub use config::Config;
pub use handler::Normalizer;
pub use step::{normalize_record, Outcome};
