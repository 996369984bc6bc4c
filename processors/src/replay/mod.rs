//! Replay, backfill and dead-letter redrive: any topic's records over a time or offset
//! range, filtered, into a target that is the live stage's own code.
//!
//! - [`spec`]: what is asked (source, range, filters, target), validated, times absolute;
//! - [`plan`]: the range as exact offsets per partition, correct on any broker;
//! - [`jobs`]: the job in PostgreSQL: plan, checkpoint, counters, lease, cancel;
//! - [`source`]: reading the range (plain assignment), unwrapping dead letters, filters;
//! - [`targets`]: PostgreSQL, ClickHouse, the normalizer, the router, the fan-out, a topic;
//! - [`run`]: one job from its checkpoint to its end;
//! - [`dlq`]: listing, showing, redriving and purging dead letters.
//!
//! Guarantees: a replay never joins or resets a live consumer group (it assigns
//! partitions and keeps its checkpoint in its job); the plan is fixed when the job is
//! made, so a resumed job covers exactly the same records; the checkpoint moves only
//! after the target acknowledged a batch, and every target is idempotent (sinks by
//! primary keys and seen ids, the normalizer by its dedupe store, the router by its send
//! state machine, the fan-out by the same `webhook-id`), so a job killed and resumed, or
//! run twice, leaves the stores as one run does. A topic copy is at-least-once: a resumed
//! copy can repeat the records after its last checkpoint.

pub mod config;
pub mod dlq;
pub mod jobs;
pub mod plan;
pub mod run;
pub mod source;
pub mod spec;
pub mod targets;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::kafka::Topics;
use switchboard_runtime::producer::ProducerSlot;
use switchboard_schemas::Codec;

pub use config::{Config, ReplayerConfig};
pub use jobs::{Job, Jobs, State};
pub use plan::{Plan, PlanError};
pub use spec::{Filters, Range, ReplaySpec, SpecError, Target};

/// What a replay needs to reach the broker, the registry and the stores.
pub struct Env {
    pub cfg: Config,
    pub pool: sqlx::PgPool,
    pub codec: Codec,
    pub producer: ProducerSlot,
    pub topics: Topics,
}

impl Env {
    pub fn new(cfg: Config) -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(switchboard_runtime::pg::options(
                &cfg.database_url,
                "replay",
            )?);
        Ok(Self {
            codec: Codec::new(&cfg.kafka.schema_registry_url),
            producer: switchboard_runtime::producer::ProducerSlot::new(
                &cfg.kafka,
                Duration::from_secs(30),
            )?,
            topics: Topics::new(&cfg.kafka.topic_prefix),
            pool,
            cfg,
        })
    }

    pub fn jobs(&self) -> Jobs {
        Jobs::new(self.pool.clone())
    }
}

/// A replay as an operator asks for it (the CLI's flags, the admin API's body): times as
/// written, resolved by [`ReplayRequest::spec`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub source: String,
    /// RFC 3339, `now`, or relative (`-24h`).
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from_offset: Option<i64>,
    #[serde(default)]
    pub to_offset: Option<i64>,
    /// The whole retained topic (instead of a range).
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub partitions: BTreeSet<i32>,
    #[serde(default)]
    pub filters: Filters,
    pub target: Option<Target>,
    #[serde(default)]
    pub rate_per_sec: u32,
    /// Plan only (the admin API's body carries it; the CLI has `--dry-run`).
    #[serde(default)]
    pub dry_run: bool,
}

impl ReplayRequest {
    /// The absolute, validated spec, with times relative to `now_ms`.
    pub fn spec(&self, now_ms: i64) -> Result<ReplaySpec, SpecError> {
        let by_time = self.from.is_some() || self.to.is_some();
        let by_offset = self.from_offset.is_some() || self.to_offset.is_some();
        let range = match (by_time, by_offset, self.all) {
            (true, false, false) => Range::Time {
                from_ms: spec::parse_time(
                    self.from.as_deref().ok_or(SpecError::MissingFrom)?,
                    now_ms,
                )?,
                to_ms: match &self.to {
                    Some(t) => spec::parse_time(t, now_ms)?,
                    None => now_ms,
                },
            },
            (false, true, false) => Range::Offsets {
                from: self.from_offset,
                to: self.to_offset,
            },
            (false, false, true) => Range::Offsets {
                from: None,
                to: None,
            },
            _ => return Err(SpecError::AmbiguousRange),
        };
        let s = ReplaySpec {
            source: self.source.clone(),
            range,
            partitions: self.partitions.clone(),
            filters: self.filters.clone(),
            target: self.target.clone().ok_or(SpecError::MissingTarget)?,
            rate_per_sec: self.rate_per_sec,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Resolve a request to its spec and plan (nothing is written).
pub async fn prepare(cfg: &Config, req: &ReplayRequest) -> anyhow::Result<(ReplaySpec, Plan)> {
    let spec = req.spec(switchboard_runtime::now_ms())?;
    let topic = format!("{}{}", cfg.kafka.topic_prefix, spec.source);
    let plan = plan::plan(&cfg.kafka, &topic, &spec.range, &spec.partitions).await?;
    Ok((spec, plan))
}

pub(crate) fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}
