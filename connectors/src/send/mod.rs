//! Outbound: sending one canonical message through a BSP's send API.
//!
//! The canonical message is the Cloud API message object (`type` plus the object it names,
//! optional `context`), because it is the lingua franca every BSP maps from; each BSP
//! module translates it to its own documented request and maps its answers to
//! [`SendError`]s with stable codes. The router owns retries, breakers and rate limits;
//! a connector makes exactly one HTTP request per call.

pub mod validate;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::Bsp;

/// Where and as whom to send: the business number's route and decrypted credentials.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    pub bsp: Bsp,
    /// The BSP API's base URL (from config, so tests point it at the simulator).
    pub base_url: &'a str,
    /// The BSP's id of the sender: Meta `phone_number_id`, Gupshup app name, Twilio
    /// account SID, WAHA session, AiSensy project id, Karix account; unused by 360dialog.
    pub account_id: &'a str,
    pub credentials: &'a Map<String, Value>,
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub message_id: &'a str,
    /// Sender business number, E.164.
    pub from: &'a str,
    /// Customer: E.164 or a business-scoped user id.
    pub to: &'a str,
    /// The canonical message object, already validated.
    pub message: &'a Value,
}

/// The BSP took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The BSP's message id (the wamid on Cloud-API BSPs); status webhooks carry it.
    pub bsp_message_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The BSP asked us to slow down (HTTP 429, Meta 130429/131056/80007, Twilio 20429).
    /// Not accepted; retry after backing the sender's bucket off.
    Throttled,
    /// Worth retrying: connection refused, 5xx, a timeout, a BSP's "temporary" codes.
    Retryable,
    /// Retrying cannot help: bad recipient, template not approved, 24-hour window closed,
    /// credentials refused.
    Permanent,
}

/// A failed send with a stable, BSP-independent `code` and the BSP's own code and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({kind:?}): {detail}")]
pub struct SendError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub bsp_code: Option<String>,
    pub detail: String,
    /// The BSP may have accepted the message (the request was written, the answer lost).
    pub ambiguous: bool,
    pub retry_after: Option<Duration>,
}

impl SendError {
    pub fn new(kind: ErrorKind, code: &'static str, detail: impl Into<String>) -> Self {
        SendError {
            kind,
            code,
            bsp_code: None,
            detail: detail.into(),
            ambiguous: false,
            retry_after: None,
        }
    }

    pub fn with_bsp_code(mut self, c: impl ToString) -> Self {
        self.bsp_code = Some(c.to_string());
        self
    }

    pub fn retryable(&self) -> bool {
        self.kind != ErrorKind::Permanent
    }
}

/// Stable error codes, as they appear in `send failed` events and the API.
pub mod codes {
    pub const INVALID_RECIPIENT: &str = "invalid_recipient";
    pub const OUTSIDE_SERVICE_WINDOW: &str = "outside_service_window";
    /// A marketing template to a customer who stopped marketing messages (Meta 131050).
    pub const CUSTOMER_OPTED_OUT: &str = "customer_opted_out";
    pub const TEMPLATE_NOT_FOUND: &str = "template_not_found";
    pub const TEMPLATE_NOT_APPROVED: &str = "template_not_approved";
    pub const TEMPLATE_INVALID: &str = "template_params_invalid";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const MEDIA_ERROR: &str = "media_error";
    pub const AUTH_FAILED: &str = "bsp_auth_failed";
    pub const SENDER_BLOCKED: &str = "sender_blocked";
    pub const RATE_LIMITED: &str = "rate_limited";
    /// Too many messages to one customer (Meta 131056): only that pair is paused.
    pub const PAIR_RATE_LIMITED: &str = "pair_rate_limited";
    pub const BSP_UNAVAILABLE: &str = "bsp_unavailable";
    pub const BSP_UNREACHABLE: &str = "bsp_unreachable";
    pub const TIMEOUT: &str = "timeout";
    pub const BAD_RESPONSE: &str = "bsp_bad_response";
    pub const UNSUPPORTED: &str = "unsupported_by_bsp";
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
    pub const SENDER_NOT_CONFIGURED: &str = "sender_not_configured";
    pub const CREDENTIALS_MISSING: &str = "credentials_missing";
}

/// The longest `Retry-After` believed: a wrong or hostile value must not park a number for
/// days (nor overflow the clock arithmetic of the limiter).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The most of a BSP's answer read (send answers are a few hundred bytes).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Send one message: exactly one HTTP request to the BSP.
///
/// An error is `ambiguous` when the request may have reached the BSP: a timeout or a
/// broken connection after the request was written, or an answer that could not be read.
/// Those are never retried blindly (the router ends them `outcome_unknown`); a failure to
/// connect sent nothing and is retryable.
pub async fn send(
    http: &reqwest::Client,
    route: &Route<'_>,
    msg: &Outbound<'_>,
) -> Result<Accepted, SendError> {
    let req = match route.bsp {
        Bsp::Meta | Bsp::Dialog360 | Bsp::Aisensy => {
            crate::meta::outbound::request(http, route, msg)?
        }
        Bsp::Gupshup => crate::gupshup::outbound::request(http, route, msg)?,
        Bsp::Twilio => crate::twilio::outbound::request(http, route, msg)?,
        Bsp::Waha => crate::waha::outbound::request(http, route, msg)?,
        Bsp::Karix => crate::karix::outbound::request(http, route, msg)?,
    };
    let resp = req.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_capped(resp, status).await?;
    let parsed = match route.bsp {
        Bsp::Meta | Bsp::Dialog360 | Bsp::Aisensy => crate::meta::outbound::response(status, &body),
        Bsp::Gupshup => crate::gupshup::outbound::response(status, &body),
        Bsp::Twilio => crate::twilio::outbound::response(status, &body),
        Bsp::Waha => crate::waha::outbound::response(status, &body),
        Bsp::Karix => crate::karix::outbound::response(status, &body),
    };
    parsed.map_err(|mut e| {
        e.retry_after = e
            .retry_after
            .or(retry_after)
            .map(|d| d.min(MAX_RETRY_AFTER));
        e
    })
}

/// The answer's body, up to [`MAX_RESPONSE_BYTES`]. The BSP has the request by now, so a
/// body that breaks off or runs over leaves the outcome unknown.
async fn read_capped(mut resp: reqwest::Response, status: u16) -> Result<Vec<u8>, SendError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            let mut e = SendError::new(
                ErrorKind::Permanent,
                codes::BAD_RESPONSE,
                format!("HTTP {status} with an answer over {MAX_RESPONSE_BYTES} bytes"),
            );
            e.ambiguous = true;
            return Err(e);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(e: reqwest::Error) -> SendError {
    let detail = describe(&e);
    if e.is_connect() {
        // Refused, unreachable, TLS handshake or connect timeout: nothing was sent.
        SendError::new(ErrorKind::Retryable, codes::BSP_UNREACHABLE, detail)
    } else if e.is_builder() {
        SendError::new(ErrorKind::Permanent, codes::INVALID_REQUEST, detail)
    } else {
        // A timeout or a broken connection once the request was (being) written: the BSP
        // may have it.
        let code = if e.is_timeout() {
            codes::TIMEOUT
        } else {
            codes::BSP_UNAVAILABLE
        };
        let mut err = SendError::new(ErrorKind::Retryable, code, detail);
        err.ambiguous = true;
        err
    }
}

/// The error with its causes (reqwest's own text hides "connection reset" and the like).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg.chars().take(500).collect()
}

/// Classify an HTTP status a BSP answered with when its body says nothing more useful.
pub fn by_http_status(status: u16, detail: String) -> SendError {
    match status {
        429 => SendError::new(ErrorKind::Throttled, codes::RATE_LIMITED, detail),
        401 | 403 => SendError::new(ErrorKind::Permanent, codes::AUTH_FAILED, detail),
        408 => SendError::new(ErrorKind::Retryable, codes::TIMEOUT, detail),
        500..=599 => SendError::new(ErrorKind::Retryable, codes::BSP_UNAVAILABLE, detail),
        _ => SendError::new(ErrorKind::Permanent, codes::INVALID_REQUEST, detail),
    }
}

/// A credential field, or a clear error naming it.
pub fn credential<'a>(route: &'a Route<'_>, name: &'static str) -> Result<&'a str, SendError> {
    route
        .credentials
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            SendError::new(
                ErrorKind::Permanent,
                codes::CREDENTIALS_MISSING,
                format!("{} credentials lack {name:?}", route.bsp),
            )
        })
}

/// Digits of an E.164 number (`+4915...` → `4915...`), the form most send APIs want.
pub fn digits(number: &str) -> &str {
    number.strip_prefix('+').unwrap_or(number)
}

/// The text a BSP without rich types can carry: text body, caption, or a template's name.
pub fn text_of(message: &Value) -> Option<&str> {
    let t = message.get("type")?.as_str()?;
    message
        .get(t)
        .and_then(|o| o.get("body").or_else(|| o.get("caption")))
        .and_then(Value::as_str)
}

/// Snip a BSP answer for an error detail.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    s.chars().take(300).collect()
}

/// Message types a BSP's send API can carry (the gateway refuses the rest up front).
pub fn supported_types(bsp: Bsp) -> &'static [&'static str] {
    match bsp {
        Bsp::Meta | Bsp::Dialog360 | Bsp::Aisensy => &validate::MESSAGE_TYPES,
        Bsp::Gupshup => &crate::gupshup::outbound::TYPES,
        Bsp::Twilio => &crate::twilio::outbound::TYPES,
        Bsp::Waha => &crate::waha::outbound::TYPES,
        Bsp::Karix => &crate::karix::outbound::TYPES,
    }
}

/// Whether a BSP's send API takes a business-scoped user id as the recipient: the Cloud
/// API does (in `recipient`), and 360dialog passes its body on unchanged. The others
/// document phone numbers only, so the gateway refuses such a send up front.
pub fn bsuid_recipients(bsp: Bsp) -> bool {
    matches!(bsp, Bsp::Meta | Bsp::Dialog360)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback "BSP" that reads one request, then does `answer` with the socket.
    async fn bsp<F, Fut>(answer: F) -> String
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            // The JSON body follows the headers; wait for its closing brace.
            while !got.ends_with(b"}") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
            }
            answer(s).await;
        });
        url
    }

    async fn send_to(base: &str) -> Result<Accepted, SendError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let creds: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"access_token": "t"})).unwrap();
        let route = Route {
            bsp: Bsp::Meta,
            base_url: base,
            account_id: "1555",
            credentials: &creds,
        };
        let message = serde_json::json!({"type": "text", "text": {"body": "hi"}});
        let out = Outbound {
            message_id: "m1",
            from: "+15550000001",
            to: "+4915112345678",
            message: &message,
        };
        send(&http, &route, &out).await
    }

    #[tokio::test]
    async fn only_a_request_that_never_left_is_plainly_retryable() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = send_to(&closed).await.unwrap_err();
        assert_eq!(
            (e.code, e.ambiguous),
            (codes::BSP_UNREACHABLE, false),
            "{e}"
        );

        // Never answers: holds the connection until the client gives up and closes it.
        let silent = bsp(|mut s| async move {
            let _ = s.read(&mut [0u8; 1]).await;
        })
        .await;
        let e = send_to(&silent).await.unwrap_err();
        assert_eq!((e.code, e.ambiguous), (codes::TIMEOUT, true), "{e}");

        let reset = bsp(|s| async move { drop(s) }).await;
        let e = send_to(&reset).await.unwrap_err();
        assert_eq!((e.code, e.ambiguous), (codes::BSP_UNAVAILABLE, true), "{e}");

        let huge = bsp(|mut s| async move {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                MAX_RESPONSE_BYTES * 2
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&vec![b' '; MAX_RESPONSE_BYTES * 2]).await;
        })
        .await;
        let e = send_to(&huge).await.unwrap_err();
        assert_eq!((e.code, e.ambiguous), (codes::BAD_RESPONSE, true), "{e}");
    }

    #[tokio::test]
    async fn a_huge_retry_after_is_clamped() {
        let throttled = bsp(|mut s| async move {
            let body = r#"{"error":{"code":130429,"message":"rate"}}"#;
            let head = format!(
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 18446744073709551615\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
        })
        .await;
        let e = send_to(&throttled).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Throttled, "{e}");
        assert_eq!(e.retry_after, Some(MAX_RETRY_AFTER));
    }
}
