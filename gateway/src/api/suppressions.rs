//! `/v1/suppressions`: the tenant's customers who stopped marketing messages
//! (`db::suppressions`), and the tenant's own adds and removes. Marketing templates to
//! a suppressed customer are refused (`422 customer_opted_out`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_connectors::send::validate;
use switchboard_processors::db::suppressions::{Suppression, Suppressions};

use super::auth::TenantAuth;
use crate::error::ApiError;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;
type Ts = chrono::DateTime<chrono::Utc>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const CURSOR: &str = "s1.";
const MAX_REASON: usize = 500;

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "invalid_field", field, msg)
}

fn customer(raw: &str) -> ApiResult<String> {
    validate::recipient(raw)
        .map(|r| r.as_str().to_string())
        .map_err(|e| ApiError::invalid(e.code, "customer", e.message))
}

fn json_of(s: &Suppression) -> Value {
    json!({"customer": s.customer_id, "suppressed": s.suppressed, "source": s.source,
        "detail": s.detail, "business_number": s.business_number, "changed_at": s.changed_at})
}

fn cursor_of(s: &Suppression) -> String {
    let raw = format!("{}\n{}", s.changed_at.timestamp_micros(), s.customer_id);
    format!("{CURSOR}{}", B64.encode(raw))
}

fn parse_cursor(c: &str) -> Option<(Ts, String)> {
    let raw = String::from_utf8(B64.decode(c.strip_prefix(CURSOR)?).ok()?).ok()?;
    let (micros, customer) = raw.split_once('\n')?;
    Some((
        Ts::from_timestamp_micros(micros.parse().ok()?)?,
        customer.to_string(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
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
    let limit = qp.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit", "1 to 1000"));
    }
    let before = match &qp.cursor {
        None => None,
        Some(c) => {
            Some(parse_cursor(c).ok_or_else(|| bad("cursor", "not a cursor this API returned"))?)
        }
    };
    let rows = Suppressions::new(app.db.clone())
        .list(&tenant.id, before, limit + 1)
        .await
        .map_err(ApiError::db)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    Ok(Json(json!({
        "data": page.iter().map(json_of).collect::<Vec<_>>(),
        "next_cursor": if more { page.last().map(cursor_of) } else { None },
    })))
}

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = customer(&raw)?;
    let s = Suppressions::new(app.db.clone())
        .get(&tenant.id, &c)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("suppression"))?;
    Ok(Json(json_of(&s)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Put {
    reason: Option<String>,
}

/// Suppress a customer now (a later stop or resume of the customer's own still counts).
pub async fn put(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let c = customer(&raw)?;
    let p: Put = if body.is_empty() {
        Put::default()
    } else {
        super::admin::json_body(&body)?
    };
    if p.reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(bad("reason", format!("at most {MAX_REASON} characters")));
    }
    set(&app, &tenant.id, &c, true, p.reason).await
}

/// Lift a customer's suppression now.
pub async fn delete(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = customer(&raw)?;
    set(&app, &tenant.id, &c, false, None).await
}

async fn set(
    app: &AppState,
    tenant: &str,
    customer: &str,
    suppressed: bool,
    reason: Option<String>,
) -> ApiResult<Json<Value>> {
    let store = Suppressions::new(app.db.clone());
    store
        .set(tenant, customer, suppressed, reason)
        .await
        .map_err(ApiError::db)?;
    let s = store
        .get(tenant, customer)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::internal("a suppression just written is gone"))?;
    Ok(Json(json_of(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_nothing_else_decodes() {
        let s = Suppression {
            customer_id: "+4915112345678".into(),
            suppressed: true,
            source: "api".into(),
            detail: None,
            business_number: None,
            changed_at: Ts::from_timestamp_micros(1_764_800_000_123_456).unwrap(),
        };
        assert_eq!(
            parse_cursor(&cursor_of(&s)),
            Some((s.changed_at, s.customer_id.clone()))
        );
        for bad in ["", "s1.", "s1.!!", "c1.eAp5", "s1.eA"] {
            assert!(parse_cursor(bad).is_none(), "{bad}");
        }
    }
}
