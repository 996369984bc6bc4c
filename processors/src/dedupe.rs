//! The dedupe store: which event ids have already been written to `wa.events`.
//!
//! It lives in PostgreSQL so it survives restarts and is shared by every normalizer
//! replica. Order of use per batch (see `normalize`): look up, produce the unseen events,
//! wait for the broker's acks, then mark them. A crash between produce and mark repeats
//! those events on `wa.events` (same ids; sinks are idempotent and endpoints get the same
//! `webhook-id`), but never loses one: marking first would.
//!
//! Retries of one webhook share a partition of `wa.webhooks.raw` (keyed by BSP + account),
//! so one consumer handles them in order and the look-up/mark pair does not race.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub struct DedupeStore {
    pool: PgPool,
}

impl DedupeStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Create or update the store's table. The normalizer owns its own migration history
    /// table, apart from the sinks'.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut m = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
        m.dangerous_set_table_name("_sqlx_migrations_normalizer");
        m.run(&self.pool).await
    }

    /// The subset of `ids` already marked.
    pub async fn seen(&self, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        // A join against UNNEST, not `event_id = ANY($1)`: a cached generic plan made
        // while the table was small kept seq-scanning it with the whole array per row as
        // it grew (measured: ~1 s per 1,600-id batch at 100k rows, see loadtest/REPORT.md).
        // An unnest estimated at a few rows plans as index probes on the primary key.
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT d.event_id FROM UNNEST($1::text[]) AS t(id) JOIN dedupe_events d ON d.event_id = t.id")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Mark `ids` as written. Idempotent.
    pub async fn mark(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("INSERT INTO dedupe_events (event_id) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forget ids older than `retention`, a bounded chunk at a time so the table is never
    /// locked for long. Returns how many were deleted.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM dedupe_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM dedupe_events WHERE first_seen < now() - make_interval(secs => $1) LIMIT 10000))",
            )
            .bind(retention.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += n;
            if n < 10000 {
                return Ok(total);
            }
        }
    }

    /// The database the store lives in (the normalizer's other tables share it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), String> {
        switchboard_runtime::pg::ping(&self.pool).await
    }
}
