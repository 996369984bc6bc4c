//! `GET /v1/events`: a tenant's events by polling, for clients that cannot hold a
//! connection or run a webhook receiver. Pages carry the webhook bodies the endpoints
//! get, each with its `cursor`, then `next_cursor` and `done` (see `crate::event_log`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_schemas::config::valid_type_filter;

use super::auth::TenantAuth;
use crate::error::ApiError;
use crate::event_log::{Cursor, From, LogError};
use crate::AppState;

const MAX_LIMIT: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    /// A cursor from an earlier answer, or `now` (only what comes next); absent: from the
    /// oldest event retained.
    after: Option<String>,
    limit: Option<usize>,
    /// Comma-separated type filters (`message.status.*`, `message.received`, ...).
    types: Option<String>,
    /// One business number.
    number: Option<String>,
}

fn bad(field: &str, msg: &str) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "invalid_field", field, msg)
}

/// `types=a,b.*`: comma-separated webhook types or `prefix.*` filters (empty: every
/// type), as the polling API and the streams take them.
pub fn type_filters(raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    let types: Vec<String> = raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(t) = types.iter().find(|t| !valid_type_filter(t)) {
        return Err(bad(
            "types",
            &format!("{t:?} is not a webhook type or prefix.*"),
        ));
    }
    Ok(types)
}

pub async fn poll(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad("limit", "1 to 500"));
    }
    let from = match q.after.as_deref() {
        None => From::Oldest,
        Some("now") => From::Now,
        Some(c) => From::Cursor(
            Cursor::decode(c).ok_or_else(|| bad("after", "not a cursor this API returned"))?,
        ),
    };
    let types = type_filters(q.types.as_deref())?;
    let page = app
        .events
        .poll(
            from,
            &crate::event_log::Query {
                tenant: &tenant.id,
                types: &types,
                number: q.number.as_deref(),
                limit,
            },
        )
        .await
        .map_err(|e| match e {
            LogError::UnknownPartition(_) => bad("after", &e.to_string()),
            LogError::Unavailable(m) => ApiError::unavailable("broker_unavailable", m),
        })?;
    Ok(Json(json!({
        "data": page.events,
        "next_cursor": page.next.encode(),
        "done": page.done,
        "gap": page.gap,
    })))
}
