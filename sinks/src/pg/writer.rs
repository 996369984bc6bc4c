//! The PostgreSQL side: migrations, monthly history partitions, and the batched
//! transaction (UNNEST arrays, one statement per table).

use std::collections::HashSet;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, PgPool};
use switchboard_schemas::Event;

use super::merge::merge_batch;
use super::text::storable;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub struct PgWriter {
    pool: PgPool,
    partitions: HashSet<(i32, u32)>,
}

impl PgWriter {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            partitions: HashSet::new(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut m = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
        m.dangerous_set_table_name("_sqlx_migrations_pg_sink");
        m.run(&self.pool).await
    }

    /// Create the monthly partition for every month in `months` not known to exist.
    async fn ensure_partitions(&mut self, months: HashSet<(i32, u32)>) -> Result<(), sqlx::Error> {
        for (y, m) in months {
            if self.partitions.contains(&(y, m)) {
                continue;
            }
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS message_status_history_y{y:04}m{m:02} PARTITION OF message_status_history \
                 FOR VALUES FROM ('{y:04}-{m:02}-01 00:00:00+00') TO ('{ny:04}-{nm:02}-01 00:00:00+00')"
            );
            match sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await {
                Ok(_) => {}
                // Another replica created it between our IF NOT EXISTS check and ours.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P07") => {}
                Err(e) => return Err(e),
            }
            self.partitions.insert((y, m));
        }
        Ok(())
    }

    /// Write one batch in one transaction (NULs replaced, see [`super::text`]).
    pub async fn write(&mut self, events: &[Event]) -> Result<(), sqlx::Error> {
        let events: Vec<std::borrow::Cow<'_, Event>> = events.iter().map(storable).collect();
        let statuses: Vec<&Event> = events
            .iter()
            .map(|e| &**e)
            .filter(|e| e.status.is_some())
            .collect();
        let months = statuses
            .iter()
            .map(|e| {
                let t = ts(e.occurred_at_ms);
                (t.year(), t.month())
            })
            .collect();
        self.ensure_partitions(months).await?;

        let mut tx = self.pool.begin().await?;
        if !statuses.is_empty() {
            sqlx::query(
                "INSERT INTO message_status_history (event_id, bsp, wamid, status, occurred_at, received_at, error_code, error_title) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(statuses.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| e.bsp.clone()).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| e.wamid.clone()).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| e.status.clone().unwrap_or_default()).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| ts(e.occurred_at_ms)).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| ts(e.received_at_ms)).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| e.error_code.clone()).collect::<Vec<_>>())
            .bind(statuses.iter().map(|e| e.error_title.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        let rows = merge_batch(events.iter().map(|e| &**e));
        if !rows.is_empty() {
            macro_rules! col {
                ($f:expr) => {
                    rows.iter().map($f).collect::<Vec<_>>()
                };
            }
            // The ON CONFLICT branch is the same merge as `MessageRow::absorb`, against
            // the stored row.
            sqlx::query(
                "INSERT INTO messages AS m (bsp, wamid, tenant_id, business_number, business_account_id, customer_id, direction, \
                   status, status_rank, status_at, message_type, content, context_wamid, error_code, error_title, error_detail, \
                   conversation_id, conversation_category, pricing_category, billable, first_event_at, message_id, metadata, \
                   media_sha256, media_size, media_mime_type) \
                 SELECT bsp, wamid, tenant_id, business_number, business_account_id, customer_id, direction, status, status_rank, \
                   status_at, message_type, content::jsonb, context_wamid, error_code, error_title, error_detail, conversation_id, \
                   conversation_category, pricing_category, billable, first_event_at, message_id, metadata::jsonb, \
                   media_sha256, media_size, media_mime_type \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                   $9::smallint[], $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], \
                   $17::text[], $18::text[], $19::text[], $20::bool[], $21::timestamptz[], $22::text[], $23::text[], \
                   $24::text[], $25::int8[], $26::text[]) \
                   AS t(bsp, wamid, tenant_id, business_number, business_account_id, customer_id, direction, status, status_rank, \
                   status_at, message_type, content, context_wamid, error_code, error_title, error_detail, conversation_id, \
                   conversation_category, pricing_category, billable, first_event_at, message_id, metadata, \
                   media_sha256, media_size, media_mime_type) \
                 ON CONFLICT (bsp, wamid) DO UPDATE SET \
                   status = CASE WHEN EXCLUDED.status_rank > m.status_rank THEN EXCLUDED.status ELSE m.status END, \
                   status_at = CASE WHEN EXCLUDED.status_rank > m.status_rank THEN EXCLUDED.status_at ELSE m.status_at END, \
                   status_rank = GREATEST(m.status_rank, EXCLUDED.status_rank), \
                   direction = CASE WHEN EXCLUDED.direction = 'inbound' THEN 'inbound' ELSE m.direction END, \
                   first_event_at = LEAST(m.first_event_at, EXCLUDED.first_event_at), \
                   error_code = COALESCE(EXCLUDED.error_code, m.error_code), \
                   error_title = CASE WHEN EXCLUDED.error_code IS NOT NULL THEN EXCLUDED.error_title ELSE m.error_title END, \
                   error_detail = CASE WHEN EXCLUDED.error_code IS NOT NULL THEN EXCLUDED.error_detail ELSE m.error_detail END, \
                   tenant_id = COALESCE(m.tenant_id, EXCLUDED.tenant_id), \
                   business_account_id = COALESCE(m.business_account_id, EXCLUDED.business_account_id), \
                   message_type = COALESCE(m.message_type, EXCLUDED.message_type), \
                   content = COALESCE(m.content, EXCLUDED.content), \
                   context_wamid = COALESCE(m.context_wamid, EXCLUDED.context_wamid), \
                   conversation_id = COALESCE(m.conversation_id, EXCLUDED.conversation_id), \
                   conversation_category = COALESCE(m.conversation_category, EXCLUDED.conversation_category), \
                   pricing_category = COALESCE(m.pricing_category, EXCLUDED.pricing_category), \
                   billable = COALESCE(m.billable, EXCLUDED.billable), \
                   message_id = COALESCE(m.message_id, EXCLUDED.message_id), \
                   metadata = COALESCE(m.metadata, EXCLUDED.metadata), \
                   media_sha256 = COALESCE(m.media_sha256, EXCLUDED.media_sha256), \
                   media_size = COALESCE(m.media_size, EXCLUDED.media_size), \
                   media_mime_type = COALESCE(m.media_mime_type, EXCLUDED.media_mime_type), \
                   updated_at = now()",
            )
            .bind(col!(|r| r.bsp.clone()))
            .bind(col!(|r| r.wamid.clone()))
            .bind(col!(|r| r.tenant_id.clone()))
            .bind(col!(|r| r.business_number.clone()))
            .bind(col!(|r| r.business_account_id.clone()))
            .bind(col!(|r| r.customer_id.clone()))
            .bind(col!(|r| r.direction.to_string()))
            .bind(col!(|r| r.status.clone()))
            .bind(col!(|r| r.status_rank))
            .bind(col!(|r| r.status_at_ms.map(ts)))
            .bind(col!(|r| r.message_type.clone()))
            .bind(col!(|r| r.content.clone()))
            .bind(col!(|r| r.context_wamid.clone()))
            .bind(col!(|r| r.error_code.clone()))
            .bind(col!(|r| r.error_title.clone()))
            .bind(col!(|r| r.error_detail.clone()))
            .bind(col!(|r| r.conversation_id.clone()))
            .bind(col!(|r| r.conversation_category.clone()))
            .bind(col!(|r| r.pricing_category.clone()))
            .bind(col!(|r| r.billable))
            .bind(col!(|r| ts(r.first_event_at_ms)))
            .bind(col!(|r| r.message_id.clone()))
            .bind(col!(|r| r.metadata.clone()))
            .bind(col!(|r| r.media_sha256.clone()))
            .bind(col!(|r| r.media_size))
            .bind(col!(|r| r.media_mime_type.clone()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}
