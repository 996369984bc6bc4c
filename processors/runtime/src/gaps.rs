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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Message, Offset};

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
}

impl GapGuard {
    /// `generation` is bumped on every rebalance: expectations start over then.
    pub fn new(generation: Arc<AtomicU64>) -> Self {
        Self {
            parts: HashMap::new(),
            generation,
            seen_generation: 0,
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
        let Some(p) = self.parts.get_mut(&key) else {
            self.parts.insert(
                key,
                Partition {
                    expected: offset + 1,
                    ..Default::default()
                },
            );
            return true;
        };
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
