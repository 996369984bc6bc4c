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

use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The stored key of an event id: the 16 bytes of `evt_<32 hex>` (every id
/// `switchboard_schemas::ids` makes), else the first 16 bytes of the id's SHA-256, so any
/// other id still dedupes.
pub fn key(id: &str) -> Vec<u8> {
    id.strip_prefix("evt_")
        .filter(|h| h.len() == 32)
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_else(|| Sha256::digest(id.as_bytes())[..16].to_vec())
}

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
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(id)).collect();
        // A join against UNNEST, not `id = ANY($1)`: a cached generic plan made while the
        // table was small kept seq-scanning it with the whole array per row as it grew
        // (measured: ~1 s per 1,600-id batch at 100k rows, see loadtest/REPORT.md). An
        // unnest estimated at a few rows plans as index probes on the primary key.
        let rows: Vec<(i32,)> = sqlx::query_as(
            "SELECT t.n::int4 FROM UNNEST($1::bytea[]) WITH ORDINALITY AS t(id, n) JOIN dedupe_ids d ON d.id = t.id",
        )
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(n,)| ids.get(n as usize - 1).cloned())
            .collect())
    }

    /// Mark `ids` as written. Idempotent.
    pub async fn mark(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(id)).collect();
        sqlx::query(
            "INSERT INTO dedupe_ids (id) SELECT * FROM UNNEST($1::bytea[]) ON CONFLICT DO NOTHING",
        )
        .bind(&keys)
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
                "DELETE FROM dedupe_ids WHERE ctid = ANY(ARRAY(SELECT ctid FROM dedupe_ids WHERE first_seen < now() - make_interval(secs => $1) LIMIT 10000))",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_kept_as_their_sixteen_bytes() {
        let id = switchboard_schemas::status_event_id(
            "meta",
            "wamid.1",
            switchboard_schemas::Status::Sent,
        );
        let k = key(&id);
        assert_eq!(k.len(), 16);
        assert_eq!(format!("evt_{}", hex::encode(&k)), id);
        // Anything else still gets a stable 16-byte key of its own.
        assert_eq!(key("legacy-id").len(), 16);
        assert_eq!(key("legacy-id"), key("legacy-id"));
        assert_ne!(key("legacy-id"), key("legacy-id2"));
        assert_ne!(key("evt_XYZ"), key("evt_XY"));
    }
}
