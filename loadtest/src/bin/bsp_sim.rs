//! bsp-sim: the BSP simulator as a process (see `switchboard_loadtest::bsp_sim`).
//!
//! Env: `SIM_ADDR` (default 127.0.0.1:18090), `SIM_GATEWAY_URL` (default
//! http://127.0.0.1:8080), `SIM_SECRETS` (JSON of `SimSecrets`), `SIM_BEHAVIOR` (JSON of
//! `Behavior`).

use switchboard_loadtest::bsp_sim::{Behavior, Sim, SimSecrets};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let get = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let secrets: SimSecrets = serde_json::from_str(&get("SIM_SECRETS", "{}"))?;
    let behavior: Behavior = serde_json::from_str(&get("SIM_BEHAVIOR", "{}"))?;
    let sim = Sim::new(
        secrets,
        &get("SIM_GATEWAY_URL", "http://127.0.0.1:8080"),
        behavior,
    );
    let (addr, task) = sim.serve(&get("SIM_ADDR", "127.0.0.1:18090")).await?;
    eprintln!("bsp-sim listening on {addr}");
    tokio::select! {
        _ = task => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
