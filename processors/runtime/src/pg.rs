//! PostgreSQL connection options every binary uses.

use sqlx::postgres::PgConnectOptions;

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
