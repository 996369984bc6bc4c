//! Who is calling: a tenant by API key (`Authorization: Bearer sb_...`), or the operator by
//! the admin key. Keys are looked up by SHA-256 in the in-memory config copy, so
//! authenticating costs no database round trip; a revoked key stops working as soon as
//! the revocation reaches this process through `wa.config`.
//!
//! Each tenant also gets a request rate limit on the API (GCRA, `api_rate_per_sec`), and
//! each peer address a limit on failed admin-key attempts ([`AuthFailures`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use switchboard_schemas::config::Tenant;

use crate::error::ApiError;
use crate::AppState;

pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
}

/// An authenticated tenant, under its rate limit.
pub struct TenantAuth(pub Tenant);

impl FromRequestParts<Arc<AppState>> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts)
            .ok_or_else(|| unauthorized("send your API key as `Authorization: Bearer <key>`"))?;
        if !app.config.is_ready() {
            return Err(ApiError::unavailable(
                "config_loading",
                "the gateway is still loading its configuration; retry",
            ));
        }
        let tenant = {
            let ix = app.config.read();
            let k = ix
                .api_keys
                .get(&key_hash(key))
                .ok_or_else(|| unauthorized("unknown or revoked API key"))?;
            ix.tenants
                .get(&k.tenant_id)
                .cloned()
                .ok_or_else(|| unauthorized("the key's tenant no longer exists"))?
        };
        app.limiter.check(&tenant)?;
        Ok(TenantAuth(tenant))
    }
}

/// The operator, by the admin key.
pub struct AdminAuth;

impl FromRequestParts<Arc<AppState>> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let expected = &app.cfg.admin_api_key;
        if expected.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "admin_disabled",
                "the admin API is disabled (SWITCHBOARD_ADMIN_API_KEY is empty)",
            ));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        app.admin_failures
            .check(peer, app.cfg.admin_auth_failures_per_minute)?;
        let got = bearer(parts).unwrap_or("");
        // Compare digests: constant time in the secret's content.
        if key_hash(got) != key_hash(expected) {
            app.admin_failures.failed(peer);
            return Err(unauthorized("admin key required"));
        }
        Ok(AdminAuth)
    }
}

/// Failed admin-key attempts per peer address, in fixed one-minute windows: a peer over
/// the limit is refused (429) until its window ends, whatever key it sends, so the key
/// cannot be guessed at network speed. Counted per address, so one guesser does not lock
/// the operator out from elsewhere.
#[derive(Default)]
pub struct AuthFailures {
    by_peer: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl AuthFailures {
    fn check(&self, peer: Option<IpAddr>, limit: u32) -> Result<(), ApiError> {
        let map = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&peer) {
            Some((since, n)) if *n >= limit && since.elapsed() < WINDOW => Err(ApiError {
                retry_after_secs: Some((WINDOW - since.elapsed()).as_secs().max(1) as u32),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failed_attempts",
                    format!(
                        "{limit} failed admin-key attempts from this address within a minute; wait"
                    ),
                )
            }),
            _ => Ok(()),
        }
    }

    fn failed(&self, peer: Option<IpAddr>) {
        let mut map = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let e = map.entry(peer).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        tracing::warn!(peer = ?peer, failures = e.1, "admin key refused");
    }
}

/// Per-tenant GCRA limiters, rebuilt when a tenant's rate changes.
#[derive(Default)]
pub struct TenantLimiter {
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl TenantLimiter {
    pub fn check(&self, tenant: &Tenant) -> Result<(), ApiError> {
        let rate = tenant.api_rate_per_sec.max(1);
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map
                .entry(tenant.id.clone())
                .or_insert_with(|| (rate, Arc::new(RateLimiter::direct(quota(rate)))));
            if entry.0 != rate {
                *entry = (rate, Arc::new(RateLimiter::direct(quota(rate))));
            }
            entry.1.clone()
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError {
                retry_after_secs: Some(wait.as_secs_f64().ceil().max(1.0) as u32),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("over {rate} API requests per second for this tenant"),
                )
            }
        })
    }
}

fn quota(rate: u32) -> Quota {
    let r = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    // A burst of one second's worth: clients may send in bursts, but not sustain more.
    Quota::per_second(r).allow_burst(r)
}
