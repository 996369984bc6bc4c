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
use switchboard_connectors::send::{supported_types, validate};
use switchboard_connectors::Bsp;
use switchboard_runtime::kafka::OutRecord;
use switchboard_schemas::config::Tenant;
use switchboard_schemas::{SendRequest, SEND_REQUEST_SCHEMA};

use super::auth::TenantAuth;
use super::publish::produce_acked;
use super::store::q;
use crate::error::ApiError;
use crate::{AppState, RequestId};

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

/// Customer ids: E.164, or a business-scoped user id (letters present, no spaces).
fn customer(to: &Value) -> ApiResult<String> {
    let s = to
        .as_str()
        .ok_or_else(|| invalid("invalid_field", "to", "must be a string"))?
        .trim();
    let phone_like = s
        .strip_prefix('+')
        .unwrap_or(s)
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    if phone_like {
        return switchboard_connectors::common::e164(&s.replace([' ', '-'], "")).map_err(|_| {
            invalid(
                "invalid_phone_number",
                "to",
                format!("{s:?} is not an E.164 number (+ and 7 to 15 digits)"),
            )
        });
    }
    if (3..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c))
    {
        Ok(s.to_string())
    } else {
        Err(invalid(
            "invalid_recipient",
            "to",
            format!("{s:?} is neither an E.164 number nor a business-scoped user id"),
        ))
    }
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
    let now = switchboard_runtime::now_ms();
    let ids: Vec<String> = items.iter().map(|_| super::ordered_id("msg_")).collect();
    let responses: Vec<Value> = items
        .iter()
        .zip(&ids)
        .map(|(v, id)| accepted_body(id, v, now))
        .collect();
    let col = |f: &dyn Fn(&Valid) -> Option<String>| items.iter().map(f).collect::<Vec<_>>();
    let inserted = q("INSERT INTO outbound_messages (message_id, tenant_id, idempotency_key, request_hash, response,
            from_number, to_id, message_type, message, metadata, request_id, state, scheduled_at, due_at)
         SELECT t.id, $1, t.key, t.hash, t.resp::jsonb, t.from_n, t.to_n, t.mtype, t.msg::jsonb, t.meta::jsonb, t.rid,
                CASE WHEN t.sched IS NULL THEN 'queued' ELSE 'scheduled' END,
                to_timestamp(t.sched / 1000.0), to_timestamp(t.sched / 1000.0)
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $2::text[])
           AS t(id, key, hash, resp, from_n, to_n, mtype, msg, meta, sched, rid)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING message_id".into())
        .bind(&tenant.id)
        .bind(col(&|v| Some(v.request_id.clone())))
        .bind(&ids)
        .bind(col(&|v| v.idempotency_key.clone()))
        .bind(col(&|v| Some(v.hash.clone())))
        .bind(responses.iter().map(|r| r.to_string()).collect::<Vec<_>>())
        .bind(col(&|v| Some(v.from.clone())))
        .bind(col(&|v| Some(v.to.clone())))
        .bind(col(&|v| Some(v.message_type.clone())))
        .bind(col(&|v| Some(v.message.to_string())))
        .bind(col(&|v| v.metadata.as_ref().map(Value::to_string)))
        .bind(items.iter().map(|v| v.scheduled_at_ms).collect::<Vec<_>>())
        .fetch_all(&app.db)
        .await
        .map_err(ApiError::db)?;
    let inserted: std::collections::HashSet<String> =
        inserted.into_iter().map(|r| r.get(0)).collect();

    // Items whose key was seen before: the earlier request decides.
    let mut earlier: HashMap<String, (String, String, Value, bool, Value)> = HashMap::new();
    let repeated: Vec<String> = items
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !inserted.contains(*id))
        .filter_map(|(v, _)| v.idempotency_key.clone())
        .collect();
    if !repeated.is_empty() {
        for r in q("SELECT idempotency_key, message_id, request_hash, response, published, message, metadata,
                    from_number, to_id, message_type, (extract(epoch from scheduled_at) * 1000)::int8 AS sched
                  FROM outbound_messages WHERE tenant_id = $1 AND idempotency_key = ANY($2)".into())
            .bind(&tenant.id)
            .bind(&repeated)
            .fetch_all(&app.db)
            .await
            .map_err(ApiError::db)?
        {
            let stored = json!({
                "message": r.get::<Value, _>("message"), "metadata": r.get::<Option<Value>, _>("metadata"),
                "from": r.get::<String, _>("from_number"), "to": r.get::<String, _>("to_id"),
                "type": r.get::<String, _>("message_type"), "sched": r.get::<Option<i64>, _>("sched"),
            });
            earlier.insert(
                r.get("idempotency_key"),
                (r.get("message_id"), r.get("request_hash"), r.get("response"), r.get("published"), stored),
            );
        }
    }

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
            Some((_, hash, _, _, _)) if *hash != v.hash => outcomes.push(Err(invalid(
                "idempotency_key_reused",
                "Idempotency-Key",
                "this key was used with a different request body",
            ))),
            Some((mid, _, resp, published, stored)) => {
                if !published && !to_publish.iter().any(|r| r.message_id == *mid) {
                    let v2 = Valid {
                        to: stored["to"].as_str().unwrap_or_default().into(),
                        from: stored["from"].as_str().unwrap_or_default().into(),
                        message_type: stored["type"].as_str().unwrap_or_default().into(),
                        message: stored["message"].clone(),
                        metadata: stored.get("metadata").filter(|m| !m.is_null()).cloned(),
                        scheduled_at_ms: stored["sched"].as_i64(),
                        idempotency_key: Some(key.clone()),
                        hash: v.hash.clone(),
                        request_id: v.request_id.clone(),
                    };
                    to_publish.push(send_request(tenant, mid, &v2, now));
                }
                outcomes.push(Ok((resp.clone(), true)));
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
            let r = switchboard_processors::route::outbox::mark_published(&db, &published).await;
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
    let deleted = q("DELETE FROM outbound_messages
                      WHERE message_id = ANY($1) AND state IN ('queued', 'scheduled') AND NOT published
                  RETURNING message_id"
        .into())
    .bind(fresh)
    .fetch_all(&app.db)
    .await;
    let kept: Vec<&String> = match &deleted {
        Ok(rows) => {
            let gone: std::collections::HashSet<String> =
                rows.iter().map(|r| r.get::<String, _>(0)).collect();
            fresh.iter().filter(|id| !gone.contains(*id)).collect()
        }
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
    json!({"index": index, "status": e.status.as_u16(),
        "error": {"code": e.code, "message": e.message, "field": e.field}})
}

const MESSAGE_COLUMNS: &str = "o.message_id, o.state, o.from_number, o.to_id, o.message_type, o.metadata, o.bsp, o.wamid,
    o.error_code, o.error_detail, o.attempts, o.scheduled_at, o.created_at, o.updated_at,
    m.status AS delivery_status, m.status_at, m.error_code AS status_error_code, m.error_title AS status_error_title,
    COALESCE(m.status, o.state) AS current_status";

const MESSAGE_JOIN: &str = "FROM outbound_messages o
    LEFT JOIN messages m ON m.bsp = o.bsp AND m.wamid = COALESCE(o.wamid, o.message_id)";

type Ts = chrono::DateTime<chrono::Utc>;

fn message_json(r: &sqlx::postgres::PgRow) -> Value {
    let error_code: Option<String> = r
        .get::<Option<String>, _>("status_error_code")
        .or(r.get("error_code"));
    json!({
        "id": r.get::<String, _>("message_id"),
        "status": r.get::<String, _>("current_status"),
        "send_state": r.get::<String, _>("state"),
        "from": r.get::<String, _>("from_number"),
        "to": r.get::<String, _>("to_id"),
        "type": r.get::<String, _>("message_type"),
        "metadata": r.get::<Option<Value>, _>("metadata"),
        "bsp": r.get::<Option<String>, _>("bsp"),
        "wamid": r.get::<Option<String>, _>("wamid"),
        "attempts": r.get::<i32, _>("attempts"),
        "error": error_code.map(|c| json!({"code": c,
            "detail": r.get::<Option<String>, _>("status_error_title").or(r.get("error_detail"))})),
        "scheduled_at": r.get::<Option<Ts>, _>("scheduled_at"),
        "created_at": r.get::<Ts, _>("created_at"),
        "updated_at": r.get::<Ts, _>("updated_at"),
    })
}

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = q(format!(
        "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOIN} WHERE o.message_id = $1 AND o.tenant_id = $2"
    ))
    .bind(&id)
    .bind(&tenant.id)
    .fetch_optional(&app.db)
    .await
    .map_err(ApiError::db)?
    // Another tenant's id is indistinguishable from an unknown one.
    .ok_or_else(|| ApiError::not_found("message"))?;
    let mut body = message_json(&row);
    let bsp: Option<String> = row.get("bsp");
    let wamid: String = row
        .get::<Option<String>, _>("wamid")
        .unwrap_or_else(|| id.clone());
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
    let rows = q(format!(
        "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOIN}
         WHERE o.tenant_id = $1
           AND ($2::text IS NULL OR COALESCE(m.status, o.state) = $2)
           AND ($3::text IS NULL OR o.to_id = $3)
           AND ($4::text IS NULL OR o.from_number = $4)
           AND ($5::timestamptz IS NULL OR o.created_at >= $5)
           AND ($6::timestamptz IS NULL OR o.created_at < $6)
           AND ($7::timestamptz IS NULL OR (o.created_at, o.message_id) < ($7, $8))
         ORDER BY o.created_at DESC, o.message_id DESC
         LIMIT $9"
    ))
    .bind(&tenant.id)
    .bind(&qp.status)
    .bind(&qp.to)
    .bind(&qp.from)
    .bind(since)
    .bind(until)
    .bind(cursor.as_ref().map(|c| c.0))
    .bind(cursor.as_ref().map(|c| c.1.clone()).unwrap_or_default())
    .bind(limit + 1)
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    let more = rows.len() as i64 > limit;
    let page: Vec<_> = rows.iter().take(limit as usize).collect();
    let next = if more {
        page.last().map(|r| {
            let t: Ts = r.get("created_at");
            B64.encode(format!(
                "{}|{}",
                t.timestamp_micros(),
                r.get::<String, _>("message_id")
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
    let done = q("UPDATE outbound_messages SET state = 'cancelled', updated_at = now()
                  WHERE message_id = $1 AND tenant_id = $2 AND state IN ('queued', 'scheduled', 'retrying')
                  RETURNING message_id".into())
        .bind(&id)
        .bind(&tenant.id)
        .fetch_optional(&app.db)
        .await
        .map_err(ApiError::db)?;
    if done.is_some() {
        return Ok(Json(json!({"id": id, "status": "cancelled"})));
    }
    let state: Option<String> =
        q("SELECT state FROM outbound_messages WHERE message_id = $1 AND tenant_id = $2".into())
            .bind(&id)
            .bind(&tenant.id)
            .fetch_optional(&app.db)
            .await
            .map_err(ApiError::db)?
            .map(|r| r.get(0));
    match state {
        None => Err(ApiError::not_found("message")),
        Some(s) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "the message is {s}; only queued, scheduled or retrying messages can be cancelled"
            ),
        )),
    }
}
