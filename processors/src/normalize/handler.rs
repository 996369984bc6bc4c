//! The batch step around [`normalize_record`]: decode, record conversations and
//! opt-outs, dedupe, produce, mark.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Instant;

use anyhow::Context;
use prometheus::{register_histogram, register_int_counter_vec, Histogram, IntCounterVec};
use rdkafka::message::{Message, OwnedMessage};
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::kafka::{produce_all, OutRecord, Topics};
use switchboard_runtime::producer::ProducerSlot;
use switchboard_runtime::stream::BatchHandler;
use switchboard_runtime::telemetry::LATENCY_BUCKETS;
use switchboard_schemas::{Codec, RawWebhook, EVENT_SCHEMA};

use super::step::{normalize_record, TimeWindow};
use crate::db::conversations::Conversations;
use crate::db::suppressions::Suppressions;
use crate::dedupe::DedupeStore;

struct Metrics {
    events: IntCounterVec,
    dedupe_hits: IntCounterVec,
    dead_letters: IntCounterVec,
    dedupe_seconds: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    events: register_int_counter_vec!(
        "switchboard_normalizer_events_total",
        "Canonical events produced",
        &["bsp", "event_type"]
    )
    .expect("registers once"),
    dedupe_hits: register_int_counter_vec!(
        "switchboard_normalizer_dedupe_hits_total",
        "Events dropped as duplicates",
        &["where"]
    )
    .expect("registers once"),
    dead_letters: register_int_counter_vec!(
        "switchboard_normalizer_dead_letters_total",
        "Raw records sent to the DLQ",
        &["reason"]
    )
    .expect("registers once"),
    dedupe_seconds: register_histogram!(
        "switchboard_normalizer_dedupe_seconds",
        "Dedupe look-up + mark per batch",
        LATENCY_BUCKETS.to_vec()
    )
    .expect("registers once"),
});

/// Meta's 131049: "not delivered to maintain healthy ecosystem engagement" (the customer
/// received their share of marketing messages for now). Not a failure of the send: it
/// is put back and sent again later (`db::outbox::Outbox::defer_capped`).
pub const MARKETING_LIMIT: &str = "131049";

#[derive(Debug, Clone, Copy)]
pub struct Deferral {
    pub after: std::time::Duration,
    pub max: u32,
}

impl Default for Deferral {
    /// Meta's limit counts over a day or so; three tries at most.
    fn default() -> Self {
        Deferral {
            after: std::time::Duration::from_secs(24 * 3600),
            max: 3,
        }
    }
}

pub struct Normalizer {
    pub codec: Codec,
    pub producer: ProducerSlot,
    pub topics: Topics,
    pub dedupe: DedupeStore,
    /// The customer-service windows and the opt-outs, written before the events go out.
    pub conversations: Conversations,
    pub suppressions: Suppressions,
    /// Business numbers → tenants (from `wa.config`).
    pub config: switchboard_runtime::config_cache::ConfigCache,
    /// `wa.webhooks.dlq`: raw webhooks (or parts of them) that yield no event.
    pub dead: DeadLetters,
    /// Event times accepted, relative to the gateway's receive time.
    pub window: TimeWindow,
    /// When and how often sends held back by a customer's marketing limit go again.
    pub deferral: Deferral,
    /// Neither read nor write the dedupe store (a replay's `--bypass-dedupe`): every
    /// event goes out again, to the sinks (harmless) and to client endpoints (not).
    pub bypass_dedupe: bool,
}

impl BatchHandler for Normalizer {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let mut events = Vec::new();
        let mut dead = Vec::new();
        for m in batch {
            let raw: RawWebhook = match self.codec.decode(m.payload().unwrap_or_default()).await {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "decoding {}/{}@{}",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    )))
                }
                Err(e) => {
                    dead.push(self.dead.letter(m, "undecodable", &e.to_string()));
                    continue;
                }
            };
            let outcome = normalize_record(&raw, &self.window);
            if let Some((reason, detail)) = outcome.dead_letter {
                dead.push(self.dead.letter(m, &reason, &detail));
            }
            events.extend(outcome.events);
        }
        {
            // Stamp events of known business numbers with their tenant.
            let ix = self.config.read();
            for e in events.iter_mut().filter(|e| e.tenant_id.is_none()) {
                e.tenant_id = ix
                    .tenant_of(&e.bsp, e.business_account_id.as_deref(), &e.business_number)
                    .map(str::to_string);
            }
        }

        // Within the batch first (a BSP often repeats a webhook within seconds), then
        // against the store.
        let mut in_batch = HashSet::new();
        let before = events.len();
        events.retain(|e| in_batch.insert(e.event_id.clone()));
        METRICS
            .dedupe_hits
            .with_label_values(&["batch"])
            .inc_by((before - events.len()) as u64);
        // Before the dedupe filter: the merge is idempotent, and a replay of raw webhooks
        // the store has seen still rebuilds the conversations they tell of.
        self.conversations
            .record(&events)
            .await
            .context("recording conversations")?;
        self.suppressions
            .record(&events)
            .await
            .context("recording opt-outs")?;
        let capped: Vec<(String, String)> = events
            .iter()
            .filter(|e| {
                e.error_code.as_deref() == Some(MARKETING_LIMIT)
                    && e.status.as_deref() == Some("failed")
            })
            .map(|e| (e.bsp.clone(), e.wamid.clone()))
            .collect();
        if !capped.is_empty() {
            let deferred = crate::db::outbox::Outbox::defer_capped(
                self.dedupe.pool(),
                &capped,
                self.deferral.after,
                self.deferral.max as i32,
            )
            .await
            .context("deferring sends held back by a marketing limit")?;
            if !deferred.is_empty() {
                tracing::info!(
                    n = deferred.len(),
                    "sends deferred for the customers' marketing limit"
                );
            }
        }
        let started = Instant::now();
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let seen = if self.bypass_dedupe {
            Default::default()
        } else {
            self.dedupe.seen(&ids).await?
        };
        let mut dedupe_time = started.elapsed();
        METRICS
            .dedupe_hits
            .with_label_values(&["store"])
            .inc_by(seen.len() as u64);
        events.retain(|e| !seen.contains(&e.event_id));

        let mut out = Vec::with_capacity(events.len() + dead.len());
        for e in &events {
            let payload = self
                .codec
                .encode(&self.topics.events, EVENT_SCHEMA, e)
                .await?;
            out.push(OutRecord {
                topic: self.topics.events.clone(),
                key: e.conversation_key(),
                payload,
                headers: vec![("request-id", e.request_id.clone())],
            });
        }
        for d in &dead {
            out.push(self.dead.record(d).await?);
        }
        let n = out.len();
        produce_all(&self.producer, &out)
            .await
            .with_context(|| format!("producing {n} records"))?;

        let marked: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let started = Instant::now();
        if !self.bypass_dedupe {
            self.dedupe.mark(&marked).await?;
        }
        dedupe_time += started.elapsed();
        METRICS.dedupe_seconds.observe(dedupe_time.as_secs_f64());

        for e in &events {
            METRICS
                .events
                .with_label_values(&[e.bsp.as_str(), e.event_type.as_str()])
                .inc();
        }
        for d in &dead {
            self.dead.written(d);
            METRICS
                .dead_letters
                .with_label_values(&[d.reason.as_str()])
                .inc();
        }
        Ok(())
    }
}
