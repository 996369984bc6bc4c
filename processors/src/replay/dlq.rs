//! Dead letters for operators: list, show, redrive, purge.
//!
//! Each stage has its dead-letter topic (the README's topic table); the exhausted
//! deliveries of the fan-out (`wa.deliveries.dlq`, delivery tasks) are listed with them
//! as stage `deliveries`. A redrive is a replay job whose source is the stage's topic and
//! whose target is the stage itself; the letters it handed over are then marked
//! `redriven` (with the job id), and a purge marks letters `purged` (a Kafka record
//! cannot be deleted one by one; retention removes it in time). Marks live in
//! PostgreSQL (`dead_letter_marks`, owned by [`super::jobs`]).

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use serde::Serialize;
use switchboard_schemas::{DeadLetter, DeliveryTask};

use super::plan::plan;
use super::source::Reader;
use super::spec::{Filters, Range, Target};
use super::{Env, ReplayRequest};

/// The stages with dead letters, their topics (unprefixed) and redrive targets.
pub const STAGES: &[(&str, &str)] = &[
    ("normalizer", "wa.webhooks.dlq"),
    ("router", "wa.send.dlq"),
    ("pg-sink", "wa.pg-sink.dlq"),
    ("ch-sink", "wa.ch-sink.dlq"),
    ("fanout", "wa.fanout.dlq"),
    ("deliveries", "wa.deliveries.dlq"),
    ("replay", "wa.replay.dlq"),
    ("media", "wa.media.dlq"),
];

pub fn topic_of(stage: &str) -> anyhow::Result<&'static str> {
    STAGES
        .iter()
        .find(|(s, _)| *s == stage)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown stage {stage:?}: one of {}",
                STAGES
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Where a stage's letters go back to.
pub fn redrive_target(stage: &str) -> anyhow::Result<Target> {
    Ok(match stage {
        "normalizer" => Target::Normalizer { bypass_dedupe: false },
        "router" => Target::Router,
        "pg-sink" => Target::Postgres,
        "ch-sink" => Target::Clickhouse { database: None },
        "fanout" | "deliveries" => Target::Fanout {
            endpoint_id: None,
            tenant_id: None,
        },
        other => anyhow::bail!("dead letters of stage {other} have no stage to go back to; replay them into a topic instead"),
    })
}

/// One dead letter as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub stage: String,
    pub partition: i32,
    pub offset: i64,
    pub failed_at_ms: i64,
    pub reason: String,
    pub detail: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub payload_size: i64,
    pub payload_truncated: bool,
    /// `redriven` or `purged`, when an operator did either.
    pub mark: Option<String>,
    pub job_id: Option<String>,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Which letters: by reason and time of failure (`[since, until)`, Unix ms).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub reasons: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Include purged letters.
    pub all: bool,
    /// At most this many (the oldest first); 0: no limit.
    pub limit: usize,
}

impl Selection {
    fn range(&self) -> Range {
        match (self.since_ms, self.until_ms) {
            (None, None) => Range::Offsets {
                from: None,
                to: None,
            },
            (f, t) => Range::Time {
                from_ms: f.unwrap_or(0),
                to_ms: t.unwrap_or(i64::MAX / 2),
            },
        }
    }
}

/// The letters of `stage` that `sel` selects.
pub async fn list(env: &Env, stage: &str, sel: &Selection) -> anyhow::Result<Vec<Letter>> {
    let topic = format!("{}{}", env.cfg.kafka.topic_prefix, topic_of(stage)?);
    let p = match plan(&env.cfg.kafka, &topic, &sel.range(), &BTreeSet::new()).await {
        Ok(p) => p,
        // A stage that never dead-lettered anything may not have its topic yet.
        Err(super::PlanError::NoTopic(_)) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let ranges: Vec<(i32, i64, i64)> = p
        .partitions
        .iter()
        .map(|x| (x.partition, x.start, x.end))
        .collect();
    let marks = env.jobs().dead_letter_marks(&topic).await?;
    let mut reader = Reader::open(
        &env.cfg.kafka,
        &format!("dlq-{}", uuid::Uuid::new_v4().simple()),
        &topic,
        &ranges,
    )?;
    let mut out = Vec::new();
    loop {
        let batch = reader.next_batch(5000, Duration::from_millis(20)).await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let mut l = decode(env, stage, &m).await?;
            if let Some((state, job)) = marks.get(&(l.partition, l.offset)) {
                l.mark = Some(state.clone());
                l.job_id = job.clone();
            }
            if !sel.reasons.is_empty() && !sel.reasons.contains(&l.reason) {
                continue;
            }
            if !sel.all && l.mark.as_deref() == Some("purged") {
                continue;
            }
            out.push(l);
            if sel.limit > 0 && out.len() >= sel.limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

async fn decode(
    env: &Env,
    stage: &str,
    m: &rdkafka::message::OwnedMessage,
) -> anyhow::Result<Letter> {
    let bytes = m.payload().unwrap_or_default();
    if stage == "deliveries" {
        let t: DeliveryTask = env.codec.decode(bytes).await?;
        return Ok(Letter {
            stage: stage.into(),
            partition: m.partition(),
            offset: m.offset(),
            failed_at_ms: m.timestamp().to_millis().unwrap_or(0),
            reason: "exhausted".into(),
            detail: format!(
                "endpoint {} event {} after {} attempts: {}",
                t.endpoint_id,
                t.event_id,
                t.attempt,
                t.last_error.clone().unwrap_or_default()
            ),
            source_topic: String::new(),
            source_partition: -1,
            source_offset: -1,
            payload_size: bytes.len() as i64,
            payload_truncated: false,
            mark: None,
            job_id: None,
            payload: t.body.into_bytes(),
        });
    }
    let d: DeadLetter = env.codec.decode(bytes).await?;
    Ok(Letter {
        stage: if d.stage.is_empty() {
            stage.into()
        } else {
            d.stage
        },
        partition: m.partition(),
        offset: m.offset(),
        failed_at_ms: d.failed_at_ms,
        reason: d.reason,
        detail: d.detail,
        source_topic: d.source_topic,
        source_partition: d.source_partition,
        source_offset: d.source_offset,
        payload_size: d.payload_size.max(d.payload.len() as i64),
        payload_truncated: d.payload_truncated,
        mark: None,
        job_id: None,
        payload: d.payload,
    })
}

/// One letter, by its position on the stage's topic.
pub async fn show(
    env: &Env,
    stage: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Option<Letter>> {
    let topic = format!("{}{}", env.cfg.kafka.topic_prefix, topic_of(stage)?);
    let Some(bytes) = super::source::fetch_one(&env.cfg.kafka, &topic, partition, offset).await?
    else {
        return Ok(None);
    };
    let m = rdkafka::message::OwnedMessage::new(
        Some(bytes),
        None,
        topic.clone(),
        rdkafka::Timestamp::NotAvailable,
        partition,
        offset,
        None,
    );
    let mut l = decode(env, stage, &m).await?;
    if l.payload_truncated {
        if let Some(p) = super::source::fetch_one(
            &env.cfg.kafka,
            &l.source_topic,
            l.source_partition,
            l.source_offset,
        )
        .await?
        {
            l.payload = p;
        }
    }
    if let Some((state, job)) = env
        .jobs()
        .dead_letter_marks(&topic)
        .await?
        .get(&(partition, offset))
    {
        l.mark = Some(state.clone());
        l.job_id = job.clone();
    }
    Ok(Some(l))
}

/// The payload of a letter as text for people: the raw webhook's body, or the decoded
/// record as JSON.
pub async fn describe_payload(env: &Env, l: &Letter) -> String {
    use switchboard_schemas::{Event, RawWebhook, SendRequest};
    if l.stage == "deliveries" {
        return String::from_utf8_lossy(&l.payload).into_owned();
    }
    if let Ok(r) = env.codec.decode::<RawWebhook>(&l.payload).await {
        return format!(
            "raw webhook from {} (request {}, received {}):\n{}",
            r.bsp,
            r.request_id,
            super::ms_to_rfc3339(r.received_at_ms),
            String::from_utf8_lossy(&r.body)
        );
    }
    if let Ok(e) = env.codec.decode::<Event>(&l.payload).await {
        return serde_json::to_string_pretty(&e).unwrap_or_default();
    }
    if let Ok(s) = env.codec.decode::<SendRequest>(&l.payload).await {
        return serde_json::to_string_pretty(&s).unwrap_or_default();
    }
    format!(
        "{} bytes, not a Switchboard record: {:?}",
        l.payload.len(),
        String::from_utf8_lossy(&l.payload)
    )
}

/// The replay request that redrives `stage`'s letters selected by `sel`.
pub fn redrive_request(stage: &str, sel: &Selection) -> anyhow::Result<ReplayRequest> {
    let ms = |v: Option<i64>| v.map(super::ms_to_rfc3339);
    let timed = sel.since_ms.is_some() || sel.until_ms.is_some();
    Ok(ReplayRequest {
        source: topic_of(stage)?.to_string(),
        from: if timed {
            Some(ms(sel.since_ms).unwrap_or_else(|| super::ms_to_rfc3339(0)))
        } else {
            None
        },
        to: ms(sel.until_ms),
        all: !timed,
        // Exhausted deliveries are tasks, not letters: they have no reason to filter by.
        filters: Filters {
            reasons: if stage == "deliveries" {
                vec![]
            } else {
                sel.reasons.clone()
            },
            ..Filters::default()
        },
        target: Some(redrive_target(stage)?),
        ..ReplayRequest::default()
    })
}

/// Mark the letters `sel` selects (not yet redriven or purged) as `state`.
pub async fn mark(
    env: &Env,
    stage: &str,
    sel: &Selection,
    state: &str,
    job: Option<&str>,
) -> anyhow::Result<u64> {
    let topic = format!("{}{}", env.cfg.kafka.topic_prefix, topic_of(stage)?);
    let letters = list(env, stage, sel).await?;
    let positions: Vec<(i32, i64)> = letters
        .iter()
        .filter(|l| {
            l.mark.is_none() || (state == "purged" && l.mark.as_deref() == Some("redriven"))
        })
        .map(|l| (l.partition, l.offset))
        .collect();
    env.jobs()
        .mark_dead_letters(&topic, &positions, state, job)
        .await
}
