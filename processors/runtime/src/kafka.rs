//! Topic names, the producer every binary uses, and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;

/// Every topic Switchboard uses, with the configured prefix applied.
#[derive(Debug, Clone)]
pub struct Topics {
    pub webhooks_raw: String,
    pub webhooks_dlq: String,
    pub events: String,
    pub send_requests: String,
    pub send_dlq: String,
    pub config: String,
    pub deliveries_attempts: String,
    pub deliveries_dlq: String,
    /// Dead letters of the PostgreSQL sink (events it can never write).
    pub pg_sink_dlq: String,
    /// Dead letters of the ClickHouse sink (events and delivery-log records).
    pub ch_sink_dlq: String,
    /// Dead letters of the fan-out (records it can never read; exhausted deliveries go
    /// to `deliveries_dlq` as tasks).
    pub fanout_dlq: String,
    /// Dead letters of replays into another topic (a copy the target topic refused).
    pub replay_dlq: String,
    /// Prefix of the retry delay topics: `<prefix><delay>`, e.g. `wa.deliveries.retry.5s`.
    pub deliveries_retry_prefix: String,
}

/// A topic to create: name, final partition count, and whether it is compacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            webhooks_raw: format!("{prefix}wa.webhooks.raw"),
            webhooks_dlq: format!("{prefix}wa.webhooks.dlq"),
            events: format!("{prefix}wa.events"),
            send_requests: format!("{prefix}wa.send.requests"),
            send_dlq: format!("{prefix}wa.send.dlq"),
            config: format!("{prefix}wa.config"),
            deliveries_attempts: format!("{prefix}wa.deliveries.attempts"),
            deliveries_dlq: format!("{prefix}wa.deliveries.dlq"),
            pg_sink_dlq: format!("{prefix}wa.pg-sink.dlq"),
            ch_sink_dlq: format!("{prefix}wa.ch-sink.dlq"),
            fanout_dlq: format!("{prefix}wa.fanout.dlq"),
            replay_dlq: format!("{prefix}wa.replay.dlq"),
            deliveries_retry_prefix: format!("{prefix}wa.deliveries.retry."),
        }
    }

    /// The delay topic for retries due `delay` after the failed attempt.
    pub fn retry_topic(&self, delay: std::time::Duration) -> String {
        format!("{}{}", self.deliveries_retry_prefix, delay_name(delay))
    }

    /// (topic, partitions) with their final partition counts: the local broker cannot add
    /// partitions later, and a conversation must keep its partition for ordering.
    pub fn with_partitions(&self, partitions: i32) -> Vec<TopicSpec> {
        let spec = |name: &String, partitions, compacted| TopicSpec {
            name: name.clone(),
            partitions,
            compacted,
        };
        vec![
            spec(&self.webhooks_raw, partitions, false),
            spec(&self.events, partitions, false),
            spec(&self.send_requests, partitions, false),
            spec(&self.webhooks_dlq, 1, false),
            spec(&self.send_dlq, 1, false),
            spec(&self.deliveries_attempts, partitions, false),
            spec(&self.deliveries_dlq, 1, false),
            spec(&self.pg_sink_dlq, 1, false),
            spec(&self.ch_sink_dlq, 1, false),
            spec(&self.fanout_dlq, 1, false),
            spec(&self.replay_dlq, 1, false),
            // Config is small and read whole by every process: one partition keeps one
            // total order of changes.
            spec(&self.config, 1, true),
        ]
    }
}

/// A delay as a topic-name suffix: the largest whole unit (`90s` stays `90s`, `300s` is
/// `5m`, `7200s` is `2h`), or milliseconds.
pub fn delay_name(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1000)] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

pub fn base_client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka_brokers)
        // librdkafka may resolve "localhost" to ::1 where nothing listens.
        .set("broker.address.family", "v4");
    c
}

/// A consumer's settings: the base plus fetch sizes that take the largest record.
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_client_config(cfg);
    let max = cfg.kafka_message_max_bytes.max(1 << 20);
    c.set("max.partition.fetch.bytes", max.to_string())
        .set("fetch.max.bytes", (max * 2).max(50 << 20).to_string())
        .set(
            "receive.message.max.bytes",
            ((max * 2).max(50 << 20) + (1 << 20)).to_string(),
        );
    c
}

/// An idempotent, acks=all producer. `delivery_timeout` bounds how long a record may wait
/// for the broker before its future resolves with an error.
pub fn producer(cfg: &KafkaConfig, delivery_timeout: Duration) -> anyhow::Result<FutureProducer> {
    let p: FutureProducer = base_client_config(cfg)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", cfg.kafka_linger.as_millis().to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.max.bytes", cfg.kafka_message_max_bytes.to_string())
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        .create()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create Kafka producer for {}: {e}",
                cfg.kafka_brokers
            )
        })?;
    Ok(p)
}

/// A record to produce, owned so it can outlive the input batch.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Produce all records and wait until the broker acknowledged every one of them.
/// Records are enqueued in order, so per-partition order is kept.
pub async fn produce_all(
    producer: &FutureProducer,
    records: &[OutRecord],
) -> Result<(), KafkaError> {
    let sends = records.iter().map(|r| {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let rec = FutureRecord::to(&r.topic)
            .key(r.key.as_bytes())
            .payload(&r.payload)
            .headers(headers);
        producer.send(rec, Timeout::After(Duration::from_secs(30)))
    });
    futures::future::try_join_all(sends)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Create topics that do not exist yet; existing ones are left alone.
///
/// Every topic gets `max.message.bytes` = `kafka_message_max_bytes`, so the largest
/// record a producer may write is one the broker takes.
pub async fn ensure_topics(cfg: &KafkaConfig, topics: &[TopicSpec]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_client_config(cfg)
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create Kafka admin client: {e}"))?;
    let max_bytes = cfg.kafka_message_max_bytes.to_string();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let nt = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1))
                .set("max.message.bytes", &max_bytes);
            if t.compacted {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| anyhow::anyhow!("create_topics failed on {}: {e}", cfg.kafka_brokers))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// On shutdown: hand the broker whatever is still queued (up to `timeout`), off the async
/// threads (librdkafka's flush blocks).
pub async fn flush(producer: FutureProducer, timeout: Duration) {
    let _ = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout))).await;
}

/// Readiness helper: can we fetch cluster metadata within `timeout`?
pub async fn broker_reachable(producer: &FutureProducer, timeout: Duration) -> Result<(), String> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || {
        p.client()
            .fetch_metadata(None, Timeout::After(timeout))
            .map(|_| ())
            .map_err(|e| format!("kafka: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_names_use_the_largest_whole_unit() {
        let s = Duration::from_secs;
        assert_eq!(delay_name(s(5)), "5s");
        assert_eq!(delay_name(s(300)), "5m");
        assert_eq!(delay_name(s(90)), "90s");
        assert_eq!(delay_name(s(7200)), "2h");
        assert_eq!(delay_name(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            Topics::new("t.").retry_topic(s(1800)),
            "t.wa.deliveries.retry.30m"
        );
    }
}
