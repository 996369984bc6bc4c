//! The delivery log and recovery (`/v1/endpoints/{id}/attempts|stats|recover`,
//! `/v1/events/{id}/resend`). The log is ClickHouse's `delivery_attempts` (written by the
//! ch-sink from `wa.deliveries.attempts`), with its hourly rollup for stats. Recover and
//! resend put delivery tasks, due now, on the shortest retry delay topic: the fan-out
//! delivers them with the same signing, limits and retries as any other attempt, and
//! the same `webhook-id`, so receivers that dedupe see a repeat, not a new event.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_runtime::kafka::OutRecord;
use switchboard_schemas::{DeliveryTask, DELIVERY_TASK_SCHEMA};

use super::admin::bad;
use super::auth::TenantAuth;
use super::publish::produce_acked;
use crate::error::ApiError;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

fn ch_error(e: clickhouse::error::Error) -> ApiError {
    ApiError::unavailable("delivery_log_unavailable", format!("clickhouse: {e}"))
}

fn owned_endpoint(
    app: &AppState,
    tenant: &str,
    id: &str,
) -> ApiResult<switchboard_schemas::config::Endpoint> {
    app.config
        .read()
        .endpoints
        .get(id)
        .filter(|e| e.tenant_id == tenant)
        .cloned()
        .ok_or_else(|| ApiError::not_found("endpoint"))
}

fn parse_time(field: &str, s: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad(field, "an RFC 3339 time, e.g. 2026-11-22T10:00:00Z"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptsQuery {
    outcome: Option<String>,
    event_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AttemptRow {
    attempt_id: String,
    event_id: String,
    event_type: String,
    attempt: u16,
    trigger: String,
    outcome: String,
    status_code: u16,
    latency_ms: u32,
    error: String,
    response_snippet: String,
    attempted_at_ms: u64,
    is_final: u8,
}

const OUTCOMES: [&str; 7] = [
    "deferred",
    "delivered",
    "failed",
    "aborted",
    "circuit_open",
    "blocked_address",
    "endpoint_disabled",
];

/// Newest first; `cursor` is the `next_cursor` of the previous page.
pub async fn attempts(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(qs): Query<AttemptsQuery>,
) -> ApiResult<Json<Value>> {
    owned_endpoint(&app, &tenant.id, &id)?;
    let limit = qs.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(bad("limit", "1 to 1000"));
    }
    if let Some(o) = &qs.outcome {
        if !OUTCOMES.contains(&o.as_str()) {
            return Err(bad("outcome", format!("one of {}", OUTCOMES.join(", "))));
        }
    }
    let since = qs
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?
        .unwrap_or(0);
    let until = qs
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?
        .unwrap_or(i64::MAX);
    let cursor = match qs.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.split_once('_')
                .and_then(|(ms, id)| Some((ms.parse::<u64>().ok()?, id.to_string())))
                .ok_or_else(|| bad("cursor", "not a cursor from a previous page"))?,
        ),
    };
    let mut sql = format!(
        "SELECT attempt_id, event_id, event_type, attempt, trigger, outcome, status_code, latency_ms, error, response_snippet, attempted_at_ms, is_final \
         FROM {}.delivery_attempts FINAL WHERE endpoint_id = ? AND attempted_at_ms >= ? AND attempted_at_ms < ?",
        app.cfg.clickhouse_database
    );
    if qs.outcome.is_some() {
        sql.push_str(" AND outcome = ?");
    }
    if qs.event_id.is_some() {
        sql.push_str(" AND event_id = ?");
    }
    if cursor.is_some() {
        sql.push_str(" AND (attempted_at_ms < ? OR (attempted_at_ms = ? AND attempt_id < ?))");
    }
    sql.push_str(" ORDER BY attempted_at_ms DESC, attempt_id DESC LIMIT ?");
    let mut query = app
        .ch
        .query(&sql)
        .bind(&id)
        .bind(since.max(0) as u64)
        .bind(until.max(0) as u64);
    if let Some(o) = &qs.outcome {
        query = query.bind(o);
    }
    if let Some(e) = &qs.event_id {
        query = query.bind(e);
    }
    if let Some((ms, aid)) = &cursor {
        query = query.bind(*ms).bind(*ms).bind(aid);
    }
    let rows: Vec<AttemptRow> = query.bind(limit).fetch_all().await.map_err(ch_error)?;
    let next = (rows.len() == limit as usize)
        .then(|| {
            rows.last()
                .map(|r| format!("{}_{}", r.attempted_at_ms, r.attempt_id))
        })
        .flatten();
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.attempt_id, "event_id": r.event_id, "event_type": r.event_type,
                "attempt": r.attempt, "trigger": r.trigger, "outcome": r.outcome,
                "status_code": (r.status_code > 0).then_some(r.status_code),
                "latency_ms": r.latency_ms,
                "error": (!r.error.is_empty()).then_some(&r.error),
                "response": (!r.response_snippet.is_empty()).then_some(&r.response_snippet),
                "attempted_at": chrono::DateTime::from_timestamp_millis(r.attempted_at_ms as i64),
                "final": r.is_final == 1,
            })
        })
        .collect();
    Ok(Json(json!({"data": data, "next_cursor": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    since: Option<String>,
    until: Option<String>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourRow {
    hour: u32,
    attempts: u64,
    delivered: u64,
    latency: Vec<f64>,
}

/// Per hour (from the rollup): attempts made, delivered, success rate, latency p50/p90/p99.
pub async fn stats(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(qs): Query<StatsQuery>,
) -> ApiResult<Json<Value>> {
    owned_endpoint(&app, &tenant.id, &id)?;
    let now = switchboard_runtime::now_ms();
    let since = qs
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?
        .unwrap_or(now - 24 * 3_600_000);
    let until = qs
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?
        .unwrap_or(now + 3_600_000);
    let sql = format!(
        "SELECT toUInt32(hour) AS hour, countMerge(attempts) AS attempts, sumMerge(delivered) AS delivered, \
         quantilesMerge(0.5, 0.9, 0.99)(latency_quantiles) AS latency \
         FROM {}.delivery_stats_hourly WHERE endpoint_id = ? AND hour >= toDateTime(?) AND hour < toDateTime(?) \
         GROUP BY hour ORDER BY hour",
        app.cfg.clickhouse_database
    );
    let rows: Vec<HourRow> = app
        .ch
        .query(&sql)
        .bind(&id)
        .bind((since / 1000 / 3600 * 3600).max(0) as u32)
        .bind((until / 1000).clamp(0, u32::MAX as i64) as u32)
        .fetch_all()
        .await
        .map_err(ch_error)?;
    let (total, ok) = rows
        .iter()
        .fold((0, 0), |(t, o), r| (t + r.attempts, o + r.delivered));
    let hours: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "hour": chrono::DateTime::from_timestamp(r.hour as i64, 0),
                "attempts": r.attempts, "delivered": r.delivered,
                "success_rate": if r.attempts > 0 { r.delivered as f64 / r.attempts as f64 } else { 0.0 },
                "latency_ms": {"p50": r.latency.first(), "p90": r.latency.get(1), "p99": r.latency.get(2)},
            })
        })
        .collect();
    Ok(Json(json!({
        "endpoint_id": id, "attempts": total, "delivered": ok,
        "success_rate": if total > 0 { ok as f64 / total as f64 } else { 0.0 },
        "hours": hours,
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct BodyRow {
    event_id: String,
    event_type: String,
    body: String,
}

/// The bodies of `ids` as delivered: one attempt record per event carries it (the first
/// attempt to the event's first endpoint), so look across all of the tenant's endpoints.
async fn bodies(app: &AppState, tenant: &str, ids: &[String]) -> ApiResult<Vec<BodyRow>> {
    let sql = format!(
        "SELECT event_id, any(event_type) AS event_type, anyIf(body, body != '') AS body \
         FROM {}.delivery_attempts WHERE tenant_id = ? AND has(?, event_id) GROUP BY event_id",
        app.cfg.clickhouse_database
    );
    let rows: Vec<BodyRow> = app
        .ch
        .query(&sql)
        .bind(tenant)
        .bind(ids)
        .fetch_all()
        .await
        .map_err(ch_error)?;
    Ok(rows.into_iter().filter(|r| !r.body.is_empty()).collect())
}

fn task(
    app: &AppState,
    tenant: &str,
    endpoint: &str,
    row: &BodyRow,
    trigger: &str,
) -> DeliveryTask {
    let _ = app;
    let now = switchboard_runtime::now_ms();
    DeliveryTask {
        event_id: row.event_id.clone(),
        event_type: row.event_type.clone(),
        tenant_id: tenant.to_string(),
        endpoint_id: endpoint.to_string(),
        conversation: String::new(),
        attempt: 1,
        not_before_ms: now,
        first_attempt_ms: now,
        trigger: trigger.to_string(),
        body: row.body.clone(),
        last_error: None,
        last_status: None,
    }
}

/// The delay topic that carries recover and resend tasks.
fn task_topic(app: &AppState) -> ApiResult<String> {
    let first = app
        .cfg
        .retry_schedule
        .split(',')
        .filter_map(|s| humantime::parse_duration(s.trim()).ok())
        .min()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "misconfigured",
                "retry_schedule is empty",
            )
        })?;
    Ok(app.topics.retry_topic(first))
}

async fn enqueue(app: &AppState, tasks: &[DeliveryTask]) -> ApiResult<()> {
    let topic = task_topic(app)?;
    for chunk in tasks.chunks(5000) {
        let mut out = Vec::with_capacity(chunk.len());
        for t in chunk {
            let payload = app
                .codec
                .encode(&topic, DELIVERY_TASK_SCHEMA, t)
                .await
                .map_err(|e| ApiError::unavailable("registry_unavailable", e.to_string()))?;
            out.push(OutRecord {
                topic: topic.clone(),
                key: t.endpoint_id.clone(),
                payload,
                headers: vec![],
            });
        }
        produce_acked(app, &out).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    since: String,
    until: Option<String>,
}

/// Re-deliver every event whose deliveries to this endpoint since `since` never
/// succeeded (failed for good, dead-lettered, or skipped while disabled).
pub async fn recover(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    owned_endpoint(&app, &tenant.id, &id)?;
    let _running = app.recovers.begin(&tenant.id)?;
    let r: Recover = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("invalid JSON: {e}"),
        )
    })?;
    let since = parse_time("since", &r.since)?;
    let until = r
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?
        .unwrap_or(i64::MAX);
    if since > switchboard_runtime::now_ms() {
        return Err(bad("since", "in the future"));
    }
    let sql = format!(
        "SELECT event_id FROM {}.delivery_attempts \
         WHERE endpoint_id = ? AND attempted_at_ms >= ? AND attempted_at_ms < ? \
         GROUP BY event_id HAVING countIf(outcome IN ('delivered', 'aborted')) = 0 \
         ORDER BY min(attempted_at_ms) LIMIT 100000",
        app.cfg.clickhouse_database
    );
    let ids: Vec<String> = app
        .ch
        .query(&sql)
        .bind(&id)
        .bind(since.max(0) as u64)
        .bind(until.max(0) as u64)
        .fetch_all()
        .await
        .map_err(ch_error)?;
    // Page by page: a page of bodies is read, scheduled and dropped before the next, so a
    // recover of 100,000 events holds 1,000 bodies at a time, not all of them.
    let mut scheduled = 0;
    for page in ids.chunks(RECOVER_PAGE) {
        let rows = bodies(&app, &tenant.id, page).await?;
        let tasks: Vec<DeliveryTask> = rows
            .iter()
            .map(|r| task(&app, &tenant.id, &id, r, "recover"))
            .collect();
        if let Err(mut e) = enqueue(&app, &tasks).await {
            e.message = format!(
                "{}; {scheduled} of {} events were scheduled before this, recover again to schedule the rest",
                e.message,
                ids.len()
            );
            return Err(e);
        }
        scheduled += tasks.len();
    }
    Ok(Json(json!({"endpoint_id": id, "scheduled": scheduled})))
}

const RECOVER_PAGE: usize = 1000;

/// Tenants with a recover running: one at a time per tenant, so one tenant's recovers
/// cannot take the gateway's memory, database and broker from the others.
#[derive(Default)]
pub struct Recovers(std::sync::Mutex<std::collections::HashSet<String>>);

/// A running recover's place; dropping it (the request ended, however) frees it.
pub struct Running<'a>(&'a Recovers, String);

impl Recovers {
    fn begin(&self, tenant: &str) -> ApiResult<Running<'_>> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(tenant.to_string()) {
            return Err(ApiError {
                retry_after_secs: Some(5),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "recover_in_progress",
                    "a recover of this tenant is running; wait for it to finish",
                )
            });
        }
        Ok(Running(self, tenant.to_string()))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    endpoint_id: Option<String>,
}

/// Send one event again: to one endpoint, or to every endpoint of the tenant that wants
/// its type (disabled ones excepted). The event must be in the delivery log.
pub async fn resend(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(event_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let r: Resend = if body.is_empty() {
        Resend::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("invalid JSON: {e}"),
            )
        })?
    };
    let row: BodyRow = bodies(&app, &tenant.id, std::slice::from_ref(&event_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("event in the delivery log"))?;
    let targets: Vec<String> = match &r.endpoint_id {
        Some(ep) => vec![owned_endpoint(&app, &tenant.id, ep)?.id],
        None => {
            let number = serde_json::from_str::<Value>(&row.body)
                .ok()
                .and_then(|v| v["data"]["business_number"].as_str().map(str::to_string))
                .unwrap_or_default();
            app.config
                .read()
                .endpoints_of(&tenant.id)
                .filter(|e| e.wants(&row.event_type, &number))
                .map(|e| e.id.clone())
                .collect()
        }
    };
    let tasks: Vec<DeliveryTask> = targets
        .iter()
        .map(|ep| task(&app, &tenant.id, ep, &row, "resend"))
        .collect();
    enqueue(&app, &tasks).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event_id, "endpoints": targets})),
    ))
}

#[cfg(test)]
mod recover_tests {
    use super::Recovers;

    #[test]
    fn one_recover_per_tenant_at_a_time() {
        let r = Recovers::default();
        let a = r.begin("a").expect("a's first");
        let e = r.begin("a").err().expect("a's second waits");
        assert_eq!((e.status.as_u16(), e.code), (429, "recover_in_progress"));
        let _b = r.begin("b").expect("another tenant is not held up");
        drop(a);
        assert!(r.begin("a").is_ok(), "free again once the first ended");
    }
}
