//! Test and benchmark peers of Switchboard: the BSP simulator, the client-endpoint
//! simulator (tenants' webhook receivers), sample sends, the fan-out benchmark, synthetic
//! events for the replay benchmark, and the load
//! generator binary in
//! `main.rs`.

pub mod bsp_sim;
pub mod campaign_bench;
pub mod endpoint_sim;
pub mod events;
pub mod fanout_bench;
pub mod sends;
pub mod stream_bench;

/// Serve `app` on `addr` until the task is dropped; returns the bound address (the
/// simulators' shared start-up).
pub async fn serve(
    app: axum::Router,
    addr: &str,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((local, task))
}
