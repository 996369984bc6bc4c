//! What every connector shares: the request view, errors, and small normalizers for the
//! quirks every BSP has (E.164 numbers, second vs millisecond timestamps).

use std::collections::HashMap;

use switchboard_schemas::{
    inbound_event_id, preference_event_id, status_event_id, Event, EventType, RawWebhook, Status,
};

use crate::bsp::Bsp;

/// The parts of an HTTP request a signature check needs.
pub struct WebhookRequest<'a> {
    /// Header names lower-cased.
    pub headers: &'a HashMap<String, String>,
    pub body: &'a [u8],
    /// The URL the BSP called, as the BSP saw it (Twilio signs it).
    pub url: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header {0}")]
    Missing(&'static str),
    #[error("signature header {0} is malformed")]
    Malformed(&'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("no secret configured for this BSP; refusing unsigned webhooks")]
    NotConfigured,
}

/// Shared-token check for BSPs that do not sign webhooks (360dialog, Gupshup, Aisensy,
/// Karix): the operator puts a random token in the webhook URL (`?token=`) or, where the
/// BSP allows custom headers, in `X-Switchboard-Token`.
pub fn verify_shared_token(expected: &str, req: &WebhookRequest<'_>) -> Result<(), SignatureError> {
    const HEADER: &str = "x-switchboard-token";
    if expected.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let from_query = req.url.split_once('?').and_then(|(_, q)| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v)
    });
    let got = req
        .headers
        .get(HEADER)
        .map(String::as_str)
        .or(from_query)
        .ok_or(SignatureError::Missing(HEADER))?;
    if constant_time_eq(got.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Check a hex-encoded HMAC (`M` = `Hmac<Sha256>`, `Hmac<Sha512>`, ...) of `body`, in
/// constant time. `header` names the header the value came from, for the error.
pub(crate) fn verify_hex_hmac<M: hmac::Mac + hmac::digest::KeyInit>(
    key: &str,
    header: &'static str,
    value: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    let sig = hex::decode(value.trim()).map_err(|_| SignatureError::Malformed(header))?;
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key.as_bytes())
        .map_err(|_| SignatureError::NotConfigured)?;
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// The hex HMAC of `body` (what a BSP would send; the simulator and tests sign with it).
pub(crate) fn hex_hmac<M: hmac::Mac + hmac::digest::KeyInit>(key: &str, body: &[u8]) -> String {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a payload could not be turned into events. `reason` is a stable code (it ends up
/// in DLQ records and metrics labels), `detail` is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct ParseError {
    pub reason: &'static str,
    pub detail: String,
}

impl ParseError {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The events of one webhook, and what in it could not be used. A webhook with some
/// unusable items still yields its good events; the rejects send the raw record to the
/// DLQ as well, so nothing is dropped silently.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub rejects: Vec<ParseError>,
}

/// Where the events of one webhook come from: the raw record, the BSP, the business.
/// Every parser builds its events through it, so ids, time stamps and request ids are
/// filled the same way for every BSP.
pub(crate) struct Origin<'a> {
    pub raw: &'a RawWebhook,
    pub bsp: Bsp,
    pub business: String,
    pub account: Option<String>,
}

impl Origin<'_> {
    /// A status event; its id is derived from (BSP, message id, canonical status).
    pub fn status(
        &self,
        wamid: &str,
        status: Status,
        customer: String,
        occurred_at_ms: i64,
    ) -> Event {
        let id = status_event_id(self.bsp.slug(), wamid, status);
        let mut ev = self.event(id, EventType::Status, wamid, customer, occurred_at_ms);
        ev.status = Some(status.as_str().into());
        ev
    }

    /// An inbound message event; its id is derived from (BSP, message id).
    pub fn received(&self, wamid: &str, customer: String, occurred_at_ms: i64) -> Event {
        let id = inbound_event_id(self.bsp.slug(), wamid);
        self.event(id, EventType::Received, wamid, customer, occurred_at_ms)
    }

    /// A customer's preference change (`stop` / `resume` of a category of messages); its
    /// id is derived from who, what and the BSP's time of it.
    pub fn preference(
        &self,
        customer: String,
        category: &str,
        value: &str,
        detail: Option<&str>,
        occurred_at_ms: i64,
    ) -> Event {
        let id = preference_event_id(
            self.bsp.slug(),
            &self.business,
            &customer,
            category,
            value,
            occurred_at_ms,
        );
        let mut ev = self.event(id, EventType::Preference, "", customer, occurred_at_ms);
        ev.content = Some(
            serde_json::json!({
                "business_number": self.business, "customer_id": ev.customer_id,
                "category": category, "value": value, "detail": detail,
            })
            .to_string(),
        );
        ev
    }

    fn event(
        &self,
        event_id: String,
        kind: EventType,
        wamid: &str,
        customer: String,
        occurred_at_ms: i64,
    ) -> Event {
        Event {
            event_id,
            event_type: kind.as_str().into(),
            bsp: self.bsp.slug().into(),
            business_number: self.business.clone(),
            business_account_id: self.account.clone(),
            customer_id: customer,
            wamid: wamid.into(),
            occurred_at_ms,
            received_at_ms: self.raw.received_at_ms,
            request_id: self.raw.request_id.clone(),
            ..Event::default()
        }
    }
}

/// Normalize a phone number to E.164 (`+` and 7–15 digits). Accepts BSP spellings:
/// `16505551234`, `+16505551234`, `whatsapp:+16505551234`, `16505551234@c.us`.
pub fn e164(raw: &str) -> Result<String, ParseError> {
    let s = raw.trim();
    let s = s.strip_prefix("whatsapp:").unwrap_or(s);
    let s = s.split('@').next().unwrap_or(s);
    let digits = s.strip_prefix('+').unwrap_or(s);
    if (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
    {
        Ok(format!("+{digits}"))
    } else {
        Err(ParseError::new(
            "bad_phone_number",
            format!("{raw:?} is not an E.164 phone number"),
        ))
    }
}

/// A customer identity: an E.164 number when there is one, else a business-scoped user
/// id kept as the BSP sent it.
pub fn customer_id(phone: Option<&str>, user_id: Option<&str>) -> Result<String, ParseError> {
    match (phone, user_id) {
        (Some(p), _) if !p.is_empty() => e164(p),
        (_, Some(u)) if !u.is_empty() => Ok(u.to_string()),
        _ => Err(ParseError::new(
            "missing_customer",
            "neither a phone number nor a user id identifies the customer",
        )),
    }
}

/// BSP timestamps: seconds or milliseconds since the epoch, as number or string.
pub fn timestamp_ms(v: &serde_json::Value) -> Result<i64, ParseError> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
    .ok_or_else(|| ParseError::new("bad_timestamp", format!("{v} is not a Unix timestamp")))?;
    // 10^11 s is the year 5138; anything larger is already milliseconds.
    Ok(if n < 100_000_000_000 { n * 1000 } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn e164_accepts_bsp_spellings_and_rejects_junk() {
        for s in [
            "16505551234",
            "+16505551234",
            "whatsapp:+16505551234",
            "16505551234@c.us",
        ] {
            assert_eq!(e164(s).unwrap(), "+16505551234", "{s}");
        }
        for s in [
            "",
            "+",
            "123",
            "+0123456789",
            "abc12345678",
            "1234567890123456",
        ] {
            assert_eq!(e164(s).unwrap_err().reason, "bad_phone_number", "{s}");
        }
    }

    #[test]
    fn shared_token_from_header_or_query() {
        let mut h = HashMap::new();
        let r = |h: &HashMap<String, String>, url: &'static str| -> Result<(), SignatureError> {
            verify_shared_token(
                "tok",
                &WebhookRequest {
                    headers: h,
                    body: b"",
                    url,
                },
            )
        };
        assert_eq!(r(&h, "/webhooks/gupshup?token=tok"), Ok(()));
        assert_eq!(r(&h, "/webhooks/gupshup?a=1&token=tok"), Ok(()));
        assert_eq!(
            r(&h, "/webhooks/gupshup?token=toc"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            r(&h, "/webhooks/gupshup"),
            Err(SignatureError::Missing("x-switchboard-token"))
        );
        h.insert("x-switchboard-token".into(), "tok".into());
        assert_eq!(r(&h, "/webhooks/gupshup"), Ok(()));
        assert_eq!(
            verify_shared_token(
                "",
                &WebhookRequest {
                    headers: &h,
                    body: b"",
                    url: ""
                }
            ),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn timestamps_in_seconds_or_millis() {
        assert_eq!(
            timestamp_ms(&json!("1603086313")).unwrap(),
            1_603_086_313_000
        );
        assert_eq!(timestamp_ms(&json!(1603086313)).unwrap(), 1_603_086_313_000);
        assert_eq!(
            timestamp_ms(&json!(1603086313123_i64)).unwrap(),
            1_603_086_313_123
        );
        assert!(timestamp_ms(&json!("soon")).is_err());
        assert!(timestamp_ms(&json!(-5)).is_err());
    }
}
