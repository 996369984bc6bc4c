//! Inbound media through the Cloud API: an inbound message names its media by id;
//! `GET {base}/{media_id}` (Bearer token) answers `{url, mime_type, sha256 (hex),
//! file_size, id}`, and the URL, valid for about five minutes, serves the bytes to the
//! same token. 360dialog proxies the same two calls under its own host and key.

use sha2::{Digest, Sha256};

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

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Worth another try (the BSP or the network away).
    Transient(String),
    /// The media is gone: expired URL, unknown id, refused.
    Gone(String),
    /// Over the configured size.
    TooLarge(String),
    /// The bytes do not match the BSP's hash.
    Corrupt(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Transient(s)
            | FetchError::Gone(s)
            | FetchError::TooLarge(s)
            | FetchError::Corrupt(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for FetchError {}

fn auth(bsp: Bsp, req: reqwest::RequestBuilder, secret: &str) -> reqwest::RequestBuilder {
    match bsp {
        Bsp::Dialog360 => req.header("D360-API-KEY", secret),
        _ => req.bearer_auth(secret),
    }
}

fn by_status(what: &str, status: reqwest::StatusCode, body: &[u8]) -> FetchError {
    let detail = format!("{what}: HTTP {status}: {}", crate::send::snippet(body));
    if status.is_server_error() || status.as_u16() == 429 {
        FetchError::Transient(detail)
    } else {
        FetchError::Gone(detail)
    }
}

fn transport(what: &str, e: reqwest::Error) -> FetchError {
    FetchError::Transient(format!("{what}: {e}"))
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
    let mut resp = auth(bsp, http.get(&info.url), secret)
        .send()
        .await
        .map_err(|e| transport("media download", e))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(by_status("media download", status, &body));
    }
    let mut bytes = Vec::new();
    let mut hash = Sha256::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport("media download", e))?
    {
        if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(FetchError::TooLarge(format!("over {max_bytes} bytes")));
        }
        hash.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    let hex = hex::encode(hash.finalize());
    if let Some(want) = &info.sha256 {
        if *want != hex {
            return Err(FetchError::Corrupt(format!(
                "the bytes hash to {hex}, the BSP says {want}"
            )));
        }
    }
    Ok((bytes, hex))
}
