//! `media_blobs` and `media_refs`: the inbound media the routers' media fetcher stored
//! (`crate::media`), each blob once by its SHA-256, and which tenant's message refers to
//! it. The media API serves a blob only to a tenant with a reference to it.

use sqlx::PgPool;

#[derive(Clone)]
pub struct Media {
    pool: PgPool,
}

impl Media {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The blob exists (once) and this message refers to it. Idempotent.
    pub async fn record(
        &self,
        tenant: &str,
        bsp: &str,
        wamid: &str,
        sha256: &str,
        size: i64,
        mime_type: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO media_blobs (sha256, size, mime_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(size)
        .bind(mime_type)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO media_refs (tenant_id, bsp, wamid, sha256) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(bsp)
        .bind(wamid)
        .bind(sha256)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// (size, MIME type) of a blob the tenant refers to; `None` for any other.
    pub async fn owned(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Option<(i64, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT b.size, b.mime_type FROM media_blobs b \
             WHERE b.sha256 = $2 AND EXISTS (SELECT 1 FROM media_refs r WHERE r.tenant_id = $1 AND r.sha256 = $2)",
        )
        .bind(tenant)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await
    }
}
