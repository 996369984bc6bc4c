//! Parser for AiSensy webhooks (both formats, see the module doc).
//!
//! Project API quirks: status words are upper-case (`SENT`, `DELIVERED`, `READ`,
//! `FAILED`); the time of a status is in `<status>_at` (epoch milliseconds, sometimes
//! seconds, sometimes `"0"`); the business number is not in the payload, so the project
//! id stands in for it; `messageId` is the WhatsApp id, `id` AiSensy's own.

use serde_json::{json, Value};
use switchboard_schemas::{RawWebhook, Status};

use crate::bsp::Bsp;
use crate::common::{e164, timestamp_ms, Origin, ParseError, Parsed};

fn s<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str).filter(|x| !x.is_empty())
}

fn is_meta(v: &Value) -> bool {
    v.get("object").is_some() && v.get("entry").is_some()
}

/// Partition key part: the project (or, for forwarded Meta payloads, the phone number id).
pub fn account_id(body: &[u8]) -> Result<String, ParseError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("malformed_json", e.to_string()))?;
    if is_meta(&v) {
        return crate::meta::inbound::account_id(body);
    }
    Ok(s(&v, "project_id").unwrap_or("-").to_string())
}

/// Every account the payload names: its phone number ids in Meta's format, else its
/// project.
pub fn account_ids(body: &[u8]) -> Result<Vec<String>, ParseError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("malformed_json", e.to_string()))?;
    if is_meta(&v) {
        return crate::meta::inbound::account_ids(body);
    }
    Ok(vec![s(&v, "project_id").unwrap_or("-").to_string()])
}

fn map_status(w: &str) -> Option<Status> {
    Some(match w.to_ascii_lowercase().as_str() {
        "queued" | "submitted" | "pending" => Status::Accepted,
        "sent" => Status::Sent,
        "delivered" => Status::Delivered,
        "read" => Status::Read,
        "failed" => Status::Failed,
        "deleted" => Status::Deleted,
        _ => return None,
    })
}

/// A usable epoch timestamp, or None for missing, zero or junk values.
fn when(v: Option<&Value>) -> Option<i64> {
    v.and_then(|t| timestamp_ms(t).ok())
}

pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
    let v: Value = serde_json::from_slice(&raw.body)
        .map_err(|e| ParseError::new("bad_shape", format!("not JSON: {e}")))?;
    if is_meta(&v) {
        return crate::meta::inbound::parse(raw, Bsp::Aisensy);
    }
    let topic = s(&v, "topic").ok_or_else(|| {
        ParseError::new("bad_shape", "neither a Meta payload nor an AiSensy topic")
    })?;
    if !matches!(topic, "message.status.updated" | "message.sender.user") {
        // contact.*, payment.*, order.*, message.created (echoes of every message): not
        // delivery facts for this pipeline.
        return Ok(Parsed::default());
    }
    let project =
        s(&v, "project_id").ok_or_else(|| ParseError::new("bad_shape", "no project_id"))?;
    let m = v
        .get("data")
        .and_then(|d| d.get("message"))
        .filter(|m| m.is_object())
        .ok_or_else(|| ParseError::new("bad_shape", "no data.message"))?;
    let id = s(m, "messageId")
        .or_else(|| s(m, "id"))
        .ok_or_else(|| ParseError::new("bad_shape", "message without id"))?;
    let customer = e164(s(m, "phone_number").ok_or_else(|| {
        ParseError::new(
            "missing_customer",
            format!("message {id} has no phone_number"),
        )
    })?)?;
    // The business number is not in the payload: the project stands in for it.
    let origin = Origin {
        raw,
        bsp: Bsp::Aisensy,
        business: project.into(),
        account: Some(project.into()),
    };
    let mut out = Parsed::default();
    if topic == "message.status.updated" {
        let word = s(m, "status")
            .ok_or_else(|| ParseError::new("bad_shape", format!("status of {id} missing")))?;
        let status = map_status(word).ok_or_else(|| {
            ParseError::new("unknown_status", format!("AiSensy status {word:?} of {id}"))
        })?;
        let ts = when(m.get(format!("{}_at", word.to_ascii_lowercase()).as_str()))
            .unwrap_or(raw.received_at_ms);
        let mut ev = origin.status(id, status, customer, ts);
        if let Some(f) = m
            .get("failureResponse")
            .filter(|f| f.get("code").is_some() || f.get("reason").is_some())
        {
            ev.error_code = f
                .get("code")
                .map(|c| c.to_string().trim_matches('"').to_string());
            ev.error_title = s(f, "reason").map(str::to_string);
        }
        out.events.push(ev);
        return Ok(out);
    }
    let ts = when(m.get("sent_at")).unwrap_or(raw.received_at_ms);
    let mut ev = origin.received(id, customer, ts);
    let kind = match s(m, "message_type").map(str::to_ascii_uppercase).as_deref() {
        Some("TEXT") => "text",
        Some("QUICK_REPLY") => "button",
        Some("IMAGE") => "image",
        Some("VIDEO") => "video",
        Some("AUDIO") => "audio",
        Some("FILE") | Some("DOCUMENT") => "document",
        Some("STICKER") => "sticker",
        Some("LOCATION") => "location",
        Some("CONTACT") | Some("CONTACTS") => "contacts",
        Some("INTERACTIVE") => "interactive",
        _ => "unknown",
    };
    let mut content = if kind == "unknown" {
        m.clone()
    } else {
        m.get("message_content").cloned().unwrap_or(json!({}))
    };
    if let (Value::Object(c), Some(name)) = (&mut content, s(m, "userName")) {
        c.insert("profile_name".into(), json!(name));
    }
    ev.message_type = Some(kind.into());
    ev.content = Some(content.to_string());
    ev.context_wamid = m
        .get("context")
        .and_then(|c| s(c, "id"))
        .map(str::to_string);
    out.events.push(ev);
    Ok(out)
}
