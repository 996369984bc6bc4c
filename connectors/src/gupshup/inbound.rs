//! Parser for Gupshup v2 webhooks.
//!
//! Quirks: the envelope names the Gupshup *app*, not the business number, so the app
//! name stands in for `business_number`; a message's status events do not all carry the
//! same id (`enqueued` has Gupshup's id in `id`, later ones have the WhatsApp id in `id`
//! and Gupshup's in `gsId`), so Gupshup's id (`gsId`, else `id`) is the message id that
//! joins them. A `user-event` is a customer's `opted-out` or `opted-in` of the business's
//! notifications: a preference event (category `notifications`, value `stop` or
//! `resume`), which the normalizer turns into a suppression change; its `sandbox-start`,
//! and `billing-event` and `system-event` envelopes, are valid but carry no event: they
//! are acknowledged and ignored.

use serde_json::{json, Value};
use switchboard_schemas::{RawWebhook, Status};

use crate::bsp::Bsp;
use crate::common::{e164, timestamp_ms, Origin, ParseError, Parsed};

fn s<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str).filter(|x| !x.is_empty())
}

/// Partition key part: the Gupshup app.
pub fn account_id(body: &[u8]) -> Result<String, ParseError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("malformed_json", e.to_string()))?;
    Ok(s(&v, "app").unwrap_or("-").to_string())
}

fn map_status(t: &str) -> Option<Status> {
    Some(match t {
        "enqueued" => Status::Accepted,
        "sent" => Status::Sent,
        "delivered" => Status::Delivered,
        "read" => Status::Read,
        "failed" => Status::Failed,
        "deleted" => Status::Deleted,
        _ => return None,
    })
}

/// `{"type": "user-event", "payload": {"phone", "type": "opted-out" | "opted-in" |
/// "sandbox-start"}}`: "an end user opt-out from receiving notification from a business"
/// (Gupshup's documentation) is a stop of the customer's notifications.
fn user_event(raw: &RawWebhook, v: &Value) -> Result<Parsed, ParseError> {
    let p = v
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| ParseError::new("bad_shape", "no payload object"))?;
    let (value, detail) = match s(p, "type") {
        Some("opted-out") => ("stop", "opted-out"),
        Some("opted-in") => ("resume", "opted-in"),
        // sandbox-start (its phone may be the placeholder `callbackSetPhone`).
        Some(_) => return Ok(Parsed::default()),
        None => return Err(ParseError::new("bad_shape", "user-event without type")),
    };
    let app = s(v, "app").ok_or_else(|| ParseError::new("bad_shape", "envelope without app"))?;
    let customer = e164(
        s(p, "phone")
            .ok_or_else(|| ParseError::new("missing_customer", "user-event without phone"))?,
    )?;
    let ts = match v.get("timestamp") {
        Some(t) => timestamp_ms(t)?,
        None => raw.received_at_ms,
    };
    let origin = Origin {
        raw,
        bsp: Bsp::Gupshup,
        business: app.into(),
        account: Some(app.into()),
    };
    Ok(Parsed {
        events: vec![origin.preference(customer, "notifications", value, Some(detail), ts)],
        rejects: Vec::new(),
    })
}

pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
    let v: Value = serde_json::from_slice(&raw.body)
        .map_err(|e| ParseError::new("bad_shape", format!("not JSON: {e}")))?;
    let kind =
        s(&v, "type").ok_or_else(|| ParseError::new("bad_shape", "envelope without type"))?;
    if kind == "user-event" {
        return user_event(raw, &v);
    }
    if matches!(kind, "billing-event" | "system-event") {
        return Ok(Parsed::default());
    }
    if !matches!(kind, "message" | "message-event") {
        return Err(ParseError::new(
            "unsupported_event",
            format!("Gupshup envelope type {kind:?}"),
        ));
    }
    let app = s(&v, "app").ok_or_else(|| ParseError::new("bad_shape", "envelope without app"))?;
    let p = v
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| ParseError::new("bad_shape", "no payload object"))?;
    let inner = p.get("payload").cloned().unwrap_or(Value::Null);
    let envelope_ts = v.get("timestamp").map(timestamp_ms).transpose()?;
    // The envelope names the app, not the business number: the app stands in for both.
    let origin = Origin {
        raw,
        bsp: Bsp::Gupshup,
        business: app.into(),
        account: Some(app.into()),
    };
    let mut out = Parsed::default();
    if kind == "message-event" {
        let t = s(p, "type")
            .ok_or_else(|| ParseError::new("bad_shape", "message-event without type"))?;
        let status = map_status(t).ok_or_else(|| {
            ParseError::new("unknown_status", format!("Gupshup event type {t:?}"))
        })?;
        let id = s(p, "gsId")
            .or_else(|| s(p, "id"))
            .ok_or_else(|| ParseError::new("bad_shape", "message-event without id"))?;
        let customer =
            e164(s(p, "destination").ok_or_else(|| {
                ParseError::new("bad_shape", "message-event without destination")
            })?)?;
        let ts = match inner.get("ts") {
            Some(t) => timestamp_ms(t)?,
            None => envelope_ts.unwrap_or(raw.received_at_ms),
        };
        let mut ev = origin.status(id, status, customer, ts);
        if status == Status::Failed {
            ev.error_code = inner
                .get("code")
                .map(|c| c.to_string().trim_matches('"').to_string());
            ev.error_title = s(&inner, "reason").map(str::to_string);
        }
        out.events.push(ev);
        return Ok(out);
    }
    let id = s(p, "id").ok_or_else(|| ParseError::new("bad_shape", "message without id"))?;
    let from = s(p, "source").or_else(|| p.get("sender").and_then(|x| s(x, "phone")));
    let customer =
        e164(from.ok_or_else(|| ParseError::new("missing_customer", "message without source"))?)?;
    let mut ev = origin.received(id, customer, envelope_ts.unwrap_or(raw.received_at_ms));
    let t = s(p, "type").unwrap_or("unknown");
    let canonical = match t {
        "text" => "text",
        "image" => "image",
        "video" => "video",
        "audio" => "audio",
        "file" => "document",
        "sticker" => "sticker",
        "location" => "location",
        "contact" => "contacts",
        "button_reply" | "list_reply" => "interactive",
        "quick_reply" => "button",
        "order" => "order",
        _ => "unknown",
    };
    let mut content = if canonical == "unknown" {
        p.clone()
    } else {
        inner.clone()
    };
    if let (Value::Object(c), Some(name)) =
        (&mut content, p.get("sender").and_then(|x| s(x, "name")))
    {
        c.insert("profile_name".into(), json!(name));
    }
    if canonical == "interactive" {
        content = json!({"kind": t, "reply": content});
    }
    ev.message_type = Some(canonical.into());
    ev.content = Some(content.to_string());
    ev.context_wamid = p
        .get("context")
        .and_then(|c| s(c, "gsId").or_else(|| s(c, "id")))
        .map(str::to_string);
    out.events.push(ev);
    Ok(out)
}
