//! PostgreSQL plumbing every binary uses: connection options and the readiness ping.

use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

/// The options of `url`, with the connections named after `binary` in
/// `pg_stat_activity` unless the URL names them (`application_name=`): an operator (or a
/// test waiting for a killed process's statements to end) can tell whose a backend is.
pub fn options(url: &str, binary: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    Ok(if url.contains("application_name=") {
        opts
    } else {
        opts.application_name(&format!("switchboard-{binary}"))
    })
}

/// A readiness probe: one round trip, its error as `/readyz` shows it.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| format!("postgres: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_are_named_after_the_binary_unless_the_url_names_them() {
        let o = super::options("postgres://u:p@127.0.0.1/db", "router").unwrap();
        assert_eq!(o.get_application_name(), Some("switchboard-router"));
        let o = super::options(
            "postgres://u:p@127.0.0.1/db?application_name=mine",
            "router",
        )
        .unwrap();
        assert_eq!(o.get_application_name(), Some("mine"));
    }
}
