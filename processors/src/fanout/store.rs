//! The fan-out's few writes to PostgreSQL (the gateway's `endpoints` table): when an
//! endpoint started failing, and disabling an endpoint that kept failing. Both happen on
//! health transitions only, never per delivery.

use sqlx::{PgPool, Row};
use switchboard_schemas::config::{self, ENDPOINT};
use switchboard_schemas::ConfigRecord;

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn ping(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| format!("postgres: {e}"))
    }

    /// Endpoints failing now, with the time they started (Unix ms).
    pub async fn failing(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, (extract(epoch from failing_since) * 1000)::bigint AS since FROM endpoints WHERE failing_since IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("since"))).collect())
    }

    /// Record the first failure (keeps an earlier one); returns the time in force.
    pub async fn mark_failing(&self, id: &str, since_ms: i64) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE endpoints SET failing_since = COALESCE(failing_since, to_timestamp($2::double precision / 1000)) \
             WHERE id = $1 RETURNING (extract(epoch from failing_since) * 1000)::bigint AS since",
        )
        .bind(id)
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get("since")).unwrap_or(since_ms))
    }

    pub async fn mark_healthy(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE endpoints SET failing_since = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Disable an endpoint; returns its new configuration record, or `None` if it was
    /// already disabled (another replica won) or is gone.
    pub async fn disable(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Option<ConfigRecord>, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE endpoints SET config = config || jsonb_build_object('disabled', true, 'disabled_reason', $2::text), \
             failing_since = NULL, updated_at = clock_timestamp() \
             WHERE id = $1 AND NOT COALESCE((config->>'disabled')::boolean, false) \
             RETURNING tenant_id, config::text AS config, \
             (extract(epoch from updated_at) * 1000000)::bigint AS version",
        )
        .bind(id)
        .bind(reason)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            let mut rec = config::record(
                ENDPOINT,
                id,
                r.get::<&str, _>("tenant_id"),
                &(),
                r.get("version"),
            );
            rec.body = r.get("config");
            rec
        }))
    }
}
