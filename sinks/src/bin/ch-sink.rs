//! ch-sink: wa.events → ClickHouse `switchboard.events` and its rollups;
//! wa.deliveries.attempts → `switchboard.delivery_attempts` (the delivery log), whose
//! retention it also enforces.

use std::sync::{Arc, LazyLock};

use prometheus::{register_int_counter_vec, IntCounterVec};
use rdkafka::message::{Message, OwnedMessage};
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::{Codec, DeliveryAttempts};
use switchboard_sinks::ch::ChWriter;
use switchboard_sinks::Config;

static ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "switchboard_ch_sink_rows_total",
        "Rows inserted into ClickHouse, by table",
        &["table"]
    )
    .expect("registers once")
});

struct Handler {
    codec: Codec,
    writer: Arc<ChWriter>,
    attempts_topic: String,
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let (attempts, events): (Vec<OwnedMessage>, Vec<OwnedMessage>) = batch
            .iter()
            .cloned()
            .partition(|m| m.topic() == self.attempts_topic);
        if !events.is_empty() {
            let events = switchboard_sinks::decode_events(&self.codec, &events).await?;
            let n = self.writer.write(&events).await?;
            ROWS.with_label_values(&["events"]).inc_by(n as u64);
        }
        if !attempts.is_empty() {
            let mut rows = Vec::with_capacity(attempts.len());
            for m in &attempts {
                match self
                    .codec
                    .decode::<DeliveryAttempts>(m.payload().unwrap_or_default())
                    .await
                {
                    Ok(a) => rows.extend(a.attempts),
                    Err(e) if e.is_retryable() => anyhow::bail!("decoding an attempt: {e}"),
                    Err(e) => {
                        tracing::error!(offset = m.offset(), error = %e, "undecodable attempt skipped")
                    }
                }
            }
            let n = self.writer.write_attempts(&rows).await?;
            ROWS.with_label_values(&["delivery_attempts"])
                .inc_by(n as u64);
        }
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
    let retention = {
        let (w, stop) = (writer.clone(), shutdown.clone());
        let (days, every) = (
            cfg.delivery_log_retention_days,
            cfg.delivery_log_retention_interval,
        );
        tokio::spawn(async move {
            loop {
                match w.enforce_retention(days).await {
                    Ok(d) if !d.is_empty() => {
                        tracing::info!(partitions = ?d, days, "delivery log partitions dropped")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery log retention failed; next round retries")
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        })
    };
    let w = writer.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let w = w.clone();
        Box::pin(async move { w.ping().await })
    });
    let topics = switchboard_runtime::kafka::Topics::new(&cfg.kafka.topic_prefix);
    let handler = Handler {
        codec: Codec::new(&cfg.kafka.schema_registry_url),
        writer,
        attempts_topic: topics.deliveries_attempts.clone(),
    };
    let r = switchboard_sinks::run_sink(
        &cfg,
        "ch-sink",
        "127.0.0.1:9103",
        ready,
        handler,
        &[&topics.events, &topics.deliveries_attempts],
        shutdown,
    )
    .await;
    retention.abort();
    r
}
