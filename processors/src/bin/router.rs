//! router: wa.send.requests → BSP send APIs → wa.events (+ wa.send.dlq). See `route`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use switchboard_processors::db::{self, outbox::Outbox};
use switchboard_processors::route::breaker::Breakers;
use switchboard_processors::route::dispatch::{Router, SendRouter};
use switchboard_processors::route::limiter::SenderLimiter;
use switchboard_processors::route::{scheduler, Config};
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::kafka::Topics;
use switchboard_runtime::lanes::LaneLoop;
use switchboard_runtime::netguard::AllowList;
use switchboard_runtime::secrets::Keyring;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("router");
    let cfg: Config = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(switchboard_runtime::pg::options(
            &cfg.database_url,
            "router",
        )?);
    if switchboard_runtime::retry::wait_for(
        "send-path database",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || db::migrate(&pool),
    )
    .await?
    .is_none()
    {
        return Ok(());
    }
    let keyring = match cfg.credentials_keys.as_str() {
        "" => {
            tracing::warn!(
                "SWITCHBOARD_CREDENTIALS_KEYS is empty: every send fails with credentials_missing"
            );
            None
        }
        spec => Some(Keyring::parse(spec)?),
    };
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let codec = switchboard_schemas::Codec::new(&cfg.kafka.schema_registry_url);
    let cache = ConfigCache::start(&cfg.kafka, &topics.config, codec.clone(), shutdown.clone())?;
    // Routing needs the numbers and credentials: wait for the whole config topic.
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = cache.wait_ready(Duration::from_secs(3600)) => r?,
    }
    let producer =
        switchboard_runtime::producer::ProducerSlot::new(&cfg.kafka, Duration::from_secs(30))?;
    let dead = DeadLetters::new(
        "router",
        &topics.send_dlq,
        producer.clone(),
        codec.clone(),
        &cfg.kafka,
    );
    let core = Arc::new(SendRouter {
        dead: dead.clone(),
        conversations: switchboard_processors::db::conversations::Conversations::new(pool.clone()),
        templates: switchboard_processors::db::templates::Templates::new(pool.clone()),
        suppressions: switchboard_processors::db::suppressions::Suppressions::new(pool.clone()),
        outbox: Outbox::new(pool),
        cache,
        keyring,
        http: bsp_client(&cfg)?,
        limiter: SenderLimiter::new(cfg.rate_headroom),
        pair: switchboard_processors::route::pair::PairLimiter::new(
            cfg.pair_interval,
            cfg.pair_burst,
        ),
        breakers: Breakers::new(cfg.breaker_failures, cfg.breaker_open_for),
        codec,
        producer: producer.clone(),
        topics: topics.clone(),
        in_flight: Default::default(),
        shutdown: shutdown.clone(),
        cfg: cfg.clone(),
    });

    let ready_core = core.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let c = ready_core.clone();
        Box::pin(async move {
            switchboard_runtime::kafka::broker_reachable(&c.producer, Duration::from_secs(2))
                .await?;
            c.outbox.ping().await
        })
    });
    let ops = switchboard_runtime::ops::serve(
        &cfg.ops_addr,
        switchboard_runtime::ops::router(ready),
        shutdown.clone(),
    )
    .await?;
    let sched = tokio::spawn(scheduler::run(core.clone(), shutdown.clone()));
    let template_sync = tokio::spawn(switchboard_processors::route::templates::run(
        core.clone(),
        shutdown.clone(),
    ));
    let campaigns = tokio::spawn(switchboard_processors::route::campaigns::run(
        core.clone(),
        shutdown.clone(),
    ));

    // Inbound media, fetched while its URL lives: a consumer group of its own on
    // wa.events, beside the sends (see `media`).
    let fetcher = switchboard_processors::media::Fetcher {
        core: core.clone(),
        store: switchboard_processors::media::store::BlobStore::open(&cfg.media_store)?,
        media: switchboard_processors::db::media::Media::new(core.outbox.pool.clone()),
        urls: {
            let allow = AllowList::parse(&cfg.media_allow_nets)
                .map_err(|e| anyhow::anyhow!("SWITCHBOARD_MEDIA_ALLOW_NETS: {e}"))?;
            switchboard_processors::media::by_url::UrlClients {
                bsp: core.http.clone(),
                guarded: switchboard_processors::guarded::builder(&allow)
                    .timeout(cfg.send_timeout)
                    .connect_timeout(cfg.send_timeout.min(Duration::from_secs(5)))
                    .build()?,
                allow,
            }
        },
        max_bytes: cfg.media_max_bytes,
        types: cfg
            .media_types
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect(),
    };
    let media_dead = DeadLetters::new(
        "media",
        &topics.media_dlq,
        producer.clone(),
        core.codec.clone(),
        &cfg.kafka,
    );
    let media = switchboard_runtime::stream::StreamLoop::new(
        &cfg.kafka,
        switchboard_runtime::stream::StreamConfig::default(),
        "switchboard-media",
        &[&topics.events],
        media_dead,
    )?;
    let media_task = tokio::spawn(media.run(fetcher, shutdown.clone()));

    let group = cfg
        .group_id
        .clone()
        .unwrap_or_else(|| "switchboard-router".into());
    LaneLoop::new(
        &cfg.kafka,
        &group,
        cfg.group_instance_id.as_deref(),
        &[&topics.send_requests],
        cfg.max_in_flight,
        dead,
    )?
    .run(
        Router(core),
        shutdown,
        cfg.send_timeout + Duration::from_secs(5),
    )
    .await?;
    sched.abort();
    template_sync.abort();
    campaigns.abort();
    match media_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "media fetcher stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "media fetcher task failed"),
        Ok(Ok(())) => {}
    }
    switchboard_runtime::kafka::flush(producer, Duration::from_secs(10)).await;
    let _ = ops.await;
    tracing::info!("router stopped");
    Ok(())
}

/// The BSP client. It follows no redirects (a redirect would carry the BSP credentials in
/// the request's headers to another host) and ignores `HTTP(S)_PROXY` unless a proxy is
/// configured; the connect timeout is separate so that a failure to connect, which sent
/// nothing, is told apart from a timeout after sending.
fn bsp_client(cfg: &Config) -> anyhow::Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .timeout(cfg.send_timeout)
        .connect_timeout(cfg.send_timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256);
    let b = match cfg.bsp_proxy.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => b.proxy(reqwest::Proxy::all(p).context("SWITCHBOARD_BSP_PROXY")?),
        None => b.no_proxy(),
    };
    Ok(b.build()?)
}
