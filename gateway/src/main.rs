//! Switchboard gateway: load config, start telemetry, serve until SIGTERM.

// Every webhook allocates its body, its record and its answer several times over.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("gateway");
    let cfg: switchboard_gateway::config::Config = switchboard_runtime::config::load()?;
    let shutdown = switchboard_runtime::shutdown::on_signal();
    switchboard_gateway::run(cfg, shutdown).await
}
