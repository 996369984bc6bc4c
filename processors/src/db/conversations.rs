//! `conversations`: one row per business number and customer, with the customer-service
//! window. The normalizer writes it ([`Conversations::record`]) before publishing a
//! batch's events, so any client that sees an inbound message (fan-out, streams, polls)
//! finds the window that message opened; the send API and the router read it
//! ([`Conversations::windows`]) and refuse free-form sends outside it ([`refusal`]).
//!
//! The window, from Meta's pricing documentation: a customer's message opens 24 hours
//! in which the business may send anything; outside it only templates go (Cloud API
//! error 131047). A message that came from a Click-to-WhatsApp ad or a Page's call to
//! action (its `referral`) opens a 72-hour free entry point window instead. Meta opens
//! that window only if the business answers within 24 hours; Switchboard does not check
//! the answer (a late one fails at the BSP with 131047, reported as the same code).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use switchboard_schemas::{Event, EventType, Status};

const HOUR_MS: i64 = 3600 * 1000;
/// The customer-service window.
pub const SERVICE_WINDOW_MS: i64 = 24 * HOUR_MS;
/// The free entry point window of a Click-to-WhatsApp ad or Page call to action.
pub const ENTRY_POINT_WINDOW_MS: i64 = 72 * HOUR_MS;

/// The error code of a free-form send refused (by the API or the router) or failed (by
/// the BSP) because the window is closed.
pub use switchboard_connectors::send::codes::OUTSIDE_SERVICE_WINDOW;

/// What one event tells about its conversation (a row of the batch's upsert).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Touch {
    pub business_number: String,
    pub customer_id: String,
    pub tenant_id: Option<String>,
    pub inbound_at_ms: Option<i64>,
    pub inbound_wamid: Option<String>,
    pub entry_point_at_ms: Option<i64>,
    pub entry_point_source: Option<String>,
    pub window_expires_at_ms: Option<i64>,
    pub window_kind: Option<&'static str>,
    pub outbound_at_ms: Option<i64>,
    pub pricing_category: Option<String>,
    pub pricing_at_ms: Option<i64>,
    pub activity_at_ms: i64,
}

/// The touch of one event, if it says anything about its conversation: a customer's
/// message (not a system notice such as a number change) opens a window; a `sent`
/// status is the business's latest outbound message and its pricing category.
pub fn touch(e: &Event) -> Option<Touch> {
    let base = Touch {
        business_number: e.business_number.clone(),
        customer_id: e.customer_id.clone(),
        tenant_id: e.tenant_id.clone(),
        activity_at_ms: e.occurred_at_ms,
        ..Default::default()
    };
    if e.event_type == EventType::Received.as_str() {
        if e.message_type.as_deref() == Some("system") {
            return None;
        }
        let source = referral_source(e);
        let (kind, span) = if source.is_some() {
            ("free_entry_point", ENTRY_POINT_WINDOW_MS)
        } else {
            ("service", SERVICE_WINDOW_MS)
        };
        return Some(Touch {
            inbound_at_ms: Some(e.occurred_at_ms),
            inbound_wamid: Some(e.wamid.clone()),
            entry_point_at_ms: source.as_ref().map(|_| e.occurred_at_ms),
            entry_point_source: source,
            window_expires_at_ms: Some(e.occurred_at_ms + span),
            window_kind: Some(kind),
            ..base
        });
    }
    if e.event_type == EventType::Status.as_str() && e.status() == Some(Status::Sent) {
        return Some(Touch {
            outbound_at_ms: Some(e.occurred_at_ms),
            pricing_at_ms: e.pricing_category.as_ref().map(|_| e.occurred_at_ms),
            pricing_category: e.pricing_category.clone(),
            ..base
        });
    }
    None
}

/// The referral's `source_type` (`ad`, `post`; `unknown` if it has none) of an inbound
/// message that came from an entry point.
fn referral_source(e: &Event) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(e.content.as_deref()?).ok()?;
    let r = v.get("referral")?.as_object()?;
    Some(
        r.get("source_type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
    )
}

/// Why a send may not go now, if it may not: a free-form message (anything but a
/// template) needs an open window. `expires_at_ms` is the window's end, `None` if the
/// customer never wrote.
pub fn refusal(message_type: &str, expires_at_ms: Option<i64>, now_ms: i64) -> Option<String> {
    if message_type == "template" {
        return None;
    }
    match expires_at_ms {
        Some(t) if t > now_ms => None,
        Some(t) => Some(format!(
            "the customer-service window closed at {}; outside it only templates may be sent",
            rfc3339(t)
        )),
        None => Some(
            "the customer has not written to this number, so no customer-service window is open; only templates may be sent"
                .into(),
        ),
    }
}

pub fn rfc3339(ms: i64) -> String {
    ts(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[derive(Clone)]
pub struct Conversations {
    pool: PgPool,
}

impl Conversations {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Merge the conversation facts of `events` in one statement (idempotent, order-free).
    pub async fn record(&self, events: &[Event]) -> Result<(), sqlx::Error> {
        let t: Vec<Touch> = events.iter().filter_map(touch).collect();
        if t.is_empty() {
            return Ok(());
        }
        macro_rules! col {
            ($f:expr) => {
                t.iter().map($f).collect::<Vec<_>>()
            };
        }
        let at = |v: Option<i64>| v.map(ts);
        // Rows of one conversation are folded by the GROUP BY, then against the stored
        // row by the same rule: for each pair (time, value), the greatest wins.
        sqlx::query(
            "INSERT INTO conversations AS c (business_number, customer_id, tenant_id, first_inbound_at, last_inbound_at, \
               last_inbound_wamid, entry_point_at, entry_point_source, window_expires_at, window_kind, last_outbound_at, \
               pricing_category, pricing_at, last_activity_at) \
             SELECT business_number, customer_id, max(tenant_id), min(inbound_at), max(inbound_at), \
               (array_agg(inbound_wamid ORDER BY inbound_at DESC NULLS LAST, inbound_wamid DESC NULLS LAST))[1], \
               max(entry_at), (array_agg(entry_source ORDER BY entry_at DESC NULLS LAST, entry_source DESC NULLS LAST))[1], \
               max(expires_at), (array_agg(kind ORDER BY expires_at DESC NULLS LAST, kind DESC NULLS LAST))[1], \
               max(outbound_at), (array_agg(pricing ORDER BY pricing_at DESC NULLS LAST, pricing DESC NULLS LAST))[1], \
               max(pricing_at), max(activity_at) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[], $7::text[], \
               $8::timestamptz[], $9::text[], $10::timestamptz[], $11::text[], $12::timestamptz[], $13::timestamptz[]) \
               AS t(business_number, customer_id, tenant_id, inbound_at, inbound_wamid, entry_at, entry_source, \
               expires_at, kind, outbound_at, pricing, pricing_at, activity_at) \
             GROUP BY business_number, customer_id \
             ON CONFLICT (business_number, customer_id) DO UPDATE SET \
               tenant_id = COALESCE(c.tenant_id, EXCLUDED.tenant_id), \
               first_inbound_at = LEAST(c.first_inbound_at, EXCLUDED.first_inbound_at), \
               last_inbound_wamid = CASE WHEN c.last_inbound_at IS NULL \
                 OR (EXCLUDED.last_inbound_at, EXCLUDED.last_inbound_wamid) > (c.last_inbound_at, c.last_inbound_wamid) \
                 THEN COALESCE(EXCLUDED.last_inbound_wamid, c.last_inbound_wamid) ELSE c.last_inbound_wamid END, \
               last_inbound_at = GREATEST(c.last_inbound_at, EXCLUDED.last_inbound_at), \
               entry_point_source = CASE WHEN c.entry_point_at IS NULL \
                 OR (EXCLUDED.entry_point_at, EXCLUDED.entry_point_source) > (c.entry_point_at, c.entry_point_source) \
                 THEN COALESCE(EXCLUDED.entry_point_source, c.entry_point_source) ELSE c.entry_point_source END, \
               entry_point_at = GREATEST(c.entry_point_at, EXCLUDED.entry_point_at), \
               window_kind = CASE WHEN c.window_expires_at IS NULL \
                 OR (EXCLUDED.window_expires_at, EXCLUDED.window_kind) > (c.window_expires_at, c.window_kind) \
                 THEN COALESCE(EXCLUDED.window_kind, c.window_kind) ELSE c.window_kind END, \
               window_expires_at = GREATEST(c.window_expires_at, EXCLUDED.window_expires_at), \
               last_outbound_at = GREATEST(c.last_outbound_at, EXCLUDED.last_outbound_at), \
               pricing_category = CASE WHEN c.pricing_at IS NULL \
                 OR (EXCLUDED.pricing_at, EXCLUDED.pricing_category) > (c.pricing_at, c.pricing_category) \
                 THEN COALESCE(EXCLUDED.pricing_category, c.pricing_category) ELSE c.pricing_category END, \
               pricing_at = GREATEST(c.pricing_at, EXCLUDED.pricing_at), \
               last_activity_at = GREATEST(c.last_activity_at, EXCLUDED.last_activity_at), \
               updated_at = now()",
        )
        .bind(col!(|r| r.business_number.clone()))
        .bind(col!(|r| r.customer_id.clone()))
        .bind(col!(|r| r.tenant_id.clone()))
        .bind(col!(|r| at(r.inbound_at_ms)))
        .bind(col!(|r| r.inbound_wamid.clone()))
        .bind(col!(|r| at(r.entry_point_at_ms)))
        .bind(col!(|r| r.entry_point_source.clone()))
        .bind(col!(|r| at(r.window_expires_at_ms)))
        .bind(col!(|r| r.window_kind.map(str::to_string)))
        .bind(col!(|r| at(r.outbound_at_ms)))
        .bind(col!(|r| r.pricing_category.clone()))
        .bind(col!(|r| at(r.pricing_at_ms)))
        .bind(col!(|r| ts(r.activity_at_ms)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The window's end of each (business number, customer) pair that has a conversation.
    pub async fn windows(
        &self,
        pairs: &[(String, String)],
    ) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT c.business_number, c.customer_id, c.window_expires_at \
             FROM UNNEST($1::text[], $2::text[]) AS t(n, cu) \
             JOIN conversations c ON c.business_number = t.n AND c.customer_id = t.cu \
             WHERE c.window_expires_at IS NOT NULL",
        )
        .bind(pairs.iter().map(|p| p.0.clone()).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.1.clone()).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(n, c, t)| ((n, c), t.timestamp_millis()))
            .collect())
    }
}

/// A conversation as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conversation {
    pub business_number: String,
    pub customer_id: String,
    pub first_inbound_at: Option<DateTime<Utc>>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_inbound_wamid: Option<String>,
    pub entry_point_at: Option<DateTime<Utc>>,
    pub entry_point_source: Option<String>,
    pub window_expires_at: Option<DateTime<Utc>>,
    pub window_kind: Option<String>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub pricing_category: Option<String>,
    pub last_activity_at: DateTime<Utc>,
}

/// Which of a tenant's conversations to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub number: Option<String>,
    pub customer: Option<String>,
    /// Only those whose window is open (true) or closed (false) now.
    pub window_open: Option<bool>,
    /// Keyset: the (last activity, number, customer) of the previous page's last row.
    pub before: Option<(DateTime<Utc>, String, String)>,
}

const COLUMNS: &str = "business_number, customer_id, first_inbound_at, last_inbound_at, last_inbound_wamid, \
    entry_point_at, entry_point_source, window_expires_at, window_kind, last_outbound_at, pricing_category, last_activity_at";

impl Conversations {
    /// A tenant's conversations, latest activity first.
    pub async fn list(
        &self,
        tenant: &str,
        f: &Filter,
        limit: i64,
    ) -> Result<Vec<Conversation>, sqlx::Error> {
        let before = f.before.as_ref();
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM conversations WHERE tenant_id = $1 \
               AND ($2::text IS NULL OR business_number = $2) \
               AND ($3::text IS NULL OR customer_id = $3) \
               AND ($4::bool IS NULL OR COALESCE(window_expires_at > now(), false) = $4) \
               AND ($5::timestamptz IS NULL OR (last_activity_at, business_number, customer_id) < ($5, $6, $7)) \
             ORDER BY last_activity_at DESC, business_number DESC, customer_id DESC LIMIT $8"
        )))
        .bind(tenant)
        .bind(&f.number)
        .bind(&f.customer)
        .bind(f.window_open)
        .bind(before.map(|b| b.0))
        .bind(before.map(|b| b.1.as_str()))
        .bind(before.map(|b| b.2.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// One of a tenant's conversations (another tenant's is as unknown as a missing one).
    pub async fn get(
        &self,
        tenant: &str,
        number: &str,
        customer: &str,
    ) -> Result<Option<Conversation>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM conversations WHERE business_number = $1 AND customer_id = $2 AND tenant_id = $3"
        )))
        .bind(number)
        .bind(customer)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(at: i64, content: &str) -> Event {
        Event {
            event_type: EventType::Received.as_str().into(),
            business_number: "+15550001111".into(),
            customer_id: "+16505551234".into(),
            wamid: "wamid.IN".into(),
            message_type: Some("text".into()),
            content: Some(content.into()),
            occurred_at_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn a_customer_message_opens_24_hours_and_a_referral_72() {
        let t = touch(&inbound(1_000, r#"{"body":"hi"}"#)).unwrap();
        assert_eq!(t.window_expires_at_ms, Some(1_000 + SERVICE_WINDOW_MS));
        assert_eq!(t.window_kind, Some("service"));
        assert_eq!(t.entry_point_at_ms, None);

        let t = touch(&inbound(
            1_000,
            r#"{"body":"hi","referral":{"source_type":"ad","source_id":"1"}}"#,
        ))
        .unwrap();
        assert_eq!(t.window_expires_at_ms, Some(1_000 + ENTRY_POINT_WINDOW_MS));
        assert_eq!(t.window_kind, Some("free_entry_point"));
        assert_eq!(t.entry_point_source.as_deref(), Some("ad"));
    }

    #[test]
    fn system_notices_and_statuses_other_than_sent_open_nothing() {
        let mut sys = inbound(1_000, "{}");
        sys.message_type = Some("system".into());
        assert_eq!(touch(&sys), None);
        let mut st = inbound(1_000, "{}");
        st.event_type = EventType::Status.as_str().into();
        st.status = Some("delivered".into());
        assert_eq!(touch(&st), None);
        st.status = Some("sent".into());
        st.pricing_category = Some("utility".into());
        let t = touch(&st).unwrap();
        assert_eq!(t.outbound_at_ms, Some(1_000));
        assert_eq!(t.pricing_category.as_deref(), Some("utility"));
        assert_eq!(t.window_expires_at_ms, None);
    }

    #[test]
    fn only_templates_go_outside_the_window() {
        assert_eq!(refusal("text", Some(2_000), 1_000), None);
        assert_eq!(refusal("template", None, 1_000), None);
        assert_eq!(refusal("template", Some(500), 1_000), None);
        let closed = refusal("text", Some(1_000), 1_000).unwrap();
        assert!(closed.contains("1970-01-01T00:00:01.000Z"), "{closed}");
        assert!(refusal("image", None, 1_000)
            .unwrap()
            .contains("has not written"));
    }
}
