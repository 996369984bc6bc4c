//! The send API: `POST /v1/messages`, `POST /v1/messages/batch`, `GET /v1/messages[/{id}]`,
//! `DELETE /v1/messages/{id}`.
//!
//! Accepting a send is: validate (422 with the field at fault), insert its row (the
//! idempotency record and the router's state machine in one), produce it to
//! `wa.send.requests` and wait for the ack, mark it published, answer 202. A crash
//! between insert and ack leaves an unpublished row that the same request with the same
//! `Idempotency-Key` publishes, and that the router's sweeper publishes anyway; the
//! router's `queued → sending` transition makes a second publication harmless.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use switchboard_connectors::send::{bsuid_recipients, supported_types, validate};
use switchboard_connectors::Bsp;
use switchboard_runtime::kafka::OutRecord;
use switchboard_schemas::config::Tenant;
use switchboard_schemas::{SendRequest, SEND_REQUEST_SCHEMA};

use super::auth::TenantAuth;
use super::publish::produce_acked;
use super::store::q;
use crate::error::ApiError;
use crate::{AppState, RequestId};
use switchboard_processors::db::outbox::{
    Cancelled, Earlier, MessageFilter, MessageRow, NewSend, Requests,
};

type ApiResult<T> = Result<T, ApiError>;

pub const MAX_BATCH: usize = 1000;
const MAX_SCHEDULE_AHEAD_MS: i64 = 30 * 24 * 3600 * 1000;
const MAX_METADATA_BYTES: usize = 4096;

/// A send request that passed validation.
#[derive(Debug, Clone)]
pub struct Valid {
    pub to: String,
    pub from: String,
    pub message_type: String,
    pub message: Value,
    pub metadata: Option<Value>,
    pub scheduled_at_ms: Option<i64>,
    pub idempotency_key: Option<String>,
    pub hash: String,
    /// The API request that carried it (several items of one batch share one).
    pub request_id: String,
}

fn invalid(code: &'static str, field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(code, field, msg)
}

/// The customer: a valid phone number or a business-scoped user id
/// (`validate::recipient`).
fn customer(to: &Value) -> ApiResult<validate::Recipient> {
    let s = to
        .as_str()
        .ok_or_else(|| invalid("invalid_field", "to", "must be a string"))?;
    validate::recipient(s).map_err(|e| ApiError::invalid(e.code, e.field, e.message))
}

/// Canonical JSON (sorted keys at every level) for the idempotency fingerprint.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

pub fn validate_one(
    app: &AppState,
    tenant: &Tenant,
    body: &Value,
    idempotency_key: Option<String>,
    batch: bool,
    request_id: &str,
) -> ApiResult<Valid> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("invalid_field", "", "a message is a JSON object"))?;
    let mut allowed: Vec<&str> = vec!["to", "from", "type", "context", "metadata", "scheduled_at"];
    if batch {
        allowed.push("client_message_id");
    }
    // The message first: an unknown `type` is reported as such, not as its object
    // being an unknown field.
    let (message_type, message) =
        validate::message(obj).map_err(|e| ApiError::invalid(e.code, e.field, e.message))?;
    let mtype = message_type.as_str();
    if let Some(k) = obj
        .keys()
        .find(|k| !allowed.contains(&k.as_str()) && k.as_str() != mtype)
    {
        return Err(invalid(
            "unknown_field",
            k,
            format!(
                "unknown field; allowed: {}, and the object named by type",
                allowed.join(", ")
            ),
        ));
    }
    let to = customer(
        obj.get("to")
            .ok_or_else(|| invalid("missing_field", "to", "required"))?,
    )?;

    let (from, number) = {
        let ix = app.config.read();
        let from = match obj.get("from") {
            Some(Value::String(f)) => switchboard_connectors::common::e164(f).map_err(|_| {
                invalid(
                    "invalid_phone_number",
                    "from",
                    format!("{f:?} is not an E.164 number"),
                )
            })?,
            Some(_) => return Err(invalid("invalid_field", "from", "must be a string")),
            None => tenant.default_number.clone().ok_or_else(|| {
                invalid(
                    "missing_field",
                    "from",
                    "no `from` and the tenant has no default number",
                )
            })?,
        };
        let number = ix
            .numbers
            .get(&from)
            .filter(|n| n.tenant_id == tenant.id)
            .cloned()
            .ok_or_else(|| {
                invalid(
                    "unknown_sender",
                    "from",
                    format!("{from} is not one of this tenant's numbers"),
                )
            })?;
        (from, number)
    };
    let bsp: Bsp = number
        .bsp
        .parse()
        .map_err(|_| ApiError::internal("number with unknown BSP"))?;
    if matches!(to, validate::Recipient::Bsuid(_)) && !bsuid_recipients(bsp) {
        return Err(invalid(
            "unsupported_by_bsp",
            "to",
            format!(
                "{} cannot send to a business-scoped user id; send to the customer's phone number",
                bsp.slug()
            ),
        ));
    }
    let to = to.as_str().to_string();
    if !supported_types(bsp).contains(&message_type.as_str()) {
        return Err(invalid(
            "unsupported_by_bsp",
            "type",
            format!("{} cannot send {message_type} messages", bsp.slug()),
        ));
    }
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            if m.values()
                .any(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
            {
                return Err(invalid(
                    "invalid_field",
                    "metadata",
                    "values must be strings, numbers or booleans",
                ));
            }
            let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES || m.len() > 50 {
                return Err(invalid(
                    "too_long",
                    "metadata",
                    format!("at most 50 keys and {MAX_METADATA_BYTES} bytes"),
                ));
            }
            Some(Value::Object(m.clone()))
        }
        Some(_) => return Err(invalid("invalid_field", "metadata", "must be an object")),
    };
    let now = switchboard_runtime::now_ms();
    let scheduled_at_ms = match obj.get("scheduled_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    invalid(
                        "invalid_field",
                        "scheduled_at",
                        format!("not an RFC 3339 time: {e}"),
                    )
                })?
                .timestamp_millis();
            if t > now + MAX_SCHEDULE_AHEAD_MS {
                return Err(invalid(
                    "invalid_field",
                    "scheduled_at",
                    "at most 30 days ahead",
                ));
            }
            // A time in the past means "now".
            (t > now).then_some(t)
        }
        Some(_) => {
            return Err(invalid(
                "invalid_field",
                "scheduled_at",
                "must be an RFC 3339 string",
            ))
        }
    };
    if let Some(k) = &idempotency_key {
        if k.is_empty() || k.len() > 255 || k.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "invalid_field",
                if batch {
                    "client_message_id"
                } else {
                    "Idempotency-Key"
                },
                "1 to 255 printable characters",
            ));
        }
    }
    let fingerprint = canonical(&json!({
        "to": to, "from": from, "message": message, "metadata": metadata,
        "scheduled_at": obj.get("scheduled_at"),
    }));
    let hash = hex::encode(Sha256::digest(fingerprint.to_string().as_bytes()));
    Ok(Valid {
        to,
        from,
        message_type,
        message,
        metadata,
        scheduled_at_ms,
        idempotency_key,
        hash,
        request_id: request_id.to_string(),
    })
}

/// The answer to an accepted send (also stored, to replay for a repeated key).
fn accepted_body(id: &str, v: &Valid, created_ms: i64) -> Value {
    let ts = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
    json!({
        "id": id,
        "status": if v.scheduled_at_ms.is_some() { "scheduled" } else { "queued" },
        "to": v.to, "from": v.from, "type": v.message_type,
        "scheduled_at": v.scheduled_at_ms.and_then(ts),
        "created_at": ts(created_ms),
    })
}

/// One item's outcome: the answer body and whether it replays an earlier request.
pub type Outcome = ApiResult<(Value, bool)>;

/// Accept validated sends: insert, publish, mark. Items keep their order.
pub async fn accept(app: &AppState, tenant: &Tenant, items: Vec<Valid>) -> ApiResult<Vec<Outcome>> {
    if !app.db_ready.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database is not ready yet; retry",
        ));
    }
    let refused = super::policy::refusals(app, tenant, &items).await?;
    if !refused.is_empty() {
        // Accept the others, then put the refusals back in their places.
        let n = items.len();
        let mut refused = refused;
        let kept: Vec<Valid> = items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains_key(i))
            .map(|(_, v)| v)
            .collect();
        let mut accepted = if kept.is_empty() {
            Vec::new()
        } else {
            Box::pin(accept(app, tenant, kept)).await?
        }
        .into_iter();
        return Ok((0..n)
            .map(|i| match refused.remove(&i) {
                Some(e) => Err(e),
                None => accepted.next().expect("one outcome per kept item"),
            })
            .collect());
    }
    let now = switchboard_runtime::now_ms();
    let ids: Vec<String> = items.iter().map(|_| super::ordered_id("msg_")).collect();
    let responses: Vec<Value> = items
        .iter()
        .zip(&ids)
        .map(|(v, id)| accepted_body(id, v, now))
        .collect();
    let sends: Vec<NewSend> = items
        .iter()
        .zip(&ids)
        .zip(&responses)
        .map(|((v, id), resp)| NewSend {
            message_id: id.clone(),
            idempotency_key: v.idempotency_key.clone(),
            request_hash: v.hash.clone(),
            response: resp.clone(),
            from: v.from.clone(),
            to: v.to.clone(),
            message_type: v.message_type.clone(),
            message: v.message.clone(),
            metadata: v.metadata.clone(),
            scheduled_at_ms: v.scheduled_at_ms,
            request_id: v.request_id.clone(),
        })
        .collect();
    let requests = Requests::new(app.db.clone());
    let inserted = requests
        .insert(&tenant.id, &sends)
        .await
        .map_err(ApiError::db)?;

    // Items whose key was seen before: the earlier request decides.
    let repeated: Vec<String> = items
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !inserted.contains(*id))
        .filter_map(|(v, _)| v.idempotency_key.clone())
        .collect();
    let earlier: HashMap<String, Earlier> = if repeated.is_empty() {
        HashMap::new()
    } else {
        requests
            .earlier(&tenant.id, &repeated)
            .await
            .map_err(ApiError::db)?
            .into_iter()
            .map(|e| (e.idempotency_key.clone(), e))
            .collect()
    };

    // What to publish: new rows, and earlier rows never acknowledged by the broker.
    let mut to_publish: Vec<SendRequest> = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(items.len());
    for ((v, id), resp) in items.iter().zip(&ids).zip(responses) {
        if inserted.contains(id) {
            to_publish.push(send_request(tenant, id, v, now));
            outcomes.push(Ok((resp, false)));
            continue;
        }
        let key = v.idempotency_key.clone().unwrap_or_default();
        match earlier.get(&key) {
            Some(e) if e.request_hash != v.hash => outcomes.push(Err(invalid(
                "idempotency_key_reused",
                "Idempotency-Key",
                "this key was used with a different request body",
            ))),
            Some(e) => {
                if !e.published && !to_publish.iter().any(|r| r.message_id == e.message_id) {
                    let v2 = Valid {
                        to: e.to.clone(),
                        from: e.from.clone(),
                        message_type: e.message_type.clone(),
                        message: e.message.clone(),
                        metadata: e.metadata.clone().filter(|m| !m.is_null()),
                        scheduled_at_ms: e.scheduled_at_ms,
                        idempotency_key: Some(key.clone()),
                        hash: v.hash.clone(),
                        request_id: v.request_id.clone(),
                    };
                    to_publish.push(send_request(tenant, &e.message_id, &v2, now));
                }
                outcomes.push(Ok((e.response.clone(), true)));
            }
            // Two items of one batch with the same key: the first one inserted it.
            None => outcomes.push(Err(invalid(
                "idempotency_key_reused",
                "client_message_id",
                "repeated within the batch",
            ))),
        }
    }

    if !to_publish.is_empty() {
        if let Err(e) = publish(app, &to_publish).await {
            let fresh: Vec<String> = ids
                .iter()
                .filter(|id| inserted.contains(*id))
                .cloned()
                .collect();
            return Err(withdraw(app, &ids, &fresh, e).await);
        }
        // The send is durable on the topic now; the flag only spares the router's sweeper
        // a needless (harmless) republication, so the client does not wait for it.
        let published: Vec<String> = to_publish.into_iter().map(|r| r.message_id).collect();
        let db = app.db.clone();
        tokio::spawn(async move {
            let r = switchboard_processors::db::outbox::mark_published(&db, &published).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot mark sends published; the router's sweeper will republish them");
            }
        });
    }
    Ok(outcomes)
}

/// Put the requests on `wa.send.requests` and wait for the broker's acks.
async fn publish(app: &AppState, to_publish: &[SendRequest]) -> Result<(), ApiError> {
    let topic = &app.topics.send_requests;
    let mut records = Vec::with_capacity(to_publish.len());
    for r in to_publish {
        let payload = app
            .codec
            .encode(topic, SEND_REQUEST_SCHEMA, r)
            .await
            .map_err(|e| ApiError::unavailable("registry_unavailable", e.to_string()))?;
        records.push(OutRecord {
            topic: topic.clone(),
            key: r.sender_key(),
            payload,
            headers: vec![("request-id", r.request_id.clone())],
        });
    }
    produce_acked(app, &records).await
}

/// Publication failed after this request's rows (`fresh`) were inserted: take back what
/// no router has claimed, so that a client retrying without a key cannot send twice. A
/// row a router did claim (the broker had the record after all, its ack lost) stays and
/// will be sent: the error names it, with its index in the request (`all`). If the rows
/// cannot be deleted, all of them are named: the router's sweeper publishes them.
async fn withdraw(app: &AppState, all: &[String], fresh: &[String], mut e: ApiError) -> ApiError {
    let deleted = Requests::new(app.db.clone()).withdraw(fresh).await;
    let kept: Vec<&String> = match &deleted {
        Ok(gone) => fresh.iter().filter(|id| !gone.contains(*id)).collect(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot withdraw unpublished sends; they will be published by the router's sweeper");
            fresh.iter().collect()
        }
    };
    if kept.is_empty() {
        e.message = format!("{}; nothing was accepted, retry", e.message);
    } else {
        e.message = format!(
            "{}; {} of the messages were accepted and will be sent (error.accepted), the others were not",
            e.message,
            kept.len()
        );
        e.accepted = Some(
            kept.iter()
                .map(|id| json!({"index": all.iter().position(|a| a == *id), "id": id}))
                .collect(),
        );
    }
    e
}

fn send_request(tenant: &Tenant, id: &str, v: &Valid, now: i64) -> SendRequest {
    SendRequest {
        message_id: id.to_string(),
        tenant_id: tenant.id.clone(),
        from_number: v.from.clone(),
        to: v.to.clone(),
        message_type: v.message_type.clone(),
        message: v.message.to_string(),
        idempotency_key: v.idempotency_key.clone(),
        metadata: v.metadata.as_ref().map(Value::to_string),
        scheduled_at_ms: v.scheduled_at_ms,
        accepted_at_ms: now,
        request_id: v.request_id.clone(),
    }
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("invalid JSON: {e}"),
        )
    })
}

fn idempotency_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            invalid(
                "invalid_field",
                "Idempotency-Key",
                "must be printable ASCII",
            )
        }),
    }
}

pub async fn send(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let body =
        crate::ingest::read_limited(&headers, body, app.cfg.max_body_bytes.min(256 * 1024)).await?;
    let v = parse_json(&body)?;
    let valid = validate_one(
        &app,
        &tenant,
        &v,
        idempotency_header(&headers)?,
        false,
        &rid.0,
    )?;
    let (body, replayed) = super::batcher::accept_one(&app, tenant, valid).await?;
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if replayed {
        resp.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

pub async fn send_batch(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
    let body = crate::ingest::read_limited(&headers, body, app.cfg.max_batch_body_bytes).await?;
    let v = parse_json(&body)?;
    let list = v.get("messages").and_then(Value::as_array).ok_or_else(|| {
        invalid(
            "missing_field",
            "messages",
            "an array of messages is required",
        )
    })?;
    if list.is_empty() || list.len() > MAX_BATCH {
        return Err(invalid(
            "invalid_field",
            "messages",
            format!("{} messages; a batch holds 1 to {MAX_BATCH}", list.len()),
        ));
    }
    let mut results: Vec<Option<Value>> = vec![None; list.len()];
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let key = match item.get("client_message_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                results[i] = Some(item_error(
                    i,
                    invalid("invalid_field", "client_message_id", "must be a string"),
                ));
                continue;
            }
        };
        match validate_one(&app, &tenant, item, key, true, &rid.0) {
            Ok(v) => {
                valid.push(v);
                positions.push(i);
            }
            Err(mut e) => {
                e.field = e.field.map(|f| format!("messages[{i}].{f}"));
                results[i] = Some(item_error(i, e));
            }
        }
    }
    if !valid.is_empty() {
        for (pos, outcome) in positions
            .into_iter()
            .zip(accept(&app, &tenant, valid).await?)
        {
            results[pos] = Some(match outcome {
                Ok((body, replayed)) => {
                    json!({"index": pos, "status": 202, "replayed": replayed, "message": body})
                }
                Err(e) => item_error(pos, e),
            });
        }
    }
    let results: Vec<Value> = results.into_iter().map(Option::unwrap_or_default).collect();
    let accepted = results.iter().filter(|r| r["status"] == 202).count();
    Ok(Json(
        json!({"accepted": accepted, "rejected": results.len() - accepted, "results": results}),
    ))
}

fn item_error(index: usize, e: ApiError) -> Value {
    let mut error = e.body();
    error["field"] = json!(e.field);
    json!({"index": index, "status": e.status.as_u16(), "error": error})
}

type Ts = chrono::DateTime<chrono::Utc>;

fn message_json(m: &MessageRow) -> Value {
    json!({
        "id": m.message_id,
        "status": m.current_status,
        "send_state": m.state,
        "from": m.from,
        "to": m.to,
        "type": m.message_type,
        "metadata": m.metadata,
        "bsp": m.bsp,
        "wamid": m.wamid,
        "attempts": m.attempts,
        "error": m.error_code.as_ref().map(|c| json!({"code": c, "detail": m.error_detail})),
        "scheduled_at": m.scheduled_at,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    })
}

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = Requests::new(app.db.clone())
        .find(&tenant.id, &id)
        .await
        .map_err(ApiError::db)?
        // Another tenant's id is indistinguishable from an unknown one.
        .ok_or_else(|| ApiError::not_found("message"))?;
    let mut body = message_json(&row);
    let bsp = row.bsp.clone();
    let wamid = row.wamid.clone().unwrap_or_else(|| id.clone());
    // In the order Switchboard learnt them: BSPs' own times are often whole seconds,
    // which would put a webhook before the send it reports on.
    let history = q(
        "SELECT status, occurred_at, received_at, error_code, error_title FROM message_status_history
                    WHERE bsp = $1 AND wamid = $2 ORDER BY received_at, occurred_at"
            .into(),
    )
    .bind(bsp.unwrap_or_default())
    .bind(&wamid)
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    body["history"] = Value::Array(
        history
            .iter()
            .map(|h| {
                json!({"status": h.get::<String, _>("status"), "at": h.get::<Ts, _>("occurred_at"),
                "received_at": h.get::<Ts, _>("received_at"),
                "error_code": h.get::<Option<String>, _>("error_code"),
                "error_title": h.get::<Option<String>, _>("error_title")})
            })
            .collect(),
    );
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    to: Option<String>,
    from: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn time_param(field: &str, v: &Option<String>) -> ApiResult<Option<Ts>> {
    v.as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    ApiError::field(
                        StatusCode::BAD_REQUEST,
                        "invalid_field",
                        field,
                        format!("not an RFC 3339 time: {e}"),
                    )
                })
        })
        .transpose()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(qp) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = qp.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "limit",
            "1 to 500",
        ));
    }
    let since = time_param("since", &qp.since)?;
    let until = time_param("until", &qp.until)?;
    // The cursor is the (created_at, id) of the last row of the previous page.
    let cursor: Option<(Ts, String)> = match &qp.cursor {
        None => None,
        Some(c) => {
            let bad = || {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    "cursor",
                    "not a cursor this API returned",
                )
            };
            let raw = String::from_utf8(B64.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
            let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
            let micros: i64 = micros.parse().map_err(|_| bad())?;
            Some((
                chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
                id.to_string(),
            ))
        }
    };
    let filter = MessageFilter {
        status: qp.status,
        to: qp.to,
        from: qp.from,
        since,
        until,
        after: cursor,
    };
    let rows = Requests::new(app.db.clone())
        .list(&tenant.id, &filter, limit + 1)
        .await
        .map_err(ApiError::db)?;
    let more = rows.len() as i64 > limit;
    let page: Vec<_> = rows.iter().take(limit as usize).collect();
    let next = if more {
        page.last().map(|r| {
            B64.encode(format!(
                "{}|{}",
                r.created_at.timestamp_micros(),
                r.message_id
            ))
        })
    } else {
        None
    };
    Ok(Json(
        json!({"data": page.into_iter().map(message_json).collect::<Vec<_>>(), "next_cursor": next}),
    ))
}

/// Cancel a send that has not gone out (queued, scheduled or waiting for a retry).
pub async fn cancel(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match Requests::new(app.db.clone())
        .cancel(&tenant.id, &id)
        .await
        .map_err(ApiError::db)?
    {
        Cancelled::Done => Ok(Json(json!({"id": id, "status": "cancelled"}))),
        Cancelled::Missing => Err(ApiError::not_found("message")),
        Cancelled::Too(s) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "the message is {s}; only queued, scheduled or retrying messages can be cancelled"
            ),
        )),
    }
}
