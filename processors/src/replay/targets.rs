//! Replay targets: each is the live stage's own batch step (or, for the router and the
//! fan-out, the records that stage consumes), so a replay writes exactly what the live
//! pipeline would have written, and the live stage's idempotence makes a repeat harmless.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_runtime::producer::ProducerSlot;
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::{Codec, DeliveryTask, Event, DELIVERY_TASK_SCHEMA};
use switchboard_sinks::ch::{ChSink, ChWriter};
use switchboard_sinks::pg::{PgSink, PgWriter};

use super::plan::Plan;
use super::spec::{ReplaySpec, Target};
use super::Env;
use crate::dedupe::DedupeStore;
use crate::normalize::Normalizer;

/// A target's batch step and the dead-letter topic of the stage it stands for.
pub struct Built {
    pub handler: AnyTarget,
    pub dead: DeadLetters,
    /// Stopped with the replay (followers of `wa.config`).
    pub stop: switchboard_runtime::CancellationToken,
}

pub enum AnyTarget {
    Postgres(PgSink),
    Clickhouse(ChSink),
    Normalizer(Box<Normalizer>),
    Republish(Republish),
    Fanout(FanoutTasks),
    Copy(Copy),
}

impl BatchHandler for AnyTarget {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        match self {
            AnyTarget::Postgres(h) => h.handle(batch).await,
            AnyTarget::Clickhouse(h) => h.handle(batch).await,
            AnyTarget::Normalizer(h) => h.handle(batch).await,
            AnyTarget::Republish(h) => h.handle(batch).await,
            AnyTarget::Fanout(h) => h.handle(batch).await,
            AnyTarget::Copy(h) => h.handle(batch).await,
        }
    }
}

/// Make the target of `spec`, ready to take batches (database migrated, configuration
/// read where the target needs it).
pub async fn build(env: &Env, spec: &ReplaySpec, plan: &Plan) -> anyhow::Result<Built> {
    let t = &env.topics;
    let stop = switchboard_runtime::CancellationToken::new();
    let dead = |stage: &'static str, topic: &str| {
        DeadLetters::new(
            stage,
            topic,
            env.producer.clone(),
            env.codec.clone(),
            &env.cfg.kafka,
        )
    };
    let config = || async {
        let cache = ConfigCache::start(&env.cfg.kafka, &t.config, env.codec.clone(), stop.clone())?;
        cache.wait_ready(Duration::from_secs(60)).await?;
        anyhow::Ok(cache)
    };
    let (handler, dead) = match &spec.target {
        Target::Postgres => {
            let writer = PgWriter::new(env.pool.clone());
            writer.migrate().await.context("migrating PostgreSQL")?;
            (
                AnyTarget::Postgres(PgSink {
                    codec: env.codec.clone(),
                    writer,
                }),
                dead("pg-sink", &t.pg_sink_dlq),
            )
        }
        Target::Clickhouse { database } => {
            let db = database.as_deref().unwrap_or(&env.cfg.clickhouse_database);
            let writer = ChWriter::new(&env.cfg.clickhouse_url, db, env.cfg.clickhouse_validation);
            writer
                .migrate()
                .await
                .with_context(|| format!("creating ClickHouse database {db}"))?;
            (
                AnyTarget::Clickhouse(ChSink {
                    codec: env.codec.clone(),
                    writer: Arc::new(writer),
                    attempts_topic: t.deliveries_attempts.clone(),
                }),
                dead("ch-sink", &t.ch_sink_dlq),
            )
        }
        Target::Normalizer { bypass_dedupe } => {
            let dedupe = DedupeStore::new(env.pool.clone());
            dedupe
                .migrate()
                .await
                .context("migrating the dedupe store")?;
            crate::db::migrate(&env.pool)
                .await
                .context("migrating the conversations")?;
            let d = dead("normalizer", &t.webhooks_dlq);
            (
                AnyTarget::Normalizer(Box::new(Normalizer {
                    codec: env.codec.clone(),
                    producer: env.producer.clone(),
                    topics: t.clone(),
                    dedupe,
                    conversations: crate::db::conversations::Conversations::new(env.pool.clone()),
                    suppressions: crate::db::suppressions::Suppressions::new(env.pool.clone()),
                    config: config().await?,
                    dead: d.clone(),
                    window: env.cfg.time_window(),
                    deferral: Default::default(),
                    bypass_dedupe: *bypass_dedupe,
                })),
                d,
            )
        }
        Target::Router => (
            AnyTarget::Republish(Republish {
                producer: env.producer.clone(),
                topic: t.send_requests.clone(),
            }),
            dead("router", &t.send_dlq),
        ),
        Target::Fanout {
            endpoint_id,
            tenant_id,
        } => {
            let schedule = crate::fanout::parse_schedule(&env.cfg.retry_schedule)?;
            let shortest = schedule
                .iter()
                .min()
                .copied()
                .context("retry_schedule: at least one delay")?;
            (
                AnyTarget::Fanout(FanoutTasks {
                    codec: env.codec.clone(),
                    producer: env.producer.clone(),
                    topic: t.retry_topic(shortest),
                    cache: config().await?,
                    endpoint_id: endpoint_id.clone(),
                    tenant_id: tenant_id.clone(),
                }),
                dead("fanout", &t.fanout_dlq),
            )
        }
        Target::Topic { topic } => {
            let to = format!("{}{topic}", env.cfg.kafka.topic_prefix);
            // Made like the source if missing; records keep their partition where the
            // target has it (else they go by key).
            let need = plan
                .partitions
                .iter()
                .map(|p| p.partition + 1)
                .max()
                .unwrap_or(1);
            switchboard_runtime::kafka::ensure_topics(
                &env.cfg.kafka,
                &[switchboard_runtime::kafka::TopicSpec {
                    name: to.clone(),
                    partitions: need,
                    compacted: false,
                }],
            )
            .await?;
            let have = partitions_of(env, &to).await?;
            (
                AnyTarget::Copy(Copy {
                    producer: env.producer.clone(),
                    topic: to,
                    keep_partition: have >= need,
                }),
                dead("replay", &t.replay_dlq),
            )
        }
    };
    Ok(Built {
        handler,
        dead,
        stop,
    })
}

/// Records back onto a live stage's input topic, key and value as they were.
pub struct Republish {
    producer: ProducerSlot,
    topic: String,
}

impl BatchHandler for Republish {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let out: Vec<OutRecord> = batch
            .iter()
            .map(|m| OutRecord {
                topic: self.topic.clone(),
                key: m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: vec![(
                    "replayed-from",
                    format!("{}/{}@{}", m.topic(), m.partition(), m.offset()),
                )],
            })
            .collect();
        produce_all(&self.producer, &out).await?;
        Ok(())
    }
}

/// Delivery tasks for the live fan-out's shortest retry topic: from events (one per
/// matching endpoint, the event's own id, so receivers see the same `webhook-id`) or
/// from dead-lettered tasks (their attempts start over).
pub struct FanoutTasks {
    codec: Codec,
    producer: ProducerSlot,
    topic: String,
    cache: ConfigCache,
    endpoint_id: Option<String>,
    tenant_id: Option<String>,
}

impl FanoutTasks {
    fn audience(&self, tenant: &str, endpoint: &str) -> bool {
        self.endpoint_id.as_deref().is_none_or(|e| e == endpoint)
            && self.tenant_id.as_deref().is_none_or(|t| t == tenant)
    }

    /// The tasks for one event.
    fn tasks_of(&self, ev: &Event) -> Vec<DeliveryTask> {
        let Some(tenant) = ev.tenant_id.as_deref() else {
            return vec![];
        };
        let (ty, body) = crate::fanout::payload::render(ev);
        let number = if ev.event_type.starts_with("message.") {
            ev.business_number.as_str()
        } else {
            ""
        };
        let now = switchboard_runtime::now_ms();
        self.cache
            .read()
            .endpoints_of(tenant)
            .filter(|e| self.audience(tenant, &e.id) && e.wants(&ty, number))
            .map(|e| DeliveryTask {
                event_id: ev.event_id.clone(),
                event_type: ty.clone(),
                tenant_id: tenant.to_string(),
                endpoint_id: e.id.clone(),
                conversation: String::new(),
                attempt: 1,
                not_before_ms: now,
                first_attempt_ms: now,
                trigger: "replay".into(),
                body: body.clone(),
                last_error: None,
                last_status: None,
            })
            .collect()
    }
}

impl BatchHandler for FanoutTasks {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for m in batch {
            let bytes = m.payload().unwrap_or_default();
            let ctx = || format!("decoding {}/{}@{}", m.topic(), m.partition(), m.offset());
            if super::source::is_task_topic(m.topic()) {
                let mut t: DeliveryTask = self.codec.decode(bytes).await.with_context(ctx)?;
                if self.audience(&t.tenant_id, &t.endpoint_id) {
                    let now = switchboard_runtime::now_ms();
                    t.attempt = 1;
                    t.not_before_ms = now;
                    t.first_attempt_ms = now;
                    t.trigger = "redrive".into();
                    tasks.push(t);
                }
            } else {
                let ev: Event = self.codec.decode(bytes).await.with_context(ctx)?;
                tasks.extend(self.tasks_of(&ev));
            }
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in &tasks {
            out.push(OutRecord {
                topic: self.topic.clone(),
                key: t.endpoint_id.clone(),
                payload: self
                    .codec
                    .encode(&self.topic, DELIVERY_TASK_SCHEMA, t)
                    .await?,
                headers: vec![],
            });
        }
        produce_all(&self.producer, &out).await?;
        Ok(())
    }
}

async fn partitions_of(env: &Env, topic: &str) -> anyhow::Result<i32> {
    use rdkafka::producer::Producer;
    let (p, t) = (env.producer.get(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let md = p
            .client()
            .fetch_metadata(Some(&t), Timeout::After(Duration::from_secs(10)))?;
        Ok(md
            .topics()
            .iter()
            .map(|t| t.partitions().len() as i32)
            .sum())
    })
    .await?
}

/// A copy onto another topic: same key, headers, timestamp and (where it has it) partition.
pub struct Copy {
    producer: ProducerSlot,
    topic: String,
    keep_partition: bool,
}

impl BatchHandler for Copy {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let producer = self.producer.get();
        let sends = batch.iter().map(|m| {
            let mut headers = OwnedHeaders::new();
            if let Some(h) = m.headers() {
                for h in h.iter() {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            let mut rec = FutureRecord::to(&self.topic)
                .payload(m.payload().unwrap_or_default())
                .headers(headers);
            if self.keep_partition {
                rec = rec.partition(m.partition());
            }
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                rec = rec.timestamp(ts);
            }
            producer.send(rec, Timeout::After(Duration::from_secs(30)))
        });
        let copied = futures::future::try_join_all(sends).await;
        self.producer.report(copied.is_ok());
        copied.map_err(|(e, _)| {
            anyhow::Error::new(e).context(format!("copying to {}", self.topic))
        })?;
        Ok(())
    }
}
