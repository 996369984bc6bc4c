//! Inbound media through the Cloud API: an inbound message names its media by id;
//! `GET {base}/{media_id}` (Bearer token) answers `{url, mime_type, sha256 (hex),
//! file_size, id}`, and the URL, valid for about five minutes, serves the bytes to the
//! same token. 360dialog proxies the same two calls under its own host and key.

pub use crate::media::FetchError;
use crate::media::{by_status, read_body, transport};
use crate::Bsp;

/// What the BSP says about a media object.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    pub url: String,
    pub mime_type: Option<String>,
    /// Hex SHA-256 of the bytes, where the BSP gives it.
    pub sha256: Option<String>,
    pub file_size: Option<u64>,
}

fn auth(bsp: Bsp, req: reqwest::RequestBuilder, secret: &str) -> reqwest::RequestBuilder {
    match bsp {
        Bsp::Dialog360 => req.header("D360-API-KEY", secret),
        _ => req.bearer_auth(secret),
    }
}

/// `GET {base}/{media_id}`.
pub async fn info(
    http: &reqwest::Client,
    bsp: Bsp,
    base_url: &str,
    media_id: &str,
    secret: &str,
) -> Result<MediaInfo, FetchError> {
    if media_id.is_empty()
        || !media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(FetchError::Gone(format!("{media_id:?} is not a media id")));
    }
    let url = format!("{}/{media_id}", base_url.trim_end_matches('/'));
    let resp = auth(bsp, http.get(&url), secret)
        .send()
        .await
        .map_err(|e| transport("media info", e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| transport("media info", e))?;
    if !status.is_success() {
        return Err(by_status("media info", status, &body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FetchError::Gone(format!("media info is not JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Ok(MediaInfo {
        url: s("url").ok_or_else(|| FetchError::Gone("media info without url".into()))?,
        mime_type: s("mime_type"),
        sha256: s("sha256").map(|h| h.to_ascii_lowercase()),
        // Meta writes it as a string, some proxies as a number.
        file_size: v.get("file_size").and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        }),
    })
}

/// The bytes behind `url`, at most `max_bytes`, checked against the BSP's hash.
pub async fn download(
    http: &reqwest::Client,
    bsp: Bsp,
    info: &MediaInfo,
    secret: &str,
    max_bytes: u64,
) -> Result<(Vec<u8>, String), FetchError> {
    if info.file_size.is_some_and(|n| n > max_bytes) {
        return Err(FetchError::TooLarge(format!(
            "{} bytes; the limit is {max_bytes}",
            info.file_size.unwrap_or_default()
        )));
    }
    let resp = auth(bsp, http.get(&info.url), secret)
        .send()
        .await
        .map_err(|e| transport("media download", e))?;
    read_body(resp, max_bytes, info.sha256.as_deref()).await
}
