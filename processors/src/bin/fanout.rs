//! fanout: wa.events → client webhook endpoints (+ retry delay topics, DLQ, delivery
//! log). See `fanout`.

use std::sync::Arc;
use std::time::Duration;

use switchboard_processors::db;
use switchboard_processors::db::endpoints::EndpointBook;
use switchboard_processors::fanout::admit::Admission;
use switchboard_processors::fanout::dispatch::{Dispatcher, FirstAttempts, Retries};
use switchboard_processors::fanout::endpoints::Registry;
use switchboard_processors::fanout::record::Recorder;
use switchboard_processors::fanout::{deliver, Config};
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::kafka::{delay_name, ensure_topics, TopicSpec, Topics};
use switchboard_runtime::lanes::LaneLoop;
use switchboard_runtime::netguard::AllowList;
use switchboard_runtime::secrets::Keyring;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("fanout");
    let cfg: Config = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();
    let schedule = cfg.schedule()?;
    let allow = AllowList::parse(&cfg.endpoint_allow_nets).map_err(anyhow::Error::msg)?;

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(switchboard_runtime::pg::options(
            &cfg.database_url,
            "fanout",
        )?);
    // The send path's schema: whichever of gateway, router and fan-out starts first
    // migrates it.
    if switchboard_runtime::retry::wait_for(
        "endpoints database",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || db::migrate(&pool),
    )
    .await?
    .is_none()
    {
        return Ok(());
    }
    let store = EndpointBook::new(pool);
    let keyring = match cfg.credentials_keys.as_str() {
        "" => {
            tracing::warn!("SWITCHBOARD_CREDENTIALS_KEYS is empty: no endpoint can be signed for");
            None
        }
        spec => Some(Keyring::parse(spec)?),
    };
    let registry = Registry::new(keyring, cfg.breaker_failures, cfg.breaker_open_for);
    for (id, since) in store.failing().await.unwrap_or_default() {
        *registry
            .health(&id)
            .failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(since);
    }

    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let mut delays = schedule.clone();
    delays.sort();
    delays.dedup();
    let retry_topics: Vec<(Duration, String)> = delays
        .iter()
        .map(|d| (*d, topics.retry_topic(*d)))
        .collect();
    // The delay topics follow the configured schedule, so the fan-out creates them;
    // they take the events topic's partition count for the same parallelism.
    let partitions = cfg.retry_partitions.max(1);
    let specs: Vec<TopicSpec> = retry_topics
        .iter()
        .map(|(_, t)| TopicSpec {
            name: t.clone(),
            partitions,
            compacted: false,
        })
        .chain(topics.with_partitions(partitions).into_iter().filter(|t| {
            t.name == topics.deliveries_attempts
                || t.name == topics.deliveries_dlq
                || t.name == topics.fanout_dlq
        }))
        .collect();
    if switchboard_runtime::retry::wait_for(
        "broker (topics)",
        &shutdown,
        |_| true,
        || ensure_topics(&cfg.kafka, &specs),
    )
    .await?
    .inspect(|drift| {
        for d in drift {
            tracing::warn!(%d, "an existing retry topic differs from its configuration");
        }
    })
    .is_none()
    {
        return Ok(());
    }

    let codec = switchboard_schemas::Codec::new(&cfg.kafka.schema_registry_url);
    let cache = ConfigCache::start(&cfg.kafka, &topics.config, codec.clone(), shutdown.clone())?;
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = cache.wait_ready(Duration::from_secs(3600)) => r?,
    }
    let producer =
        switchboard_runtime::producer::ProducerSlot::new(&cfg.kafka, Duration::from_secs(30))?;
    let dead = switchboard_runtime::deadletter::DeadLetters::new(
        "fanout",
        &topics.fanout_dlq,
        producer.clone(),
        codec.clone(),
        &cfg.kafka,
    );
    let baseline = registry.baseline.clone();
    let dispatcher = Arc::new(Dispatcher {
        http: deliver::client(&allow, cfg.delivery_timeout)?,
        allow,
        cache,
        registry,
        schedule,
        store,
        turns: Default::default(),
        shutdown: shutdown.clone(),
        held: Default::default(),
        admission: Admission::new(
            cfg.max_in_flight,
            cfg.tenant_max_in_flight,
            switchboard_processors::fanout::baseline::TENANT_PATIENCE,
            baseline,
        ),
        out: Recorder {
            codec,
            producer: producer.clone(),
            topics: topics.clone(),
            dead: dead.clone(),
            message_max_bytes: cfg.kafka.kafka_message_max_bytes,
            shutdown: shutdown.clone(),
        },
        cfg: cfg.clone(),
    });

    let ready_dispatcher = dispatcher.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let c = ready_dispatcher.clone();
        Box::pin(async move {
            switchboard_runtime::kafka::broker_reachable(&c.out.producer, Duration::from_secs(2))
                .await?;
            c.store.ping().await
        })
    });
    let ops = switchboard_runtime::ops::serve(
        &cfg.ops_addr,
        switchboard_runtime::ops::router(ready),
        shutdown.clone(),
    )
    .await?;

    let watch = {
        let (c, stop) = (dispatcher.clone(), shutdown.clone());
        tokio::spawn(async move { c.registry.watch(stop).await })
    };
    let group = cfg
        .group_id
        .clone()
        .unwrap_or_else(|| "switchboard-fanout".into());
    let drain = cfg.delivery_timeout + Duration::from_secs(5);
    let mut loops = Vec::new();
    for (delay, topic) in &retry_topics {
        let g = format!("{group}-retry-{}", delay_name(*delay));
        let instance = cfg
            .group_instance_id
            .as_ref()
            .map(|i| format!("{i}-retry-{}", delay_name(*delay)));
        let lane = LaneLoop::new(
            &cfg.kafka,
            &g,
            instance.as_deref(),
            &[topic],
            cfg.retry_max_in_flight,
            dead.clone(),
        )?;
        loops.push(tokio::spawn(lane.run(
            Retries(dispatcher.clone()),
            shutdown.clone(),
            drain,
        )));
    }
    LaneLoop::new(
        &cfg.kafka,
        &group,
        cfg.group_instance_id.as_deref(),
        &[&topics.events],
        cfg.max_in_flight,
        dead,
    )?
    .run(FirstAttempts(dispatcher), shutdown, drain)
    .await?;
    for l in loops {
        l.await??;
    }
    watch.abort();
    switchboard_runtime::kafka::flush(producer, Duration::from_secs(10)).await;
    let _ = ops.await;
    tracing::info!("fanout stopped");
    Ok(())
}
