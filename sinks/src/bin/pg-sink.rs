//! pg-sink: wa.events → PostgreSQL `messages` + `message_status_history`.

use std::sync::Arc;
use std::time::Duration;

use switchboard_schemas::Codec;
use switchboard_sinks::pg::{PgSink, PgWriter};
use switchboard_sinks::Config;

// Decoding and row building allocate per record: glibc malloc took about a third of a
// replay's CPU (perf, loadtest/REPORT.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("pg-sink");
    let cfg: Config = switchboard_runtime::config::load()?;
    anyhow::ensure!(
        !cfg.database_url.is_empty(),
        "SWITCHBOARD_DATABASE_URL is required"
    );
    let shutdown = switchboard_runtime::shutdown::on_signal();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(switchboard_runtime::pg::options(
            &cfg.database_url,
            "pg-sink",
        )?);
    let writer = PgWriter::new(pool.clone());
    if switchboard_runtime::retry::wait_for(
        "postgres",
        &shutdown,
        switchboard_runtime::retry::is_transient_migrate_error,
        || writer.migrate(),
    )
    .await?
    .is_none()
    {
        return Ok(());
    }
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(move || {
        let p = pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&p)
                .await
                .map(|_| ())
                .map_err(|e| format!("postgres: {e}"))
        })
    });
    let handler = PgSink {
        codec: Codec::new(&cfg.kafka.schema_registry_url),
        writer,
    };
    let topics = switchboard_runtime::kafka::Topics::new(&cfg.kafka.topic_prefix);
    switchboard_sinks::run_sink(
        &cfg,
        "pg-sink",
        "127.0.0.1:9102",
        ready,
        handler,
        &[&topics.events],
        &topics.pg_sink_dlq,
        shutdown,
    )
    .await
}
