//! Offset-gap guard for consumers.
//!
//! Our topics are written by idempotent, non-transactional producers and are not
//! compacted, so within a partition offsets are contiguous: a record whose offset is past
//! the next expected one means records were skipped. Measured on the local broker (Nisshi
//! 0.8.1, memory storage) with two producers on one partition (normalizer and router on
//! `wa.events`): a fetch can return a later producer's batch while an earlier batch, its
//! offsets already assigned, is not yet readable, and a consumer then moves past those
//! records for good (51 of 80,800 events, in two whole batches, in one benchmark run;
//! the records were on the topic when read again). A real Kafka cluster never exposes such
//! a hole, so on any broker the guard costs a map look-up per record.
//!
//! On a gap the guard seeks the partition back to the expected offset and drops what came
//! past it, until the hole is readable; a gap that persists for `GIVE_UP_AFTER` seeks (a
//! transactional producer's control records, or compaction, on someone else's topic) is
//! accepted and counted.
//!
//! After each assignment the first expected offset of a partition is where the consumer
//! starts (its committed offset, or the log start), learnt in the rebalance callback: a
//! fetch at a hole returns the batches after it, so a first record taken on trust would
//! set the expectation past the hole, and the consumer would skip it for good. A restart
//! of a consumer that had caught up starts exactly at the head of the log, where a hole
//! is most likely.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::stream::CommitOnRevoke;

/// Where each partition of the current assignment starts, by (topic, partition).
pub type Starts = Arc<Mutex<HashMap<(String, i32), i64>>>;

const GIVE_UP_AFTER: u32 = 30;
/// Records arriving this soon after a seek were fetched before it: drop them quietly.
const SETTLE: Duration = Duration::from_millis(100);

pub static GAPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        prometheus::Opts::new(
            "switchboard_stream_offset_gaps_total",
            "Offset gaps seen by consumers: refetched (the hole became readable) or accepted",
        ),
        &["topic", "outcome"],
    )
    .expect("valid metric");
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
});

#[derive(Default)]
struct Partition {
    expected: i64,
    seeks: u32,
    last_seek: Option<Instant>,
}

pub struct GapGuard {
    parts: HashMap<(String, i32), Partition>,
    generation: Arc<AtomicU64>,
    seen_generation: u64,
    starts: Starts,
}

/// Where the consumer starts reading each newly assigned partition, as librdkafka does
/// with `auto.offset.reset=earliest`: the committed offset, or the log start when there
/// is none or it was deleted. A partition whose offsets cannot be read is left out: its
/// first record is then taken as the start.
pub(crate) fn start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &TopicPartitionList,
) -> HashMap<(String, i32), i64> {
    const WAIT: Duration = Duration::from_secs(5);
    let committed = match consumer.committed_offsets(assigned.clone(), WAIT) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read committed offsets; the gap guard trusts first records");
            return HashMap::new();
        }
    };
    let mut starts = HashMap::new();
    for e in committed.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let Ok((low, _)) = consumer.fetch_watermarks(topic, partition, WAIT) else {
            continue;
        };
        let start = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        starts.insert((topic.to_string(), partition), start);
    }
    starts
}

impl GapGuard {
    /// Expectations start over on every rebalance the context counts, from the start
    /// offsets it learnt.
    pub(crate) fn new(context: &CommitOnRevoke) -> Self {
        Self::with(context.generation.clone(), context.starts.clone())
    }

    fn with(generation: Arc<AtomicU64>, starts: Starts) -> Self {
        Self {
            parts: HashMap::new(),
            generation,
            seen_generation: 0,
            starts,
        }
    }

    /// Should this record be processed? `false`: it came past a hole and was dropped
    /// (a seek back to the hole was issued, or is in progress).
    pub fn admit<C: ConsumerContext, M: Message>(
        &mut self,
        consumer: &StreamConsumer<C>,
        m: &M,
    ) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        if g != self.seen_generation {
            self.parts.clear();
            self.seen_generation = g;
        }
        let key = (m.topic().to_string(), m.partition());
        let offset = m.offset();
        let starts = &self.starts;
        let p = self.parts.entry(key).or_insert_with_key(|key| {
            let start = starts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .copied();
            Partition {
                expected: start.filter(|s| *s <= offset).unwrap_or(offset),
                ..Default::default()
            }
        });
        if offset <= p.expected {
            // In order, or a repeat after a seek or rebalance.
            if p.seeks > 0 && offset == p.expected {
                GAPS.with_label_values(&[m.topic(), "refetched"]).inc();
                tracing::info!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset,
                    seeks = p.seeks,
                    "offset gap refetched"
                );
            }
            p.expected = offset + 1;
            p.seeks = 0;
            p.last_seek = None;
            return true;
        }
        if p.last_seek.is_some_and(|t| t.elapsed() < SETTLE) {
            return false;
        }
        if p.seeks >= GIVE_UP_AFTER {
            GAPS.with_label_values(&[m.topic(), "accepted"]).inc();
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                expected = p.expected,
                offset,
                "offset gap accepted"
            );
            p.expected = offset + 1;
            p.seeks = 0;
            p.last_seek = None;
            return true;
        }
        p.seeks += 1;
        p.last_seek = Some(Instant::now());
        if let Err(e) = consumer.seek(
            m.topic(),
            m.partition(),
            Offset::Offset(p.expected),
            Duration::from_secs(1),
        ) {
            tracing::warn!(error = %e, topic = m.topic(), partition = m.partition(), "seek back to an offset gap failed");
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};
    use rdkafka::ClientConfig;

    fn record(offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        )
    }

    fn guard(start: Option<i64>) -> (GapGuard, StreamConsumer) {
        let starts: Starts = Default::default();
        if let Some(s) = start {
            starts.lock().unwrap().insert(("t".to_string(), 0), s);
        }
        // Never connects: seeks on a partition it does not hold fail, and are logged.
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "gap-guard-test")
            .create()
            .expect("consumer");
        (
            GapGuard::with(Arc::new(AtomicU64::new(0)), starts),
            consumer,
        )
    }

    #[tokio::test]
    async fn a_hole_at_the_start_offset_is_not_skipped() {
        let (mut g, c) = guard(Some(10));
        assert!(
            !g.admit(&c, &record(12)),
            "the first record came past the start"
        );
        assert!(
            !g.admit(&c, &record(13)),
            "fetched before the seek: dropped"
        );
        for offset in 10..=13 {
            assert!(
                g.admit(&c, &record(offset)),
                "{offset} after the hole filled"
            );
        }
    }

    #[tokio::test]
    async fn the_first_record_at_the_start_goes_through() {
        let (mut g, c) = guard(Some(10));
        assert!(g.admit(&c, &record(10)));
        assert!(g.admit(&c, &record(11)));
        assert!(!g.admit(&c, &record(13)), "a hole inside the stream");
    }

    #[tokio::test]
    async fn an_unknown_start_trusts_the_first_record() {
        let (mut g, c) = guard(None);
        assert!(g.admit(&c, &record(12)));
        assert!(g.admit(&c, &record(13)));
        // A start past the first record (librdkafka reset it): the record is the start.
        let (mut g, c) = guard(Some(20));
        assert!(g.admit(&c, &record(12)));
    }

    #[tokio::test]
    async fn a_rebalance_starts_expectations_over() {
        let (mut g, c) = guard(Some(10));
        assert!(g.admit(&c, &record(10)));
        g.starts.lock().unwrap().insert(("t".to_string(), 0), 4);
        g.generation.fetch_add(1, Ordering::AcqRel);
        assert!(g.admit(&c, &record(4)), "read again from the new start");
        g.generation.fetch_add(1, Ordering::AcqRel);
        assert!(!g.admit(&c, &record(6)), "a hole at the new start");
    }
}
