//! A live in-memory copy of the compacted `wa.config` topic.
//!
//! Every process reads the whole topic from the beginning (no consumer group offsets:
//! each instance needs every record), applies records to a [`ConfigIndex`], and reports
//! ready once it has caught up with the high watermarks it saw at start. Updates keep
//! flowing in afterwards, so a key revoked through the admin API stops working
//! everywhere within the broker's end-to-end latency.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use switchboard_schemas::config::ConfigIndex;
use switchboard_schemas::{Codec, ConfigRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::kafka::consumer_config;

static REJECTED: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "switchboard_config_records_rejected_total",
        "wa.config records this process could not apply, by reason",
        &["reason"]
    )
    .expect("registers once")
});

#[derive(Clone)]
pub struct ConfigCache {
    index: Arc<RwLock<ConfigIndex>>,
    ready: watch::Receiver<bool>,
}

impl ConfigCache {
    /// Start following `topic`. Returns at once; see [`ConfigCache::wait_ready`].
    pub fn start(
        kafka: &KafkaConfig,
        topic: &str,
        codec: Codec,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = consumer_config(kafka)
            .set(
                "group.id",
                format!("switchboard-config-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create config consumer: {e}"))?;
        let index = Arc::new(RwLock::new(ConfigIndex::default()));
        let (tx, rx) = watch::channel(false);
        let task_index = index.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = follow(consumer, topic, codec, task_index, tx) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "config follower stopped");
                    }
                }
            }
        });
        Ok(ConfigCache { index, ready: rx })
    }

    /// A cache filled by hand (tests, tools).
    pub fn fixed(index: ConfigIndex) -> Self {
        let (_tx, rx) = watch::channel(true);
        ConfigCache {
            index: Arc::new(RwLock::new(index)),
            ready: rx,
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ConfigIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply a record this process just published, before it comes back from the topic.
    pub fn apply(&self, rec: &ConfigRecord) {
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = ix.apply(rec) {
            tracing::warn!(error = %e, key = %rec.key(), "bad config record");
        }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.ready.clone();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .map_err(|_| anyhow::anyhow!("config topic not read within {timeout:?}"))?
            .map_err(|_| anyhow::anyhow!("config follower stopped"))?;
        Ok(())
    }
}

async fn follow(
    consumer: StreamConsumer,
    topic: String,
    codec: Codec,
    index: Arc<RwLock<ConfigIndex>>,
    ready: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let consumer = Arc::new(consumer);
    // Partitions and high watermarks at start; retried until the topic exists.
    let highs: HashMap<i32, i64> = loop {
        let c = consumer.clone();
        let t = topic.clone();
        let r = tokio::task::spawn_blocking(move || -> anyhow::Result<HashMap<i32, i64>> {
            let md = c.fetch_metadata(Some(&t), Timeout::After(Duration::from_secs(5)))?;
            let parts: Vec<i32> = md
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            anyhow::ensure!(!parts.is_empty(), "topic {t} has no partitions yet");
            let mut highs = HashMap::new();
            for p in parts {
                let (_, high) =
                    c.fetch_watermarks(&t, p, Timeout::After(Duration::from_secs(5)))?;
                highs.insert(p, high);
            }
            Ok(highs)
        })
        .await?;
        match r {
            Ok(h) => break h,
            Err(e) => {
                tracing::warn!(error = %e, topic, "waiting for the config topic");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in highs.keys() {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut behind: HashMap<i32, i64> = highs.into_iter().filter(|(_, h)| *h > 0).collect();
    if behind.is_empty() {
        let _ = ready.send(true);
    }
    loop {
        // Transport errors (a broker restart) are transient: librdkafka reconnects.
        let m = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "config topic read error; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(payload) = m.payload() {
            // A registry outage is waited out; a record that can never apply is counted,
            // logged with its position and passed over, so one bad record never stops
            // the configuration of every process. It is not dead-lettered: every process
            // reads the whole topic, and each would write its own copy.
            let decoded = loop {
                match codec.decode::<ConfigRecord>(payload).await {
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "schema registry unavailable; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => break other,
                }
            };
            let rejected = match decoded {
                Ok(rec) => {
                    let mut ix = index.write().unwrap_or_else(|p| p.into_inner());
                    ix.apply(&rec)
                        .err()
                        .map(|e| ("bad_config", format!("{}: {e}", rec.key())))
                }
                Err(e) => Some(("undecodable", e.to_string())),
            };
            if let Some((reason, detail)) = rejected {
                REJECTED.with_label_values(&[reason]).inc();
                tracing::error!(
                    reason,
                    detail,
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "config record passed over"
                );
            }
        }
        if let Some(high) = behind.get(&m.partition()) {
            if m.offset() + 1 >= *high {
                behind.remove(&m.partition());
                if behind.is_empty() {
                    let _ = ready.send(true);
                }
            }
        }
    }
}
