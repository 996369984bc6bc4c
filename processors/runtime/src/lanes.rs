//! The at-least-once loop for work that finishes out of order: each record is handled
//! by its own task (many in flight, a slow one never holds up the others), and a
//! partition's offset is stored only up to its oldest record not yet finished. A crash
//! therefore repeats at most the records in flight or finished after that point; handlers
//! make a repeat harmless (the router through its per-message state machine).
//!
//! Compared with [`crate::stream::StreamLoop`] (batch by batch, in order), this suits
//! handlers that wait on slow external calls: BSP APIs, rate limits.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::deadletter::DeadLetters;
use crate::failure::{classify, Class};
use crate::stream::{group_consumer, report_lag, CommitOnRevoke};
use crate::telemetry::STREAM;

/// What became of one record.
pub enum Disposition {
    /// Handled: its offset may be committed.
    Done,
    /// Shutdown interrupted it: it will be delivered again.
    Interrupted,
    /// It can never be handled by this stage: the loop writes it (handed back) to the
    /// stage's dead-letter topic, with the reason [`crate::failure::classify`] finds in the
    /// error (`unhandled` when it finds none), and then counts it done.
    Poison(Box<OwnedMessage>, anyhow::Error),
}

impl From<bool> for Disposition {
    /// `true`: done; `false`: interrupted.
    fn from(done: bool) -> Self {
        if done {
            Disposition::Done
        } else {
            Disposition::Interrupted
        }
    }
}

/// Handles one record.
///
/// `handle` itself is called in record order, on the loop; only the future it returns
/// runs concurrently. A handler that needs arrival order (the fan-out's per-conversation
/// turns) takes its place in line in the synchronous part.
pub trait RecordHandler: Clone + Send + Sync + 'static {
    fn handle(&self, msg: OwnedMessage) -> impl Future<Output = Disposition> + Send + 'static;
}

/// Per partition: offsets in flight, and the next offset after everything seen.
#[derive(Default)]
struct Tracker {
    parts: HashMap<(String, i32), (BTreeSet<i64>, i64)>,
}

impl Tracker {
    fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let e = self
            .parts
            .entry((topic.to_string(), partition))
            .or_insert_with(|| (BTreeSet::new(), offset));
        e.0.insert(offset);
        e.1 = e.1.max(offset + 1);
    }

    fn end(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(e) = self.parts.get_mut(&(topic.to_string(), partition)) {
            e.0.remove(&offset);
        }
    }

    /// The offset to commit per partition: the oldest one in flight, else the next one.
    fn commit_points(&self) -> Vec<(String, i32, i64)> {
        self.parts
            .iter()
            .map(|((t, p), (pending, next))| {
                (t.clone(), *p, pending.first().copied().unwrap_or(*next))
            })
            .collect()
    }

    fn in_flight(&self) -> usize {
        self.parts.values().map(|(p, _)| p.len()).sum()
    }
}

pub struct LaneLoop {
    consumer: Arc<StreamConsumer<CommitOnRevoke>>,
    group: String,
    max_in_flight: usize,
    dead: DeadLetters,
}

impl LaneLoop {
    /// `instance_id`: static group membership (see `stream::group_consumer`); `dead`:
    /// where records this stage can never handle go.
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        instance_id: Option<&str>,
        topics: &[&str],
        max_in_flight: usize,
        dead: DeadLetters,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            consumer: Arc::new(group_consumer(kafka, group, instance_id, topics)?),
            group: group.to_string(),
            max_in_flight: max_in_flight.max(1),
            dead,
        })
    }

    /// Run until `shutdown`; then wait up to `drain` for tasks in flight, store and commit
    /// what finished, and return.
    pub async fn run<H: RecordHandler>(
        self,
        handler: H,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> anyhow::Result<()> {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let mut gaps = crate::gaps::GapGuard::new(self.consumer.context());
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let lag_task = tokio::spawn(report_lag(
            self.consumer.clone(),
            self.group.clone(),
            shutdown.clone(),
        ));
        let store_task = {
            let (c, t, stop) = (self.consumer.clone(), tracker.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => store(&c, &t),
                    }
                }
            })
        };
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p?,
            };
            let m = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let m = match m {
                Ok(m) if !gaps.admit(&self.consumer, &m) => continue,
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
            lock(&tracker).begin(&topic, partition, offset);
            STREAM
                .records
                .with_label_values(&[self.group.as_str(), topic.as_str()])
                .inc();
            let work = handler.handle(m);
            let (t, dead, stop) = (tracker.clone(), self.dead.clone(), shutdown.clone());
            tokio::spawn(async move {
                let done = match work.await {
                    Disposition::Done => true,
                    Disposition::Interrupted => false,
                    Disposition::Poison(m, e) => poison(&dead, &m, &e, &stop).await,
                };
                if done {
                    lock(&t).end(&topic, partition, offset);
                }
                drop(permit);
            });
        }
        // Drain: tasks see the cancelled token and finish or give up quickly.
        let deadline = tokio::time::Instant::now() + drain;
        while lock(&tracker).in_flight() > 0 && tokio::time::Instant::now() < deadline {
            if permits.available_permits() == self.max_in_flight {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store_task.abort();
        store(&self.consumer, &tracker);
        let c = self.consumer.clone();
        let _ =
            tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await;
        lag_task.abort();
        Ok(())
    }
}

/// Dead-letter a record, retrying while the broker is away; `false` if shutdown came
/// first (the record is then delivered again).
async fn poison(
    dead: &DeadLetters,
    m: &OwnedMessage,
    e: &anyhow::Error,
    stop: &CancellationToken,
) -> bool {
    let reason = match classify(e) {
        Class::Permanent(r) => r,
        Class::Transient => "unhandled",
    };
    let dl = dead.letter(m, reason, &format!("{e:#}"));
    crate::stream::write_dead_letter(dead, &dl, stop)
        .await
        .is_ok()
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn store(consumer: &StreamConsumer<CommitOnRevoke>, tracker: &Mutex<Tracker>) {
    let points = lock(tracker).commit_points();
    let mut tpl = TopicPartitionList::with_capacity(points.len());
    for (topic, partition, offset) in &points {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::debug!(error = %e, "could not store some offsets (partitions revoked?)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_is_the_oldest_unfinished_offset() {
        let mut t = Tracker::default();
        for o in 10..15 {
            t.begin("t", 0, o);
        }
        t.end("t", 0, 10);
        t.end("t", 0, 12);
        t.end("t", 0, 14);
        assert_eq!(t.commit_points(), vec![("t".to_string(), 0, 11)]);
        t.end("t", 0, 11);
        assert_eq!(t.commit_points(), vec![("t".to_string(), 0, 13)]);
        t.end("t", 0, 13);
        assert_eq!(t.commit_points(), vec![("t".to_string(), 0, 15)]);
        assert_eq!(t.in_flight(), 0);
    }
}
