//! Topic names, the producer every binary uses, and topic creation.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;
use crate::producer::ProducerSlot;

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
    /// Dead letters of the media fetcher (media it could not get or keep).
    pub media_dlq: String,
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
            media_dlq: format!("{prefix}wa.media.dlq"),
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
            spec(&self.media_dlq, 1, false),
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

/// Every client's settings: brokers, security (TLS, SASL), then the pass-through
/// properties, which may override anything before them.
pub fn base_client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka_brokers)
        // librdkafka may resolve "localhost" to ::1 where nothing listens.
        .set("broker.address.family", "v4")
        .set("security.protocol", &cfg.kafka_security_protocol);
    let tls = cfg
        .kafka_security_protocol
        .to_ascii_lowercase()
        .contains("ssl");
    let optional = [
        ("sasl.mechanism", &cfg.kafka_sasl_mechanism),
        ("sasl.username", &cfg.kafka_sasl_username),
        ("sasl.password", &cfg.kafka_sasl_password),
        ("ssl.ca.location", &cfg.kafka_ssl_ca_location),
        (
            "ssl.certificate.location",
            &cfg.kafka_ssl_certificate_location,
        ),
        ("ssl.key.location", &cfg.kafka_ssl_key_location),
        ("ssl.key.password", &cfg.kafka_ssl_key_password),
    ];
    for (k, v) in optional.into_iter().filter(|(_, v)| !v.is_empty()) {
        c.set(k, v);
    }
    if tls {
        c.set(
            "ssl.endpoint.identification.algorithm",
            &cfg.kafka_ssl_endpoint_identification,
        );
    }
    for (k, v) in &cfg.kafka_properties.0 {
        c.set(k, v);
    }
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
        .set("compression.type", &cfg.kafka_compression)
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
/// Records are enqueued in order, so per-partition order is kept. The outcome is reported
/// to the slot, which replaces a producer that stopped working: retry on an error.
pub async fn produce_all(producer: &ProducerSlot, records: &[OutRecord]) -> Result<(), KafkaError> {
    let p = producer.get();
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
        p.send(rec, Timeout::After(Duration::from_secs(30)))
    });
    let res = futures::future::try_join_all(sends)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e);
    producer.report(res.is_ok());
    res
}

/// A setting of an existing topic that is not what Switchboard would create it with.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub topic: String,
    pub setting: String,
    pub want: String,
    pub have: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} is {}, Switchboard creates it with {}",
            self.topic, self.setting, self.have, self.want
        )
    }
}

/// What a topic is created with: partitions, replication and its configuration.
fn settings_of(cfg: &KafkaConfig, t: &TopicSpec) -> anyhow::Result<BTreeMap<String, String>> {
    let name = t.name.strip_prefix(&cfg.topic_prefix).unwrap_or(&t.name);
    let mut s = BTreeMap::from([(
        "max.message.bytes".to_string(),
        cfg.kafka_message_max_bytes.to_string(),
    )]);
    if t.compacted {
        s.insert("cleanup.policy".into(), "compact".into());
    }
    s.extend(cfg.topic_settings(name)?);
    Ok(s)
}

/// Create topics that do not exist yet, with `kafka_replication_factor` replicas and
/// `max.message.bytes` = `kafka_message_max_bytes` (so the largest record a producer may
/// write is one the broker takes), plus `kafka_topic_config`. Existing topics are left
/// alone; how they differ from that (partitions, replicas, settings) is returned.
pub async fn ensure_topics(cfg: &KafkaConfig, topics: &[TopicSpec]) -> anyhow::Result<Vec<Drift>> {
    // Metadata first, with a deadline: librdkafka's admin requests keep retrying a broker
    // that refuses the login or the certificate, where an operator wants the reason.
    let meta = {
        let c: rdkafka::consumer::BaseConsumer = base_client_config(cfg).create()?;
        tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::fetch_metadata(
                &c,
                None,
                Timeout::After(Duration::from_secs(15)),
            )
        })
        .await?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kafka brokers at {} ({}): {e}",
                cfg.kafka_brokers,
                cfg.kafka_security_protocol
            )
        })?
    };
    let admin: AdminClient<DefaultClientContext> = base_client_config(cfg)
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create Kafka admin client: {e}"))?;
    let wanted: Vec<BTreeMap<String, String>> = topics
        .iter()
        .map(|t| settings_of(cfg, t))
        .collect::<anyhow::Result<_>>()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&wanted)
        .map(|(t, w)| {
            w.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(cfg.kafka_replication_factor),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| anyhow::anyhow!("create_topics failed on {}: {e}", cfg.kafka_brokers))?;
    let mut existing = Vec::new();
    for r in results {
        match r {
            Ok(_) => {}
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(t),
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    if existing.is_empty() {
        return Ok(Vec::new());
    }
    let mut drift = Vec::new();
    for (t, want) in topics
        .iter()
        .zip(&wanted)
        .filter(|(t, _)| existing.contains(&t.name))
    {
        if let Some(m) = meta.topics().iter().find(|m| m.name() == t.name) {
            let (parts, replicas) = (
                m.partitions().len() as i32,
                m.partitions()
                    .first()
                    .map_or(0, |p| p.replicas().len() as i32),
            );
            let mut check = |setting: &str, want: i32, have: i32| {
                if want != have {
                    drift.push(Drift {
                        topic: t.name.clone(),
                        setting: setting.into(),
                        want: want.to_string(),
                        have: have.to_string(),
                    });
                }
            };
            check("partitions", t.partitions, parts);
            check("replication factor", cfg.kafka_replication_factor, replicas);
        }
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(&t.name)], &opts)
            .await;
        // Brokers without DescribeConfigs (some Kafka-compatible ones) report nothing.
        let Ok(Some(Ok(resource))) = described.map(|mut v| v.pop()) else {
            continue;
        };
        for (k, v) in want {
            let have = resource
                .get(k)
                .and_then(|e| e.value.clone())
                .unwrap_or_default();
            if &have != v {
                drift.push(Drift {
                    topic: t.name.clone(),
                    setting: k.clone(),
                    want: v.clone(),
                    have: if have.is_empty() {
                        "unset".into()
                    } else {
                        have
                    },
                });
            }
        }
    }
    Ok(drift)
}

/// On shutdown: hand the broker whatever is still queued (up to `timeout`), off the async
/// threads (librdkafka's flush blocks).
pub async fn flush(producer: ProducerSlot, timeout: Duration) {
    let p = producer.get();
    let _ = tokio::task::spawn_blocking(move || p.flush(Timeout::After(timeout))).await;
}

/// Readiness helper: can we fetch cluster metadata within `timeout`?
pub async fn broker_reachable(producer: &ProducerSlot, timeout: Duration) -> Result<(), String> {
    let p = producer.get();
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
