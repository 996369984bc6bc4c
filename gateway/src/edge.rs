//! The public listener: what a server facing the internet must refuse before any handler
//! runs. A client gets `header_timeout` to send its request head and `body_timeout`
//! between the pieces of its body (slow-loris), at most `max_connections` connections are
//! open at once (the next wait in the kernel's backlog), and request heads over 64 KiB
//! are refused. Each request carries its peer address (`ConnectInfo`), which the admin
//! key's brute-force limit counts by.
//!
//! axum's own `serve` has none of these knobs, so connections are served with hyper
//! directly (with upgrades, for WebSockets). On SIGTERM the listener closes, each
//! connection is told to finish its request and close (hyper's graceful shutdown), and
//! the server waits for them up to `drain`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;

use switchboard_runtime::CancellationToken;

#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub drain: Duration,
    /// Kernel send buffer per connection (0: the system's, which autotunes up to MBs):
    /// bounds what a client that stops reading pins, and lets an event stream notice it.
    pub send_buffer: usize,
}

/// Request heads (request line and headers) larger than this are refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A connection's place under `max_connections`, held by the connection and by what a
/// request upgrades it to (a WebSocket outlives hyper's connection task).
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Serve `router` on `addr` until `shutdown`, then let open requests finish.
pub async fn serve(
    addr: &str,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(addr, max_connections = limits.max_connections, "listening");
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    Ok(tokio::spawn(
        async move {
            let connections = tokio_util::task::TaskTracker::new();
            loop {
                let slot = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                };
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, do not spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                if limits.send_buffer > 0 {
                    if let Err(e) =
                        socket2::SockRef::from(&stream).set_send_buffer_size(limits.send_buffer)
                    {
                        tracing::debug!(error = %e, "cannot size the send buffer");
                    }
                }
                let slot = ConnSlot(Arc::new(slot));
                let request_slot = slot.clone();
                let svc = router
                    .clone()
                    .map_request(move |mut req: axum::extract::Request| {
                        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                        req.extensions_mut().insert(request_slot.clone());
                        req
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(svc.map_request(
                            |req: http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
                        )),
                    )
                    .with_upgrades();
                let stop = shutdown.clone();
                connections.spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let ended = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            drop(listener);
            connections.close();
            tokio::select! {
                _ = connections.wait() => {}
                _ = tokio::time::sleep(limits.drain) => {
                    tracing::warn!(drain = ?limits.drain, "requests still open after the drain period; closing them");
                }
            }
        }
        .in_current_span(),
    ))
}
