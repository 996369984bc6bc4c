//! Reading a replay's range: plain partition assignment (no consumer group, so no live
//! group is ever touched), from each partition's checkpoint to its planned end; dead
//! letters unwrapped back into the records they hold; filters applied.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use switchboard_runtime::config::KafkaConfig;
use switchboard_schemas::{
    Codec, DeadLetter, DeliveryAttempts, DeliveryTask, Event, RawWebhook, SendRequest,
};

use super::jobs::Job;
use super::spec::{source_of, Filters, Kind};

/// `topic` (prefixed) carries delivery tasks.
pub fn is_task_topic(topic: &str) -> bool {
    topic.contains("wa.deliveries.retry.") || topic.ends_with("wa.deliveries.dlq")
}

/// The records of a job's remaining range, in batches.
pub struct Reader {
    consumer: StreamConsumer,
    /// Per partition: next offset to hand out, and the end.
    parts: BTreeMap<i32, (i64, i64)>,
    topic: String,
}

impl Reader {
    /// Read what is left of `job`'s plan.
    pub fn for_job(kafka: &KafkaConfig, job: &Job) -> anyhow::Result<Self> {
        let parts = job
            .plan
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition,
                    job.next_offset(p.partition).unwrap_or(p.end),
                    p.end,
                )
            })
            .collect::<Vec<_>>();
        Self::open(kafka, &job.id, &job.plan.topic, &parts)
    }

    /// Read `topic` (prefixed), `[next, end)` of each `(partition, next, end)`.
    pub fn open(
        kafka: &KafkaConfig,
        name: &str,
        topic: &str,
        ranges: &[(i32, i64, i64)],
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = switchboard_runtime::kafka::consumer_config(kafka)
            // Required by the client; nothing is ever committed under it.
            .set("group.id", format!("switchboard-replay-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .context("creating the replay consumer")?;
        let mut tpl = TopicPartitionList::new();
        let mut parts = BTreeMap::new();
        for &(p, next, end) in ranges {
            if next < end {
                tpl.add_partition_offset(topic, p, Offset::Offset(next))?;
                parts.insert(p, (next, end));
            }
        }
        if tpl.count() > 0 {
            consumer.assign(&tpl)?;
        }
        Ok(Self {
            consumer,
            parts,
            topic: topic.to_string(),
        })
    }

    pub fn done(&self) -> bool {
        self.parts.values().all(|(next, end)| next >= end)
    }

    /// Next offset per partition (what a checkpoint stores).
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        self.parts
            .iter()
            .map(|(p, (next, _))| (*p, *next))
            .collect()
    }

    /// Up to `max` records of the range (fewer once `linger` passed with some), or an
    /// empty batch once every partition reached its end.
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let mut out = Vec::new();
        let mut deadline = None;
        let mut idle_since = tokio::time::Instant::now();
        while out.len() < max && !self.done() {
            let wait = match deadline {
                Some(d) => d,
                None => tokio::time::Instant::now() + Duration::from_secs(2),
            };
            match tokio::time::timeout_at(wait, self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    idle_since = tokio::time::Instant::now();
                    let Some((next, end)) = self.parts.get_mut(&m.partition()) else {
                        continue;
                    };
                    if m.offset() < *next || *next >= *end {
                        continue;
                    }
                    if m.offset() < *end {
                        out.push(m.detach());
                    }
                    *next = (m.offset() + 1).min(*end);
                    if *next >= *end {
                        self.pause(m.partition());
                    }
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "replay read error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) if deadline.is_some() => break,
                Err(_) => {
                    // Nothing for a while: offsets without records (a transaction marker,
                    // a hole) may stand between us and the end. The consumer's position
                    // says whether the rest of the range is empty.
                    if idle_since.elapsed() >= Duration::from_secs(2) {
                        self.skip_empty_tails();
                    }
                }
            }
        }
        Ok(out)
    }

    fn pause(&self, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let _ = self.consumer.pause(&tpl);
    }

    fn skip_empty_tails(&mut self) {
        let Ok(pos) = self.consumer.position() else {
            return;
        };
        for el in pos.elements_for_topic(&self.topic) {
            if let (Offset::Offset(o), Some((next, end))) =
                (el.offset(), self.parts.get_mut(&el.partition()))
            {
                if o >= *end && *next < *end {
                    *next = *end;
                }
            }
        }
    }
}

/// Dead letters unwrapped by [`unwrap_dead_letters`].
pub struct Unwrapped {
    /// The records the letters hold, as they were on their source topics.
    pub records: Vec<OwnedMessage>,
    /// Where those letters are (partition, offset) on the dead-letter topic.
    pub letters: Vec<(i32, i64)>,
    /// Letters passed over: another reason, or the source record no longer retained.
    pub skipped: i64,
}

/// Dead letters back into the records they hold (fetched from the source position when
/// the letter did not embed it), keeping those whose reason the filters want.
pub async fn unwrap_dead_letters(
    codec: &Codec,
    kafka: &KafkaConfig,
    batch: Vec<OwnedMessage>,
    filters: &Filters,
) -> anyhow::Result<Unwrapped> {
    let mut out = Vec::with_capacity(batch.len());
    let mut letters = Vec::with_capacity(batch.len());
    let mut skipped = 0;
    for m in batch {
        let position = (m.partition(), m.offset());
        let dl: DeadLetter = codec
            .decode(m.payload().unwrap_or_default())
            .await
            .with_context(|| {
                format!(
                    "decoding dead letter {}/{}@{}",
                    m.topic(),
                    m.partition(),
                    m.offset()
                )
            })?;
        if !filters.reasons.is_empty() && !filters.reasons.contains(&dl.reason) {
            skipped += 1;
            continue;
        }
        let payload = if dl.payload_truncated {
            match fetch_one(
                kafka,
                &dl.source_topic,
                dl.source_partition,
                dl.source_offset,
            )
            .await?
            {
                Some(p) => p,
                None => {
                    tracing::warn!(
                        topic = dl.source_topic,
                        partition = dl.source_partition,
                        offset = dl.source_offset,
                        "dead letter's source record is no longer retained; passed over"
                    );
                    skipped += 1;
                    continue;
                }
            }
        } else {
            dl.payload
        };
        let mut headers = OwnedHeaders::new();
        for (k, v) in &dl.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        out.push(OwnedMessage::new(
            Some(payload),
            dl.key.map(String::into_bytes),
            dl.source_topic,
            dl.source_timestamp_ms
                .map(Timestamp::CreateTime)
                .unwrap_or(Timestamp::NotAvailable),
            dl.source_partition,
            dl.source_offset,
            Some(headers),
        ));
        letters.push(position);
    }
    Ok(Unwrapped {
        records: out,
        letters,
        skipped,
    })
}

/// The value of one record, `None` when it is no longer retained.
pub async fn fetch_one(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let c: BaseConsumer = switchboard_runtime::kafka::consumer_config(kafka)
        .set("group.id", "switchboard-replay-fetch")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let (low, high) = c.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        c.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() == offset => return Ok(m.payload().map(<[u8]>::to_vec)),
                Some(Ok(m)) if m.offset() > offset => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
        anyhow::bail!("could not fetch {topic}/{partition}@{offset} within 10 s")
    })
    .await?
}

/// Which of `batch` the filters want. Records are decoded only when a filter needs it;
/// one that does not decode is kept (the target dead-letters it with its reason).
pub async fn wanted(codec: &Codec, prefix: &str, batch: &[OwnedMessage], f: &Filters) -> Vec<bool> {
    let wants_content = f.tenant.is_some()
        || f.bsp.is_some()
        || f.business_number.is_some()
        || !f.event_types.is_empty();
    if !wants_content {
        return vec![true; batch.len()];
    }
    let mut kinds: HashMap<String, Option<Kind>> = HashMap::new();
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        let kind = *kinds.entry(m.topic().to_string()).or_insert_with(|| {
            source_of(m.topic().strip_prefix(prefix).unwrap_or(m.topic())).map(|s| s.kind)
        });
        out.push(match kind {
            Some(k) => matches(codec, k, m.payload().unwrap_or_default(), f)
                .await
                .unwrap_or(true),
            None => true,
        });
    }
    out
}

fn eq(want: &Option<String>, got: &str) -> bool {
    want.as_deref().is_none_or(|w| w == got)
}

fn type_ok(f: &Filters, ty: &str) -> bool {
    f.event_types.is_empty() || f.event_types.iter().any(|t| t == ty)
}

async fn matches(codec: &Codec, kind: Kind, bytes: &[u8], f: &Filters) -> Option<bool> {
    Some(match kind {
        Kind::Events => {
            let e: Event = codec.decode(bytes).await.ok()?;
            eq(&f.tenant, e.tenant_id.as_deref().unwrap_or(""))
                && eq(&f.bsp, &e.bsp)
                && eq(&f.business_number, &e.business_number)
                && type_ok(f, &e.event_type)
        }
        Kind::Raw => {
            let r: RawWebhook = codec.decode(bytes).await.ok()?;
            eq(&f.bsp, &r.bsp)
        }
        Kind::SendRequests => {
            let r: SendRequest = codec.decode(bytes).await.ok()?;
            eq(&f.tenant, &r.tenant_id) && eq(&f.business_number, &r.from_number)
        }
        // A delivery-log record holds one event's attempts: kept when any matches.
        Kind::Attempts => {
            let a: DeliveryAttempts = codec.decode(bytes).await.ok()?;
            a.attempts
                .iter()
                .any(|a| eq(&f.tenant, &a.tenant_id) && type_ok(f, &a.event_type))
        }
        Kind::DeliveryTasks => {
            let t: DeliveryTask = codec.decode(bytes).await.ok()?;
            eq(&f.tenant, &t.tenant_id) && type_ok(f, &t.event_type)
        }
    })
}
