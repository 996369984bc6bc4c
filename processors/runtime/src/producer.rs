//! A Kafka producer that is replaced when it stops working.
//!
//! librdkafka's idempotent producer can end in a state it never leaves: a fatal error
//! (seen with a broker answering `OutOfOrderSequenceNumber`), or waiting forever for a
//! producer id after messages timed out (seen with a broker that lost its state while
//! down). Every later produce then fails, and a processor retrying its batch would stall
//! until someone restarts it. So when deliveries have failed for longer than
//! `producer_rebuild_after`, or the client reports a fatal error, the producer is replaced
//! by a fresh one.
//!
//! Nothing acknowledged is at stake: callers only act on records the broker acknowledged
//! (a 200 to a BSP, an offset commit), and retry the rest, on the new producer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};

use crate::config::KafkaConfig;

/// A cheap, cloneable handle on the current producer.
#[derive(Clone)]
pub struct ProducerSlot(Arc<Inner>);

struct Inner {
    kafka: KafkaConfig,
    delivery_timeout: Duration,
    current: RwLock<FutureProducer>,
    /// Set while deliveries fail, so a success only takes the lock after a failure.
    failing: AtomicBool,
    failing_since: Mutex<Option<Instant>>,
}

impl ProducerSlot {
    /// An idempotent, acks=all producer (see [`crate::kafka::producer`]).
    pub fn new(kafka: &KafkaConfig, delivery_timeout: Duration) -> anyhow::Result<Self> {
        let p = crate::kafka::producer(kafka, delivery_timeout)?;
        Ok(Self(Arc::new(Inner {
            kafka: kafka.clone(),
            delivery_timeout,
            current: RwLock::new(p),
            failing: AtomicBool::new(false),
            failing_since: Mutex::new(None),
        })))
    }

    /// The producer to use now (a cheap handle). Take a new one for every attempt.
    pub fn get(&self) -> FutureProducer {
        match self.0.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Record the outcome of a delivery; replace the producer if it reports a fatal error
    /// or has been failing for longer than `producer_rebuild_after`.
    pub fn report(&self, ok: bool) {
        if ok && !self.0.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut since = match self.0.failing_since.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ok {
            *since = None;
            self.0.failing.store(false, Ordering::Relaxed);
            return;
        }
        self.0.failing.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let started = *since.get_or_insert(now);
        let fatal = self
            .get()
            .client()
            .fatal_error()
            .map(|(code, msg)| format!("{code}: {msg}"));
        if fatal.is_none() && now.duration_since(started) < self.0.kafka.producer_rebuild_after {
            return;
        }
        match crate::kafka::producer(&self.0.kafka, self.0.delivery_timeout) {
            Ok(fresh) => {
                tracing::warn!(
                    fatal = ?fatal,
                    failing_for_ms = now.duration_since(started).as_millis() as u64,
                    "replacing the Kafka producer"
                );
                crate::telemetry::producer_replaced();
                let old = match self.0.current.write() {
                    Ok(mut g) => std::mem::replace(&mut *g, fresh),
                    Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
                };
                *since = Some(now);
                // Dropping a producer waits for its queue; do it off the caller's thread.
                std::thread::spawn(move || {
                    old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                    drop(old);
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot create a replacement Kafka producer"),
        }
    }
}
