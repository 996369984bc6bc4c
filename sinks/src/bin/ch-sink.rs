//! ch-sink: wa.events → ClickHouse `switchboard.events` and its rollups.

use std::sync::{Arc, LazyLock};

use prometheus::{register_int_counter, IntCounter};
use rdkafka::message::OwnedMessage;
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::Codec;
use switchboard_sinks::ch::ChWriter;
use switchboard_sinks::Config;

static ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "switchboard_ch_sink_rows_total",
        "Rows inserted into ClickHouse"
    )
    .expect("registers once")
});

struct Handler {
    codec: Codec,
    writer: Arc<ChWriter>,
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let events = switchboard_sinks::decode_events(&self.codec, batch).await?;
        let n = self.writer.write(&events).await?;
        ROWS.inc_by(n as u64);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("ch-sink");
    let cfg: Config = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();
    let writer = Arc::new(ChWriter::new(
        &cfg.clickhouse_url,
        &cfg.clickhouse_database,
        cfg.clickhouse_validation,
    ));
    // Unreachable is worth waiting for; a rejected DDL statement is not.
    let transient = |e: &clickhouse::error::Error| {
        matches!(
            e,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        )
    };
    if switchboard_runtime::retry::wait_for("clickhouse", &shutdown, transient, || writer.migrate())
        .await?
        .is_none()
    {
        return Ok(());
    }
    let w = writer.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let w = w.clone();
        Box::pin(async move { w.ping().await })
    });
    let handler = Handler {
        codec: Codec::new(&cfg.kafka.schema_registry_url),
        writer,
    };
    switchboard_sinks::run_sink(&cfg, "ch-sink", "127.0.0.1:9103", ready, handler, shutdown).await
}
