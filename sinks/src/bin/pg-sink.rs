//! pg-sink: wa.events → PostgreSQL `messages` + `message_status_history`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{register_int_counter, IntCounter};
use rdkafka::message::OwnedMessage;
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::Codec;
use switchboard_sinks::pg::PgWriter;
use switchboard_sinks::Config;

static ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "switchboard_pg_sink_events_total",
        "Events written to PostgreSQL"
    )
    .expect("registers once")
});

struct Handler {
    codec: Codec,
    writer: PgWriter,
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let events = switchboard_sinks::decode_events(&self.codec, batch).await?;
        self.writer.write(&events).await?;
        ROWS.inc_by(events.len() as u64);
        Ok(())
    }
}

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
        .connect_lazy(&cfg.database_url)?;
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
    let handler = Handler {
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
        shutdown,
    )
    .await
}
