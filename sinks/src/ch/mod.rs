//! ClickHouse sink: one row per canonical event in `events` and one per delivery attempt
//! in `delivery_attempts`, rollups filled by materialized views (see
//! `migrations/clickhouse`).
//!
//! Exactly-once rows on an at-least-once stream: before inserting a batch the sink drops
//! event ids already in `seen_events` (filled by a view on the same insert), so a batch
//! repeated after a crash or a repeat on `wa.events` adds nothing, and the rollups, which
//! see every insert, are not inflated. Events of one conversation share a partition of
//! `wa.events`, so one sink instance handles any given id and the check does not race.

mod attempts;
mod writer;

pub use attempts::AttemptRow;
pub use writer::{ChWriter, EventRow};
