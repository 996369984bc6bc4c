//! The HTTP edge.
//!
//! - Webhook ingest (`ingest`): handlers are thin: they check what the BSP's contract lets
//!   them check (size, content type, signature, well-formed JSON), write the raw request
//!   to Kafka, and answer only once the broker has acknowledged it. Parsing into events is
//!   the normalizer's job, so a parser bug can never make the gateway drop a webhook.
//! - The send API and the admin API (`api`): PostgreSQL for state, `wa.send.requests`
//!   and `wa.config` for the processors.

pub mod api;
pub mod config;
pub mod edge;
pub mod error;
pub mod event_log;
pub mod ingest;
pub mod live;
pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use switchboard_runtime::kafka::Topics;
use switchboard_runtime::CancellationToken;
use switchboard_schemas::Codec;
use tracing::Instrument;

use crate::config::Config;

pub struct AppState {
    pub cfg: Config,
    pub producer: switchboard_runtime::producer::ProducerSlot,
    pub codec: Codec,
    pub topics: Topics,
    pub http: reqwest::Client,
    pub db: sqlx::PgPool,
    /// Set once the send path's migrations ran; the API answers 503 before.
    pub db_ready: std::sync::atomic::AtomicBool,
    pub config: switchboard_runtime::config_cache::ConfigCache,
    pub keyring: Option<switchboard_runtime::secrets::Keyring>,
    /// Inbound media kept by the routers (`None`: the store did not open; logged).
    pub media: Option<switchboard_processors::media::store::BlobStore>,
    /// The tenants' events read back from `wa.events` (`GET /v1/events`).
    pub events: event_log::EventLog,
    /// Live events for the stream connections (`GET /v1/events/stream`, `/v1/events/ws`).
    pub live: Arc<live::LiveFeed>,
    /// Connections upgraded to WebSockets, which hyper's graceful shutdown no longer sees:
    /// the gateway waits for them to close before it exits.
    pub upgraded: tokio_util::task::TaskTracker,
    /// Stopping: open streams end.
    pub shutdown: CancellationToken,
    /// The global webhook secrets of every BSP (`Config::webhook_secrets`).
    pub webhook_secrets: HashMap<switchboard_connectors::Bsp, ingest::Secrets>,
    pub limiter: api::auth::TenantLimiter,
    pub admin_failures: api::auth::AuthFailures,
    /// Tenants with a recover running (one at a time each).
    pub recovers: api::deliveries::Recovers,
    /// The delivery log (ClickHouse), for the endpoints' attempts and stats.
    pub ch: clickhouse::Client,
    /// Single sends waiting to be accepted together (`api::batcher`).
    pub accepts: tokio::sync::mpsc::Sender<api::batcher::Job>,
    /// Replays and dead letters (the admin API's `/admin/replays`, `/admin/dead-letters`).
    pub replay: switchboard_processors::replay::Env,
}

/// The public port: webhooks, the API and `/healthz` (for load balancers). Readiness,
/// with its internal error text, and metrics are on the ops port ([`ops_router`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/webhooks/{bsp}",
            get(ingest::handshake).post(ingest::webhook),
        )
        .merge(api::routes())
        .with_state(state)
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(request_id))
}

/// The ops port: `/healthz`, `/readyz` (broker and schema registry), `/metrics`.
pub fn ops_router(state: Arc<AppState>) -> Router {
    let ready_state = state.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let s = ready_state.clone();
        Box::pin(async move {
            switchboard_runtime::kafka::broker_reachable(&s.producer, Duration::from_secs(2))
                .await?;
            let url = format!(
                "{}/subjects",
                s.cfg.kafka.schema_registry_url.trim_end_matches('/')
            );
            match s.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("schema registry answered {}", r.status())),
                Err(e) => Err(format!("schema registry: {e}")),
            }
        })
    });
    switchboard_runtime::ops::router(ready)
}

/// Take the caller's `x-request-id` or make one; put it on the response and on every log
/// line of the request.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    cfg.check()?;
    let codec = Codec::new(&cfg.kafka.schema_registry_url);
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let keyring = if cfg.credentials_keys.is_empty() {
        tracing::warn!("SWITCHBOARD_CREDENTIALS_KEYS is empty: BSP credentials cannot be stored");
        None
    } else {
        Some(switchboard_runtime::secrets::Keyring::parse(
            &cfg.credentials_keys,
        )?)
    };
    let (accepts, accept_rx) = tokio::sync::mpsc::channel(10_000);
    let replay =
        switchboard_processors::replay::Env::new(switchboard_processors::replay::Config {
            kafka: cfg.kafka.clone(),
            database_url: cfg.database_url.clone(),
            clickhouse_url: cfg.clickhouse_url.clone(),
            clickhouse_database: cfg.clickhouse_database.clone(),
            clickhouse_validation: false,
            event_time_max_age: switchboard_processors::normalize::default_max_age(),
            event_time_max_ahead: switchboard_processors::normalize::default_max_ahead(),
            retry_schedule: cfg.retry_schedule.clone(),
            replay_batch: switchboard_processors::replay::config::default_batch(),
        })?;
    let state = Arc::new(AppState {
        replay,
        accepts,
        db: sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(switchboard_runtime::pg::options(
                &cfg.database_url,
                "gateway",
            )?),
        db_ready: std::sync::atomic::AtomicBool::new(false),
        config: switchboard_runtime::config_cache::ConfigCache::start(
            &cfg.kafka,
            &topics.config,
            codec.clone(),
            shutdown.clone(),
        )?,
        keyring,
        media: match switchboard_processors::media::store::BlobStore::open(&cfg.media_store) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "the media store does not open: GET /v1/media answers 503");
                None
            }
        },
        events: event_log::EventLog {
            kafka: cfg.kafka.clone(),
            topic: topics.events.clone(),
            codec: codec.clone(),
            scan_budget: cfg.events_scan_records,
            scan_time: cfg.events_scan_time,
        },
        live: live::LiveFeed::new(
            cfg.stream_max_per_tenant,
            cfg.stream_buffer,
            cfg.stream_heartbeat,
            cfg.stream_stall_timeout,
        ),
        upgraded: Default::default(),
        shutdown: shutdown.clone(),
        webhook_secrets: switchboard_connectors::Bsp::ALL
            .into_iter()
            .map(|b| (b, cfg.webhook_secrets(b)))
            .collect(),
        limiter: Default::default(),
        admin_failures: Default::default(),
        recovers: Default::default(),
        ch: switchboard_sinks::ch::client(&cfg.clickhouse_url).with_validation(false),
        codec,
        topics,
        producer: switchboard_runtime::producer::ProducerSlot::new(
            &cfg.kafka,
            cfg.produce_timeout,
        )?,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?,
        cfg: cfg.clone(),
    });
    tokio::spawn(api::batcher::run(state.clone(), accept_rx));
    // Webhook ingest must not wait for PostgreSQL: the API comes up when it is there.
    tokio::spawn(prepare_database(state.clone(), shutdown.clone()));
    tokio::spawn(state.live.clone().run(
        state.cfg.kafka.clone(),
        state.topics.events.clone(),
        state.codec.clone(),
        shutdown.clone(),
    ));
    let ops =
        switchboard_runtime::ops::serve(&cfg.ops_addr, ops_router(state.clone()), shutdown.clone())
            .await?;
    let limits = edge::Limits {
        header_timeout: cfg.http_header_timeout,
        body_timeout: cfg.http_body_timeout,
        max_connections: cfg.http_max_connections,
        drain: cfg.produce_timeout + Duration::from_secs(10),
        send_buffer: cfg.http_send_buffer_bytes,
    };
    let server = edge::serve(&cfg.http_addr, router(state.clone()), limits, shutdown).await?;
    server.await?;
    state.upgraded.close();
    if tokio::time::timeout(Duration::from_secs(5), state.upgraded.wait())
        .await
        .is_err()
    {
        tracing::warn!("WebSockets still open 5 s after the stop; closing them");
    }
    ops.await?;
    // Requests are drained; flush anything still queued (nothing acknowledged is pending,
    // because every 2xx waited for its ack).
    switchboard_runtime::kafka::flush(state.producer.clone(), Duration::from_secs(10)).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Run the send path's migrations (retrying while the database is away), then
/// republish the whole configuration, so `wa.config` converges on the database even if
/// an earlier publish failed half-way.
async fn prepare_database(app: Arc<AppState>, shutdown: CancellationToken) {
    let migrated = switchboard_runtime::retry::wait_for(
        "send-path database",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || switchboard_processors::db::migrate(&app.db),
    )
    .await;
    match migrated {
        Ok(Some(())) => {}
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "send-path migrations failed; the API stays unavailable");
            return;
        }
    }
    let jobs = app.replay.jobs();
    if let Err(e) = switchboard_runtime::retry::wait_for(
        "replay jobs table",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || jobs.migrate(),
    )
    .await
    {
        tracing::error!(error = %e, "replay migrations failed; /admin/replays fails");
    }
    app.db_ready
        .store(true, std::sync::atomic::Ordering::Release);
    loop {
        let r = async {
            let recs = api::admin::snapshot(&app.db)
                .await
                .map_err(|e| e.to_string())?;
            api::publish::publish_config(&app, &recs)
                .await
                .map_err(|e| e.message)?;
            Ok::<usize, String>(recs.len())
        }
        .await;
        match r {
            Ok(n) => {
                tracing::info!(records = n, "configuration republished");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot republish configuration yet"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
