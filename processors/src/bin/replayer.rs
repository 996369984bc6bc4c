//! replayer: runs replay jobs made through the admin API (`POST /admin/replays`,
//! `/admin/dead-letters/redrive`) or `switchboard replay start --detach`, one at a time,
//! and resumes jobs whose runner died (their lease ran out). On SIGTERM it stops at the
//! batch in hand and hands the job back (`pending`), resumable by any replayer.

use std::sync::Arc;
use std::time::Duration;

use switchboard_processors::replay::{self, Env, ReplayerConfig, State};

// Decoding and row building allocate per record: glibc malloc took about a third of a
// replay's CPU (perf, loadtest/REPORT.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("replayer");
    let cfg: ReplayerConfig = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();
    let env = Env::new(cfg.replay.clone())?;
    let jobs = env.jobs();
    if switchboard_runtime::retry::wait_for(
        "postgres",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || jobs.migrate(),
    )
    .await?
    .is_none()
    {
        return Ok(());
    }
    let (ready_pool, ready_producer) = (env.pool.clone(), env.producer.clone());
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let (p, k) = (ready_pool.clone(), ready_producer.clone());
        Box::pin(async move {
            switchboard_runtime::kafka::broker_reachable(&k, Duration::from_secs(2)).await?;
            sqlx::query("SELECT 1")
                .execute(&p)
                .await
                .map(|_| ())
                .map_err(|e| format!("postgres: {e}"))
        })
    });
    let ops = switchboard_runtime::ops::serve(
        &cfg.ops_addr,
        switchboard_runtime::ops::router(ready),
        shutdown.clone(),
    )
    .await?;
    let owner = format!(
        "replayer-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    while !shutdown.is_cancelled() {
        let next = match jobs.next_runnable().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot look for replay jobs; retrying"
                );
                None
            }
        };
        let Some(id) = next else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(cfg.replay_poll_interval) => continue,
            }
        };
        match jobs.claim(&id, &owner, false, None).await {
            Ok(Some(job)) => {
                tracing::info!(
                    job = job.id,
                    source = job.spec.source,
                    target = job.spec.target.name(),
                    remaining = job.remaining(),
                    "replay started"
                );
                let (tx, _rx) = tokio::sync::watch::channel(replay::run::Progress::default());
                if let Err(e) =
                    replay::run::run(&env, &jobs, job, &owner, &tx, &shutdown, State::Pending).await
                {
                    tracing::warn!(
                        job = id,
                        error = format!("{e:#}"),
                        "replay ended with an error"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job = id, error = format!("{e:#}"), "cannot claim replay"),
        }
    }
    switchboard_runtime::kafka::flush(env.producer.clone(), Duration::from_secs(10)).await;
    let _ = ops.await;
    tracing::info!("replayer stopped");
    Ok(())
}
