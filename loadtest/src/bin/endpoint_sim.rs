//! endpoint-sim: the client-endpoint simulator as a process (see
//! `switchboard_loadtest::endpoint_sim`), for tests that run Switchboard out of process.
//!
//! Env: `ENDPOINT_SIM_ADDR` (default 127.0.0.1:18091), `ENDPOINT_SIM_SECRETS` (optional
//! JSON `{name: [secret, ...]}`; the name `*` sets the secrets of endpoints created on
//! first use). Runs until ctrl-c or SIGTERM.

use std::collections::HashMap;

use switchboard_loadtest::endpoint_sim::{EndpointSim, EndpointUpdate};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("ENDPOINT_SIM_ADDR").unwrap_or_else(|_| "127.0.0.1:18091".into());
    let sim = EndpointSim::new();
    if let Ok(json) = std::env::var("ENDPOINT_SIM_SECRETS") {
        let secrets: HashMap<String, Vec<String>> = serde_json::from_str(&json)
            .map_err(|e| anyhow::anyhow!("ENDPOINT_SIM_SECRETS: {e}"))?;
        for (name, secrets) in secrets {
            if name == "*" {
                sim.set_defaults(EndpointUpdate {
                    secrets: Some(secrets),
                    ..Default::default()
                })?;
            } else {
                sim.set(&name, Some(secrets), None)?;
            }
        }
    }
    let (addr, task) = sim.serve(&addr).await?;
    eprintln!("endpoint-sim listening on {addr}");
    tokio::select! {
        _ = task => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
    }
    Ok(())
}

#[cfg(unix)]
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminated() {
    std::future::pending().await
}
