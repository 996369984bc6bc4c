//! `GET /v1/media/{sha256}`: an inbound message's media as the routers kept it
//! (`crate::media` in the processors), to a tenant whose message refers to it; any
//! other tenant gets the same 404 as for a blob that does not exist.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_processors::db::media::Media;
use switchboard_processors::media::store::is_sha256;

use super::auth::TenantAuth;
use crate::error::ApiError;
use crate::AppState;

pub async fn get_one(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    if !is_sha256(&sha256) {
        return Err(ApiError::not_found("media"));
    }
    let store = app.media.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "media_store_unavailable",
            "the media store is not configured; see the gateway's log",
        )
    })?;
    let (_, mime) = Media::new(app.db.clone())
        .owned(&tenant.id, &sha256)
        .await
        .map_err(ApiError::db)?
        .ok_or_else(|| ApiError::not_found("media"))?;
    let bytes = store
        .get(&sha256)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "media store read failed");
            ApiError::unavailable(
                "media_store_unavailable",
                "the media store did not answer; retry",
            )
        })?
        .ok_or_else(|| ApiError::not_found("media"))?;
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // Customers' files: never rendered as our origin's page, never cached by others.
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{sha256}\"")).expect("hex is a header value"),
    );
    Ok(resp)
}
