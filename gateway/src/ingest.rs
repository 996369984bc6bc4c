//! `POST /webhooks/{bsp}` and Meta's `GET /webhooks/meta` handshake.
//!
//! Order of checks (cheapest first, nothing written until all pass): known BSP (404),
//! content type (415), size (413), signature (401), well-formed JSON (400), then produce
//! and wait for the broker's ack (503 + Retry-After if it does not come). The signature
//! is checked with the secrets of the tenant owning the webhook's accounts, or the global
//! ones (`webhook_secrets`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use switchboard_connectors::{webhook_auth, Bsp, WebhookRequest};
use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_schemas::{RawWebhook, RAW_WEBHOOK_SCHEMA};

use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::{AppState, RequestId};

/// Webhook secrets by credential field name (`switchboard_connectors::webhook_auth`).
pub type Secrets = serde_json::Map<String, serde_json::Value>;

/// Headers kept on the raw record: what signature checks and debugging need.
const KEPT_HEADERS: &[&str] = &[
    "x-aisensy-signature",
    "x-hub-signature-256",
    "x-twilio-signature",
    "x-webhook-hmac",
    "x-webhook-hmac-algorithm",
    "user-agent",
];

#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /webhooks/{bsp}`: only Meta (and so 360dialog's Cloud API setup, which does not
/// use it) subscribes with a GET handshake.
pub async fn handshake(
    State(app): State<Arc<AppState>>,
    Path(bsp): Path<String>,
    Query(q): Query<Handshake>,
) -> Response {
    if bsp != "meta" {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{bsp} webhooks are POSTed"),
        )
        .into_response();
    }
    let expected = &app.cfg.meta_verify_token;
    match (q.mode.as_deref(), q.verify_token.as_deref(), q.challenge) {
        (Some("subscribe"), Some(t), Some(challenge)) if !expected.is_empty() && t == expected => {
            (StatusCode::OK, challenge).into_response()
        }
        (Some("subscribe"), Some(_), Some(_)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_verify_token",
            "hub.verify_token does not match",
        )
        .into_response(),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "expected hub.mode=subscribe, hub.verify_token and hub.challenge",
        )
        .into_response(),
    }
}

pub async fn webhook(
    State(app): State<Arc<AppState>>,
    Path(bsp): Path<String>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let label = bsp.parse::<Bsp>().map(Bsp::slug).unwrap_or("unknown");
    let result = accept(&app, &bsp, &request_id, &uri, &headers, body).await;
    METRICS
        .request_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            METRICS
                .webhooks
                .with_label_values(&[label, "accepted"])
                .inc();
            (
                StatusCode::OK,
                Json(json!({"status": "accepted", "request_id": request_id})),
            )
                .into_response()
        }
        Err(e) => {
            METRICS.webhooks.with_label_values(&[label, e.code]).inc();
            if e.status.is_server_error() {
                tracing::warn!(code = e.code, message = %e.message, "webhook not accepted");
            } else {
                tracing::info!(code = e.code, message = %e.message, "webhook rejected");
            }
            e.into_response()
        }
    }
}

async fn accept(
    app: &AppState,
    bsp: &str,
    request_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let bsp: Bsp = bsp.parse().map_err(|()| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_bsp",
            format!("no webhook endpoint for BSP {bsp:?}"),
        )
    })?;

    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != bsp.content_type() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{} sends {}, got {content_type:?}",
                bsp.slug(),
                bsp.content_type()
            ),
        ));
    }

    let body = read_limited(headers, body, app.cfg.max_body_bytes).await?;

    let mut kept: HashMap<String, String> = HashMap::new();
    for name in KEPT_HEADERS
        .iter()
        .chain(std::iter::once(&"x-switchboard-token"))
    {
        if let Some(v) = headers.get(*name).and_then(|v| v.to_str().ok()) {
            kept.insert((*name).to_string(), v.to_string());
        }
    }
    let url = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let req = WebhookRequest {
        headers: &kept,
        body: &body,
        url,
    };
    let accounts = webhook_auth::accounts(bsp, &body);
    let secrets = webhook_secrets(app, bsp, accounts.as_deref().ok())?;
    webhook_auth::verify(bsp, &secrets, &app.cfg.public_url, &req)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;

    let accounts = accounts
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
    let key = switchboard_connectors::routing_key(bsp, &accounts);

    // The shared token is a credential: it must not travel on to Kafka.
    kept.remove("x-switchboard-token");
    let raw = RawWebhook {
        request_id: request_id.to_string(),
        bsp: bsp.slug().to_string(),
        received_at_ms: switchboard_runtime::now_ms(),
        content_type: content_type.to_string(),
        headers: kept,
        body: body.to_vec(),
    };
    let topic = &app.topics.webhooks_raw;
    let payload = app
        .codec
        .encode(topic, RAW_WEBHOOK_SCHEMA, &raw)
        .await
        .map_err(|e| ApiError::unavailable("registry_unavailable", e.to_string()))?;
    let started = Instant::now();
    let rec = OutRecord {
        topic: topic.clone(),
        key,
        payload,
        headers: vec![("request-id", request_id.to_string())],
    };
    let produced = tokio::time::timeout(
        app.cfg.produce_timeout,
        produce_all(&app.producer, std::slice::from_ref(&rec)),
    )
    .await;
    if produced.is_err() {
        // Timed out: produce_all had no outcome to report.
        app.producer.report(false);
    }
    METRICS
        .produce_seconds
        .with_label_values(&[topic.as_str()])
        .observe(started.elapsed().as_secs_f64());
    match produced {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::unavailable(
            "broker_unavailable",
            format!("broker did not acknowledge: {e}"),
        )),
        Err(_) => Err(ApiError::unavailable(
            "broker_unavailable",
            "broker did not acknowledge in time",
        )),
    }
}

/// Read at most `limit` bytes; `Err(None)` when the body is larger (having drained up to
/// `drain_cap` bytes of it), `Err(Some(_))` when reading failed.
/// Read a body of at most `limit` bytes: 413 past it, 400 if the client breaks off.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body exceeds {limit} bytes"),
        )
    };
    // Past the limit the rest is read and dropped, up to a bound, so that the client gets
    // its 413 instead of a reset connection; far larger bodies are cut off at once.
    let drain_cap = limit.saturating_mul(4).max(1 << 20);
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > drain_cap) {
        return Err(too_large());
    }
    let body = match read_capped(body, limit, drain_cap).await {
        Ok(b) => b,
        Err(Some(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_read_failed",
                format!("could not read body: {e}"),
            ))
        }
        Err(None) => return Err(too_large()),
    };

    Ok(body)
}

async fn read_capped(
    mut body: Body,
    limit: usize,
    drain_cap: usize,
) -> Result<bytes::Bytes, Option<axum::Error>> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Some)?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > drain_cap {
                break;
            }
        }
    }
    if seen > limit {
        Err(None)
    } else {
        Ok(buf.freeze())
    }
}

/// Whose secrets prove a webhook: the tenant owning every account the body names, when
/// that tenant's credentials for the BSP carry a webhook secret; else the gateway's
/// global ones (a single-tenant deployment, or accounts no tenant owns). So one tenant's
/// token cannot vouch for another tenant's accounts, and once a tenant has its own
/// secret, the global one no longer speaks for it.
///
/// A body whose accounts cannot be read is checked against the global secrets: it is
/// refused as malformed only if it proves genuine, as before.
fn webhook_secrets<'a>(
    app: &'a AppState,
    bsp: Bsp,
    accounts: Option<&[String]>,
) -> Result<Cow<'a, Secrets>, ApiError> {
    let global = || Cow::Borrowed(&app.webhook_secrets[&bsp]);
    let Some(accounts) = accounts else {
        return Ok(global());
    };
    let owners: std::collections::BTreeSet<Option<String>> = {
        let ix = app.config.read();
        accounts
            .iter()
            .map(|a| {
                ix.numbers_by_account
                    .get(&(bsp.slug().to_string(), a.to_string()))
                    .and_then(|n| ix.numbers.get(n))
                    .map(|n| n.tenant_id.clone())
            })
            .collect()
    };
    // Each owner speaks with its own secrets if it has them, else with the global ones.
    let mut speakers: Vec<(Option<String>, Cow<'a, Secrets>)> = Vec::new();
    for owner in owners {
        let own = match &owner {
            Some(t) => tenant_webhook_secrets(app, t, bsp)?,
            None => None,
        };
        let speaker = match own {
            Some(s) => (owner, Cow::Owned(s)),
            None => (None, global()),
        };
        if !speakers.iter().any(|(t, _)| *t == speaker.0) {
            speakers.push(speaker);
        }
    }
    match speakers.len() {
        0 => Ok(global()),
        1 => Ok(speakers.remove(0).1),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "accounts_of_several_tenants",
            format!(
                "the webhook names accounts ({}) whose webhooks are proved by different tenants' secrets; each must come on its own",
                accounts.join(", ")
            ),
        )),
    }
}

/// The webhook secrets in `tenant`'s credentials for `bsp`, if they hold any.
fn tenant_webhook_secrets(
    app: &AppState,
    tenant: &str,
    bsp: Bsp,
) -> Result<Option<Secrets>, ApiError> {
    let Some(cred) = app
        .config
        .read()
        .credentials
        .get(&(tenant.to_string(), bsp.slug().to_string()))
        .cloned()
    else {
        return Ok(None);
    };
    // The tenant may have a secret we cannot read: refusing with a 5xx makes the BSP
    // retry once the keyring is fixed; the global secret must not stand in for it.
    let unavailable = |why: String| {
        tracing::error!(
            tenant,
            bsp = bsp.slug(),
            "tenant webhook secrets unreadable: {why}"
        );
        ApiError::unavailable(
            "credentials_unavailable",
            "the tenant's webhook secret cannot be read now",
        )
    };
    let ring = app
        .keyring
        .as_ref()
        .ok_or_else(|| unavailable("no credentials keyring".into()))?;
    let plain = ring
        .open(&cred.key_id, &cred.ciphertext, &format!("{tenant}/{bsp}"))
        .map_err(|e| unavailable(e.to_string()))?;
    let secrets: Secrets =
        serde_json::from_slice(&plain).map_err(|e| unavailable(e.to_string()))?;
    Ok(webhook_auth::has_secret(bsp, &secrets).then_some(secrets))
}
