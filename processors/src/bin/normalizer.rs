//! normalizer: wa.webhooks.raw → wa.events (+ wa.webhooks.dlq). See `normalize`.

use std::sync::Arc;
use std::time::Duration;

use switchboard_processors::db::conversations::Conversations;
use switchboard_processors::dedupe::DedupeStore;
use switchboard_processors::normalize::{Config, Normalizer};
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::kafka::Topics;
use switchboard_runtime::stream::StreamLoop;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("normalizer");
    let cfg: Config = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(switchboard_runtime::pg::options(
            &cfg.database_url,
            "normalizer",
        )?);
    let dedupe = DedupeStore::new(pool.clone());
    if switchboard_runtime::retry::wait_for(
        "dedupe store and conversations",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || async {
            dedupe.migrate().await?;
            switchboard_processors::db::migrate(&pool).await
        },
    )
    .await?
    .is_none()
    {
        return Ok(());
    }

    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let producer =
        switchboard_runtime::producer::ProducerSlot::new(&cfg.kafka, Duration::from_secs(30))?;
    let ready_producer = producer.clone();
    let ready_dedupe = dedupe.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let p = ready_producer.clone();
        let d = ready_dedupe.clone();
        Box::pin(async move {
            switchboard_runtime::kafka::broker_reachable(&p, Duration::from_secs(2)).await?;
            d.ping().await
        })
    });
    let ops = switchboard_runtime::ops::serve(
        &cfg.ops_addr,
        switchboard_runtime::ops::router(ready),
        shutdown.clone(),
    )
    .await?;

    let pruner = {
        let d = dedupe.clone();
        let retention = cfg.dedupe_retention;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                match d.prune(retention).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned dedupe store"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dedupe prune failed"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                }
            }
        })
    };

    let codec = switchboard_schemas::Codec::new(&cfg.kafka.schema_registry_url);
    let config = switchboard_runtime::config_cache::ConfigCache::start(
        &cfg.kafka,
        &topics.config,
        codec.clone(),
        shutdown.clone(),
    )?;
    // Tenants are stamped from the config copy: start once it is complete, so events of
    // known numbers never go out without their tenant.
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = config.wait_ready(Duration::from_secs(3600)) => r?,
    }
    let dead = DeadLetters::new(
        "normalizer",
        &topics.webhooks_dlq,
        producer.clone(),
        codec.clone(),
        &cfg.kafka,
    );
    let handler = Normalizer {
        config,
        codec,
        producer,
        topics: topics.clone(),
        dedupe,
        conversations: Conversations::new(pool.clone()),
        suppressions: switchboard_processors::db::suppressions::Suppressions::new(pool),
        dead: dead.clone(),
        window: cfg.time_window(),
        deferral: cfg.deferral(),
        bypass_dedupe: false,
    };
    StreamLoop::new(
        &cfg.kafka,
        cfg.stream.clone(),
        "switchboard-normalizer",
        &[&topics.webhooks_raw],
        dead,
    )?
    .run(handler, shutdown)
    .await?;
    pruner.abort();
    let _ = ops.await;
    tracing::info!("normalizer stopped");
    Ok(())
}
