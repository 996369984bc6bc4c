//! Running a job: read its remaining range, filter, pace, hand each batch to the target
//! through the stream loop's own poison handling (a bad record is dead-lettered to the
//! target stage's topic, the rest goes through), then checkpoint. Killed at any point,
//! the job resumes at its last checkpoint; the targets are idempotent, so the records
//! after it being written again leaves the stores as one uninterrupted run would.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::jobs::{Counts, Job, Jobs, State};
use super::source::{unwrap_dead_letters, wanted, Reader};
use super::{targets, Env};

/// What a running job has done so far (for a progress bar).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Offsets in the plan.
    pub total: i64,
    /// Offsets read (handled or filtered out).
    pub read: i64,
    pub written: i64,
    pub skipped: i64,
    pub dead_letters: i64,
    pub state: Option<State>,
}

/// Run `job` (already claimed by `owner`) to its end, a cancel, or `shutdown`. On
/// shutdown the job is left in `on_shutdown` (`pending` for a worker, so another picks
/// it up; `cancelled` for an operator's Ctrl-C), resumable either way.
pub async fn run(
    env: &Env,
    jobs: &Jobs,
    job: Job,
    owner: &str,
    progress: &watch::Sender<Progress>,
    shutdown: &switchboard_runtime::CancellationToken,
    on_shutdown: State,
) -> anyhow::Result<State> {
    let result = run_inner(env, jobs, &job, owner, progress, shutdown, on_shutdown).await;
    let (state, error) = match &result {
        Ok(s) => (*s, None),
        Err(e) => (State::Failed, Some(format!("{e:#}"))),
    };
    jobs.finish(&job.id, owner, state, error.as_deref()).await?;
    progress.send_modify(|p| p.state = Some(state));
    match &error {
        Some(e) => tracing::error!(job = job.id, error = e, "replay failed"),
        None => tracing::info!(job = job.id, state = state.as_str(), "replay stopped"),
    }
    result
}

async fn run_inner(
    env: &Env,
    jobs: &Jobs,
    job: &Job,
    owner: &str,
    progress: &watch::Sender<Progress>,
    shutdown: &switchboard_runtime::CancellationToken,
    on_shutdown: State,
) -> anyhow::Result<State> {
    let spec = &job.spec;
    let source = spec.validate()?;
    let mut target = targets::build(env, spec, &job.plan).await?;
    let _stop_followers = target.stop.clone().drop_guard();
    let mut reader = Reader::for_job(&env.cfg.kafka, job)?;
    progress.send_modify(|p| {
        p.total = job.plan.records();
        p.read = job.plan.records() - job.remaining();
        p.written = job.records_written;
        p.skipped = job.records_skipped;
        p.dead_letters = job.dead_letters;
        p.state = Some(State::Running);
    });
    let pace = Pacer::new(spec.rate_per_sec);
    // Rate-limited, a batch is a tenth of a second's worth: smaller batches cost the
    // target more per record (ClickHouse makes parts per table and view per insert),
    // larger ones arrive as bursts; measured beside live traffic, a tenth of a second
    // raised its p99 least (loadtest/REPORT.md).
    let max_batch = match spec.rate_per_sec {
        0 => env.cfg.replay_batch.max(1),
        r => env.cfg.replay_batch.clamp(1, (r as usize / 10).max(1)),
    };
    let prefix = env.cfg.kafka.topic_prefix.as_str();
    let group = format!("replay-{}", spec.target.name());
    let mut sent: u64 = 0;
    let mut last_positions = reader.positions();
    loop {
        if shutdown.is_cancelled() {
            return Ok(on_shutdown);
        }
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(on_shutdown),
            b = reader.next_batch(max_batch, Duration::from_millis(50)) => b?,
        };
        let positions = reader.positions();
        let read: i64 = positions
            .iter()
            .map(|(p, next)| next - last_positions.get(p).copied().unwrap_or(*next))
            .sum();
        let mut counts = Counts {
            read,
            ..Counts::default()
        };
        let (records, letters) = if source.dead_letters {
            let u = unwrap_dead_letters(&env.codec, &env.cfg.kafka, batch, &spec.filters).await?;
            counts.skipped += u.skipped;
            (u.records, u.letters)
        } else {
            (batch, vec![])
        };
        let keep = wanted(&env.codec, prefix, &records, &spec.filters).await;
        counts.skipped += keep.iter().filter(|k| !**k).count() as i64;
        let letters: Vec<(i32, i64)> = letters
            .into_iter()
            .zip(&keep)
            .filter_map(|(l, k)| k.then_some(l))
            .collect();
        let records: Vec<_> = records
            .into_iter()
            .zip(&keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
        if !records.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(on_shutdown),
                _ = pace.wait(sent) => {}
            }
            let dead = match switchboard_runtime::stream::handle_batch(
                &mut target.handler,
                &records,
                &target.dead,
                &group,
                shutdown,
            )
            .await
            {
                Ok(n) => n as i64,
                Err(_) => return Ok(on_shutdown),
            };
            sent += records.len() as u64;
            counts.dead_letters = dead;
            counts.written = records.len() as i64 - dead;
        }
        // Redriven letters say so in `switchboard dlq list` (a repeat after a crash marks
        // them again, harmlessly).
        jobs.mark_dead_letters(&job.plan.topic, &letters, "redriven", Some(&job.id))
            .await?;
        let cancel = jobs.checkpoint(&job.id, owner, &positions, counts).await?;
        last_positions = positions;
        progress.send_modify(|p| {
            p.read += counts.read;
            p.written += counts.written;
            p.skipped += counts.skipped;
            p.dead_letters += counts.dead_letters;
        });
        if cancel {
            return Ok(State::Cancelled);
        }
        if reader.done() {
            return Ok(State::Done);
        }
    }
}

/// At most `rate` records per second, measured from the start (0: no limit).
struct Pacer {
    rate: u32,
    started: Instant,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            started: Instant::now(),
        }
    }

    /// Wait until `sent` records are within the rate.
    async fn wait(&self, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = self.started + Duration::from_secs_f64(sent as f64 / self.rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}
