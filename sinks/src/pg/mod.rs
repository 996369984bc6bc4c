//! PostgreSQL sink: `messages` (current state, monotonic status merge) and
//! `message_status_history` (every distinct status event), written in one transaction
//! per batch; the batch's offsets are stored only after the commit.

mod merge;
pub mod text;
mod writer;

pub use merge::{merge_batch, MessageRow};
pub use writer::PgWriter;

use std::sync::LazyLock;

use prometheus::{register_int_counter, IntCounter};
use rdkafka::message::OwnedMessage;
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::Codec;

static ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "switchboard_pg_sink_events_total",
        "Events written to PostgreSQL"
    )
    .expect("registers once")
});

/// The pg-sink's batch step (also a replay target): decode, write in one transaction.
pub struct PgSink {
    pub codec: Codec,
    pub writer: PgWriter,
}

impl BatchHandler for PgSink {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let events = crate::decode_events(&self.codec, batch).await?;
        self.writer.write(&events).await?;
        ROWS.inc_by(events.len() as u64);
        Ok(())
    }
}
