//! `/v1/campaigns`: one template to an audience. Creating one runs the pre-flight
//! (numbers, template, every recipient validated and deduplicated, opted-out customers
//! skipped, the daily limit's days) and stores it with its audience (`db::campaigns`);
//! the routers release it (`route::campaigns`). `GET` shows its progress from the
//! stores; `POST .../{start|pause|resume|cancel}` changes its state.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use switchboard_connectors::meta::templates::check_parameters;
use switchboard_connectors::send::{bsuid_recipients, codes, supported_types, validate};
use switchboard_connectors::Bsp;
use switchboard_processors::db::campaigns::{
    template_message, Campaign, Campaigns, NewRecipient, Transition,
};
use switchboard_processors::db::suppressions::Suppressions;
use switchboard_processors::db::templates::Templates;

use super::auth::TenantAuth;
use crate::error::ApiError;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;
type Ts = chrono::DateTime<chrono::Utc>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub const MAX_RECIPIENTS: usize = 100_000;
const MAX_SCHEDULE_AHEAD_DAYS: i64 = 30;
/// Invalid recipients named in the answer (all are counted).
const EXAMPLES: usize = 20;

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "invalid_field", field, msg)
}

fn invalid(code: &'static str, field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(code, field, msg)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateRef {
    name: String,
    language: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Schedule {
    /// RFC 3339, or a local time (`2026-12-24T09:00`) in `time_zone`.
    at: String,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCampaign {
    name: String,
    template: TemplateRef,
    /// One of the tenant's numbers, or several (recipients are spread over them).
    from: Value,
    /// `"+49..."` or `{"to", "parameters": [texts] | {"components": [...]}}`.
    recipients: Option<Vec<Value>>,
    /// `to` in the first column, the body's parameters in the next ones; a header row
    /// whose first cell is `to` is skipped.
    recipients_csv: Option<String>,
    schedule: Option<Schedule>,
    rate_per_sec: Option<u32>,
    metadata: Option<Map<String, Value>>,
    /// `false`: a draft, started by `POST .../start`.
    start: Option<bool>,
}

/// The audience as given: (recipient, parameters) per entry, in order.
fn audience(c: &NewCampaign) -> ApiResult<Vec<(String, Option<Value>)>> {
    match (&c.recipients, &c.recipients_csv) {
        (Some(_), Some(_)) | (None, None) => Err(bad(
            "recipients",
            "give exactly one of recipients and recipients_csv",
        )),
        (Some(list), None) => {
            list.iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::String(to) => Ok((to.clone(), None)),
                    Value::Object(o) => {
                        if let Some(k) = o.keys().find(|k| *k != "to" && *k != "parameters") {
                            return Err(bad(&format!("recipients[{i}].{k}"), "unknown field"));
                        }
                        let to = o.get("to").and_then(Value::as_str).ok_or_else(|| {
                            bad(&format!("recipients[{i}].to"), "required, a string")
                        })?;
                        Ok((to.to_string(), o.get("parameters").cloned()))
                    }
                    _ => Err(bad(&format!("recipients[{i}]"), "a string or an object")),
                })
                .collect()
        }
        (None, Some(text)) => {
            let mut rd = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(text.as_bytes());
            let mut out = Vec::new();
            for (i, rec) in rd.records().enumerate() {
                let rec = rec.map_err(|e| bad("recipients_csv", format!("line {}: {e}", i + 1)))?;
                let Some(to) = rec.get(0) else { continue };
                if (i == 0 && to.eq_ignore_ascii_case("to")) || to.is_empty() {
                    continue;
                }
                let params: Vec<Value> = rec.iter().skip(1).map(|p| json!(p)).collect();
                out.push((
                    to.to_string(),
                    (!params.is_empty()).then_some(Value::Array(params)),
                ));
            }
            Ok(out)
        }
    }
}

/// A campaign uploaded as `multipart/form-data`: a `campaign` part (the JSON, without an
/// audience) and a `recipients` part (the CSV file, as `recipients_csv` reads it).
async fn uploaded(content_type: &str, body: bytes::Bytes) -> ApiResult<NewCampaign> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| bad("content-type", format!("multipart without a boundary: {e}")))?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let (mut campaign, mut csv) = (None, None);
    let malformed = |e: multer::Error| bad("body", format!("not valid multipart/form-data: {e}"));
    while let Some(part) = parts.next_field().await.map_err(malformed)? {
        let name = part.name().unwrap_or_default().to_string();
        let slot = match name.as_str() {
            "campaign" => &mut campaign,
            "recipients" => &mut csv,
            _ => {
                return Err(bad(
                    &name,
                    "unknown part; a campaign upload has the parts campaign and recipients",
                ))
            }
        };
        if slot.is_some() {
            return Err(bad(&name, "given twice"));
        }
        *slot = Some(
            part.text()
                .await
                .map_err(|e| bad(&name, format!("not UTF-8 text: {e}")))?,
        );
    }
    let campaign =
        campaign.ok_or_else(|| bad("campaign", "required part: the campaign as JSON"))?;
    let csv = csv.ok_or_else(|| bad("recipients", "required part: the audience as CSV"))?;
    let mut c: NewCampaign = super::admin::json_body(campaign.as_bytes())?;
    if c.recipients.is_some() || c.recipients_csv.is_some() {
        return Err(bad(
            "recipients",
            "the audience is the uploaded file; give none in the campaign part",
        ));
    }
    c.recipients_csv = Some(csv);
    Ok(c)
}

fn schedule_at(s: &Schedule) -> ApiResult<(Ts, Option<String>)> {
    let at = match &s.time_zone {
        None => chrono::DateTime::parse_from_rfc3339(&s.at)
            .map_err(|e| {
                bad(
                    "schedule.at",
                    format!("not an RFC 3339 time ({e}); or give time_zone"),
                )
            })?
            .with_timezone(&chrono::Utc),
        Some(tz) => {
            let zone: chrono_tz::Tz = tz.parse().map_err(|_| {
                bad(
                    "schedule.time_zone",
                    format!("{tz:?} is not an IANA time zone"),
                )
            })?;
            let local = chrono::NaiveDateTime::parse_from_str(&s.at, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(&s.at, "%Y-%m-%dT%H:%M"))
                .map_err(|_| {
                    bad(
                        "schedule.at",
                        "a local time, 2026-12-24T09:00[:00], with time_zone",
                    )
                })?;
            use chrono::TimeZone;
            match zone.from_local_datetime(&local) {
                chrono::LocalResult::Single(t) => t.with_timezone(&chrono::Utc),
                chrono::LocalResult::Ambiguous(..) => {
                    return Err(bad(
                        "schedule.at",
                        format!("{} happens twice in {tz} (a clock change)", s.at),
                    ))
                }
                chrono::LocalResult::None => {
                    return Err(bad(
                        "schedule.at",
                        format!("{} does not exist in {tz} (a clock change)", s.at),
                    ))
                }
            }
        }
    };
    if at > chrono::Utc::now() + chrono::Duration::days(MAX_SCHEDULE_AHEAD_DAYS) {
        return Err(bad("schedule.at", "at most 30 days ahead"));
    }
    Ok((at, s.time_zone.clone()))
}

fn campaign_json(c: &Campaign) -> Value {
    json!({
        "id": c.id, "name": c.name, "state": c.state, "waiting": c.waiting,
        "template": {"name": c.template_name, "language": c.template_language},
        "from": c.from_numbers, "metadata": c.metadata, "rate_per_sec": c.rate_per_sec,
        "schedule": c.scheduled_at.map(|at| json!({"at": at, "time_zone": c.time_zone})),
        "audience": {"total": c.total, "invalid": c.invalid, "duplicates": c.duplicates, "suppressed": c.suppressed},
        "created_at": c.created_at, "started_at": c.started_at, "finished_at": c.finished_at,
    })
}

pub async fn create(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<impl IntoResponse> {
    let body = crate::ingest::read_limited(&headers, body, app.cfg.max_batch_body_bytes).await?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let c: NewCampaign = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        uploaded(content_type, body).await?
    } else {
        super::admin::json_body(&body)?
    };
    if c.name.trim().is_empty() || c.name.len() > 200 {
        return Err(bad("name", "1 to 200 characters"));
    }
    if c.template.name.is_empty() || c.template.language.is_empty() {
        return Err(bad("template", "name and language are required"));
    }
    // The numbers: the tenant's, on BSPs that send templates.
    let froms: Vec<String> = match &c.from {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() && a.len() <= 100 => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("from", "numbers are strings"))
            })
            .collect::<ApiResult<_>>()?,
        _ => return Err(bad("from", "a number or a list of 1 to 100 numbers")),
    };
    let numbers = {
        let ix = app.config.read();
        let mut out = Vec::new();
        for f in &froms {
            let n = switchboard_connectors::common::e164(f).map_err(|_| {
                invalid(
                    "invalid_phone_number",
                    "from",
                    format!("{f:?} is not an E.164 number"),
                )
            })?;
            let num = ix
                .numbers
                .get(&n)
                .filter(|x| x.tenant_id == tenant.id)
                .cloned()
                .ok_or_else(|| {
                    invalid(
                        "unknown_sender",
                        "from",
                        format!("{n} is not one of this tenant's numbers"),
                    )
                })?;
            out.push(num);
        }
        out
    };
    let mut bsps = HashSet::new();
    for n in &numbers {
        let bsp: Bsp = n
            .bsp
            .parse()
            .map_err(|_| ApiError::internal("number with unknown BSP"))?;
        if !supported_types(bsp).contains(&"template") {
            return Err(invalid(
                codes::UNSUPPORTED,
                "from",
                format!("{} cannot send templates", bsp.slug()),
            ));
        }
        bsps.insert(bsp);
    }
    let from_numbers: Vec<String> = numbers.iter().map(|n| n.number.clone()).collect();
    let tiers: u32 = numbers.iter().map(|n| n.tier_mps).sum();
    let rate = match c.rate_per_sec {
        None => (tiers * 4 / 5).max(1),
        Some(r) if r >= 1 && r <= tiers => r,
        Some(_) => {
            return Err(bad(
                "rate_per_sec",
                format!("1 to the numbers' tiers together ({tiers})"),
            ))
        }
    };
    let (scheduled_at, time_zone) = match &c.schedule {
        None => (None, None),
        Some(s) => {
            let (at, tz) = schedule_at(s)?;
            (Some(at), tz)
        }
    };
    if let Some(m) = &c.metadata {
        if m.len() > 50
            || m.values()
                .any(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
        {
            return Err(bad(
                "metadata",
                "at most 50 keys with string, number or boolean values",
            ));
        }
    }

    // The template, where its WABA is synced: it must exist, be approved; its category
    // decides whether opted-out customers are skipped.
    let wabas: HashSet<String> = numbers.iter().filter_map(|n| n.waba_id.clone()).collect();
    let store = Templates::new(app.db.clone());
    let synced: HashSet<String> = store
        .syncs(&tenant.id)
        .await
        .map_err(ApiError::db)?
        .into_iter()
        .filter(|s| s.1.is_some())
        .map(|s| s.0)
        .collect();
    let mut template = None;
    for waba in wabas.iter().filter(|w| synced.contains(*w)) {
        let t = store
            .find(&tenant.id, waba, &c.template.name, &c.template.language)
            .await
            .map_err(ApiError::db)?
            .ok_or_else(|| {
                invalid(
                    codes::TEMPLATE_NOT_FOUND,
                    "template",
                    format!(
                        "WABA {waba} has no template {:?} in {:?}",
                        c.template.name, c.template.language
                    ),
                )
            })?;
        if !t.is_approved() {
            return Err(invalid(
                codes::TEMPLATE_NOT_APPROVED,
                "template",
                format!("template {:?} ({}) is {}", t.name, t.language, t.status),
            ));
        }
        template = Some(t);
    }

    // The audience: every entry validated, duplicates and invalid ones counted.
    let given = audience(&c)?;
    if given.len() > MAX_RECIPIENTS {
        return Err(bad(
            "recipients",
            format!("{} recipients; at most {MAX_RECIPIENTS}", given.len()),
        ));
    }
    let mut seen = HashSet::new();
    let mut valid: Vec<(String, Option<Value>)> = Vec::new();
    let (mut n_invalid, mut duplicates) = (0usize, 0usize);
    let mut examples = Vec::new();
    let mut reject = |i: usize, to: &str, code: &str, why: String| {
        n_invalid += 1;
        if examples.len() < EXAMPLES {
            examples.push(json!({"index": i, "to": to, "code": code, "message": why}));
        }
    };
    for (i, (to, params)) in given.into_iter().enumerate() {
        let r = match validate::recipient(&to) {
            Ok(r) => r,
            Err(e) => {
                reject(i, &to, e.code, e.message);
                continue;
            }
        };
        if matches!(r, validate::Recipient::Bsuid(_)) && !bsps.iter().all(|b| bsuid_recipients(*b))
        {
            reject(
                i,
                &to,
                codes::UNSUPPORTED,
                "a business-scoped user id, which these numbers' BSPs cannot send to".into(),
            );
            continue;
        }
        let msg = template_message(&c.template.name, &c.template.language, params.as_ref());
        let obj = msg.as_object().cloned().unwrap_or_default();
        if let Err(e) = validate::message(&obj) {
            reject(i, &to, e.code, format!("{}: {}", e.field, e.message));
            continue;
        }
        if let Some(t) = &template {
            let comps = msg
                .pointer("/template/components")
                .cloned()
                .unwrap_or(Value::Null);
            if let Err(why) = check_parameters(&t.needs(), &comps) {
                reject(i, &to, codes::TEMPLATE_INVALID, why);
                continue;
            }
        }
        if !seen.insert(r.as_str().to_string()) {
            duplicates += 1;
            continue;
        }
        valid.push((r.as_str().to_string(), params));
    }
    if valid.is_empty() {
        return Err(invalid(
            "empty_audience",
            "recipients",
            format!("no valid recipient ({n_invalid} invalid, {duplicates} duplicates)"),
        )
        .with("invalid_examples", json!(examples)));
    }
    let marketing = template.as_ref().is_some_and(|t| t.is_marketing());
    let stopped = if marketing {
        let all: Vec<String> = valid.iter().map(|v| v.0.clone()).collect();
        Suppressions::new(app.db.clone())
            .suppressed(&tenant.id, &all)
            .await
            .map_err(ApiError::db)?
    } else {
        HashSet::new()
    };
    let recipients: Vec<NewRecipient> = valid
        .into_iter()
        .map(|(r, p)| NewRecipient {
            skip: stopped.contains(&r).then_some("suppressed"),
            recipient: r,
            parameters: p,
        })
        .collect();
    let sendable = recipients.len() - stopped.len();
    let days = tenant
        .daily_unique_limit
        .map(|l| sendable.div_ceil(l as usize).max(1));

    let now = chrono::Utc::now();
    let state = if c.start == Some(false) {
        "draft"
    } else if scheduled_at.is_some_and(|t| t > now) {
        "scheduled"
    } else {
        "running"
    };
    let campaign = Campaign {
        id: super::ordered_id("cmp_"),
        tenant_id: tenant.id.clone(),
        name: c.name.trim().to_string(),
        state: state.into(),
        template_name: c.template.name.clone(),
        template_language: c.template.language.clone(),
        from_numbers,
        metadata: c.metadata.clone().map(Value::Object),
        scheduled_at,
        time_zone,
        rate_per_sec: rate as i32,
        total: recipients.len() as i32,
        invalid: n_invalid as i32,
        duplicates: duplicates as i32,
        suppressed: stopped.len() as i32,
        waiting: None,
        created_at: now,
        started_at: None,
        finished_at: None,
    };
    Campaigns::new(app.db.clone())
        .create(&campaign, &recipients)
        .await
        .map_err(ApiError::db)?;
    let mut body = campaign_json(&campaign);
    body["preflight"] = json!({
        "template_checked": template.is_some(),
        "marketing": marketing,
        "invalid_examples": examples,
        "sendable": sendable,
        "days_needed": days,
    });
    Ok((StatusCode::CREATED, Json(body)))
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
    let limit = qp.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit", "1 to 500"));
    }
    let before = match &qp.cursor {
        None => None,
        Some(cur) => {
            let parse = || -> Option<(Ts, String)> {
                let raw = String::from_utf8(B64.decode(cur.strip_prefix("k1.")?).ok()?).ok()?;
                let (micros, id) = raw.split_once('\n')?;
                Some((
                    Ts::from_timestamp_micros(micros.parse().ok()?)?,
                    id.to_string(),
                ))
            };
            Some(parse().ok_or_else(|| bad("cursor", "not a cursor this API returned"))?)
        }
    };
    let rows = Campaigns::new(app.db.clone())
        .list(&tenant.id, before, limit + 1)
        .await
        .map_err(ApiError::db)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = more.then(|| page.last()).flatten().map(|c| {
        format!(
            "k1.{}",
            B64.encode(format!("{}\n{}", c.created_at.timestamp_micros(), c.id))
        )
    });
    Ok(Json(json!({
        "data": page.iter().map(campaign_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let store = Campaigns::new(app.db.clone());
    let c = store
        .get(&tenant.id, &id)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("campaign"))?;
    let p = store.progress(&c.id).await.map_err(ApiError::db)?;
    let mut body = campaign_json(&c);
    body["progress"] = json!(p);
    Ok(Json(body))
}

/// `POST /v1/campaigns/{id}/{start|pause|resume|cancel}`.
pub async fn act(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if !["start", "pause", "resume", "cancel"].contains(&action.as_str()) {
        return Err(ApiError::not_found("campaign action"));
    }
    match Campaigns::new(app.db.clone())
        .transition(&tenant.id, &id, &action)
        .await
    {
        Ok(c) => Ok(Json(campaign_json(&c))),
        Err(Transition::NotFound) => Err(ApiError::not_found("campaign")),
        Err(Transition::Conflict(m)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "invalid_state", m))
        }
        Err(Transition::Db(e)) => Err(ApiError::db(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> NewCampaign {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn a_campaign_uploads_with_its_csv_as_multipart() {
        let form = |parts: &[(&str, &str, &str)]| {
            let mut b = String::new();
            for (name, ct, text) in parts {
                b.push_str(&format!(
                    "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: {ct}\r\n\r\n{text}\r\n"
                ));
            }
            b.push_str("--XyZ--\r\n");
            bytes::Bytes::from(b)
        };
        let ct = "multipart/form-data; boundary=XyZ";
        let campaign =
            r#"{"name": "x", "template": {"name": "t", "language": "en"}, "from": "+1"}"#;
        let csv = "to,name\n+4915112345678,Ann\n+4915112345679,Bo\n";
        let c = uploaded(
            ct,
            form(&[
                ("campaign", "application/json", campaign),
                ("recipients", "text/csv", csv),
            ]),
        )
        .await
        .unwrap();
        let a = audience(&c).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1], ("+4915112345679".into(), Some(json!(["Bo"]))));
        for (parts, field) in [
            (
                vec![("campaign", "application/json", campaign)],
                "recipients",
            ),
            (vec![("recipients", "text/csv", csv)], "campaign"),
            (
                vec![
                    ("campaign", "application/json", campaign),
                    ("recipients", "text/csv", csv),
                    ("recipients", "text/csv", csv),
                ],
                "recipients",
            ),
            (
                vec![
                    ("campaign", "application/json", campaign),
                    ("photo", "image/png", "x"),
                ],
                "photo",
            ),
        ] {
            let e = uploaded(ct, form(&parts)).await.err().expect(field);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(format!("{e:?}").contains(field), "{field}: {e:?}");
        }
        let with_list = r#"{"name": "x", "template": {"name": "t", "language": "en"}, "from": "+1", "recipients": ["+4915112345678"]}"#;
        assert!(uploaded(
            ct,
            form(&[
                ("campaign", "application/json", with_list),
                ("recipients", "text/csv", csv)
            ])
        )
        .await
        .is_err());
        assert!(uploaded("multipart/form-data", bytes::Bytes::new())
            .await
            .is_err());
        assert!(uploaded(ct, bytes::Bytes::from_static(b"--XyZ\r\ngarbage"))
            .await
            .is_err());
    }

    #[test]
    fn audiences_from_a_list_or_a_csv() {
        let c = body(
            json!({"name": "x", "template": {"name": "t", "language": "en"}, "from": "+1",
            "recipients": ["+4915112345678", {"to": "+4915112345679", "parameters": ["Ann"]}]}),
        );
        let a = audience(&c).unwrap();
        assert_eq!(a[0], ("+4915112345678".into(), None));
        assert_eq!(a[1].1, Some(json!(["Ann"])));
        let c = body(
            json!({"name": "x", "template": {"name": "t", "language": "en"}, "from": "+1",
            "recipients_csv": "to,name,order\n+4915112345678, Ann ,42\n\n+4915112345679\n"}),
        );
        let a = audience(&c).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].1, Some(json!(["Ann", "42"])));
        assert_eq!(a[1], ("+4915112345679".into(), None));
        let both = body(
            json!({"name": "x", "template": {"name": "t", "language": "en"}, "from": "+1",
            "recipients": [], "recipients_csv": ""}),
        );
        assert!(audience(&both).is_err());
    }

    #[test]
    fn local_schedules_in_their_time_zone() {
        let s = Schedule {
            at: "2026-12-24T09:00".into(),
            time_zone: Some("Europe/Berlin".into()),
        };
        // Far ahead of now? The 30-day rule would refuse it; check the conversion alone.
        let zone: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        use chrono::TimeZone;
        let local = chrono::NaiveDateTime::parse_from_str(&s.at, "%Y-%m-%dT%H:%M").unwrap();
        let t = zone
            .from_local_datetime(&local)
            .single()
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(t.to_rfc3339(), "2026-12-24T08:00:00+00:00");
        // A time the spring clock change skips does not exist.
        let gap = Schedule {
            at: "2026-03-29T02:30".into(),
            time_zone: Some("Europe/Berlin".into()),
        };
        assert!(schedule_at(&gap).is_err());
        let bad_zone = Schedule {
            at: "2026-12-24T09:00".into(),
            time_zone: Some("Mars/Olympus".into()),
        };
        assert!(schedule_at(&bad_zone).is_err());
    }
}
