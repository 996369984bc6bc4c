//! Parser for Karix webhooks. Status in `notificationAttributes.status` (lower-case),
//! error in its `code` / `reason`, the WhatsApp id in `events.mid`, the customer in
//! `recipient.to`, the business in `sender.from`; time in `events.timestamp`
//! (milliseconds as a string, or seconds: both are accepted).

use serde_json::{json, Value};
use switchboard_schemas::{RawWebhook, Status};

use crate::bsp::Bsp;
use crate::common::{e164, timestamp_ms, Origin, ParseError, Parsed};

fn s<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str).filter(|x| !x.is_empty())
}

fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Partition key part: the business number.
pub fn account_id(body: &[u8]) -> Result<String, ParseError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("malformed_json", e.to_string()))?;
    Ok(at(&v, &["sender", "from"])
        .or_else(|| at(&v, &["eventContent", "message", "to"]))
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string())
}

fn map_status(w: &str) -> Option<Status> {
    Some(match w.to_ascii_lowercase().as_str() {
        "submitted to channel" | "submitted" | "queued" | "accepted" => Status::Accepted,
        "sent" => Status::Sent,
        "delivered" => Status::Delivered,
        "read" => Status::Read,
        "failed" | "undelivered" | "rejected" => Status::Failed,
        "deleted" => Status::Deleted,
        _ => return None,
    })
}

pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
    let v: Value = serde_json::from_slice(&raw.body)
        .map_err(|e| ParseError::new("bad_shape", format!("not JSON: {e}")))?;
    let ev_type = at(&v, &["events", "eventType"])
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::new("bad_shape", "no events.eventType"))?;
    let ts = match at(&v, &["events", "timestamp"]) {
        Some(t) => timestamp_ms(t)?,
        None => raw.received_at_ms,
    };
    // The business is per event (sender or recipient), so is the origin.
    let origin = |business: String| Origin {
        raw,
        bsp: Bsp::Karix,
        business,
        account: None,
    };
    let mut out = Parsed::default();
    match ev_type {
        "DELIVERY EVENTS" => {
            let mid = at(&v, &["events", "mid"])
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| ParseError::new("bad_shape", "delivery event without events.mid"))?;
            let na = v
                .get("notificationAttributes")
                .ok_or_else(|| ParseError::new("bad_shape", "no notificationAttributes"))?;
            let word = s(na, "status")
                .ok_or_else(|| ParseError::new("bad_shape", format!("status of {mid} missing")))?;
            let status = map_status(word).ok_or_else(|| {
                ParseError::new("unknown_status", format!("Karix status {word:?} of {mid}"))
            })?;
            let customer = e164(
                at(&v, &["recipient", "to"])
                    .and_then(Value::as_str)
                    .ok_or_else(|| ParseError::new("missing_customer", "no recipient.to"))?,
            )?;
            let business = match at(&v, &["sender", "from"]).and_then(Value::as_str) {
                Some(b) => e164(b)?,
                None => "karix".to_string(),
            };
            let mut ev = origin(business).status(mid, status, customer, ts);
            if status == Status::Failed {
                ev.error_code = s(na, "code").map(str::to_string);
                ev.error_title = s(na, "reason").map(str::to_string);
            }
            out.events.push(ev);
        }
        "User initiated" => {
            let m = at(&v, &["eventContent", "message"])
                .filter(|m| m.is_object())
                .ok_or_else(|| ParseError::new("bad_shape", "no eventContent.message"))?;
            let id =
                s(m, "id").ok_or_else(|| ParseError::new("bad_shape", "message without id"))?;
            let customer = e164(
                s(m, "from")
                    .ok_or_else(|| ParseError::new("missing_customer", "message without from"))?,
            )?;
            let business = match s(m, "to") {
                Some(b) => e164(b)?,
                None => "karix".to_string(),
            };
            let mut ev = origin(business).received(id, customer, ts);
            let ct = s(m, "contentType")
                .or_else(|| s(m, "messageType"))
                .unwrap_or("unknown")
                .to_ascii_lowercase();
            let (kind, mut content) = match ct.as_str() {
                "text" => ("text", m.get("text").cloned().unwrap_or(json!({}))),
                "button" => ("button", m.get("button").cloned().unwrap_or(json!({}))),
                "interactive" => {
                    let i = m.get("interactive").cloned().unwrap_or(json!({}));
                    let k = ["button_reply", "list_reply", "nfm_reply"]
                        .into_iter()
                        .find(|k| i.get(k).is_some())
                        .unwrap_or("unknown");
                    ("interactive", json!({"kind": k, "reply": i.get(k)}))
                }
                "location" => ("location", m.get("location").cloned().unwrap_or(json!({}))),
                "attachment" | "media" => {
                    let t = s(m, "attachmentType").unwrap_or("").to_ascii_lowercase();
                    let kind = match t.as_str() {
                        "image" => "image",
                        "video" => "video",
                        "audio" => "audio",
                        "voice" => "voice",
                        "sticker" => "sticker",
                        _ => "document",
                    };
                    (
                        kind,
                        m.get("attachment")
                            .or_else(|| m.get(t.as_str()))
                            .cloned()
                            .unwrap_or(json!({})),
                    )
                }
                _ => ("unknown", m.clone()),
            };
            if let (Value::Object(c), Some(name)) = (&mut content, s(m, "profileName")) {
                c.insert("profile_name".into(), json!(name));
            }
            ev.message_type = Some(kind.into());
            ev.content = Some(content.to_string());
            ev.context_wamid = m
                .get("context")
                .and_then(|c| s(c, "id"))
                .map(str::to_string);
            out.events.push(ev);
        }
        other => {
            return Err(ParseError::new(
                "unsupported_event",
                format!("Karix eventType {other:?}"),
            ))
        }
    }
    Ok(out)
}
