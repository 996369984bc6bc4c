//! `suppressions`: the customers of each tenant who stopped marketing messages. The
//! normalizer records what the BSPs say ([`Suppressions::record`]: Meta's
//! `user_preferences` stop and resume, Gupshup's opt-out and opt-in of all notifications,
//! and a failed status with error 131050) before it publishes the events; the tenant adds and removes customers through the API
//! ([`Suppressions::set`]). The send API and the router refuse marketing templates to a
//! suppressed customer before any BSP call.
//!
//! Every change carries its time; the latest wins, a stop wins a tie.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use switchboard_schemas::{Event, EventType};

/// Meta's error for a message to a customer who stopped marketing messages.
pub const BSP_STOPPED_MARKETING: &str = "131050";

/// One change of a customer's suppression.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub tenant_id: String,
    pub customer_id: String,
    pub suppressed: bool,
    pub source: &'static str,
    pub detail: Option<String>,
    pub business_number: Option<String>,
    pub at_ms: i64,
}

/// The change an event makes, if any.
pub fn change(e: &Event) -> Option<Change> {
    let tenant_id = e.tenant_id.clone()?;
    let base = |suppressed, source, detail| Change {
        tenant_id,
        customer_id: e.customer_id.clone(),
        suppressed,
        source,
        detail,
        business_number: Some(e.business_number.clone()),
        at_ms: e.occurred_at_ms,
    };
    if e.event_type == EventType::Preference.as_str() {
        let v: serde_json::Value = serde_json::from_str(e.content.as_deref()?).ok()?;
        // A customer who stopped every notification (Gupshup) stopped marketing too.
        if !matches!(
            v.get("category")?.as_str()?,
            "marketing_messages" | "notifications"
        ) {
            return None;
        }
        let suppressed = match v.get("value")?.as_str()? {
            "stop" => true,
            "resume" => false,
            _ => return None,
        };
        let detail = v.get("detail").and_then(|d| d.as_str()).map(str::to_string);
        return Some(base(suppressed, "user_preferences", detail));
    }
    if e.event_type == EventType::Status.as_str()
        && e.error_code.as_deref() == Some(BSP_STOPPED_MARKETING)
    {
        let detail = Some(format!(
            "{}: {}",
            BSP_STOPPED_MARKETING,
            e.error_title
                .as_deref()
                .unwrap_or("the customer stopped marketing messages")
        ));
        return Some(base(true, "bsp_error", detail));
    }
    None
}

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A suppression as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Suppression {
    pub customer_id: String,
    pub suppressed: bool,
    pub source: String,
    pub detail: Option<String>,
    pub business_number: Option<String>,
    pub changed_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Suppressions {
    pool: PgPool,
}

impl Suppressions {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Merge the changes `events` make (one statement; idempotent, order-free).
    pub async fn record(&self, events: &[Event]) -> Result<(), sqlx::Error> {
        let mut changes: Vec<Change> = events.iter().filter_map(change).collect();
        // One row per customer per statement: the winner of the batch goes in.
        changes.sort_by(|a, b| {
            (&a.tenant_id, &a.customer_id, a.at_ms, a.suppressed).cmp(&(
                &b.tenant_id,
                &b.customer_id,
                b.at_ms,
                b.suppressed,
            ))
        });
        changes.dedup_by(|later, earlier| {
            let same =
                later.tenant_id == earlier.tenant_id && later.customer_id == earlier.customer_id;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        self.merge(&changes).await
    }

    /// The tenant's own add (`suppressed`) or remove, now.
    pub async fn set(
        &self,
        tenant: &str,
        customer: &str,
        suppressed: bool,
        detail: Option<String>,
    ) -> Result<(), sqlx::Error> {
        let change = Change {
            tenant_id: tenant.into(),
            customer_id: customer.into(),
            suppressed,
            source: "api",
            detail,
            business_number: None,
            at_ms: switchboard_runtime::now_ms(),
        };
        self.merge(&[change]).await
    }

    async fn merge(&self, changes: &[Change]) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        macro_rules! col {
            ($f:expr) => {
                changes.iter().map($f).collect::<Vec<_>>()
            };
        }
        sqlx::query(
            "INSERT INTO suppressions AS s (tenant_id, customer_id, suppressed, source, detail, business_number, changed_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::timestamptz[]) \
             ON CONFLICT (tenant_id, customer_id) DO UPDATE SET suppressed = EXCLUDED.suppressed, \
               source = EXCLUDED.source, detail = EXCLUDED.detail, \
               business_number = COALESCE(EXCLUDED.business_number, s.business_number), \
               changed_at = EXCLUDED.changed_at, updated_at = now() \
             WHERE (EXCLUDED.changed_at, EXCLUDED.suppressed) > (s.changed_at, s.suppressed)",
        )
        .bind(col!(|c| c.tenant_id.clone()))
        .bind(col!(|c| c.customer_id.clone()))
        .bind(col!(|c| c.suppressed))
        .bind(col!(|c| c.source.to_string()))
        .bind(col!(|c| c.detail.clone()))
        .bind(col!(|c| c.business_number.clone()))
        .bind(col!(|c| ts(c.at_ms)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Which of `customers` the tenant may not send marketing messages to.
    pub async fn suppressed(
        &self,
        tenant: &str,
        customers: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        if customers.is_empty() {
            return Ok(HashSet::new());
        }
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT s.customer_id FROM UNNEST($2::text[]) AS t(c) \
             JOIN suppressions s ON s.tenant_id = $1 AND s.customer_id = t.c WHERE s.suppressed",
        )
        .bind(tenant)
        .bind(customers)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// One customer's latest change.
    pub async fn get(
        &self,
        tenant: &str,
        customer: &str,
    ) -> Result<Option<Suppression>, sqlx::Error> {
        sqlx::query_as(
            "SELECT customer_id, suppressed, source, detail, business_number, changed_at FROM suppressions \
             WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant)
        .bind(customer)
        .fetch_optional(&self.pool)
        .await
    }

    /// The tenant's suppressed customers, latest first, after the keyset `before`.
    pub async fn list(
        &self,
        tenant: &str,
        before: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<Suppression>, sqlx::Error> {
        let before = before.as_ref();
        sqlx::query_as(
            "SELECT customer_id, suppressed, source, detail, business_number, changed_at FROM suppressions \
             WHERE tenant_id = $1 AND suppressed \
               AND ($2::timestamptz IS NULL OR (changed_at, customer_id) < ($2, $3)) \
             ORDER BY changed_at DESC, customer_id DESC LIMIT $4",
        )
        .bind(tenant)
        .bind(before.map(|b| b.0))
        .bind(before.map(|b| b.1.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pref(value: &str, at: i64) -> Event {
        Event {
            event_type: EventType::Preference.as_str().into(),
            tenant_id: Some("ten_a".into()),
            business_number: "+15550001111".into(),
            customer_id: "+16505551234".into(),
            content: Some(
                serde_json::json!({"category": "marketing_messages", "value": value}).to_string(),
            ),
            occurred_at_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn stops_resumes_and_131050_change_it_and_nothing_else_does() {
        assert!(change(&pref("stop", 1)).unwrap().suppressed);
        assert!(!change(&pref("resume", 2)).unwrap().suppressed);
        assert_eq!(change(&pref("maybe", 2)), None);
        let mut no_tenant = pref("stop", 1);
        no_tenant.tenant_id = None;
        assert_eq!(change(&no_tenant), None);
        let mut failed = pref("stop", 3);
        failed.event_type = EventType::Status.as_str().into();
        failed.status = Some("failed".into());
        failed.error_code = Some("131050".into());
        let c = change(&failed).unwrap();
        assert_eq!((c.suppressed, c.source), (true, "bsp_error"));
        failed.error_code = Some("131026".into());
        assert_eq!(change(&failed), None);
        // Gupshup's opt-out of every notification stops marketing too; other categories
        // change nothing.
        let mut all = pref("stop", 4);
        all.content =
            Some(serde_json::json!({"category": "notifications", "value": "stop"}).to_string());
        let c = change(&all).unwrap();
        assert_eq!((c.suppressed, c.source), (true, "user_preferences"));
        all.content = Some(serde_json::json!({"category": "surveys", "value": "stop"}).to_string());
        assert_eq!(change(&all), None);
    }
}
