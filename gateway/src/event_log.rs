//! A tenant's events read back out of `wa.events`, from a cursor: what the polling API
//! (`GET /v1/events`) serves.
//!
//! A [`Cursor`] is a position in the whole topic: the next offset of every partition.
//! Each event's cursor is the position just after it, so a client that resumes from the
//! cursor of the last event it handled gets exactly the events after it: none again,
//! none missed, within retention. Events of one conversation share a partition and so
//! come in order; across conversations there is no order to keep. A cursor older than
//! what the broker still retains is answered from the oldest retained record, with
//! `gap` set so the client knows to re-read through the REST API.
//!
//! Reading uses plain partition assignment (no consumer group), so polls never disturb
//! a group and any gateway can answer any cursor. A poll reads at most a scan budget of
//! records (the topic holds every tenant's events): a tenant whose events are sparse gets
//! fewer than it asked for with `done: false`, and its cursor moves past what was read.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::Value;
use switchboard_runtime::config::KafkaConfig;
use switchboard_schemas::config::type_matches;
use switchboard_schemas::{Codec, Event};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The next offset of every partition of `wa.events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(pub BTreeMap<i32, i64>);

impl Cursor {
    pub fn encode(&self) -> String {
        let text: Vec<String> = self.0.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        format!("v1.{}", B64.encode(text.join(",")))
    }

    /// `None` for anything [`Cursor::encode`] did not make.
    pub fn decode(s: &str) -> Option<Self> {
        let raw = String::from_utf8(B64.decode(s.strip_prefix("v1.")?).ok()?).ok()?;
        let mut m = BTreeMap::new();
        for part in raw.split(',').filter(|p| !p.is_empty()) {
            let (p, o) = part.split_once(':')?;
            let (p, o): (i32, i64) = (p.parse().ok()?, o.parse().ok()?);
            if p < 0 || o < 0 || m.insert(p, o).is_some() {
                return None;
            }
        }
        Some(Cursor(m))
    }
}

/// Where a poll starts.
pub enum From {
    /// The oldest event still retained.
    Oldest,
    /// Only what comes after now.
    Now,
    Cursor(Cursor),
}

/// Which events a poll wants, of one tenant.
pub struct Query<'a> {
    pub tenant: &'a str,
    /// Webhook type filters (exact or `prefix.*`); empty = every type.
    pub types: &'a [String],
    /// Business number; `None` = every number.
    pub number: Option<&'a str>,
    pub limit: usize,
}

/// One poll's answer.
pub struct Page {
    /// Each event's webhook body, with its `cursor`.
    pub events: Vec<Value>,
    pub next: Cursor,
    /// Every partition was read up to where it stood when the poll began.
    pub done: bool,
    /// The cursor pointed before what the broker still retains: events were missed.
    pub gap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the cursor names partition {0}, which wa.events does not have")]
    UnknownPartition(i32),
    #[error("wa.events cannot be read now: {0}")]
    Unavailable(String),
}

/// Reads tenants' events from `wa.events`.
pub struct EventLog {
    pub kafka: KafkaConfig,
    pub topic: String,
    pub codec: Codec,
    /// Records a poll may read at most.
    pub scan_budget: usize,
    /// Time a poll may spend reading at most.
    pub scan_time: Duration,
}

impl EventLog {
    pub async fn poll(&self, from: From, q: &Query<'_>) -> Result<Page, LogError> {
        let (consumer, marks) = self.open().await?;
        let mut gap = false;
        let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
        for (&p, &(low, high)) in &marks {
            let at = match &from {
                From::Oldest => low,
                From::Now => high,
                From::Cursor(c) => match c.0.get(&p) {
                    Some(&o) if o < low => {
                        gap = true;
                        low
                    }
                    Some(&o) => o.min(high),
                    // A partition the cursor does not know yet: all of it is new.
                    None => low,
                },
            };
            pos.insert(p, at);
        }
        if let From::Cursor(c) = &from {
            if let Some(p) = c.0.keys().find(|p| !marks.contains_key(p)) {
                return Err(LogError::UnknownPartition(*p));
            }
        }
        let ends: BTreeMap<i32, i64> = marks.iter().map(|(p, (_, h))| (*p, *h)).collect();
        let consumer = std::sync::Arc::new(consumer);
        let deadline = std::time::Instant::now() + self.scan_time;
        let mut reader = Reading {
            pos,
            assigned: false,
        };
        let mut cursor = Cursor(reader.pos.clone());
        let mut events = Vec::new();
        let mut scanned = 0;
        let mut done = false;
        // Read in chunks, so a poll that finds its `limit` early reads little more.
        while events.len() < q.limit && scanned < self.scan_budget && !done {
            let chunk = (self.scan_budget - scanned).min(CHUNK);
            let (c, topic, ends2) = (consumer.clone(), self.topic.clone(), ends.clone());
            let (r, records, finished) = tokio::task::spawn_blocking(move || {
                let records = reader.read(&c, &topic, &ends2, chunk, deadline);
                records.map(|(recs, fin)| (reader, recs, fin))
            })
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))??;
            reader = r;
            scanned += records.len();
            let out_of_time = std::time::Instant::now() >= deadline;
            for (i, (partition, offset, payload)) in records.iter().enumerate() {
                cursor.0.insert(*partition, offset + 1);
                // A record that is not an event is the sinks' to dead-letter: nothing
                // for a client.
                let Ok(ev) = self.codec.decode::<Event>(payload).await else {
                    continue;
                };
                if !wanted(&ev, q) {
                    continue;
                }
                let (_, mut body) = switchboard_processors::fanout::payload::envelope(&ev);
                body["cursor"] = Value::from(cursor.encode());
                events.push(body);
                if events.len() == q.limit {
                    if i + 1 < records.len() {
                        // Stopped inside what was read: resume right after this event.
                        return Ok(Page {
                            events,
                            next: cursor,
                            done: false,
                            gap,
                        });
                    }
                    break;
                }
            }
            // Everything read was looked at: resume after it (past any offsets without
            // records too).
            cursor = Cursor(reader.pos.clone());
            done = finished;
            if out_of_time {
                break;
            }
        }
        Ok(Page {
            events,
            next: cursor,
            done,
            gap,
        })
    }

    /// A consumer (no group) and each partition's (low, high) watermarks.
    async fn open(&self) -> Result<(BaseConsumer, BTreeMap<i32, (i64, i64)>), LogError> {
        let unavailable = |e: rdkafka::error::KafkaError| LogError::Unavailable(e.to_string());
        let consumer: BaseConsumer = switchboard_runtime::kafka::consumer_config(&self.kafka)
            // Required by the client; nothing is ever committed under it.
            .set("group.id", "switchboard-gateway-events")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(unavailable)?;
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map_err(unavailable)?;
            let mut marks = BTreeMap::new();
            for t in md.topics() {
                for part in t.partitions() {
                    let w = consumer
                        .fetch_watermarks(&topic, part.id(), Duration::from_secs(5))
                        .map_err(unavailable)?;
                    marks.insert(part.id(), w);
                }
            }
            if marks.is_empty() {
                return Err(LogError::Unavailable(format!("{topic} has no partitions")));
            }
            Ok((consumer, marks))
        })
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))?
    }
}

fn wanted(ev: &Event, q: &Query<'_>) -> bool {
    if ev.tenant_id.as_deref() != Some(q.tenant) {
        return false;
    }
    if q.number.is_some_and(|n| ev.business_number != n) {
        return false;
    }
    let ty = switchboard_processors::fanout::payload::webhook_type(ev);
    q.types.is_empty() || q.types.iter().any(|f| type_matches(f, &ty))
}

/// Records read per round trip to the blocking reader.
const CHUNK: usize = 1000;

type Records = Vec<(i32, i64, Vec<u8>)>;

/// A poll's progress through the partitions.
struct Reading {
    /// Next offset per partition.
    pos: BTreeMap<i32, i64>,
    assigned: bool,
}

impl Reading {
    /// Up to `max` records from where each partition stands towards its end in `ends`,
    /// interleaved as the broker serves them, before `deadline`. Returns them and whether
    /// every partition reached its end.
    fn read(
        &mut self,
        c: &BaseConsumer,
        topic: &str,
        ends: &BTreeMap<i32, i64>,
        max: usize,
        deadline: std::time::Instant,
    ) -> Result<(Records, bool), LogError> {
        let unavailable = |e: rdkafka::error::KafkaError| LogError::Unavailable(e.to_string());
        let open = |pos: &BTreeMap<i32, i64>| pos.iter().any(|(p, o)| o < &ends[p]);
        let mut out = Vec::new();
        if !self.assigned {
            let mut tpl = rdkafka::TopicPartitionList::new();
            for (p, o) in &self.pos {
                if o < &ends[p] {
                    tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o))
                        .map_err(unavailable)?;
                }
            }
            if tpl.count() == 0 {
                return Ok((out, true));
            }
            c.assign(&tpl).map_err(unavailable)?;
            self.assigned = true;
        }
        while open(&self.pos) && out.len() < max && std::time::Instant::now() < deadline {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    let (Some(next), Some(end)) =
                        (self.pos.get(&p).copied(), ends.get(&p).copied())
                    else {
                        continue;
                    };
                    if o < next || next >= end {
                        continue;
                    }
                    if o < end {
                        out.push((p, o, m.payload().unwrap_or_default().to_vec()));
                    }
                    self.pos.insert(p, (o + 1).min(end));
                }
                Some(Err(e)) => return Err(unavailable(e)),
                None => {
                    // Offsets without records (transaction markers, holes) may stand
                    // before the end: the consumer's own position says how far it got.
                    if let Ok(at) = c.position() {
                        for el in at.elements() {
                            if let (rdkafka::Offset::Offset(o), Some(end)) =
                                (el.offset(), ends.get(&el.partition()))
                            {
                                let next = self.pos.entry(el.partition()).or_default();
                                if o > *next {
                                    *next = o.min(*end);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok((out, !open(&self.pos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_make() {
        let c = Cursor(BTreeMap::from([(0, 17), (1, 0), (5, 123_456_789)]));
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(
            Cursor::decode(&Cursor::default().encode()),
            Some(Cursor::default())
        );
        for bad in ["", "v1.", "v2.MDox", "v1.!!", "v1.MDox,", "nonsense"] {
            // "v1." is the empty cursor; everything else here is not a cursor.
            if bad == "v1." {
                continue;
            }
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
        let dup = format!("v1.{}", B64.encode("0:1,0:2"));
        assert_eq!(Cursor::decode(&dup), None, "a partition twice");
        let neg = format!("v1.{}", B64.encode("0:-1"));
        assert_eq!(Cursor::decode(&neg), None, "a negative offset");
    }
}
