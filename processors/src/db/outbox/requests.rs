//! The send API's side of `outbound_messages`: requests in (idempotent on the tenant's
//! key), requests taken back when their publication failed, and the tenant's reads and
//! cancellations.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::{PgPool, Row};

type Ts = chrono::DateTime<chrono::Utc>;

/// A validated send to store, `queued` (or `scheduled` when `scheduled_at_ms` is set).
pub struct NewSend {
    pub message_id: String,
    pub idempotency_key: Option<String>,
    /// Of the request body, to tell a repeated key with another body.
    pub request_hash: String,
    /// The answer a repeat of this request gets.
    pub response: Value,
    pub from: String,
    pub to: String,
    pub message_type: String,
    pub message: Value,
    pub metadata: Option<Value>,
    pub scheduled_at_ms: Option<i64>,
    pub request_id: String,
}

/// A request stored earlier under an idempotency key.
pub struct Earlier {
    pub idempotency_key: String,
    pub message_id: String,
    pub request_hash: String,
    pub response: Value,
    /// Acknowledged on `wa.send.requests`.
    pub published: bool,
    pub from: String,
    pub to: String,
    pub message_type: String,
    pub message: Value,
    pub metadata: Option<Value>,
    pub scheduled_at_ms: Option<i64>,
}

/// A message as the API shows it: its send state, and its delivery status from the
/// `messages` table the pg-sink keeps.
pub struct MessageRow {
    pub message_id: String,
    pub state: String,
    /// The delivery status if the BSP reported one, else the send state.
    pub current_status: String,
    pub from: String,
    pub to: String,
    pub message_type: String,
    pub metadata: Option<Value>,
    pub bsp: Option<String>,
    pub wamid: Option<String>,
    pub attempts: i32,
    pub error_code: Option<String>,
    pub error_detail: Option<String>,
    pub scheduled_at: Option<Ts>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// Which of a tenant's messages to list.
#[derive(Default)]
pub struct MessageFilter {
    pub status: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
    /// The (created_at, id) of the last message of the previous page.
    pub after: Option<(Ts, String)>,
}

/// What cancelling found.
pub enum Cancelled {
    Done,
    /// Not in a state that can be cancelled (it is this one).
    Too(String),
    Missing,
}

const COLUMNS: &str =
    "o.message_id, o.state, o.from_number, o.to_id, o.message_type, o.metadata, o.bsp, o.wamid,
    o.error_code, o.error_detail, o.attempts, o.scheduled_at, o.created_at, o.updated_at,
    m.error_code AS status_error_code, m.error_title AS status_error_title,
    COALESCE(m.status, o.state) AS current_status";

const JOIN: &str = "FROM outbound_messages o
    LEFT JOIN messages m ON m.bsp = o.bsp AND m.wamid = COALESCE(o.wamid, o.message_id)";

fn message_row(r: &sqlx::postgres::PgRow) -> MessageRow {
    MessageRow {
        message_id: r.get("message_id"),
        state: r.get("state"),
        current_status: r.get("current_status"),
        from: r.get("from_number"),
        to: r.get("to_id"),
        message_type: r.get("message_type"),
        metadata: r.get("metadata"),
        bsp: r.get("bsp"),
        wamid: r.get("wamid"),
        attempts: r.get("attempts"),
        // The BSP's word on delivery wins over the send's own error.
        error_code: r
            .get::<Option<String>, _>("status_error_code")
            .or(r.get("error_code")),
        error_detail: r
            .get::<Option<String>, _>("status_error_title")
            .or(r.get("error_detail")),
        scheduled_at: r.get("scheduled_at"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// The send API's statements on `outbound_messages`.
#[derive(Clone)]
pub struct Requests {
    pool: PgPool,
}

impl Requests {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Store `sends` of `tenant` in one statement; a send whose idempotency key the tenant
    /// used before is not stored. Returns the ids stored.
    pub async fn insert(
        &self,
        tenant: &str,
        sends: &[NewSend],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let col = |f: &dyn Fn(&NewSend) -> Option<String>| sends.iter().map(f).collect::<Vec<_>>();
        let rows = sqlx::query(
            "INSERT INTO outbound_messages (message_id, tenant_id, idempotency_key, request_hash, response,
                from_number, to_id, message_type, message, metadata, request_id, state, scheduled_at, due_at)
             SELECT t.id, $1, t.key, t.hash, t.resp::jsonb, t.from_n, t.to_n, t.mtype, t.msg::jsonb, t.meta::jsonb, t.rid,
                    CASE WHEN t.sched IS NULL THEN 'queued' ELSE 'scheduled' END,
                    to_timestamp(t.sched / 1000.0), to_timestamp(t.sched / 1000.0)
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $2::text[])
               AS t(id, key, hash, resp, from_n, to_n, mtype, msg, meta, sched, rid)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
             RETURNING message_id",
        )
        .bind(tenant)
        .bind(col(&|v| Some(v.request_id.clone())))
        .bind(col(&|v| Some(v.message_id.clone())))
        .bind(col(&|v| v.idempotency_key.clone()))
        .bind(col(&|v| Some(v.request_hash.clone())))
        .bind(col(&|v| Some(v.response.to_string())))
        .bind(col(&|v| Some(v.from.clone())))
        .bind(col(&|v| Some(v.to.clone())))
        .bind(col(&|v| Some(v.message_type.clone())))
        .bind(col(&|v| Some(v.message.to_string())))
        .bind(col(&|v| v.metadata.as_ref().map(Value::to_string)))
        .bind(sends.iter().map(|v| v.scheduled_at_ms).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// The requests `tenant` stored earlier under these idempotency keys.
    pub async fn earlier(
        &self,
        tenant: &str,
        keys: &[String],
    ) -> Result<Vec<Earlier>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT idempotency_key, message_id, request_hash, response, published, message, metadata,
                    from_number, to_id, message_type, (extract(epoch from scheduled_at) * 1000)::int8 AS sched
               FROM outbound_messages WHERE tenant_id = $1 AND idempotency_key = ANY($2)",
        )
        // Planned per run, like the outbox's batches (see `db::outbox`).
        .persistent(false)
        .bind(tenant)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Earlier {
                idempotency_key: r.get("idempotency_key"),
                message_id: r.get("message_id"),
                request_hash: r.get("request_hash"),
                response: r.get("response"),
                published: r.get("published"),
                from: r.get("from_number"),
                to: r.get("to_id"),
                message_type: r.get("message_type"),
                message: r.get("message"),
                metadata: r.get("metadata"),
                scheduled_at_ms: r.get("sched"),
            })
            .collect())
    }

    /// Take back stored sends that no router has claimed and were never published (their
    /// publication failed); returns the ids taken back.
    pub async fn withdraw(&self, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
        let rows = sqlx::query(
            "DELETE FROM outbound_messages
              WHERE message_id = ANY($1) AND state IN ('queued', 'scheduled') AND NOT published
          RETURNING message_id",
        )
        // Planned per run, like the outbox's batches (see `db::outbox`).
        .persistent(false)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// One of `tenant`'s messages (another tenant's id is indistinguishable from an
    /// unknown one).
    pub async fn find(&self, tenant: &str, id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} {JOIN} WHERE o.message_id = $1 AND o.tenant_id = $2"
        )))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(message_row))
    }

    /// `tenant`'s messages matching `f`, newest first, at most `limit`.
    pub async fn list(
        &self,
        tenant: &str,
        f: &MessageFilter,
        limit: i64,
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} {JOIN}
             WHERE o.tenant_id = $1
               AND ($2::text IS NULL OR COALESCE(m.status, o.state) = $2)
               AND ($3::text IS NULL OR o.to_id = $3)
               AND ($4::text IS NULL OR o.from_number = $4)
               AND ($5::timestamptz IS NULL OR o.created_at >= $5)
               AND ($6::timestamptz IS NULL OR o.created_at < $6)
               AND ($7::timestamptz IS NULL OR (o.created_at, o.message_id) < ($7, $8))
             ORDER BY o.created_at DESC, o.message_id DESC
             LIMIT $9"
        )))
        .bind(tenant)
        .bind(&f.status)
        .bind(&f.to)
        .bind(&f.from)
        .bind(f.since)
        .bind(f.until)
        .bind(f.after.as_ref().map(|c| c.0))
        .bind(f.after.as_ref().map(|c| c.1.clone()).unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(message_row).collect())
    }

    /// Cancel one of `tenant`'s sends that has not gone out (queued, scheduled or
    /// waiting for a retry).
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<Cancelled, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE outbound_messages SET state = 'cancelled', due_at = NULL, updated_at = now()
              WHERE message_id = $1 AND tenant_id = $2 AND state IN ('queued', 'scheduled', 'retrying')
          RETURNING message_id",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        if done.is_some() {
            return Ok(Cancelled::Done);
        }
        let state: Option<String> = sqlx::query(
            "SELECT state FROM outbound_messages WHERE message_id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.get(0));
        Ok(state.map_or(Cancelled::Missing, Cancelled::Too))
    }
}

/// Cancel those of `ids` (sends of `tenant`) that have not gone out, inside the caller's
/// transaction; how many. Rows are locked in message id order, like the router's claim
/// batches, so the two never deadlock; a send a router has claimed (`sending`) goes on.
pub async fn cancel_unsent(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    ids: &[String],
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "WITH l AS (SELECT message_id FROM outbound_messages
                     WHERE message_id = ANY($1) AND tenant_id = $2
                       AND state IN ('queued', 'scheduled', 'retrying')
                     ORDER BY message_id FOR UPDATE)
         UPDATE outbound_messages SET state = 'cancelled', due_at = NULL, updated_at = now()
          WHERE message_id IN (SELECT message_id FROM l)
            AND state IN ('queued', 'scheduled', 'retrying')",
    )
    .persistent(false)
    .bind(ids)
    .bind(tenant)
    .execute(conn)
    .await?
    .rows_affected())
}
