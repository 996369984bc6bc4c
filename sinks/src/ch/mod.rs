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
pub mod country;
pub mod credit;
pub mod failure;
mod lookup;
mod writer;

pub use attempts::AttemptRow;
pub use writer::{client, rows, ChWriter, EventRow};

use std::sync::{Arc, LazyLock};

use anyhow::Context;
use prometheus::{register_int_counter_vec, IntCounterVec};
use rdkafka::message::{Message, OwnedMessage};
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::{Codec, DeliveryAttempts};

static ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "switchboard_ch_sink_rows_total",
        "Rows inserted into ClickHouse, by table",
        &["table"]
    )
    .expect("registers once")
});

/// The ch-sink's batch step (also a replay target): events and delivery-log records,
/// told apart by topic.
pub struct ChSink {
    pub codec: Codec,
    pub writer: Arc<ChWriter>,
    /// The (prefixed) delivery-log topic; everything else is `wa.events`.
    pub attempts_topic: String,
}

impl BatchHandler for ChSink {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let (attempts, events): (Vec<&OwnedMessage>, Vec<&OwnedMessage>) =
            batch.iter().partition(|m| m.topic() == self.attempts_topic);
        if !events.is_empty() {
            let events = crate::decode_events(&self.codec, events).await?;
            let n = self.writer.write(&events).await?;
            ROWS.with_label_values(&["events"]).inc_by(n as u64);
        }
        if !attempts.is_empty() {
            let mut rows = Vec::with_capacity(attempts.len());
            for m in &attempts {
                let a = self
                    .codec
                    .decode::<DeliveryAttempts>(m.payload().unwrap_or_default())
                    .await
                    .with_context(|| {
                        format!(
                            "decoding attempts {}/{}@{}",
                            m.topic(),
                            m.partition(),
                            m.offset()
                        )
                    })?;
                rows.extend(a.attempts);
            }
            let n = self.writer.write_attempts(&rows).await?;
            ROWS.with_label_values(&["delivery_attempts"])
                .inc_by(n as u64);
        }
        Ok(())
    }
}
