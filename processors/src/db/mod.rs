//! The send path's PostgreSQL tables, each written by one module: `outbound_messages`
//! ([`outbox`]: the send API's side and the router's state machine), `endpoints`
//! ([`endpoints`]: the endpoints API's side and the fan-out's health transitions) and
//! `conversations` ([`conversations`]: the normalizer's, read by the send API and the
//! router), `campaigns` ([`campaigns`]: the campaigns API's and the routers'),
//! `suppressions` ([`suppressions`]: the normalizer's and the suppressions
//! API's), `templates` ([`templates`]: synced by the routers). The configuration plane's tables (tenants, API keys, business numbers, BSP
//! credentials) are written by the gateway's admin API alone.
//!
//! All of them share one migration history (`_sqlx_migrations_send`, apart from the
//! normalizer's dedupe store and the sinks', so each component evolves on its own), run
//! by whichever of the gateway, the router, the fan-out and the normalizer starts first.

pub mod campaigns;
pub mod conversations;
pub mod endpoints;
pub mod media;
pub mod outbox;
pub mod suppressions;
pub mod templates;

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
