//! The gateway's producer, replaced when it stops working.
//!
//! librdkafka's idempotent producer can end in a state it never leaves: a fatal error,
//! or (seen with a broker that lost its state while down) waiting forever for a producer
//! id after messages timed out. A gateway must answer 503 during an outage and 200 again
//! after it, so when deliveries have failed for longer than `rebuild_after` (or the client
//! reports a fatal error) the producer is replaced by a fresh one. Nothing acknowledged
//! is at stake: a BSP only got 200 for records the broker acknowledged.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::producer::{FutureProducer, Producer};
use switchboard_runtime::config::KafkaConfig;

pub struct ProducerSlot {
    kafka: KafkaConfig,
    delivery_timeout: Duration,
    rebuild_after: Duration,
    current: RwLock<FutureProducer>,
    failing_since: Mutex<Option<Instant>>,
}

impl ProducerSlot {
    pub fn new(
        kafka: KafkaConfig,
        delivery_timeout: Duration,
        rebuild_after: Duration,
    ) -> anyhow::Result<Self> {
        let p = switchboard_runtime::kafka::producer(&kafka, delivery_timeout)?;
        Ok(Self {
            kafka,
            delivery_timeout,
            rebuild_after,
            current: RwLock::new(p),
            failing_since: Mutex::new(None),
        })
    }

    /// The producer to use now (a cheap handle).
    pub fn get(&self) -> FutureProducer {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Record the outcome of a delivery; replace the producer if it has been failing too
    /// long or reports a fatal error.
    pub fn report(&self, ok: bool) {
        let mut since = match self.failing_since.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ok {
            *since = None;
            return;
        }
        let now = Instant::now();
        let started = *since.get_or_insert(now);
        let fatal = fatal_error(self.get().client());
        if fatal.is_none() && now.duration_since(started) < self.rebuild_after {
            return;
        }
        match switchboard_runtime::kafka::producer(&self.kafka, self.delivery_timeout) {
            Ok(fresh) => {
                tracing::warn!(fatal = ?fatal, failing_for_ms = now.duration_since(started).as_millis() as u64, "replacing the Kafka producer");
                let old = match self.current.write() {
                    Ok(mut g) => std::mem::replace(&mut *g, fresh),
                    Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
                };
                *since = Some(now);
                // Dropping a producer waits for its queue; do it off the request path.
                std::thread::spawn(move || {
                    old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                    drop(old);
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot create a replacement Kafka producer"),
        }
    }
}

fn fatal_error<C: rdkafka::ClientContext>(client: &Client<C>) -> Option<String> {
    client
        .fatal_error()
        .map(|(code, msg)| format!("{code}: {msg}"))
}
