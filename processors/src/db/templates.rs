//! `templates` and `template_syncs`: the message templates each WABA has at the BSP,
//! synced by the routers ([`crate::route::templates`]) and read by the send API and the
//! campaigns' pre-flight. A sync replaces a WABA's templates whole, so one deleted at
//! the BSP disappears here too; one sync per WABA runs at a time across routers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use switchboard_connectors::meta::templates::{Needs, Template};

#[derive(Clone)]
pub struct Templates {
    pool: PgPool,
}

/// A template as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredTemplate {
    pub waba_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub category: String,
    pub components: Value,
    pub needs: Value,
    pub synced_at: DateTime<Utc>,
}

impl StoredTemplate {
    pub fn needs(&self) -> Needs {
        let n = |k: &str| self.needs.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        Needs {
            header_text: n("header_text"),
            header_media: self.needs.get("header_media") == Some(&Value::Bool(true)),
            body: n("body"),
            url_buttons: n("url_buttons"),
        }
    }

    pub fn is_marketing(&self) -> bool {
        self.category.eq_ignore_ascii_case("marketing")
    }

    pub fn is_approved(&self) -> bool {
        self.status.eq_ignore_ascii_case("approved")
    }
}

fn needs_json(n: &Needs) -> Value {
    serde_json::json!({"header_text": n.header_text, "header_media": n.header_media,
        "body": n.body, "url_buttons": n.url_buttons})
}

const COLUMNS: &str = "waba_id, name, language, status, category, components, needs, synced_at";

impl Templates {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Take the WABA's next sync if none ran for `every` (across routers).
    pub async fn claim_sync(
        &self,
        tenant: &str,
        waba: &str,
        every: Duration,
    ) -> Result<bool, sqlx::Error> {
        let won = sqlx::query(
            "INSERT INTO template_syncs AS s (waba_id, tenant_id, started_at) VALUES ($1, $2, now()) \
             ON CONFLICT (waba_id) DO UPDATE SET started_at = now(), tenant_id = EXCLUDED.tenant_id \
             WHERE s.started_at < now() - make_interval(secs => $3)",
        )
        .bind(waba)
        .bind(tenant)
        .bind(every.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(won == 1)
    }

    /// The WABA's templates are `templates` now: upsert them and drop the others, in one
    /// transaction; record the sync.
    pub async fn replace(
        &self,
        tenant: &str,
        waba: &str,
        templates: &[Template],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let (at,): (DateTime<Utc>,) = sqlx::query_as("SELECT now()").fetch_one(&mut *tx).await?;
        macro_rules! col {
            ($f:expr) => {
                templates.iter().map($f).collect::<Vec<_>>()
            };
        }
        sqlx::query(
            "INSERT INTO templates (tenant_id, waba_id, name, language, status, category, components, needs, synced_at) \
             SELECT $1, $2, t.name, t.language, t.status, t.category, t.components, t.needs, $9 \
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[]) \
               AS t(name, language, status, category, components, needs) \
             ON CONFLICT (tenant_id, waba_id, name, language) DO UPDATE SET status = EXCLUDED.status, \
               category = EXCLUDED.category, components = EXCLUDED.components, needs = EXCLUDED.needs, \
               synced_at = EXCLUDED.synced_at",
        )
        .bind(tenant)
        .bind(waba)
        .bind(col!(|t| t.name.clone()))
        .bind(col!(|t| t.language.clone()))
        .bind(col!(|t| t.status.clone()))
        .bind(col!(|t| t.category.clone()))
        .bind(col!(|t| t.components.clone()))
        .bind(col!(|t| needs_json(&t.needs)))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM templates WHERE tenant_id = $1 AND waba_id = $2 AND synced_at < $3",
        )
        .bind(tenant)
        .bind(waba)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE template_syncs SET synced_at = $2, templates = $3, error = NULL WHERE waba_id = $1",
        )
        .bind(waba)
        .bind(at)
        .bind(templates.len() as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A sync failed: keep the templates, record why.
    pub async fn sync_failed(&self, waba: &str, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE template_syncs SET error = $2 WHERE waba_id = $1")
            .bind(waba)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One template of the tenant's WABA.
    pub async fn find(
        &self,
        tenant: &str,
        waba: &str,
        name: &str,
        language: &str,
    ) -> Result<Option<StoredTemplate>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM templates WHERE tenant_id = $1 AND waba_id = $2 AND name = $3 AND language = $4"
        )))
        .bind(tenant)
        .bind(waba)
        .bind(name)
        .bind(language)
        .fetch_optional(&self.pool)
        .await
    }

    /// The tenant's templates, by WABA, name and language.
    pub async fn list(&self, tenant: &str) -> Result<Vec<StoredTemplate>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM templates WHERE tenant_id = $1 ORDER BY waba_id, name, language LIMIT 10000"
        )))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
    }

    /// The tenant's syncs: (WABA, last success, templates then, last error).
    pub async fn syncs(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, Option<DateTime<Utc>>, Option<i32>, Option<String>)>, sqlx::Error>
    {
        sqlx::query_as(
            "SELECT waba_id, synced_at, templates, error FROM template_syncs WHERE tenant_id = $1 ORDER BY waba_id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
    }
}
