//! The send path's PostgreSQL tables, each written by one module: `outbound_messages`
//! ([`outbox`]: the send API's side and the router's state machine) and `endpoints`
//! ([`endpoints`]: the endpoints API's side and the fan-out's health transitions). The
//! configuration plane's tables (tenants, API keys, business numbers, BSP credentials)
//! are written by the gateway's admin API alone.
//!
//! All of them share one migration history (`_sqlx_migrations_send`, apart from the
//! normalizer's and the sinks', so each component evolves on its own), run by whichever
//! of the gateway, the router and the fan-out starts first.

pub mod endpoints;
pub mod outbox;

use sqlx::migrate::Migrator;
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./src/db/migrations");

/// The migration history table of the send path.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations_send";

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut m = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m.run(pool).await
}
