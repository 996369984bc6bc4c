//! Dynamic SQL for the admin API's config-plane tables. The schema of the send path is
//! `switchboard_processors::db` (migrations and the tables other modules own).

use sqlx::postgres::PgArguments;
use sqlx::Postgres;

/// A query from SQL built at run time from constant pieces (never from input).
pub fn q(sql: String) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
}
