//! The `endpoints` table and its one owner: the endpoints API's tenant-scoped reads and
//! writes (each change then published to `wa.config` by the caller, with the version
//! returned here), and the fan-out's health transitions (when an endpoint started
//! failing, disabling one that kept failing), which happen on transitions only, never per
//! delivery. A row holds the whole entity in `config` (JSON); its version is
//! `updated_at` in microseconds, so a newer record always wins on `wa.config`.

use sqlx::{PgPool, Row};
use switchboard_schemas::config::{self, Endpoint, ENDPOINT};
use switchboard_schemas::ConfigRecord;

type Ts = chrono::DateTime<chrono::Utc>;

const VERSION: &str = "(extract(epoch from updated_at) * 1000000)::bigint AS version";

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("endpoint {0} is stored in a form this version cannot read: {1}")]
    Corrupt(String, serde_json::Error),
}

/// What creating an endpoint did.
pub enum Created {
    /// Stored at this time, with this version.
    Stored { created_at: Ts, version: i64 },
    /// The tenant has `cap` endpoints already.
    TooMany,
}

#[derive(Clone)]
pub struct EndpointBook {
    pool: PgPool,
}

impl EndpointBook {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One of `tenant`'s endpoints, with its creation time. Another tenant's id is
    /// indistinguishable from an unknown one.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<(Endpoint, Ts)>, BookError> {
        let row = sqlx::query(
            "SELECT config, created_at FROM endpoints WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let ep = serde_json::from_value(row.get("config"))
            .map_err(|e| BookError::Corrupt(id.to_string(), e))?;
        Ok(Some((ep, row.get("created_at"))))
    }

    /// `tenant`'s endpoints, oldest first (at most `limit`; unreadable rows skipped).
    pub async fn list(&self, tenant: &str, limit: i64) -> Result<Vec<(Endpoint, Ts)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT config, created_at FROM endpoints WHERE tenant_id = $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(tenant)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    serde_json::from_value(r.get("config")).ok()?,
                    r.get("created_at"),
                ))
            })
            .collect())
    }

    /// Store a new endpoint unless its tenant has `cap` already: counted and inserted
    /// under a per-tenant lock, so concurrent creates cannot pass the cap together.
    pub async fn create(&self, ep: &Endpoint, cap: u32) -> Result<Created, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('endpoints/' || $1))")
            .bind(&ep.tenant_id)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query("SELECT count(*) FROM endpoints WHERE tenant_id = $1")
            .bind(&ep.tenant_id)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if count >= cap as i64 {
            return Ok(Created::TooMany);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO endpoints (id, tenant_id, config) VALUES ($1, $2, $3) RETURNING created_at, {VERSION}"
        )))
        .bind(&ep.id)
        .bind(&ep.tenant_id)
        .bind(serde_json::to_value(ep).unwrap_or_default())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Created::Stored {
            created_at: row.get("created_at"),
            version: row.get("version"),
        })
    }

    /// Store `ep` over its row (of its tenant); `clear_failing` when it is enabled again.
    /// Returns the new version, `None` if there is no such endpoint.
    pub async fn update(
        &self,
        ep: &Endpoint,
        clear_failing: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE endpoints SET config = $3, updated_at = clock_timestamp(){} WHERE id = $1 AND tenant_id = $2 RETURNING {VERSION}",
            if clear_failing { ", failing_since = NULL" } else { "" }
        )))
        .bind(&ep.id)
        .bind(&ep.tenant_id)
        .bind(serde_json::to_value(ep).unwrap_or_default())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get("version")))
    }

    /// Delete one of `tenant`'s endpoints; returns the deletion's version, `None` if
    /// there is no such endpoint.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query(
            "DELETE FROM endpoints WHERE id = $1 AND tenant_id = $2 RETURNING (extract(epoch from clock_timestamp()) * 1000000)::bigint AS version",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get("version")))
    }

    /// Every endpoint as its `wa.config` record, to republish at start-up.
    pub async fn snapshot(&self) -> Result<Vec<ConfigRecord>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, tenant_id, config::text AS config, {VERSION} FROM endpoints"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut rec = config::record(
                    ENDPOINT,
                    r.get::<&str, _>("id"),
                    r.get::<&str, _>("tenant_id"),
                    &(),
                    r.get("version"),
                );
                rec.body = r.get("config");
                rec
            })
            .collect())
    }

    /// Every endpoint (unreadable rows skipped), for re-sealing their secrets.
    pub async fn all(&self) -> Result<Vec<Endpoint>, sqlx::Error> {
        let rows = sqlx::query("SELECT config FROM endpoints")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_value(r.get("config")).ok())
            .collect())
    }

    /// Store `ep` over its row whatever its tenant (keyring rotation); the new version,
    /// `None` if it is gone.
    pub async fn replace(&self, ep: &Endpoint) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE endpoints SET config = $2, updated_at = clock_timestamp() WHERE id = $1 RETURNING {VERSION}"
        )))
        .bind(&ep.id)
        .bind(serde_json::to_value(ep).unwrap_or_default())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get("version")))
    }

    pub async fn ping(&self) -> Result<(), String> {
        switchboard_runtime::pg::ping(&self.pool).await
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
