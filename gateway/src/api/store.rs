//! The send path's PostgreSQL schema (config plane + per-message state), shared with the
//! router, which embeds the same migrations.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgArguments;
use sqlx::{PgPool, Postgres};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The migration history table of the send path (apart from the sinks' and the
/// normalizer's, so each component evolves on its own).
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations_send";

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut m = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m.run(pool).await
}

/// A query from SQL built at run time from constant pieces (never from input).
pub fn q(sql: String) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
}
