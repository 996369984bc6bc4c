//! Waiting for a dependency at start-up: retry what can heal (the database is starting,
//! restarting or unreachable), fail fast on what cannot (say, a migration that conflicts
//! with the database), instead of crash-looping or retrying a hopeless error forever.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Run `f` until it succeeds (`Ok(Some(()))`), `stop` fires (`Ok(None)`), or it fails
/// with an error `is_transient` rejects (`Err`). Backoff doubles from 200 ms to 5 s.
pub async fn wait_for<F, Fut, T, E>(
    what: &str,
    stop: &CancellationToken,
    is_transient: impl Fn(&E) -> bool,
    f: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    until(what, stop, Duration::from_millis(200), is_transient, f)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// The one retry loop of the stages: run `f` until it succeeds (`Ok(Some(v))`), `stop`
/// fires (`Ok(None)`: the caller gives its input back, to be done again), or it fails with
/// an error `is_transient` rejects (`Err(e)`, unchanged, for the caller to dead-letter or
/// report). Transient failures are logged with `what`; the pause doubles from `first` to
/// 5 s, so a long outage costs few attempts and a blip little time.
pub async fn until<F, Fut, T, E>(
    what: &str,
    stop: &CancellationToken,
    first: Duration,
    is_transient: impl Fn(&E) -> bool,
    mut f: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delay = first;
    loop {
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if is_transient(&e) => tracing::warn!(error = %e, "{what} failed; retrying"),
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Migration errors a database recovers from by itself.
#[cfg(feature = "postgres")]
pub fn is_transient_migrate_error(e: &sqlx::migrate::MigrateError) -> bool {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => is_transient_sqlx_error(e),
        _ => false,
    }
}

/// Connection-level failures, and the server saying it is starting or shutting down.
#[cfg(feature = "postgres")]
pub fn is_transient_sqlx_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // 57P03 cannot_connect_now, 57P01 admin_shutdown, 53300 too_many_connections.
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("57P03") | Some("57P01") | Some("53300")
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_transient_errors_and_stops_on_permanent_ones() {
        let stop = CancellationToken::new();
        let mut calls = 0;
        let r = wait_for(
            "x",
            &stop,
            |e: &&str| *e == "transient",
            || {
                calls += 1;
                let out = if calls < 3 { Err("transient") } else { Ok(()) };
                async move { out }
            },
        )
        .await;
        assert_eq!(r.unwrap(), Some(()));
        assert_eq!(calls, 3);
        let r = wait_for(
            "x",
            &stop,
            |e: &&str| *e == "transient",
            || async { Err::<(), _>("broken") },
        )
        .await;
        assert!(r.unwrap_err().to_string().contains("broken"));
        stop.cancel();
        let r = wait_for(
            "x",
            &stop,
            |_: &&str| true,
            || async { Err::<(), _>("transient") },
        )
        .await;
        assert_eq!(r.unwrap(), None);
    }
}
