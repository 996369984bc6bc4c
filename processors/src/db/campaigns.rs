//! `campaigns` and `campaign_recipients`: a template to an audience. The send API
//! creates a campaign with its checked audience ([`Campaigns::create`]); the routers
//! release its recipients as sends ([`Campaigns::claim`], then `db::outbox`), and the API
//! reads its progress from the recipients joined to their sends and the stored statuses
//! ([`Campaigns::progress`]).
//!
//! States: `draft` → `scheduled` → `running` ⇄ `paused` → `completed`; `cancelled` from
//! any but `completed`. A claimed recipient is `released` with its message id in the same
//! statement, before its send exists; a router that dies in between leaves it to
//! [`Campaigns::orphans`], which the next tick sends under the same id and idempotency
//! key, so a recipient is never sent twice and never lost.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// A campaign as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Campaign {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub state: String,
    pub template_name: String,
    pub template_language: String,
    pub from_numbers: Vec<String>,
    pub metadata: Option<Value>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub time_zone: Option<String>,
    pub rate_per_sec: i32,
    pub total: i32,
    pub invalid: i32,
    pub duplicates: i32,
    pub suppressed: i32,
    pub waiting: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, name, state, template_name, template_language, from_numbers, metadata, \
    scheduled_at, time_zone, rate_per_sec, total, invalid, duplicates, suppressed, waiting, created_at, started_at, finished_at";

/// A recipient that passed the pre-flight: valid and distinct; `skip` when it must not
/// be sent (suppressed).
#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub recipient: String,
    pub parameters: Option<Value>,
    pub skip: Option<&'static str>,
}

/// A recipient claimed for release.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub position: i32,
    pub recipient: String,
    pub parameters: Option<Value>,
    pub message_id: String,
}

/// A campaign's counts, from its recipients, their sends and the stored statuses.
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct Progress {
    pub pending: i64,
    pub released: i64,
    pub cancelled: i64,
    /// Skipped at creation, or refused at send time, as opted out.
    pub suppressed: i64,
    pub queued: i64,
    pub accepted: i64,
    pub failed: i64,
    pub outside_window: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
}

/// A state change the campaign's state does not allow.
#[derive(Debug)]
pub enum Transition {
    NotFound,
    Conflict(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Transition {
    fn from(e: sqlx::Error) -> Self {
        Transition::Db(e)
    }
}

#[derive(Clone)]
pub struct Campaigns {
    pool: PgPool,
}

impl Campaigns {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Store a campaign and its recipients in one transaction.
    pub async fn create(
        &self,
        c: &Campaign,
        recipients: &[NewRecipient],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO campaigns (id, tenant_id, name, state, template_name, template_language, from_numbers, metadata, \
               scheduled_at, time_zone, rate_per_sec, total, invalid, duplicates, suppressed, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
               CASE WHEN $4 = 'running' THEN now() END)",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.name)
        .bind(&c.state)
        .bind(&c.template_name)
        .bind(&c.template_language)
        .bind(&c.from_numbers)
        .bind(&c.metadata)
        .bind(c.scheduled_at)
        .bind(&c.time_zone)
        .bind(c.rate_per_sec)
        .bind(c.total)
        .bind(c.invalid)
        .bind(c.duplicates)
        .bind(c.suppressed)
        .execute(&mut *tx)
        .await?;
        for chunk in recipients.chunks(10_000).enumerate() {
            let (n, part) = chunk;
            let base = (n * 10_000) as i32;
            sqlx::query(
                "INSERT INTO campaign_recipients (campaign_id, position, recipient, parameters, state, skip_reason) \
                 SELECT $1, t.pos, t.recipient, t.parameters, CASE WHEN t.skip IS NULL THEN 'pending' ELSE 'skipped' END, t.skip \
                 FROM UNNEST($2::int[], $3::text[], $4::jsonb[], $5::text[]) AS t(pos, recipient, parameters, skip)",
            )
            .bind(&c.id)
            .bind((0..part.len() as i32).map(|i| base + i).collect::<Vec<_>>())
            .bind(part.iter().map(|r| r.recipient.clone()).collect::<Vec<_>>())
            .bind(part.iter().map(|r| r.parameters.clone()).collect::<Vec<_>>())
            .bind(part.iter().map(|r| r.skip.map(str::to_string)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<Campaign>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM campaigns WHERE id = $1 AND tenant_id = $2"
        )))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await
    }

    /// The tenant's campaigns, newest first, before the keyset `before` (created, id).
    pub async fn list(
        &self,
        tenant: &str,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<Campaign>, sqlx::Error> {
        let before = before.as_ref();
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 \
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        )))
        .bind(tenant)
        .bind(before.map(|b| b.0))
        .bind(before.map(|b| b.1.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// `start`, `pause`, `resume` or `cancel`; the campaign after it.
    pub async fn transition(
        &self,
        tenant: &str,
        id: &str,
        action: &str,
    ) -> Result<Campaign, Transition> {
        // (states it applies to, the new state as SQL)
        let (from, to): (&[&str], &str) = match action {
            "start" => (
                &["draft"],
                "CASE WHEN scheduled_at > now() THEN 'scheduled' ELSE 'running' END",
            ),
            "pause" => (&["scheduled", "running"], "'paused'"),
            "resume" => (
                &["paused"],
                "CASE WHEN scheduled_at > now() THEN 'scheduled' ELSE 'running' END",
            ),
            "cancel" => (&["draft", "scheduled", "running", "paused"], "'cancelled'"),
            other => return Err(Transition::Conflict(format!("unknown action {other:?}"))),
        };
        let mut tx = self.pool.begin().await?;
        let row: Option<Campaign> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE campaigns SET state = {to}, updated_at = now(), waiting = NULL, \
               started_at = CASE WHEN {to} = 'running' THEN COALESCE(started_at, now()) ELSE started_at END, \
               finished_at = CASE WHEN {to} = 'cancelled' THEN now() ELSE finished_at END \
             WHERE id = $1 AND tenant_id = $2 AND state = ANY($3) RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(tenant)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(c) = row else {
            drop(tx);
            return match self.get(tenant, id).await? {
                None => Err(Transition::NotFound),
                Some(c) => Err(Transition::Conflict(format!(
                    "a {} campaign cannot {action}",
                    c.state
                ))),
            };
        };
        if action == "cancel" {
            sqlx::query(
                "UPDATE campaign_recipients SET state = 'skipped', skip_reason = 'cancelled' \
                 WHERE campaign_id = $1 AND state = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // Released sends that have not gone out stop too: a number shared with other
            // traffic parks a campaign's sends (`scheduled`) for as long as its queue is
            // full, and a cancel that let them go would not stop the campaign.
            let released: Vec<String> = sqlx::query_scalar(
                "SELECT message_id FROM campaign_recipients \
                 WHERE campaign_id = $1 AND state = 'released' AND message_id IS NOT NULL",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            crate::db::outbox::cancel_unsent(&mut tx, tenant, &released).await?;
        }
        tx.commit().await?;
        Ok(c)
    }

    /// Scheduled campaigns whose time has come start.
    pub async fn start_due(&self) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE campaigns SET state = 'running', started_at = COALESCE(started_at, now()), updated_at = now() \
             WHERE state = 'scheduled' AND scheduled_at <= now()",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn running(&self) -> Result<Vec<Campaign>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM campaigns WHERE state = 'running' ORDER BY created_at LIMIT 1000"
        )))
        .fetch_all(&self.pool)
        .await
    }

    /// Release up to `n` pending recipients, in audience order: each gets its message id
    /// in the same statement. Routers claim disjoint sets (SKIP LOCKED).
    pub async fn claim(&self, campaign: &str, n: i64) -> Result<Vec<Claimed>, sqlx::Error> {
        if n <= 0 {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "UPDATE campaign_recipients r SET state = 'released', released_at = now(), \
               message_id = 'msg_' || replace(gen_random_uuid()::text, '-', '') \
             WHERE (r.campaign_id, r.position) IN ( \
               SELECT campaign_id, position FROM campaign_recipients \
                WHERE campaign_id = $1 AND state = 'pending' ORDER BY position LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING r.position, r.recipient, r.parameters, r.message_id",
        )
        .bind(campaign)
        .bind(n)
        .fetch_all(&self.pool)
        .await
    }

    /// Released recipients whose send was never created (a router died between the
    /// claim and the insert), released over `grace_secs` ago.
    pub async fn orphans(
        &self,
        campaign: &str,
        grace_secs: f64,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.position, r.recipient, r.parameters, r.message_id FROM campaign_recipients r \
             WHERE r.campaign_id = $1 AND r.state = 'released' \
               AND r.released_at < now() - make_interval(secs => $2) \
               AND NOT EXISTS (SELECT 1 FROM outbound_messages o WHERE o.message_id = r.message_id) \
             ORDER BY r.position LIMIT 1000",
        )
        .bind(campaign)
        .bind(grace_secs)
        .fetch_all(&self.pool)
        .await
    }

    /// A running campaign with nothing pending, and a send for every released recipient,
    /// is completed. A recipient a dying router claimed but never created the send of
    /// keeps the campaign running until [`Self::orphans`] hands it to another router:
    /// completing first would leave it unsent for good.
    pub async fn complete_if_done(&self, campaign: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE campaigns SET state = 'completed', finished_at = now(), updated_at = now(), waiting = NULL \
             WHERE id = $1 AND state = 'running' \
               AND NOT EXISTS (SELECT 1 FROM campaign_recipients WHERE campaign_id = $1 AND state = 'pending') \
               AND NOT EXISTS (SELECT 1 FROM campaign_recipients r WHERE r.campaign_id = $1 AND r.state = 'released' \
                 AND NOT EXISTS (SELECT 1 FROM outbound_messages o WHERE o.message_id = r.message_id))",
        )
        .bind(campaign)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Say why a running campaign waits (`None`: it does not).
    pub async fn set_waiting(&self, campaign: &str, why: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE campaigns SET waiting = $2 WHERE id = $1 AND waiting IS DISTINCT FROM $2",
        )
        .bind(campaign)
        .bind(why)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Distinct customers the tenant's campaigns released in the last 24 hours (Meta's
    /// messaging limit counts unique customers in a rolling day).
    pub async fn released_last_day(&self, tenant: &str) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT r.recipient) FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id \
             WHERE c.tenant_id = $1 AND r.state = 'released' AND r.released_at > now() - interval '24 hours'",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// The campaign's counts now.
    pub async fn progress(&self, campaign: &str) -> Result<Progress, sqlx::Error> {
        sqlx::query_as(
            "SELECT \
               count(*) FILTER (WHERE r.state = 'pending') AS pending, \
               count(*) FILTER (WHERE r.state = 'released') AS released, \
               count(*) FILTER (WHERE r.skip_reason = 'cancelled' OR o.state = 'cancelled') AS cancelled, \
               count(*) FILTER (WHERE r.skip_reason = 'suppressed' OR o.error_code = 'customer_opted_out') AS suppressed, \
               count(*) FILTER (WHERE o.state IN ('queued', 'scheduled', 'retrying', 'sending')) AS queued, \
               count(*) FILTER (WHERE o.state = 'accepted') AS accepted, \
               count(*) FILTER (WHERE o.state IN ('failed', 'unknown') OR m.status = 'failed') AS failed, \
               count(*) FILTER (WHERE o.error_code = 'outside_service_window' OR m.error_code = '131047') AS outside_window, \
               count(*) FILTER (WHERE m.status IN ('sent', 'delivered', 'read', 'played')) AS sent, \
               count(*) FILTER (WHERE m.status IN ('delivered', 'read', 'played')) AS delivered, \
               count(*) FILTER (WHERE m.status IN ('read', 'played')) AS read \
             FROM campaign_recipients r \
             LEFT JOIN outbound_messages o ON o.message_id = r.message_id \
             LEFT JOIN messages m ON m.bsp = o.bsp AND m.wamid = o.wamid \
             WHERE r.campaign_id = $1",
        )
        .bind(campaign)
        .fetch_one(&self.pool)
        .await
    }
}

/// The send of one recipient (the send API's canonical message): the campaign's
/// template with the recipient's parameters,
/// either a list of texts for the body's placeholders or `{"components": [...]}` in the
/// Cloud API's shape.
pub fn template_message(name: &str, language: &str, parameters: Option<&Value>) -> Value {
    let components = match parameters {
        Some(Value::Array(texts)) if !texts.is_empty() => serde_json::json!([{
            "type": "body",
            "parameters": texts.iter().map(|t| serde_json::json!({"type": "text", "text": t})).collect::<Vec<_>>(),
        }]),
        Some(Value::Object(o)) => o.get("components").cloned().unwrap_or(Value::Array(vec![])),
        _ => Value::Array(vec![]),
    };
    let mut template = serde_json::json!({"name": name, "language": {"code": language}});
    if components.as_array().is_some_and(|a| !a.is_empty()) {
        template["components"] = components;
    }
    serde_json::json!({ "type": "template", "template": template })
}

/// The idempotency key of a recipient's send.
pub fn idempotency_key(campaign: &str, recipient: &str) -> String {
    format!("campaign:{campaign}:{recipient}")
}
