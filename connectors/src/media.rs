//! Where an inbound message's media is, per BSP, and reading it: Meta and 360dialog name
//! it by an id looked up in [`crate::meta::media`]; Twilio, WAHA, Gupshup and Aisensy put
//! a URL in the webhook. Karix forwards Meta's media id with no documented API to fetch it
//! through Karix, so its media is not fetched.
//!
//! A URL's credentials go only to the BSP's own API origin (Twilio's account token, WAHA's
//! key): a URL elsewhere, or a redirect away from it, is fetched without them.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::Bsp;

/// Where the bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An id the BSP's media API turns into a short-lived URL (Meta, 360dialog).
    Id(String),
    /// A URL in the webhook, with the MIME type and expiry the webhook gave, if any.
    Url {
        url: String,
        mime_type: Option<String>,
        expires_at_ms: Option<i64>,
    },
}

/// The media of a received message's canonical `content`, if this BSP's can be fetched.
pub fn source(bsp: Bsp, content: &Value) -> Option<Source> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let url = |v: &Value, mime: &str, expiry: Option<i64>| {
        Some(Source::Url {
            url: s(v, "url").filter(|u| !u.is_empty())?,
            mime_type: s(v, mime).filter(|m| !m.is_empty()),
            expires_at_ms: expiry,
        })
    };
    let expiry = |v: &Value| v.get("urlExpiry").and_then(Value::as_i64);
    match bsp {
        Bsp::Meta | Bsp::Dialog360 => s(content, "id").map(Source::Id),
        // WhatsApp messages carry one attachment: Twilio's `MediaUrl0`.
        Bsp::Twilio => url(content.get("media")?.get(0)?, "content_type", None),
        Bsp::Waha => url(content.get("media")?, "mimetype", None),
        // Gupshup gives the expiry in seconds, Aisensy in milliseconds.
        Bsp::Gupshup => url(content, "contentType", expiry(content).map(|e| e * 1000)),
        Bsp::Aisensy => url(content, "mimeType", expiry(content)),
        Bsp::Karix => None,
    }
}

/// How a request for media proves who it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic { user: String, password: String },
    Header { name: &'static str, value: String },
}

impl Auth {
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Header { name, value } => req.header(*name, value),
        }
    }
}

/// Are `a` and `b` the same origin (scheme, host, port)?
pub fn same_origin(a: &Url, b: &str) -> bool {
    Url::parse(b).is_ok_and(|b| a.origin() == b.origin())
}

/// The credentials a request to `url` carries: the tenant's, only when `url` is on the
/// BSP's own API origin (`base_url`); nothing anywhere else.
pub fn url_auth(
    bsp: Bsp,
    base_url: &str,
    url: &Url,
    creds: &Map<String, Value>,
) -> Result<Auth, FetchError> {
    if !same_origin(url, base_url) {
        return Ok(Auth::None);
    }
    let cred = |k: &str| {
        creds
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| FetchError::Gone(format!("no {k} in the {bsp} credentials")))
    };
    match bsp {
        // `/2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}/Media/{MediaSid}`: the
        // account that owns the media is the user.
        Bsp::Twilio => {
            let user = url
                .path_segments()
                .and_then(|mut p| p.find(|s| *s == "Accounts").and_then(|_| p.next()))
                .filter(|sid| !sid.is_empty())
                .ok_or_else(|| FetchError::Gone(format!("{url} names no Twilio account")))?;
            Ok(Auth::Basic {
                user: user.to_string(),
                password: cred("auth_token")?,
            })
        }
        Bsp::Waha => Ok(Auth::Header {
            name: "X-Api-Key",
            value: cred("api_key")?,
        }),
        _ => Ok(Auth::None),
    }
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
    /// The URL points where Switchboard does not go (a private address, a bad scheme).
    UrlRefused(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Transient(s)
            | FetchError::Gone(s)
            | FetchError::TooLarge(s)
            | FetchError::Corrupt(s)
            | FetchError::UrlRefused(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for FetchError {}

/// A failed answer: 5xx and 429 are worth another try, the rest mean the media is gone.
pub fn by_status(what: &str, status: reqwest::StatusCode, body: &[u8]) -> FetchError {
    let detail = format!("{what}: HTTP {status}: {}", crate::send::snippet(body));
    if status.is_server_error() || status.as_u16() == 429 {
        FetchError::Transient(detail)
    } else {
        FetchError::Gone(detail)
    }
}

pub fn transport(what: &str, e: reqwest::Error) -> FetchError {
    FetchError::Transient(format!("{what}: {e}"))
}

/// The body of a successful answer, at most `max_bytes` (read no further), and its hex
/// SHA-256, checked against `want` where the BSP gave one.
pub async fn read_body(
    mut resp: reqwest::Response,
    max_bytes: u64,
    want: Option<&str>,
) -> Result<(Vec<u8>, String), FetchError> {
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(by_status("media download", status, &body));
    }
    if let Some(n) = resp.content_length().filter(|n| *n > max_bytes) {
        return Err(FetchError::TooLarge(format!(
            "{n} bytes; the limit is {max_bytes}"
        )));
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
    if let Some(want) = want {
        if !want.eq_ignore_ascii_case(&hex) {
            return Err(FetchError::Corrupt(format!(
                "the bytes hash to {hex}, the BSP says {want}"
            )));
        }
    }
    Ok((bytes, hex))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_bsp_says_where_its_media_is() {
        assert_eq!(
            source(Bsp::Meta, &json!({"id": "123", "mime_type": "image/jpeg"})),
            Some(Source::Id("123".into()))
        );
        assert_eq!(
            source(
                Bsp::Twilio,
                &json!({"media": [{"url": "https://api.twilio.com/x", "content_type": "image/jpeg"}]})
            ),
            Some(Source::Url {
                url: "https://api.twilio.com/x".into(),
                mime_type: Some("image/jpeg".into()),
                expires_at_ms: None
            })
        );
        assert_eq!(
            source(
                Bsp::Gupshup,
                &json!({"url": "https://f.gupshup.io/a.jpg", "contentType": "image/jpeg", "urlExpiry": 1750868602})
            ),
            Some(Source::Url {
                url: "https://f.gupshup.io/a.jpg".into(),
                mime_type: Some("image/jpeg".into()),
                expires_at_ms: Some(1_750_868_602_000)
            })
        );
        assert!(matches!(
            source(
                Bsp::Aisensy,
                &json!({"url": "https://c.example/a", "urlExpiry": 1750868603000_i64})
            ),
            Some(Source::Url {
                expires_at_ms: Some(1_750_868_603_000),
                mime_type: None,
                ..
            })
        ));
        assert!(source(
            Bsp::Waha,
            &json!({"media": {"url": "", "mimetype": "image/png"}})
        )
        .is_none());
        assert!(source(Bsp::Twilio, &json!({"body": "hi"})).is_none());
        assert!(source(Bsp::Karix, &json!({"id": "1003383421387299"})).is_none());
    }

    #[test]
    fn credentials_go_only_to_the_bsps_own_origin() {
        let creds: Map<String, Value> =
            serde_json::from_value(json!({"auth_token": "tok", "api_key": "key"})).unwrap();
        let twilio =
            Url::parse("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1")
                .unwrap();
        assert_eq!(
            url_auth(Bsp::Twilio, "https://api.twilio.com", &twilio, &creds).unwrap(),
            Auth::Basic {
                user: "AC1".into(),
                password: "tok".into()
            }
        );
        // Another host, another port, another scheme: nothing.
        for base in [
            "https://api.twilio.com.evil.example",
            "https://api.twilio.com:8443",
            "http://api.twilio.com",
        ] {
            assert_eq!(
                url_auth(Bsp::Twilio, base, &twilio, &creds).unwrap(),
                Auth::None
            );
        }
        let waha = Url::parse("http://127.0.0.1:3000/api/files/default/a.jpeg").unwrap();
        assert_eq!(
            url_auth(Bsp::Waha, "http://127.0.0.1:3000/", &waha, &creds).unwrap(),
            Auth::Header {
                name: "X-Api-Key",
                value: "key".into()
            }
        );
        let no_account = Url::parse("https://api.twilio.com/2010-04-01/Media/ME1").unwrap();
        assert!(url_auth(Bsp::Twilio, "https://api.twilio.com", &no_account, &creds).is_err());
    }
}
