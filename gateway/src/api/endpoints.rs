//! The endpoints API (`/v1/endpoints`, tenant keys): a tenant's webhook receivers. Each
//! change is committed to PostgreSQL (the whole entity in `endpoints.config`), then
//! published to `wa.config`, from which the fan-out delivers.
//!
//! Signing secrets are `whsec_` + base64 of 32 random bytes (the Standard Webhooks
//! format), shown once, stored sealed with the credentials keyring.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_runtime::netguard::{check_url, AllowList};
use switchboard_schemas::config::{
    self, valid_type_filter, Endpoint, Ordering, SealedSecret, ENDPOINT,
};

use super::admin::{bad, json_body};
use super::auth::TenantAuth;
use super::ordered_id;
use super::publish::publish_config;
use crate::error::ApiError;
use crate::AppState;
use switchboard_processors::db::endpoints::{BookError, Created, EndpointBook};

type ApiResult<T> = Result<T, ApiError>;

const MAX_HEADERS: usize = 20;
/// Headers the fan-out sets itself; an endpoint cannot override them.
const RESERVED: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
];

/// The fields a client may set; every one optional on PATCH.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointFields {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    numbers: Option<Vec<String>>,
    /// `null` removes the limit.
    #[serde(default, with = "double_option")]
    rate_per_sec: Option<Option<u32>>,
    max_in_flight: Option<u32>,
    headers: Option<BTreeMap<String, String>>,
    ordering: Option<Ordering>,
    disabled: Option<bool>,
}

/// Tell "absent" from "null" (serde's `Option<Option<T>>` idiom).
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

fn allow_list(app: &AppState) -> ApiResult<AllowList> {
    AllowList::parse(&app.cfg.endpoint_allow_nets)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "misconfigured", e))
}

/// Apply `f` onto `ep`, checking every field it sets.
fn apply(app: &AppState, tenant: &str, ep: &mut Endpoint, f: EndpointFields) -> ApiResult<()> {
    if let Some(url) = f.url {
        check_url(&url, &allow_list(app)?).map_err(|e| bad("url", e))?;
        ep.url = url;
    }
    if let Some(d) = f.description {
        if d.len() > 500 {
            return Err(bad("description", "at most 500 characters"));
        }
        ep.description = d;
    }
    if let Some(types) = f.event_types {
        if types.len() > 50 {
            return Err(bad("event_types", "at most 50 filters"));
        }
        for (i, t) in types.iter().enumerate() {
            if !valid_type_filter(t) {
                return Err(bad(
                    &format!("event_types[{i}]"),
                    format!(
                        "{t:?} is not an event type or a prefix of one ending in .*; types: {}",
                        config::WEBHOOK_TYPES.join(", ")
                    ),
                ));
            }
        }
        ep.event_types = types;
    }
    if let Some(numbers) = f.numbers {
        let ix = app.config.read();
        for (i, n) in numbers.iter().enumerate() {
            if ix.numbers.get(n).is_none_or(|b| b.tenant_id != tenant) {
                return Err(bad(
                    &format!("numbers[{i}]"),
                    format!("{n} is not one of your business numbers"),
                ));
            }
        }
        ep.numbers = numbers;
    }
    if let Some(r) = f.rate_per_sec {
        if r.is_some_and(|r| r == 0 || r > 100_000) {
            return Err(bad("rate_per_sec", "1 to 100000, or null for no limit"));
        }
        ep.rate_per_sec = r;
    }
    if let Some(m) = f.max_in_flight {
        if m == 0 || m > 1000 {
            return Err(bad("max_in_flight", "1 to 1000"));
        }
        ep.max_in_flight = m;
    }
    if let Some(h) = f.headers {
        if h.len() > MAX_HEADERS {
            return Err(bad("headers", format!("at most {MAX_HEADERS} headers")));
        }
        for (k, v) in &h {
            let field = format!("headers.{k}");
            let lower = k.to_ascii_lowercase();
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(bad(&field, "not a valid header name"));
            }
            if lower.starts_with("webhook-") || RESERVED.contains(&lower.as_str()) {
                return Err(bad(&field, "set by Switchboard; cannot be overridden"));
            }
            if v.len() > 1024 || http::HeaderValue::from_str(v).is_err() {
                return Err(bad(
                    &field,
                    "not a valid header value (visible ASCII, at most 1024 bytes)",
                ));
            }
        }
        // Sealed at rest (PostgreSQL, wa.config) like the signing secrets; the plain
        // map of older endpoints goes away with the first change.
        ep.header_names = h.keys().cloned().collect();
        ep.sealed_headers = if h.is_empty() {
            None
        } else {
            let json = serde_json::to_string(&h).unwrap_or_default();
            Some(seal(app, &format!("{}/headers", ep.id), &json, None)?)
        };
        ep.headers = BTreeMap::new();
    }
    if let Some(o) = f.ordering {
        ep.ordering = o;
    }
    if let Some(d) = f.disabled {
        ep.disabled = d;
        ep.disabled_reason = d.then(|| "disabled through the API".to_string());
    }
    Ok(())
}

fn new_secret() -> String {
    use base64::Engine;
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(buf)
    )
}

fn seal(
    app: &AppState,
    id: &str,
    secret: &str,
    expires_at_ms: Option<i64>,
) -> ApiResult<SealedSecret> {
    let ring = app.keyring.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "keyring_missing",
            "SWITCHBOARD_CREDENTIALS_KEYS is not set: secrets cannot be stored",
        )
    })?;
    let (key_id, ciphertext) = ring.seal(secret.as_bytes(), id);
    Ok(SealedSecret {
        key_id,
        ciphertext,
        expires_at_ms,
    })
}

/// Header names with their values masked: set once, never shown again (like secrets).
fn masked_headers(ep: &Endpoint) -> BTreeMap<String, &'static str> {
    ep.header_names
        .iter()
        .chain(ep.headers.keys())
        .map(|k| (k.clone(), "********"))
        .collect()
}

/// The client's view: no secret material.
fn view(ep: &Endpoint, created_at: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    let now = switchboard_runtime::now_ms();
    json!({
        "id": ep.id, "url": ep.url, "description": ep.description,
        "event_types": ep.event_types, "numbers": ep.numbers,
        "rate_per_sec": ep.rate_per_sec, "max_in_flight": ep.max_in_flight,
        "headers": masked_headers(ep), "ordering": ep.ordering,
        "disabled": ep.disabled, "disabled_reason": ep.disabled_reason,
        "signing_secrets": ep.secrets.iter().filter(|s| s.expires_at_ms.is_none_or(|e| e > now)).map(|s| json!({
            "expires_at": s.expires_at_ms.and_then(chrono::DateTime::from_timestamp_millis),
        })).collect::<Vec<_>>(),
        "created_at": created_at,
    })
}

async fn load(
    app: &AppState,
    tenant: &str,
    id: &str,
) -> ApiResult<(Endpoint, chrono::DateTime<chrono::Utc>)> {
    book(app)
        .get(tenant, id)
        .await
        .map_err(|e| match e {
            BookError::Db(e) => ApiError::db(e),
            corrupt => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt_endpoint",
                corrupt.to_string(),
            ),
        })?
        .ok_or_else(|| ApiError::not_found("endpoint"))
}

fn book(app: &AppState) -> EndpointBook {
    EndpointBook::new(app.db.clone())
}

/// Store `ep` (the row must exist) and publish it.
async fn save(app: &AppState, ep: &Endpoint, clear_failing: bool) -> ApiResult<()> {
    let version = book(app)
        .update(ep, clear_failing)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    publish_config(
        app,
        &[config::record(ENDPOINT, &ep.id, &ep.tenant_id, ep, version)],
    )
    .await
}

pub async fn create(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let f: EndpointFields = json_body(&body)?;
    if f.url.is_none() {
        return Err(bad("url", "required"));
    }
    let id = ordered_id("ep_");
    let mut ep = Endpoint {
        id: id.clone(),
        tenant_id: tenant.id.clone(),
        url: String::new(),
        description: String::new(),
        event_types: vec![],
        numbers: vec![],
        rate_per_sec: None,
        max_in_flight: 50,
        headers: BTreeMap::new(),
        ordering: Ordering::Conversation,
        disabled: false,
        sealed_headers: None,
        header_names: vec![],
        disabled_reason: None,
        secrets: vec![],
    };
    apply(&app, &tenant.id, &mut ep, f)?;
    let secret = new_secret();
    ep.secrets = vec![seal(&app, &id, &secret, None)?];
    let cap = app.cfg.max_endpoints_per_tenant;
    let (created_at, version) = match book(&app).create(&ep, cap).await.map_err(ApiError::db)? {
        Created::Stored {
            created_at,
            version,
        } => (created_at, version),
        Created::TooMany => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_endpoints",
                format!("a tenant may have at most {cap} endpoints; delete one first"),
            ))
        }
    };
    publish_config(
        &app,
        &[config::record(ENDPOINT, &id, &tenant.id, &ep, version)],
    )
    .await?;
    let mut v = view(&ep, Some(created_at));
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
) -> ApiResult<Json<Value>> {
    let data: Vec<Value> = book(&app)
        .list(&tenant.id, 1000)
        .await
        .map_err(ApiError::db)?
        .iter()
        .map(|(ep, created)| view(ep, Some(*created)))
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (ep, created) = load(&app, &tenant.id, &id).await?;
    Ok(Json(view(&ep, Some(created))))
}

pub async fn patch(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let f: EndpointFields = json_body(&body)?;
    let (mut ep, created) = load(&app, &tenant.id, &id).await?;
    let enabling = f.disabled == Some(false) && ep.disabled;
    apply(&app, &tenant.id, &mut ep, f)?;
    save(&app, &ep, enabling).await?;
    Ok(Json(view(&ep, Some(created))))
}

pub async fn delete(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let version = book(&app)
        .delete(&tenant.id, &id)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    publish_config(
        &app,
        &[config::deletion(ENDPOINT, &id, &tenant.id, version)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (mut ep, created) = load(&app, &tenant.id, &id).await?;
    ep.disabled = false;
    ep.disabled_reason = None;
    save(&app, &ep, true).await?;
    Ok(Json(view(&ep, Some(created))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the current secret keeps signing beside the new one (default 24h, at
    /// most 7 days; `0s` ends it at once).
    #[serde(default, with = "humantime_serde")]
    grace_period: Option<std::time::Duration>,
}

pub async fn rotate_secret(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let r: Rotate = if body.is_empty() {
        Rotate::default()
    } else {
        json_body(&body)?
    };
    let grace = r
        .grace_period
        .unwrap_or(std::time::Duration::from_secs(24 * 3600));
    if grace > std::time::Duration::from_secs(7 * 24 * 3600) {
        return Err(bad("grace_period", "at most 7 days"));
    }
    let (mut ep, _) = load(&app, &tenant.id, &id).await?;
    let now = switchboard_runtime::now_ms();
    let until = now + grace.as_millis() as i64;
    // Secrets already expired are dropped; the current ones end after the grace period.
    ep.secrets
        .retain(|s| s.expires_at_ms.is_none_or(|e| e > now));
    for s in &mut ep.secrets {
        s.expires_at_ms = Some(s.expires_at_ms.map_or(until, |e| e.min(until)));
    }
    let secret = new_secret();
    ep.secrets.push(seal(&app, &id, &secret, None)?);
    save(&app, &ep, false).await?;
    Ok(Json(json!({
        "id": id, "secret": secret,
        "previous_secrets_expire_at": chrono::DateTime::from_timestamp_millis(until),
    })))
}

/// Every endpoint, to republish at start-up.
pub async fn snapshot(
    db: &sqlx::PgPool,
) -> Result<Vec<switchboard_schemas::ConfigRecord>, sqlx::Error> {
    EndpointBook::new(db.clone()).snapshot().await
}

/// Re-seal every endpoint signing secret not sealed with the keyring's active key (the
/// admin API's keyring rotation). Returns the endpoints' new records, to publish.
pub async fn reseal_all(
    app: &AppState,
    ring: &switchboard_runtime::secrets::Keyring,
) -> ApiResult<Vec<switchboard_schemas::ConfigRecord>> {
    let all = book(app).all().await.map_err(ApiError::db)?;
    let mut out = Vec::new();
    for mut ep in all {
        if ep
            .secrets
            .iter()
            .chain(&ep.sealed_headers)
            .all(|s| s.key_id == ring.active_id())
        {
            continue;
        }
        if let Some(h) = &mut ep.sealed_headers {
            let aad = format!("{}/headers", ep.id);
            let plain = ring.open(&h.key_id, &h.ciphertext, &aad).map_err(|e| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "cannot_decrypt",
                    format!("endpoint {} headers: {e}", ep.id),
                )
            })?;
            (h.key_id, h.ciphertext) = ring.seal(&plain, &aad);
        }
        for s in &mut ep.secrets {
            let plain = ring.open(&s.key_id, &s.ciphertext, &ep.id).map_err(|e| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "cannot_decrypt",
                    format!("endpoint {}: {e}", ep.id),
                )
            })?;
            let (kid, sealed) = ring.seal(&plain, &ep.id);
            s.key_id = kid;
            s.ciphertext = sealed;
        }
        let version = book(app).replace(&ep).await.map_err(ApiError::db)?;
        if let Some(version) = version {
            out.push(config::record(
                ENDPOINT,
                &ep.id,
                &ep.tenant_id,
                &ep,
                version,
            ));
        }
    }
    Ok(out)
}
