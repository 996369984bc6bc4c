//! ch-sink: wa.events → ClickHouse `switchboard.events` and its rollups;
//! wa.deliveries.attempts → `switchboard.delivery_attempts` (the delivery log), whose
//! retention it also enforces.

use std::sync::Arc;

use switchboard_schemas::Codec;
use switchboard_sinks::ch::{ChSink, ChWriter};
use switchboard_sinks::Config;

// Decoding and row building allocate per record: glibc malloc took about a third of a
// replay's CPU (perf, loadtest/REPORT.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("ch-sink");
    let mut cfg: Config = switchboard_runtime::config::load()?;
    // ClickHouse's cost is mostly per insert (and its views'): larger batches than the
    // other stages'. At the ingest benchmark's rate, 250 ms took ClickHouse's CPU per
    // event from 51 to 30 µs for about 150 ms more accept → stored (loadtest/REPORT.md).
    cfg.stream = cfg
        .stream
        .or_defaults(20_000, std::time::Duration::from_millis(250));
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
    let handler = ChSink {
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
        &topics.ch_sink_dlq,
        shutdown,
    )
    .await;
    retention.abort();
    r
}
