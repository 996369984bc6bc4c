//! `GET /v1/analytics/{report}` (a tenant's, by its API key) and
//! `GET /admin/analytics/{report}` (every tenant's, or one's, for the operator): validate
//! the question, ask ClickHouse's rollups once, answer rows of period, groups and
//! measures. What the reports are lives in [`report`].

mod messages;
mod report;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use super::admin::bad;
use super::auth::{AdminAuth, TenantAuth};
use crate::error::ApiError;
use crate::AppState;
use report::{Granularity, Measure, Question, Report};

type ApiResult<T> = Result<T, ApiError>;

/// Rollups are in 15-minute slots; a range must be a union of them.
const SLOT_SECS: i64 = 900;
const DEFAULT_RANGE_SECS: i64 = 7 * 86_400;

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

pub async fn tenant_report(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let Query(params) = params.map_err(invalid_query)?;
    answer(&app, &name, Some(tenant.id), false, params).await
}

pub async fn operator_report(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let Query(mut params) = params.map_err(invalid_query)?;
    let tenant = params.remove("tenant");
    answer(&app, &name, tenant, true, params).await
}

/// `GET /v1/analytics/messages`: the tenant's events behind a report, by pages.
pub async fn tenant_messages(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let Query(params) = params.map_err(invalid_query)?;
    messages::page(&app, Some(tenant.id), params).await
}

/// `GET /admin/analytics/messages`: any tenant's (`tenant=`), or every tenant's.
pub async fn operator_messages(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let Query(mut params) = params.map_err(invalid_query)?;
    let tenant = params.remove("tenant");
    messages::page(&app, tenant, params).await
}

fn invalid_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
}

async fn answer(
    app: &AppState,
    name: &str,
    tenant: Option<String>,
    operator: bool,
    mut params: HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let report = report::report(name).ok_or_else(|| ApiError::not_found("report"))?;
    let q = question(app, report, tenant, operator, &mut params)?;
    check_time_zone(app, &q.time_zone).await?;
    let (sql, binds) = report::sql(&q, &app.cfg.clickhouse_database);
    let mut query = app
        .ch
        .query(&sql)
        .with_setting("output_format_json_quote_64bit_integers", "0");
    for b in &binds {
        query = query.bind(b.as_str());
    }
    let bytes = query
        .fetch_bytes("JSONEachRow")
        .map_err(ch_error)?
        .collect()
        .await
        .map_err(ch_error)?;
    let mut rows = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let row: Map<String, Value> = serde_json::from_slice(line)
            .map_err(|e| ApiError::unavailable("analytics_unavailable", e.to_string()))?;
        rows.push(row);
    }
    let max_rows = app.cfg.analytics_max_rows;
    if rows.len() > max_rows {
        return Err(too_big(format!(
            "more than {max_rows} rows (groups × periods): narrow the range, coarsen the granularity or group by less"
        )));
    }
    let groups: HashSet<Vec<String>> = rows
        .iter()
        .map(|r| {
            q.group_by
                .iter()
                .flat_map(|d| d.columns.iter().map(|(n, _)| r[*n].to_string()))
                .collect()
        })
        .collect();
    let max_groups = app.cfg.analytics_max_groups;
    if groups.len() > max_groups {
        return Err(too_big(format!(
            "{} groups, at most {max_groups}: filter or group by less",
            groups.len()
        )));
    }
    let data: Vec<Value> = rows.into_iter().map(|r| render(report, r)).collect();
    Ok(Json(json!({
        "report": report.name,
        "tenant_id": q.tenant,
        "from": rfc3339(q.from),
        "to": rfc3339(q.to),
        "granularity": granularity_name(q.granularity),
        "time_zone": q.time_zone,
        "group_by": q.group_by.iter().map(|d| d.name).collect::<Vec<_>>(),
        "data": data,
    })))
}

fn too_big(msg: String) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "too_many_groups", "group_by", msg)
}

fn ch_error(e: clickhouse::error::Error) -> ApiError {
    ApiError::unavailable("analytics_unavailable", format!("clickhouse: {e}"))
}

fn rfc3339(secs: i64) -> Value {
    json!(chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

fn granularity_name(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => "hour",
        Granularity::Day => "day",
        Granularity::Month => "month",
        Granularity::Total => "total",
    }
}

/// A ClickHouse row as an answer row: the period's start as an instant, quantiles as
/// `{p50, p90, p99}`.
fn render(report: &Report, mut row: Map<String, Value>) -> Value {
    if let Some(start) = row.get("period_start").and_then(Value::as_i64) {
        row.insert("period_start".into(), rfc3339(start));
    }
    for m in report.measures {
        if let Measure::Quantiles(name, _) = m {
            let q = row
                .get(*name)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let at = |i: usize| q.get(i).cloned().unwrap_or(Value::Null);
            row.insert(
                (*name).into(),
                json!({"p50": at(0), "p90": at(1), "p99": at(2)}),
            );
        }
    }
    Value::Object(row)
}

fn parse_time(field: &str, s: &str) -> ApiResult<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|_| bad(field, "an RFC 3339 time, e.g. 2026-11-22T10:00:00Z"))?
        .timestamp();
    if t.rem_euclid(SLOT_SECS) != 0 {
        return Err(bad(
            field,
            "a whole quarter hour (analytics are kept in 15-minute slots)",
        ));
    }
    if !(0..=u32::MAX as i64).contains(&t) {
        return Err(bad(field, "between 1970 and 2106"));
    }
    Ok(t)
}

/// Validate every parameter; anything not understood is a 400 naming it.
fn question(
    app: &AppState,
    report: &'static Report,
    tenant: Option<String>,
    operator: bool,
    params: &mut HashMap<String, String>,
) -> ApiResult<Question> {
    let now = switchboard_runtime::now_ms() / 1000;
    let to = match params.remove("to") {
        Some(s) => parse_time("to", &s)?,
        None => (now / SLOT_SECS + 1) * SLOT_SECS,
    };
    let from = match params.remove("from") {
        Some(s) => parse_time("from", &s)?,
        None => (to - DEFAULT_RANGE_SECS).max(0),
    };
    if from >= to {
        return Err(bad("to", "after from"));
    }
    let max = app.cfg.analytics_max_range.as_secs() as i64;
    if to - from > max {
        return Err(bad(
            "from",
            format!("at most {} days before to", max / 86_400),
        ));
    }
    let granularity = match params.remove("granularity") {
        None => Granularity::Day,
        Some(g) => Granularity::parse(&g)
            .ok_or_else(|| bad("granularity", "one of hour, day, month, total"))?,
    };
    let time_zone = params
        .remove("time_zone")
        .unwrap_or_else(|| "UTC".to_string());
    let zone_like = |c: char| c.is_ascii_alphanumeric() || "_+-/".contains(c);
    if time_zone.is_empty() || time_zone.len() > 64 || !time_zone.chars().all(zone_like) {
        return Err(bad("time_zone", "an IANA time zone, e.g. Asia/Kolkata"));
    }
    let known = || {
        report
            .dims
            .iter()
            .map(|d| d.name)
            .chain(operator.then_some(report::TENANT.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let group_by = match params.remove("group_by") {
        None => report
            .default_group_by
            .iter()
            .filter_map(|n| report.dim(n, operator))
            .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let d = report.dim(n, operator).ok_or_else(|| {
                    bad(
                        "group_by",
                        format!("{n:?} is not a dimension of {}: {}", report.name, known()),
                    )
                })?;
                if out.contains(&d) {
                    return Err(bad("group_by", format!("{n} twice")));
                }
                out.push(d);
            }
            out
        }
    };
    let mut filters = Vec::new();
    let mut rest: Vec<(String, String)> = params.drain().collect();
    rest.sort();
    for (k, v) in rest {
        let d = report.dim(&k, false).ok_or_else(|| {
            bad(
                &k,
                format!(
                    "not a parameter of {}: from, to, granularity, time_zone, group_by or a filter ({})",
                    report.name,
                    known()
                ),
            )
        })?;
        if v.is_empty() || v.len() > 256 {
            return Err(bad(&k, "a value of 1 to 256 characters"));
        }
        filters.push((d, v));
    }
    Ok(Question {
        report,
        tenant,
        from,
        to,
        granularity,
        time_zone,
        group_by,
        filters,
        limit: app.cfg.analytics_max_rows + 1,
    })
}

/// An unknown zone is the client's mistake, not an outage: ClickHouse, which applies the
/// zone, is asked whether it knows it.
async fn check_time_zone(app: &AppState, tz: &str) -> ApiResult<()> {
    if tz == "UTC" {
        return Ok(());
    }
    match app
        .ch
        .query("SELECT toUnixTimestamp(toTimeZone(toDateTime(0), ?))")
        .bind(tz)
        .fetch_one::<u32>()
        .await
    {
        Ok(_) => Ok(()),
        Err(clickhouse::error::Error::BadResponse(_)) => Err(bad(
            "time_zone",
            format!("{tz:?} is not a time zone ClickHouse knows (IANA names, e.g. Asia/Kolkata)"),
        )),
        Err(e) => Err(ch_error(e)),
    }
}
