//! The operational HTTP surface every binary serves: `/healthz` (the process is up),
//! `/readyz` (its dependencies answer), `/metrics` (Prometheus text format).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A readiness probe: `Ok` when every dependency is reachable, `Err(what is not)` else.
pub type ReadinessCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

/// Routes for `/healthz`, `/readyz`, `/metrics`; merge into a binary's own router.
pub fn router(check: ReadinessCheck) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(check)
}

async fn readyz(State(check): State<ReadinessCheck>) -> Response {
    match check().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

async fn metrics() -> Response {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(body) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serve `router` on `addr` until `shutdown` fires, then finish open requests.
pub async fn serve(
    addr: &str,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(addr, "listening");
    Ok(tokio::spawn(async move {
        let res = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "http server failed");
        }
    }))
}
