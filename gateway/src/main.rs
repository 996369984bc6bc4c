//! Switchboard gateway: load config, start telemetry, serve until SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("gateway");
    let cfg: switchboard_gateway::config::Config = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();
    switchboard_gateway::run(cfg, shutdown).await
}
