//! From a range to exact offsets, per partition, correct on any Kafka-compatible broker.
//!
//! For a time bound the broker is asked first (`offsets_for_times`), and its answer is
//! checked against the records around it: offset `o` is right for time `t` when the
//! record before it is older than `t` and the record at it is not. A wrong answer (the
//! older Tansu answers 0 for every time) falls back to a binary search over fetched
//! records' timestamps, about log2(records) single-record fetches. Both assume, as Kafka's
//! own lookup does, that timestamps grow along a partition (they are the producers'
//! clocks; Switchboard's producers stamp at produce time).
//!
//! No record at or after a time gives the partition's end offset, never 0. A range that
//! starts before the log start offset of a partition whose oldest records are gone is
//! refused: what was there cannot be replayed.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use switchboard_runtime::config::KafkaConfig;

use super::spec::Range;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's share of a replay: offsets `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    /// How the start and end were found: `offsets` (given), `broker` (the broker's
    /// answer, verified) or `search` (the broker's answer was wrong).
    pub method: String,
}

impl PartitionPlan {
    pub fn records(&self) -> i64 {
        (self.end - self.start).max(0)
    }
}

/// The offsets a replay will read, fixed when the replay is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The full (prefixed) topic name.
    pub topic: String,
    pub partitions: Vec<PartitionPlan>,
}

impl Plan {
    pub fn records(&self) -> i64 {
        self.partitions.iter().map(PartitionPlan::records).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("topic {topic} has no partition {partition}")]
    NoPartition { topic: String, partition: i32 },
    #[error("{topic} partition {partition}: the range starts before the log start offset {log_start} (records before {oldest} are no longer retained); start at or after {oldest}")]
    BeforeLogStart {
        topic: String,
        partition: i32,
        log_start: i64,
        oldest: String,
    },
    #[error("broker: {0}")]
    Broker(String),
}

/// Resolve `range` on `topic` (prefixed) for `partitions` (empty: all).
pub async fn plan(
    kafka: &KafkaConfig,
    topic: &str,
    range: &Range,
    partitions: &BTreeSet<i32>,
) -> Result<Plan, PlanError> {
    let consumer: BaseConsumer = switchboard_runtime::kafka::base_client_config(kafka)
        .set("group.id", "switchboard-replay-planner")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "10")
        // Probes want one record; librdkafka grows this for a larger one.
        .set("max.partition.fetch.bytes", "65536")
        .create()
        .map_err(|e| PlanError::Broker(e.to_string()))?;
    let (topic, range, partitions) = (topic.to_string(), range.clone(), partitions.clone());
    tokio::task::spawn_blocking(move || plan_blocking(&consumer, &topic, &range, &partitions))
        .await
        .map_err(|e| PlanError::Broker(e.to_string()))?
}

fn plan_blocking(
    c: &BaseConsumer,
    topic: &str,
    range: &Range,
    wanted: &BTreeSet<i32>,
) -> Result<Plan, PlanError> {
    let broker = |e: rdkafka::error::KafkaError| PlanError::Broker(format!("{topic}: {e}"));
    let md = c.fetch_metadata(Some(topic), TIMEOUT).map_err(broker)?;
    let mut all: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if all.is_empty() {
        return Err(PlanError::NoTopic(topic.to_string()));
    }
    all.sort();
    if let Some(p) = wanted.iter().find(|p| !all.contains(p)) {
        return Err(PlanError::NoPartition {
            topic: topic.to_string(),
            partition: *p,
        });
    }
    let mut out = Vec::new();
    for p in all
        .into_iter()
        .filter(|p| wanted.is_empty() || wanted.contains(p))
    {
        let (low, high) = c.fetch_watermarks(topic, p, TIMEOUT).map_err(broker)?;
        let probe = Probe {
            c,
            topic,
            partition: p,
            low,
            high,
        };
        let part = match *range {
            Range::Offsets { from, to } => {
                let start = from.unwrap_or(low);
                if start < low {
                    return Err(probe.before_log_start()?);
                }
                let end = to.unwrap_or(high).min(high);
                PartitionPlan {
                    partition: p,
                    start: start.min(end),
                    end,
                    method: "offsets".into(),
                }
            }
            Range::Time { from_ms, to_ms } => {
                if low > 0 && low < high && from_ms < probe.ts(low)? {
                    return Err(probe.before_log_start()?);
                }
                let (start, searched_a) = probe.offset_for_time(from_ms)?;
                let (end, searched_b) = probe.offset_for_time(to_ms)?;
                PartitionPlan {
                    partition: p,
                    start: start.min(end),
                    end,
                    method: if searched_a || searched_b {
                        "search"
                    } else {
                        "broker"
                    }
                    .into(),
                }
            }
        };
        out.push(part);
    }
    Ok(Plan {
        topic: topic.to_string(),
        partitions: out,
    })
}

struct Probe<'a> {
    c: &'a BaseConsumer,
    topic: &'a str,
    partition: i32,
    low: i64,
    high: i64,
}

impl Probe<'_> {
    fn before_log_start(&self) -> Result<PlanError, PlanError> {
        let oldest = if self.low < self.high {
            super::ms_to_rfc3339(self.ts(self.low)?)
        } else {
            "(nothing retained)".into()
        };
        Ok(PlanError::BeforeLogStart {
            topic: self.topic.to_string(),
            partition: self.partition,
            log_start: self.low,
            oldest,
        })
    }

    /// The first offset whose record is at or after `t`, and whether the broker's answer
    /// had to be replaced by a search.
    fn offset_for_time(&self, t: i64) -> Result<(i64, bool), PlanError> {
        if self.low >= self.high {
            return Ok((self.high, false));
        }
        if let Some(o) = self.ask_broker(t)? {
            if self.is_answer(o, t)? {
                return Ok((o, false));
            }
            tracing::info!(
                topic = self.topic,
                partition = self.partition,
                time_ms = t,
                answer = o,
                "offsets_for_times answer is wrong; searching by record timestamps"
            );
        }
        let (mut lo, mut hi) = (self.low, self.high);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ts(mid)? < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok((lo, true))
    }

    /// The broker's answer: an offset, the end (no record at or after `t`), or `None`
    /// when it gave none we can use.
    fn ask_broker(&self, t: i64) -> Result<Option<i64>, PlanError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(t))
            .map_err(|e| PlanError::Broker(e.to_string()))?;
        let answer = match self.c.offsets_for_times(tpl, TIMEOUT) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(error = %e, "offsets_for_times failed; searching");
                return Ok(None);
            }
        };
        Ok(answer
            .elements_for_topic(self.topic)
            .iter()
            .find(|e| e.partition() == self.partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o.clamp(self.low, self.high)),
                Offset::End => Some(self.high),
                _ => None,
            }))
    }

    /// `o` is the first offset at or after `t`.
    fn is_answer(&self, o: i64, t: i64) -> Result<bool, PlanError> {
        let before_ok = o == self.low || self.ts(o - 1)? < t;
        let at_ok = o == self.high || self.ts(o)? >= t;
        Ok(before_ok && at_ok)
    }

    /// The timestamp of the record at `offset` (or of the next one, past a gap).
    fn ts(&self, offset: i64) -> Result<i64, PlanError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(offset))
            .map_err(|e| PlanError::Broker(e.to_string()))?;
        self.c
            .assign(&tpl)
            .map_err(|e| PlanError::Broker(e.to_string()))?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::time::Instant::now() < deadline {
            match self.c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() == self.partition && m.offset() >= offset => {
                    return m.timestamp().to_millis().ok_or_else(|| {
                        PlanError::Broker(format!(
                            "{}/{}@{} has no timestamp",
                            self.topic,
                            self.partition,
                            m.offset()
                        ))
                    });
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => return Err(PlanError::Broker(e.to_string())),
            }
        }
        Err(PlanError::Broker(format!(
            "could not fetch {}/{}@{offset} within {TIMEOUT:?}",
            self.topic, self.partition
        )))
    }
}
