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
    pub const WINDOW_CLOSED: &str = "window_closed";
    pub const TEMPLATE_NOT_FOUND: &str = "template_not_found";
    pub const TEMPLATE_NOT_APPROVED: &str = "template_not_approved";
    pub const TEMPLATE_INVALID: &str = "template_params_invalid";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const MEDIA_ERROR: &str = "media_error";
    pub const AUTH_FAILED: &str = "bsp_auth_failed";
    pub const SENDER_BLOCKED: &str = "sender_blocked";
    pub const RATE_LIMITED: &str = "rate_limited";
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

/// Send one message: exactly one HTTP request to the BSP.
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
    let body = resp.bytes().await.map_err(transport_error)?;
    let parsed = match route.bsp {
        Bsp::Meta | Bsp::Dialog360 | Bsp::Aisensy => crate::meta::outbound::response(status, &body),
        Bsp::Gupshup => crate::gupshup::outbound::response(status, &body),
        Bsp::Twilio => crate::twilio::outbound::response(status, &body),
        Bsp::Waha => crate::waha::outbound::response(status, &body),
        Bsp::Karix => crate::karix::outbound::response(status, &body),
    };
    parsed.map_err(|mut e| {
        if e.retry_after.is_none() {
            e.retry_after = retry_after;
        }
        e
    })
}

fn transport_error(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        // The request may have reached the BSP: the router's policy decides.
        let mut err = SendError::new(ErrorKind::Retryable, codes::TIMEOUT, e.to_string());
        err.ambiguous = true;
        err
    } else if e.is_connect() {
        SendError::new(ErrorKind::Retryable, codes::BSP_UNREACHABLE, e.to_string())
    } else {
        let mut err = SendError::new(ErrorKind::Retryable, codes::BSP_UNAVAILABLE, e.to_string());
        err.ambiguous = true;
        err
    }
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
