//! The admin API: tenants, API keys, business numbers and BSP credentials. Every change
//! is committed to PostgreSQL first, then published to `wa.config`; a publish that fails
//! answers 503 and the (idempotent) call can be repeated. At start-up the gateway
//! republishes everything, so the topic converges on the database even after a failed
//! publish nobody retried.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sqlx::Row;
use switchboard_connectors::Bsp;
use switchboard_schemas::config::{
    self, ApiKey, BusinessNumber, Credential, Tenant, API_KEY, CREDENTIAL, NUMBER, TENANT,
};
use switchboard_schemas::ConfigRecord;

use super::auth::{key_hash, AdminAuth};
use super::publish::publish_config;
use super::store::q;
use super::{ordered_id, random_token};
use crate::error::ApiError;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

const VERSION: &str = "(extract(epoch from updated_at) * 1000000)::bigint AS version";

/// A 400 naming the field (shared by the API modules).
pub(crate) fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "invalid_field", field, msg)
}

/// Parse a JSON body, or a 400 `malformed_body`.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("invalid JSON: {e}"),
        )
    })
}

fn db_ready(app: &AppState) -> ApiResult<()> {
    if app.db_ready.load(std::sync::atomic::Ordering::Acquire) {
        Ok(())
    } else {
        Err(ApiError::unavailable(
            "database_unavailable",
            "the database is not ready yet; retry",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    name: String,
    api_rate_per_sec: Option<u32>,
    enforce_service_window: Option<bool>,
    daily_unique_limit: Option<u32>,
}

/// The columns of a tenant, for [`tenant_of`].
const TENANT_COLUMNS: &str =
    "id, name, default_number, api_rate_per_sec, enforce_service_window, daily_unique_limit";

fn tenant_of(r: &sqlx::postgres::PgRow) -> Tenant {
    Tenant {
        id: r.get("id"),
        name: r.get("name"),
        default_number: r.get("default_number"),
        api_rate_per_sec: r.get::<i32, _>("api_rate_per_sec") as u32,
        enforce_service_window: r.get("enforce_service_window"),
        daily_unique_limit: r
            .get::<Option<i32>, _>("daily_unique_limit")
            .map(|l| l as u32),
    }
}

fn check_limit(limit: Option<u32>) -> ApiResult<()> {
    if limit == Some(0) {
        return Err(bad(
            "daily_unique_limit",
            "a positive number, or null for none",
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(bad("name", "1 to 200 characters"));
    }
    Ok(())
}

fn check_rate(rate: u32) -> ApiResult<()> {
    if rate == 0 || rate > 100_000 {
        return Err(bad("api_rate_per_sec", "1 to 100000"));
    }
    Ok(())
}

pub async fn create_tenant(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    db_ready(&app)?;
    let t: NewTenant = json_body(&body)?;
    check_name(&t.name)?;
    let rate = t.api_rate_per_sec.unwrap_or(100);
    check_rate(rate)?;
    let id = ordered_id("ten_");
    let enforce = t.enforce_service_window.unwrap_or(true);
    check_limit(t.daily_unique_limit)?;
    let row = q(format!(
        "INSERT INTO tenants (id, name, api_rate_per_sec, enforce_service_window, daily_unique_limit) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {VERSION}"
    ))
    .bind(&id)
    .bind(t.name.trim())
    .bind(rate as i32)
    .bind(enforce)
    .bind(t.daily_unique_limit.map(|l| l as i32))
    .fetch_one(&app.db)
    .await
    .map_err(ApiError::db)?;
    let tenant = Tenant {
        id: id.clone(),
        name: t.name.trim().to_string(),
        default_number: None,
        api_rate_per_sec: rate,
        enforce_service_window: enforce,
        daily_unique_limit: t.daily_unique_limit,
    };
    publish_config(
        &app,
        &[config::record(
            TENANT,
            &id,
            &id,
            &tenant,
            row.get("version"),
        )],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!(tenant))))
}

/// Every tenant, oldest first (an operator's list; a handful to thousands).
pub async fn list_tenants(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
) -> ApiResult<Json<Value>> {
    db_ready(&app)?;
    let rows = sqlx::query(
        "SELECT id, name, default_number, api_rate_per_sec, enforce_service_window, created_at FROM tenants ORDER BY created_at, id LIMIT 10000",
    )
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    type Ts = chrono::DateTime<chrono::Utc>;
    Ok(Json(json!({"data": rows.iter().map(|r| json!({
        "id": r.get::<String, _>("id"), "name": r.get::<String, _>("name"),
        "default_number": r.get::<Option<String>, _>("default_number"),
        "api_rate_per_sec": r.get::<i32, _>("api_rate_per_sec"),
        "enforce_service_window": r.get::<bool, _>("enforce_service_window"),
        "created_at": r.get::<Ts, _>("created_at"),
    })).collect::<Vec<_>>()})))
}

async fn tenant_record(app: &AppState, tenant: &str) -> ApiResult<(Tenant, i64)> {
    let row = q(format!(
        "SELECT {TENANT_COLUMNS}, {VERSION} FROM tenants WHERE id = $1"
    ))
    .bind(tenant)
    .fetch_optional(&app.db)
    .await
    .map_err(ApiError::db)?
    .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok((tenant_of(&row), row.get("version")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    name: Option<String>,
    api_rate_per_sec: Option<u32>,
    enforce_service_window: Option<bool>,
    /// Absent: unchanged; null: none.
    #[serde(default, deserialize_with = "present")]
    daily_unique_limit: Option<Option<u32>>,
}

/// A field that is present, maybe as null (absent stays `None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /admin/tenants/{tenant}`: change the given settings, publish the tenant.
pub async fn patch_tenant(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    db_ready(&app)?;
    let p: TenantPatch = json_body(&body)?;
    if let Some(n) = &p.name {
        check_name(n)?;
    }
    if let Some(r) = p.api_rate_per_sec {
        check_rate(r)?;
    }
    if let Some(l) = p.daily_unique_limit {
        check_limit(l)?;
    }
    let row = q(format!(
        "UPDATE tenants SET name = COALESCE($2, name), api_rate_per_sec = COALESCE($3, api_rate_per_sec), \
           enforce_service_window = COALESCE($4, enforce_service_window), \
           daily_unique_limit = CASE WHEN $5 THEN $6 ELSE daily_unique_limit END, updated_at = clock_timestamp() \
         WHERE id = $1 RETURNING {TENANT_COLUMNS}, {VERSION}"
    ))
    .bind(&tenant)
    .bind(p.name.as_deref().map(str::trim))
    .bind(p.api_rate_per_sec.map(|r| r as i32))
    .bind(p.enforce_service_window)
    .bind(p.daily_unique_limit.is_some())
    .bind(p.daily_unique_limit.flatten().map(|l| l as i32))
    .fetch_optional(&app.db)
    .await
    .map_err(ApiError::db)?
    .ok_or_else(|| ApiError::not_found("tenant"))?;
    let t = tenant_of(&row);
    publish_config(
        &app,
        &[config::record(TENANT, &t.id, &t.id, &t, row.get("version"))],
    )
    .await?;
    Ok(Json(json!(t)))
}

pub async fn get_tenant(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Value>> {
    db_ready(&app)?;
    let (t, _) = tenant_record(&app, &tenant).await?;
    let keys = sqlx::query(
        "SELECT id, name, prefix, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY created_at",
    )
    .bind(&tenant)
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    let numbers = sqlx::query(
        "SELECT number, bsp, bsp_account_id, tier_mps, failover_bsp, failover_account_id, waba_id FROM business_numbers WHERE tenant_id = $1 ORDER BY number",
    )
    .bind(&tenant)
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    let creds = sqlx::query(
        "SELECT bsp, key_id, updated_at FROM bsp_credentials WHERE tenant_id = $1 ORDER BY bsp",
    )
    .bind(&tenant)
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    type Ts = chrono::DateTime<chrono::Utc>;
    Ok(Json(json!({
        "id": t.id, "name": t.name, "default_number": t.default_number,
        "api_rate_per_sec": t.api_rate_per_sec,
        "enforce_service_window": t.enforce_service_window,
        "daily_unique_limit": t.daily_unique_limit,
        "api_keys": keys.iter().map(|r| json!({
            "id": r.get::<String, _>("id"), "name": r.get::<String, _>("name"),
            "prefix": r.get::<String, _>("prefix"),
            "created_at": r.get::<Ts, _>("created_at"),
            "revoked_at": r.get::<Option<Ts>, _>("revoked_at"),
        })).collect::<Vec<_>>(),
        "numbers": numbers.iter().map(|r| json!({
            "number": r.get::<String, _>("number"), "bsp": r.get::<String, _>("bsp"),
            "bsp_account_id": r.get::<String, _>("bsp_account_id"),
            "tier_mps": r.get::<i32, _>("tier_mps"),
            "failover_bsp": r.get::<Option<String>, _>("failover_bsp"),
            "failover_account_id": r.get::<Option<String>, _>("failover_account_id"),
            "waba_id": r.get::<Option<String>, _>("waba_id"),
        })).collect::<Vec<_>>(),
        "credentials": creds.iter().map(|r| json!({
            "bsp": r.get::<String, _>("bsp"), "key_id": r.get::<String, _>("key_id"),
            "updated_at": r.get::<Ts, _>("updated_at"),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    name: String,
}

pub async fn create_key(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    db_ready(&app)?;
    let k: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        json_body(&body)?
    };
    tenant_record(&app, &tenant).await?;
    let secret = random_token("sb_", 32);
    let id = ordered_id("key_");
    let prefix: String = secret.chars().take(10).collect();
    let hash = key_hash(&secret);
    let row = q(format!(
        "INSERT INTO api_keys (id, tenant_id, hash, prefix, name) VALUES ($1, $2, $3, $4, $5) RETURNING {VERSION}"
    ))
    .bind(&id)
    .bind(&tenant)
    .bind(&hash)
    .bind(&prefix)
    .bind(&k.name)
    .fetch_one(&app.db)
    .await
    .map_err(ApiError::db)?;
    let key = ApiKey {
        id: id.clone(),
        tenant_id: tenant.clone(),
        hash,
        name: k.name.clone(),
    };
    publish_config(
        &app,
        &[config::record(
            API_KEY,
            &id,
            &tenant,
            &key,
            row.get("version"),
        )],
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": id, "key": secret, "prefix": prefix, "name": k.name,
            "note": "the key is shown once; only its hash is stored"}),
        ),
    ))
}

pub async fn revoke_key(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path((tenant, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    db_ready(&app)?;
    let row = q(format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()), updated_at = clock_timestamp() WHERE id = $1 AND tenant_id = $2 RETURNING {VERSION}"
    ))
    .bind(&key)
    .bind(&tenant)
    .fetch_optional(&app.db)
    .await
    .map_err(ApiError::db)?
    .ok_or_else(|| ApiError::not_found("API key"))?;
    publish_config(
        &app,
        &[config::deletion(API_KEY, &key, &tenant, row.get("version"))],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberBody {
    bsp: String,
    bsp_account_id: String,
    tier_mps: u32,
    failover_bsp: Option<String>,
    failover_account_id: Option<String>,
    waba_id: Option<String>,
    #[serde(default)]
    default: bool,
}

pub async fn put_number(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path((tenant, number)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    db_ready(&app)?;
    let b: NumberBody = json_body(&body)?;
    let number =
        switchboard_connectors::common::e164(&number).map_err(|e| bad("number", e.detail))?;
    b.bsp
        .parse::<Bsp>()
        .map_err(|_| bad("bsp", format!("unknown BSP {:?}", b.bsp)))?;
    if b.bsp_account_id.trim().is_empty() {
        return Err(bad("bsp_account_id", "required"));
    }
    if b.tier_mps == 0 || b.tier_mps > 10_000 {
        return Err(bad("tier_mps", "1 to 10000 messages per second"));
    }
    if let Some(f) = &b.failover_bsp {
        f.parse::<Bsp>()
            .map_err(|_| bad("failover_bsp", format!("unknown BSP {f:?}")))?;
        if *f == b.bsp {
            return Err(bad("failover_bsp", "must differ from bsp"));
        }
        if b.failover_account_id.as_deref().unwrap_or("").is_empty() {
            return Err(bad("failover_account_id", "required with failover_bsp"));
        }
    }
    if let Some(w) = &b.waba_id {
        if w.is_empty() || w.len() > 64 || !w.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad(
                "waba_id",
                "the WhatsApp Business Account id: 1 to 64 digits",
            ));
        }
    }
    tenant_record(&app, &tenant).await?;
    let row = q(format!(
        "INSERT INTO business_numbers (number, tenant_id, bsp, bsp_account_id, tier_mps, failover_bsp, failover_account_id, waba_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (number) DO UPDATE SET bsp = EXCLUDED.bsp, bsp_account_id = EXCLUDED.bsp_account_id,
           tier_mps = EXCLUDED.tier_mps, failover_bsp = EXCLUDED.failover_bsp,
           failover_account_id = EXCLUDED.failover_account_id, waba_id = EXCLUDED.waba_id,
           updated_at = clock_timestamp()
         WHERE business_numbers.tenant_id = EXCLUDED.tenant_id
         RETURNING {VERSION}"
    ))
    .bind(&number)
    .bind(&tenant)
    .bind(&b.bsp)
    .bind(&b.bsp_account_id)
    .bind(b.tier_mps as i32)
    .bind(&b.failover_bsp)
    .bind(&b.failover_account_id)
    .bind(&b.waba_id)
    .fetch_optional(&app.db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => ApiError::field(
            StatusCode::CONFLICT,
            "conflict",
            "bsp_account_id",
            "this BSP account is already bound to another number",
        ),
        _ => ApiError::db(e),
    })?
    .ok_or_else(|| {
        ApiError::field(StatusCode::CONFLICT, "conflict", "number", "this number belongs to another tenant")
    })?;
    let n = BusinessNumber {
        number: number.clone(),
        tenant_id: tenant.clone(),
        bsp: b.bsp.clone(),
        bsp_account_id: b.bsp_account_id.clone(),
        tier_mps: b.tier_mps,
        failover_bsp: b.failover_bsp.clone(),
        failover_account_id: b.failover_account_id.clone(),
        waba_id: b.waba_id.clone(),
    };
    let mut recs = vec![config::record(
        NUMBER,
        &number,
        &tenant,
        &n,
        row.get("version"),
    )];
    let (mut t, _) = tenant_record(&app, &tenant).await?;
    if b.default || t.default_number.is_none() {
        let row = q(format!(
            "UPDATE tenants SET default_number = $2, updated_at = clock_timestamp() WHERE id = $1 RETURNING {VERSION}"
        ))
        .bind(&tenant)
        .bind(&number)
        .fetch_one(&app.db)
        .await
        .map_err(ApiError::db)?;
        t.default_number = Some(number.clone());
        recs.push(config::record(
            TENANT,
            &tenant,
            &tenant,
            &t,
            row.get("version"),
        ));
    }
    publish_config(&app, &recs).await?;
    Ok(Json(
        json!({"number": n, "default": t.default_number.as_deref() == Some(number.as_str())}),
    ))
}

pub async fn delete_number(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path((tenant, number)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    db_ready(&app)?;
    let number =
        switchboard_connectors::common::e164(&number).map_err(|e| bad("number", e.detail))?;
    let mut tx = app.db.begin().await.map_err(ApiError::db)?;
    let deleted = sqlx::query("DELETE FROM business_numbers WHERE number = $1 AND tenant_id = $2")
        .bind(&number)
        .bind(&tenant)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::db)?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("number"));
    }
    let row = q(format!(
        "UPDATE tenants SET default_number = CASE WHEN default_number = $2 THEN NULL ELSE default_number END,
           updated_at = clock_timestamp() WHERE id = $1 RETURNING {VERSION}"
    ))
    .bind(&tenant)
    .bind(&number)
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::db)?;
    tx.commit().await.map_err(ApiError::db)?;
    let version: i64 = row.get("version");
    let (t, _) = tenant_record(&app, &tenant).await?;
    publish_config(
        &app,
        &[
            config::deletion(NUMBER, &number, &tenant, version),
            config::record(TENANT, &tenant, &tenant, &t, version),
        ],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn keyring(app: &AppState) -> ApiResult<&switchboard_runtime::secrets::Keyring> {
    app.keyring.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "credentials_keys_missing",
            "SWITCHBOARD_CREDENTIALS_KEYS is not set; credentials cannot be stored",
        )
    })
}

pub async fn put_credentials(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path((tenant, bsp)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    db_ready(&app)?;
    bsp.parse::<Bsp>()
        .map_err(|_| bad("bsp", format!("unknown BSP {bsp:?}")))?;
    let fields: Map<String, Value> = json_body(&body)?;
    if fields.is_empty() || fields.values().any(|v| !v.is_string()) {
        return Err(bad("credentials", "a non-empty object of string fields"));
    }
    tenant_record(&app, &tenant).await?;
    let owner = format!("{tenant}/{bsp}");
    let (kid, sealed) = keyring(&app)?.seal(&body, &owner);
    let row = q(format!(
        "INSERT INTO bsp_credentials (tenant_id, bsp, key_id, ciphertext) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, bsp) DO UPDATE SET key_id = EXCLUDED.key_id, ciphertext = EXCLUDED.ciphertext,
           updated_at = clock_timestamp()
         RETURNING {VERSION}"
    ))
    .bind(&tenant)
    .bind(&bsp)
    .bind(&kid)
    .bind(&sealed)
    .fetch_one(&app.db)
    .await
    .map_err(ApiError::db)?;
    let c = Credential {
        tenant_id: tenant.clone(),
        bsp: bsp.clone(),
        key_id: kid.clone(),
        ciphertext: sealed,
    };
    publish_config(
        &app,
        &[config::record(
            CREDENTIAL,
            &owner,
            &tenant,
            &c,
            row.get("version"),
        )],
    )
    .await?;
    Ok(Json(
        json!({"bsp": bsp, "key_id": kid, "fields": fields.keys().collect::<Vec<_>>()}),
    ))
}

/// Re-encrypt every credential not under the active key.
pub async fn rotate_credentials(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
) -> ApiResult<Json<Value>> {
    db_ready(&app)?;
    let ring = keyring(&app)?;
    let rows = sqlx::query(
        "SELECT tenant_id, bsp, key_id, ciphertext FROM bsp_credentials WHERE key_id <> $1",
    )
    .bind(ring.active_id())
    .fetch_all(&app.db)
    .await
    .map_err(ApiError::db)?;
    let mut recs = Vec::new();
    for r in &rows {
        let (tenant, bsp): (String, String) = (r.get("tenant_id"), r.get("bsp"));
        let owner = format!("{tenant}/{bsp}");
        let plain = ring
            .open(r.get("key_id"), r.get("ciphertext"), &owner)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "cannot_decrypt",
                    format!("{owner}: {e}"),
                )
            })?;
        let (kid, sealed) = ring.seal(&plain, &owner);
        let row = q(format!(
            "UPDATE bsp_credentials SET key_id = $3, ciphertext = $4, updated_at = clock_timestamp()
             WHERE tenant_id = $1 AND bsp = $2 RETURNING {VERSION}"
        ))
        .bind(&tenant)
        .bind(&bsp)
        .bind(&kid)
        .bind(&sealed)
        .fetch_one(&app.db)
        .await
        .map_err(ApiError::db)?;
        let c = Credential {
            tenant_id: tenant.clone(),
            bsp,
            key_id: kid,
            ciphertext: sealed,
        };
        recs.push(config::record(
            CREDENTIAL,
            &owner,
            &tenant,
            &c,
            row.get("version"),
        ));
    }
    let credentials = recs.len();
    let endpoints = super::endpoints::reseal_all(&app, ring).await?;
    let resealed = endpoints.len();
    recs.extend(endpoints);
    publish_config(&app, &recs).await?;
    Ok(Json(
        json!({"rotated": credentials, "endpoints_rotated": resealed, "active_key": ring.active_id()}),
    ))
}

/// Every configuration entity as records, to republish at start-up.
pub async fn snapshot(db: &sqlx::PgPool) -> Result<Vec<ConfigRecord>, sqlx::Error> {
    let mut out = Vec::new();
    for r in q(format!("SELECT {TENANT_COLUMNS}, {VERSION} FROM tenants"))
        .fetch_all(db)
        .await?
    {
        let t = tenant_of(&r);
        out.push(config::record(TENANT, &t.id, &t.id, &t, r.get("version")));
    }
    for r in q(format!("SELECT id, tenant_id, hash, name, revoked_at IS NOT NULL AS revoked, {VERSION} FROM api_keys"))
        .fetch_all(db)
        .await?
    {
        let k = ApiKey { id: r.get("id"), tenant_id: r.get("tenant_id"), hash: r.get("hash"), name: r.get("name") };
        out.push(if r.get::<bool, _>("revoked") {
            config::deletion(API_KEY, &k.id, &k.tenant_id, r.get("version"))
        } else {
            config::record(API_KEY, &k.id, &k.tenant_id, &k, r.get("version"))
        });
    }
    for r in q(format!("SELECT number, tenant_id, bsp, bsp_account_id, tier_mps, failover_bsp, failover_account_id, waba_id, {VERSION} FROM business_numbers"))
        .fetch_all(db)
        .await?
    {
        let n = BusinessNumber {
            number: r.get("number"), tenant_id: r.get("tenant_id"), bsp: r.get("bsp"),
            bsp_account_id: r.get("bsp_account_id"), tier_mps: r.get::<i32, _>("tier_mps") as u32,
            failover_bsp: r.get("failover_bsp"), failover_account_id: r.get("failover_account_id"),
            waba_id: r.get("waba_id"),
        };
        out.push(config::record(NUMBER, &n.number, &n.tenant_id, &n, r.get("version")));
    }
    for r in q(format!(
        "SELECT tenant_id, bsp, key_id, ciphertext, {VERSION} FROM bsp_credentials"
    ))
    .fetch_all(db)
    .await?
    {
        let c = Credential {
            tenant_id: r.get("tenant_id"),
            bsp: r.get("bsp"),
            key_id: r.get("key_id"),
            ciphertext: r.get("ciphertext"),
        };
        let owner = format!("{}/{}", c.tenant_id, c.bsp);
        out.push(config::record(
            CREDENTIAL,
            &owner,
            &c.tenant_id,
            &c,
            r.get("version"),
        ));
    }
    out.extend(super::endpoints::snapshot(db).await?);
    Ok(out)
}
