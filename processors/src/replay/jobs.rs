//! Replay jobs in PostgreSQL (`replay_jobs`, owned here): created by the CLI or the admin
//! API, run by whoever holds the lease (the CLI in the foreground, or a `replayer`).
//!
//! The checkpoint (next offset per partition) and the counters move in one statement,
//! after the target acknowledged a batch, so a job killed at any point resumes from a
//! state that is exactly what was done. A runner renews its lease with every checkpoint;
//! a job whose lease ran out (its runner died) can be taken by another runner.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::PgPool;

use super::plan::Plan;
use super::spec::ReplaySpec;

static MIGRATOR: Migrator = sqlx::migrate!("./src/replay/migrations");

/// How long a runner's claim lasts without a checkpoint.
pub const LEASE: Duration = Duration::from_secs(30);

/// The name a runner holds a lease under: `kind@host:pid`.
pub fn owner_name(kind: &str) -> String {
    format!("{kind}@{}:{}", hostname(), std::process::id())
}

/// Whether `owner` (see [`owner_name`]) is a process of this host that no longer runs,
/// so its lease can be taken at once instead of waiting it out.
pub fn owner_is_dead_here(owner: &str) -> bool {
    let Some((_, at)) = owner.split_once('@') else {
        return false;
    };
    let Some((host, pid)) = at.rsplit_once(':') else {
        return false;
    };
    host == hostname()
        && pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "running" => State::Running,
            "done" => State::Done,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            _ => State::Pending,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub spec: ReplaySpec,
    pub plan: Plan,
    pub state: State,
    pub cancel_requested: bool,
    /// Next offset to read, per partition (absent: the plan's start).
    pub checkpoint: BTreeMap<i32, i64>,
    pub records_read: i64,
    pub records_written: i64,
    pub records_skipped: i64,
    pub dead_letters: i64,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Job {
    /// Where partition `p` resumes.
    pub fn next_offset(&self, p: i32) -> Option<i64> {
        let part = self.plan.partitions.iter().find(|x| x.partition == p)?;
        Some(
            self.checkpoint
                .get(&p)
                .copied()
                .unwrap_or(part.start)
                .clamp(part.start, part.end),
        )
    }

    /// Offsets of the plan not read yet.
    pub fn remaining(&self) -> i64 {
        self.plan
            .partitions
            .iter()
            .map(|p| p.end - self.next_offset(p.partition).unwrap_or(p.end))
            .sum()
    }
}

/// What one checkpoint adds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub read: i64,
    pub written: i64,
    pub skipped: i64,
    pub dead_letters: i64,
}

type Row = (
    String,
    serde_json::Value,
    serde_json::Value,
    String,
    bool,
    serde_json::Value,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

const COLUMNS: &str = "id, spec, plan, state, cancel_requested, checkpoint, records_read, records_written, records_skipped, dead_letters, error, lease_owner, created_by, created_at, started_at, finished_at";

fn from_row(r: Row) -> anyhow::Result<Job> {
    let checkpoint: BTreeMap<String, i64> = serde_json::from_value(r.5)?;
    Ok(Job {
        id: r.0,
        spec: serde_json::from_value(r.1)?,
        plan: serde_json::from_value(r.2)?,
        state: State::parse(&r.3),
        cancel_requested: r.4,
        checkpoint: checkpoint
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect(),
        records_read: r.6,
        records_written: r.7,
        records_skipped: r.8,
        dead_letters: r.9,
        error: r.10,
        lease_owner: r.11,
        created_by: r.12,
        created_at: r.13,
        started_at: r.14,
        finished_at: r.15,
    })
}

#[derive(Clone)]
pub struct Jobs {
    pool: PgPool,
}

impl Jobs {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut m = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
        m.dangerous_set_table_name("_sqlx_migrations_replay");
        m.run(&self.pool).await
    }

    pub async fn create(
        &self,
        spec: &ReplaySpec,
        plan: &Plan,
        created_by: &str,
    ) -> anyhow::Result<Job> {
        let id = format!("rpl_{}", uuid::Uuid::now_v7().simple());
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO replay_jobs (id, spec, plan, state, created_by) VALUES ($1, $2, $3, 'pending', $4) RETURNING {COLUMNS}"
        )))
        .bind(&id)
        .bind(serde_json::to_value(spec)?)
        .bind(serde_json::to_value(plan)?)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await?;
        from_row(row)
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Job>> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM replay_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(from_row).transpose()
    }

    /// The newest jobs first.
    pub async fn list(&self, limit: i64) -> anyhow::Result<Vec<Job>> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM replay_jobs ORDER BY created_at DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Take `id` for `owner`: a pending job, one whose runner's lease ran out (or whose
    /// runner is `dead_owner`, known dead), or (with `resume`) a cancelled or failed one.
    /// `None` when someone else holds it or it is done.
    pub async fn claim(
        &self,
        id: &str,
        owner: &str,
        resume: bool,
        dead_owner: Option<&str>,
    ) -> anyhow::Result<Option<Job>> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE replay_jobs SET state = 'running', lease_owner = $2, lease_until = now() + make_interval(secs => $3), \
               started_at = COALESCE(started_at, now()), updated_at = now(), error = NULL, \
               cancel_requested = CASE WHEN $4 THEN false ELSE cancel_requested END \
             WHERE id = $1 AND (state = 'pending' OR (state = 'running' AND (lease_until < now() OR lease_owner = $2 OR lease_owner = $5)) \
               OR ($4 AND state IN ('cancelled', 'failed'))) \
             RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(owner)
        .bind(LEASE.as_secs_f64())
        .bind(resume)
        .bind(dead_owner)
        .fetch_optional(&self.pool)
        .await?;
        row.map(from_row).transpose()
    }

    /// The oldest job a worker may take (pending, or running with an expired lease).
    pub async fn next_runnable(&self) -> anyhow::Result<Option<String>> {
        let id: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM replay_jobs WHERE state = 'pending' OR (state = 'running' AND lease_until < now()) ORDER BY created_at LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(|(i,)| i))
    }

    /// Record progress and renew the lease. Returns whether a cancel was asked for, or
    /// an error when the lease was lost (another runner took the job).
    pub async fn checkpoint(
        &self,
        id: &str,
        owner: &str,
        checkpoint: &BTreeMap<i32, i64>,
        c: Counts,
    ) -> anyhow::Result<bool> {
        let cp: BTreeMap<String, i64> = checkpoint
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let r: Option<(bool,)> = sqlx::query_as(
            "UPDATE replay_jobs SET checkpoint = $3, records_read = records_read + $4, records_written = records_written + $5, \
               records_skipped = records_skipped + $6, dead_letters = dead_letters + $7, \
               lease_until = now() + make_interval(secs => $8), updated_at = now() \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING cancel_requested",
        )
        .bind(id)
        .bind(owner)
        .bind(serde_json::to_value(cp)?)
        .bind(c.read)
        .bind(c.written)
        .bind(c.skipped)
        .bind(c.dead_letters)
        .bind(LEASE.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        match r {
            Some((cancel,)) => Ok(cancel),
            None => anyhow::bail!("replay {id}: lease lost (another runner took the job)"),
        }
    }

    /// End the run: `done`, `cancelled` or `failed` (with the error).
    pub async fn finish(
        &self,
        id: &str,
        owner: &str,
        state: State,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE replay_jobs SET state = $3, error = $4, lease_owner = NULL, lease_until = NULL, \
               finished_at = CASE WHEN $3 = 'done' THEN now() ELSE finished_at END, updated_at = now() \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(state.as_str())
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ask the runner to stop at its next checkpoint (a pending job is cancelled at once).
    /// Returns the job as it is now, `None` if there is no such job.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<Option<Job>> {
        sqlx::query(
            "UPDATE replay_jobs SET cancel_requested = true, \
               state = CASE WHEN state = 'pending' THEN 'cancelled' ELSE state END, updated_at = now() \
             WHERE id = $1 AND state IN ('pending', 'running')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.get(id).await
    }

    /// Mark dead letters as redriven (by `job`) or purged.
    pub async fn mark_dead_letters(
        &self,
        topic: &str,
        positions: &[(i32, i64)],
        state: &str,
        job: Option<&str>,
    ) -> anyhow::Result<u64> {
        if positions.is_empty() {
            return Ok(0);
        }
        let r = sqlx::query(
            "INSERT INTO dead_letter_marks (topic, partition, \"offset\", state, job_id) \
             SELECT $1, p, o, $4, $5 FROM UNNEST($2::int[], $3::bigint[]) AS t(p, o) \
             ON CONFLICT (topic, partition, \"offset\") DO UPDATE SET state = EXCLUDED.state, job_id = EXCLUDED.job_id, marked_at = now()",
        )
        .bind(topic)
        .bind(positions.iter().map(|p| p.0).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.1).collect::<Vec<_>>())
        .bind(state)
        .bind(job)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The marks of `topic`: position → (state, job).
    pub async fn dead_letter_marks(
        &self,
        topic: &str,
    ) -> anyhow::Result<std::collections::HashMap<(i32, i64), (String, Option<String>)>> {
        let rows: Vec<(i32, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT partition, \"offset\", state, job_id FROM dead_letter_marks WHERE topic = $1",
        )
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(p, o, s, j)| ((p, o), (s, j)))
            .collect())
    }
}
