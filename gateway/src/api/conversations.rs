//! `GET /v1/conversations` and `GET /v1/conversations/{number}/{customer}`: a tenant's
//! conversations with their customer-service window (`db::conversations`), and one
//! conversation with its latest messages (the pg-sink's `messages`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;
use switchboard_processors::db::conversations::{Conversation, Conversations, Filter};

use super::auth::TenantAuth;
use super::store::q;
use crate::error::ApiError;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;
type Ts = chrono::DateTime<chrono::Utc>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const CURSOR: &str = "c1.";

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "invalid_field", field, msg)
}

/// The page's last row as an opaque cursor: (last activity in µs, number, customer).
fn cursor_of(c: &Conversation) -> String {
    let raw = format!(
        "{}\n{}\n{}",
        c.last_activity_at.timestamp_micros(),
        c.business_number,
        c.customer_id
    );
    format!("{CURSOR}{}", B64.encode(raw))
}

fn parse_cursor(s: &str) -> Option<(Ts, String, String)> {
    let raw = String::from_utf8(B64.decode(s.strip_prefix(CURSOR)?).ok()?).ok()?;
    let mut parts = raw.splitn(3, '\n');
    let micros: i64 = parts.next()?.parse().ok()?;
    let number = parts.next()?.to_string();
    let customer = parts.next()?.to_string();
    Some((Ts::from_timestamp_micros(micros)?, number, customer))
}

fn number_param(field: &str, n: &str) -> ApiResult<String> {
    switchboard_connectors::common::e164(n)
        .map_err(|_| bad(field, format!("{n:?} is not an E.164 number")))
}

fn conversation_json(c: &Conversation, now: Ts) -> Value {
    let open = c.window_expires_at.is_some_and(|t| t > now);
    json!({
        "business_number": c.business_number,
        "customer": c.customer_id,
        "window": {
            "open": open,
            "kind": c.window_kind,
            "expires_at": c.window_expires_at,
        },
        "first_inbound_at": c.first_inbound_at,
        "last_inbound_at": c.last_inbound_at,
        "last_inbound_wamid": c.last_inbound_wamid,
        "entry_point": c.entry_point_at.map(|at| json!({"at": at, "source": c.entry_point_source})),
        "last_outbound_at": c.last_outbound_at,
        "pricing_category": c.pricing_category,
        "last_activity_at": c.last_activity_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    number: Option<String>,
    customer: Option<String>,
    window: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(qp) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = qp.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit", "1 to 500"));
    }
    let window_open = match qp.window.as_deref() {
        None => None,
        Some("open") => Some(true),
        Some("closed") => Some(false),
        Some(_) => return Err(bad("window", "open or closed")),
    };
    let filter = Filter {
        number: qp
            .number
            .as_deref()
            .map(|n| number_param("number", n))
            .transpose()?,
        customer: qp.customer,
        window_open,
        before: match &qp.cursor {
            None => None,
            Some(c) => Some(
                parse_cursor(c).ok_or_else(|| bad("cursor", "not a cursor this API returned"))?,
            ),
        },
    };
    let rows = Conversations::new(app.db.clone())
        .list(&tenant.id, &filter, limit + 1)
        .await
        .map_err(ApiError::db)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let now = chrono::Utc::now();
    Ok(Json(json!({
        "data": page.iter().map(|c| conversation_json(c, now)).collect::<Vec<_>>(),
        "next_cursor": if more { page.last().map(cursor_of) } else { None },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    messages: Option<i64>,
}

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path((number, customer)): Path<(String, String)>,
    query: Result<Query<OneQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(qp) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let n = qp.messages.unwrap_or(20);
    if !(0..=100).contains(&n) {
        return Err(bad("messages", "0 to 100"));
    }
    let number = number_param("number", &number)?;
    let c = Conversations::new(app.db.clone())
        .get(&tenant.id, &number, &customer)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    let rows = q(
        "SELECT wamid, bsp, direction, status, status_at, message_type, message_id, error_code, \
                    pricing_category, first_event_at FROM messages \
                  WHERE customer_id = $1 AND business_number = $2 AND tenant_id = $3 \
                  ORDER BY first_event_at DESC LIMIT $4"
            .into(),
    )
    .bind(&c.customer_id)
    .bind(&c.business_number)
    .bind(&tenant.id)
    .bind(n)
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    let mut body = conversation_json(&c, chrono::Utc::now());
    body["messages"] = rows
        .iter()
        .map(|r| {
            json!({
                "wamid": r.get::<String, _>("wamid"),
                "bsp": r.get::<String, _>("bsp"),
                "direction": r.get::<String, _>("direction"),
                "status": r.get::<Option<String>, _>("status"),
                "status_at": r.get::<Option<Ts>, _>("status_at"),
                "type": r.get::<Option<String>, _>("message_type"),
                "message_id": r.get::<Option<String>, _>("message_id"),
                "error_code": r.get::<Option<String>, _>("error_code"),
                "pricing_category": r.get::<Option<String>, _>("pricing_category"),
                "at": r.get::<Ts, _>("first_event_at"),
            })
        })
        .collect();
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_nothing_else_decodes() {
        let c = Conversation {
            business_number: "+15550001111".into(),
            customer_id: "US.13491208655302741918".into(),
            first_inbound_at: None,
            last_inbound_at: None,
            last_inbound_wamid: None,
            entry_point_at: None,
            entry_point_source: None,
            window_expires_at: None,
            window_kind: None,
            last_outbound_at: None,
            pricing_category: None,
            last_activity_at: Ts::from_timestamp_micros(1_764_800_000_123_456).unwrap(),
        };
        let (at, n, cu) = parse_cursor(&cursor_of(&c)).unwrap();
        assert_eq!(
            (at, n.as_str(), cu.as_str()),
            (
                c.last_activity_at,
                "+15550001111",
                "US.13491208655302741918"
            )
        );
        for bad in ["", "c1.", "c1.!!", "m1.YTox", "c1.eAp5"] {
            assert!(parse_cursor(bad).is_none(), "{bad}");
        }
    }
}
