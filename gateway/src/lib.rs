//! The HTTP edge. Handlers are thin: they check what the BSP's contract lets them check
//! (size, content type, signature, well-formed JSON), write the raw request to Kafka, and
//! answer only once the broker has acknowledged it. Parsing into events is the
//! normalizer's job, so a parser bug can never make the gateway drop a webhook.

pub mod config;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod producer;

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
    pub producer: producer::ProducerSlot,
    pub codec: Codec,
    pub topics: Topics,
    pub http: reqwest::Client,
}

pub fn router(state: Arc<AppState>) -> Router {
    let ready_state = state.clone();
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let s = ready_state.clone();
        Box::pin(async move {
            switchboard_runtime::kafka::broker_reachable(&s.producer.get(), Duration::from_secs(2))
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
    Router::new()
        .route(
            "/webhooks/{bsp}",
            get(ingest::handshake).post(ingest::webhook),
        )
        .with_state(state)
        .merge(switchboard_runtime::ops::router(ready))
        .layer(axum::middleware::from_fn(request_id))
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
    let state = Arc::new(AppState {
        codec: Codec::new(&cfg.kafka.schema_registry_url),
        topics: Topics::new(&cfg.kafka.topic_prefix),
        producer: producer::ProducerSlot::new(
            cfg.kafka.clone(),
            cfg.produce_timeout,
            cfg.producer_rebuild_after,
        )?,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?,
        cfg: cfg.clone(),
    });
    let server =
        switchboard_runtime::ops::serve(&cfg.http_addr, router(state.clone()), shutdown).await?;
    server.await?;
    // Requests are drained; flush anything still queued (nothing acknowledged is pending,
    // because every 2xx waited for its ack).
    let producer = state.producer.get();
    let _ = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.flush(rdkafka::util::Timeout::After(Duration::from_secs(10)))
    })
    .await;
    tracing::info!("gateway stopped");
    Ok(())
}
