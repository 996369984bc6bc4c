//! What an attempt leaves behind: its line in the delivery log
//! (`wa.deliveries.attempts`), the delivery's next step (done, again in place, a task on a
//! delay topic, or `wa.deliveries.dlq`), and producing all of it before the input record
//! counts as done.
//!
//! Skipped attempts (the breaker is open, the delivery was deferred) do not use up the
//! delivery's attempts: the endpoint's health, or the fan-out's load, is not the event's
//! fault. A skip waits as long as the attempt would have, so a dead endpoint's backlog
//! does not churn; a deferral comes back after the shortest delay.

use std::time::Duration;

use rdkafka::error::KafkaError;
use serde::Serialize;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::failure::{classify, Class};
use switchboard_runtime::kafka::{produce_all, OutRecord, Topics};
use switchboard_runtime::producer::ProducerSlot;
use switchboard_runtime::{now_ms, CancellationToken};
use switchboard_schemas::{Codec, DeadLetter, DeliveryAttempt, DeliveryAttempts};

use super::deliver::Kind;

/// What a delivery does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered, aborted, or the endpoint is gone or disabled: nothing more.
    Done,
    /// A strict endpoint's event: try again in place after `delay`, as attempt `attempt`.
    InPlace { delay: Duration, attempt: i32 },
    /// A task on the delay topic of `delay`, as attempt `attempt`.
    Later { delay: Duration, attempt: i32 },
    /// Attempts used up: the task goes to `wa.deliveries.dlq`.
    Exhausted,
}

impl Next {
    /// Is this the delivery's last word (the log's `is_final`)?
    pub fn is_final(self) -> bool {
        matches!(self, Next::Done | Next::Exhausted)
    }
}

/// The next step after attempt `attempt` (1-based) ended as `kind`, by the retry
/// `schedule` (one delay per retry); `in_place` for an event a strict endpoint holds.
pub fn next_step(kind: Kind, attempt: i32, schedule: &[Duration], in_place: bool) -> Next {
    if !kind.retryable() {
        return Next::Done;
    }
    let skipped = matches!(kind, Kind::CircuitOpen | Kind::Deferred);
    if !skipped && attempt as usize > schedule.len() {
        return Next::Exhausted;
    }
    let attempt_delay = schedule
        .get((attempt.max(1) as usize - 1).min(schedule.len().saturating_sub(1)))
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let next = if skipped { attempt } else { attempt + 1 };
    if in_place {
        return Next::InPlace {
            delay: attempt_delay,
            attempt: next,
        };
    }
    let delay = if kind == Kind::Deferred {
        schedule
            .iter()
            .min()
            .copied()
            .unwrap_or(Duration::from_secs(5))
    } else {
        attempt_delay
    };
    Next::Later {
        delay,
        attempt: next,
    }
}

/// What settling deliveries asks to produce.
#[derive(Default)]
pub struct Settled {
    pub attempts: Vec<DeliveryAttempt>,
    pub records: Vec<OutRecord>,
}

impl Settled {
    pub fn merge(&mut self, other: Settled) {
        self.attempts.extend(other.attempts);
        self.records.extend(other.records);
    }
}

/// Encodes and produces what deliveries settled, waiting out the registry and the broker.
pub struct Recorder {
    pub codec: Codec,
    pub producer: ProducerSlot,
    pub topics: Topics,
    /// `wa.fanout.dlq`, also for output the broker refuses for good.
    pub dead: DeadLetters,
    /// The broker's message limit: attempt records stay well under it.
    pub message_max_bytes: usize,
    pub shutdown: CancellationToken,
}

impl Recorder {
    /// One record for `topic`, encoded; `None` if shutdown came first.
    pub async fn record<T: Serialize>(
        &self,
        topic: &str,
        key: &str,
        schema: &str,
        v: &T,
    ) -> Option<OutRecord> {
        let encode = || self.codec.encode(topic, schema, v);
        let payload = switchboard_runtime::retry::until(
            "encoding a delivery record (registry?)",
            &self.shutdown,
            Duration::from_millis(500),
            |_| true,
            encode,
        )
        .await
        .ok()??;
        Some(OutRecord {
            topic: topic.to_string(),
            key: key.to_string(),
            payload,
            headers: vec![],
        })
    }

    /// Produce what deliveries settled: their attempts as log records, and the rest.
    /// Attempts go in as few records as fit the message limit (an event with hundreds of
    /// endpoints, or attempts that carry its body, makes more than one). `false` if
    /// shutdown came first (the input stays unfinished and is delivered again).
    pub async fn flush(&self, mut s: Settled) -> bool {
        let limit = self.message_max_bytes * 3 / 4;
        for chunk in by_size(std::mem::take(&mut s.attempts), limit, attempt_size) {
            let key = chunk[0].event_id.clone();
            let batch = DeliveryAttempts { attempts: chunk };
            let schema = switchboard_schemas::DELIVERY_ATTEMPTS_SCHEMA;
            s.records.extend(
                self.record(&self.topics.deliveries_attempts, &key, schema, &batch)
                    .await,
            );
        }
        self.produce(s.records).await
    }

    /// Produce until the broker acks; `false` if shutdown came first.
    pub async fn produce(&self, records: Vec<OutRecord>) -> bool {
        if records.is_empty() {
            return !self.shutdown.is_cancelled();
        }
        let sent = switchboard_runtime::retry::until(
            "producing delivery records",
            &self.shutdown,
            Duration::from_millis(500),
            |e: &KafkaError| classify(&anyhow::Error::from(e.clone())) == Class::Transient,
            || produce_all(&self.producer, &records),
        )
        .await;
        match sent {
            Ok(done) => done.is_some(),
            // Refused for good (a record over the broker's limit): one by one.
            Err(_) => self.produce_each(records).await,
        }
    }

    /// The broker refused a batch for good: produce the records one by one, and
    /// dead-letter each one it refuses, with its destination and size, so that the stream
    /// goes on and an operator sees what did not go out.
    async fn produce_each(&self, records: Vec<OutRecord>) -> bool {
        for r in records {
            let sent = switchboard_runtime::retry::until(
                "producing a delivery record",
                &self.shutdown,
                Duration::from_millis(500),
                |e: &KafkaError| classify(&anyhow::Error::from(e.clone())) == Class::Transient,
                || produce_all(&self.producer, std::slice::from_ref(&r)),
            )
            .await;
            let refused = match sent {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(e) => e,
            };
            let size = r.payload.len();
            let keep = size.min(self.dead.max_payload());
            let dl = DeadLetter {
                source_topic: r.topic.clone(),
                source_partition: -1,
                source_offset: -1,
                reason: "unproducible".into(),
                detail: format!(
                    "the broker refused a {size}-byte record for {}: {refused}",
                    r.topic
                ),
                failed_at_ms: now_ms(),
                key: Some(r.key.clone()),
                payload: r.payload[..keep].to_vec(),
                stage: self.dead.stage.to_string(),
                source_timestamp_ms: Some(now_ms()),
                payload_truncated: keep < size,
                payload_size: size as i64,
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            };
            tracing::error!(topic = %r.topic, size, error = %refused, "record refused by the broker; dead-lettered");
            let written = switchboard_runtime::retry::until(
                "dead-lettering",
                &self.shutdown,
                Duration::from_millis(500),
                |_| true,
                || self.dead.write(std::slice::from_ref(&dl)),
            )
            .await;
            if !matches!(written, Ok(Some(()))) {
                return false;
            }
        }
        true
    }
}

/// About the bytes `a` takes in a record (Avro: its strings plus a little framing).
fn attempt_size(a: &DeliveryAttempt) -> usize {
    64 + a.attempt_id.len()
        + a.endpoint_id.len()
        + a.tenant_id.len()
        + a.event_id.len()
        + a.event_type.len()
        + a.trigger.len()
        + a.outcome.len()
        + a.error.as_ref().map_or(0, String::len)
        + a.response_snippet.as_ref().map_or(0, String::len)
        + a.body.len()
}

/// `items` in order, cut into runs whose sizes add up to at most `limit` (an item larger
/// than `limit` alone makes a run).
fn by_size<T>(items: Vec<T>, limit: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut used = 0;
    for item in items {
        let n = size(&item);
        match out.last_mut() {
            Some(run) if used + n <= limit => run.push(item),
            _ => {
                out.push(vec![item]);
                used = 0;
            }
        }
        used += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stay_under_the_limit_in_order() {
        let runs = by_size(vec![40, 40, 40, 10, 120, 5], 100, |n| *n);
        assert_eq!(runs, vec![vec![40, 40], vec![40, 10], vec![120], vec![5]]);
        assert!(by_size(Vec::<usize>::new(), 100, |n| *n).is_empty());
    }

    #[test]
    fn next_steps_follow_the_schedule_and_skips_cost_nothing() {
        let s = [Duration::from_secs(5), Duration::from_secs(60)];
        let later = |delay: u64, attempt| Next::Later {
            delay: Duration::from_secs(delay),
            attempt,
        };
        assert_eq!(next_step(Kind::Delivered, 1, &s, false), Next::Done);
        assert_eq!(next_step(Kind::Aborted, 2, &s, true), Next::Done);
        assert_eq!(next_step(Kind::Failed, 1, &s, false), later(5, 2));
        assert_eq!(next_step(Kind::Failed, 2, &s, false), later(60, 3));
        // Two retries in the schedule: the third attempt is the last.
        assert_eq!(next_step(Kind::Failed, 3, &s, false), Next::Exhausted);
        assert!(Next::Exhausted.is_final() && !later(5, 2).is_final());
        // A skip keeps its attempt number and waits as long as the attempt would have.
        assert_eq!(next_step(Kind::CircuitOpen, 2, &s, false), later(60, 2));
        assert_eq!(next_step(Kind::CircuitOpen, 9, &s, false), later(60, 9));
        // A deferral comes back after the shortest delay.
        assert_eq!(next_step(Kind::Deferred, 2, &s, false), later(5, 2));
        // Strict: in place, by the same schedule.
        assert_eq!(
            next_step(Kind::Failed, 1, &s, true),
            Next::InPlace {
                delay: Duration::from_secs(5),
                attempt: 2
            }
        );
        assert_eq!(next_step(Kind::Failed, 3, &s, true), Next::Exhausted);
    }
}
