//! Sinks for `wa.events`: [`pg`] keeps message state and status history in PostgreSQL,
//! [`ch`] keeps analytics in ClickHouse. Both are idempotent (writing an event twice
//! leaves the store as if written once) and run in the shared at-least-once loop, which
//! stores an offset only after the database acknowledged the batch.

pub mod ch;
pub mod pg;

use serde::{Deserialize, Serialize};
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::stream::StreamConfig;

/// Configuration shared by both sinks (`SWITCHBOARD_*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    #[serde(flatten)]
    pub stream: StreamConfig,
    /// PostgreSQL (pg-sink).
    #[serde(default)]
    pub database_url: String,
    /// ClickHouse HTTP endpoint (ch-sink).
    #[serde(default = "switchboard_runtime::config::defaults::clickhouse_url")]
    pub clickhouse_url: String,
    /// ClickHouse database.
    #[serde(default = "switchboard_runtime::config::defaults::clickhouse_database")]
    pub clickhouse_database: String,
    /// Validate row types against the table (RowBinaryWithNamesAndTypes); ClickHouse
    /// 18.16 lacks that format, so the local setup turns it off.
    #[serde(default)]
    pub clickhouse_validation: bool,
    /// Ops endpoints.
    #[serde(default)]
    pub ops_addr: Option<String>,
    /// Days of the delivery log to keep (ch-sink); older daily partitions are dropped.
    #[serde(default = "default_retention_days")]
    pub delivery_log_retention_days: u32,
    /// How often the ch-sink enforces that retention.
    #[serde(default = "default_retention_every", with = "humantime_serde")]
    pub delivery_log_retention_interval: std::time::Duration,
}

fn default_retention_days() -> u32 {
    30
}
fn default_retention_every() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

/// Decode a batch of `wa.events` records. A record that can never decode fails the
/// batch permanently (the loop isolates and dead-letters it); an unreachable registry
/// fails it transiently (the loop retries).
pub async fn decode_events<'a>(
    codec: &switchboard_schemas::Codec,
    batch: impl IntoIterator<Item = &'a rdkafka::message::OwnedMessage>,
) -> anyhow::Result<Vec<switchboard_schemas::Event>> {
    use anyhow::Context;
    use rdkafka::message::Message;
    let mut out = Vec::new();
    for m in batch {
        let e = codec
            .decode::<switchboard_schemas::Event>(m.payload().unwrap_or_default())
            .await
            .with_context(|| format!("decoding {}/{}@{}", m.topic(), m.partition(), m.offset()))?;
        // Operational events (`endpoint.disabled`) share the topic; they are not about
        // messages and have no place in the message stores.
        if e.event_type.starts_with("message.") {
            out.push(e);
        }
    }
    Ok(out)
}

/// Serve the ops endpoints and run `handler` over `topics` (with the configured prefix
/// applied by the caller) until shutdown: the part of `main` both sinks share. Records
/// the sink can never write go to `dead_letter_topic`.
#[allow(clippy::too_many_arguments)]
pub async fn run_sink<H: switchboard_runtime::stream::BatchHandler>(
    cfg: &Config,
    name: &'static str,
    default_ops_addr: &str,
    ready: switchboard_runtime::ops::ReadinessCheck,
    handler: H,
    topics: &[&str],
    dead_letter_topic: &str,
    shutdown: switchboard_runtime::CancellationToken,
) -> anyhow::Result<()> {
    let ops_addr = cfg
        .ops_addr
        .clone()
        .unwrap_or_else(|| default_ops_addr.to_string());
    let ops = switchboard_runtime::ops::serve(
        &ops_addr,
        switchboard_runtime::ops::router(ready),
        shutdown.clone(),
    )
    .await?;
    let producer = switchboard_runtime::producer::ProducerSlot::new(
        &cfg.kafka,
        std::time::Duration::from_secs(30),
    )?;
    let dead = switchboard_runtime::deadletter::DeadLetters::new(
        name,
        dead_letter_topic,
        producer.clone(),
        switchboard_schemas::Codec::new(&cfg.kafka.schema_registry_url),
        &cfg.kafka,
    );
    switchboard_runtime::stream::StreamLoop::new(
        &cfg.kafka,
        cfg.stream.clone(),
        &format!("switchboard-{name}"),
        topics,
        dead,
    )?
    .run(handler, shutdown)
    .await?;
    switchboard_runtime::kafka::flush(producer, std::time::Duration::from_secs(5)).await;
    let _ = ops.await;
    tracing::info!("{name} stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::config::{documented_variables, variables_of};

    #[test]
    fn readme_documents_exactly_the_sink_variables() {
        let cfg: super::Config =
            serde_json::from_value(serde_json::json!({})).expect("all defaults");
        let readme = include_str!("../../README.md");
        let mut documented = documented_variables(readme, "pg-sink");
        documented.extend(documented_variables(readme, "ch-sink"));
        assert_eq!(variables_of(&cfg), documented);
    }
}
