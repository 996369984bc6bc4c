//! Parser for WAHA events. Chat ids are `<digits>@c.us` (or `@s.whatsapp.net`);
//! `me.id` is the business's own number. Delivery state comes as `message.ack` with an
//! ack code: -1 ERROR, 0 PENDING, 1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED.

use serde_json::{json, Value};
use switchboard_schemas::{RawWebhook, Status};

use crate::bsp::Bsp;
use crate::common::{customer_id, e164, timestamp_ms, Origin, ParseError, Parsed};

/// Partition key part: the WAHA session.
pub fn account_id(body: &[u8]) -> Result<String, ParseError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("malformed_json", e.to_string()))?;
    Ok(v.get("session")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string())
}

fn ack_status(ack: i64) -> Option<Status> {
    Some(match ack {
        -1 => Status::Failed,
        0 => Status::Accepted,
        1 => Status::Sent,
        2 => Status::Delivered,
        3 => Status::Read,
        4 => Status::Played,
        _ => return None,
    })
}

fn s<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str).filter(|x| !x.is_empty())
}

pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
    let v: Value = serde_json::from_slice(&raw.body)
        .map_err(|e| ParseError::new("bad_shape", format!("not JSON: {e}")))?;
    let event = s(&v, "event").ok_or_else(|| ParseError::new("bad_shape", "no event name"))?;
    if !matches!(
        event,
        "message" | "message.any" | "message.reaction" | "message.ack"
    ) {
        return Err(ParseError::new(
            "unsupported_event",
            format!("WAHA event {event:?} is not a message event"),
        ));
    }
    let p = v
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| ParseError::new("bad_shape", "no payload object"))?;
    let id = s(p, "id").ok_or_else(|| ParseError::new("bad_shape", "payload without id"))?;
    let from_me = p.get("fromMe").and_then(Value::as_bool).unwrap_or(false);
    let me = v.get("me").and_then(|m| s(m, "id"));
    let business = match me {
        Some(m) => e164(m)?,
        None => s(&v, "session")
            .map(str::to_string)
            .ok_or_else(|| ParseError::new("bad_shape", "neither me.id nor session"))?,
    };
    let peer = if from_me { s(p, "to") } else { s(p, "from") };
    let customer = customer_id(peer, None)?;
    let ts = match p.get("timestamp").or_else(|| v.get("timestamp")) {
        Some(t) => timestamp_ms(t)?,
        None => raw.received_at_ms,
    };
    let origin = Origin {
        raw,
        bsp: Bsp::Waha,
        business,
        account: s(&v, "session").map(str::to_string),
    };
    let mut out = Parsed::default();
    match event {
        "message.ack" => {
            let ack = p
                .get("ack")
                .and_then(Value::as_i64)
                .ok_or_else(|| ParseError::new("bad_shape", format!("ack of {id} missing")))?;
            let status = ack_status(ack).ok_or_else(|| {
                ParseError::new(
                    "unknown_status",
                    format!("ack {ack} of {id} is not a WAHA ack code"),
                )
            })?;
            let mut ev = origin.status(id, status, customer, ts);
            if status == Status::Failed {
                ev.error_code = Some("ack_error".into());
                ev.error_title = Some(format!("WAHA ack {}", s(p, "ackName").unwrap_or("ERROR")));
            }
            out.events.push(ev);
        }
        "message" | "message.any" if !from_me => {
            let mut ev = origin.received(id, customer, ts);
            let (kind, content) = content_of(p);
            ev.message_type = Some(kind.into());
            ev.content = Some(content.to_string());
            ev.context_wamid = p
                .get("replyTo")
                .and_then(|r| s(r, "id"))
                .map(str::to_string);
            out.events.push(ev);
        }
        "message.reaction" if !from_me => {
            let mut ev = origin.received(id, customer, ts);
            let r = p.get("reaction").cloned().unwrap_or(Value::Null);
            ev.message_type = Some("reaction".into());
            ev.context_wamid = s(&r, "messageId").map(str::to_string);
            ev.content =
                Some(json!({"emoji": r.get("text"), "message_id": r.get("messageId")}).to_string());
            out.events.push(ev);
        }
        // Our own outgoing messages echoed back, sessions, presence...: not message events.
        "message" | "message.any" | "message.reaction" => {}
        other => {
            return Err(ParseError::new(
                "unsupported_event",
                format!("WAHA event {other:?} is not a message event"),
            ))
        }
    }
    if out.events.is_empty() {
        return Err(ParseError::new(
            "no_events",
            format!("WAHA {event} from this account itself"),
        ));
    }
    Ok(out)
}

fn content_of(p: &Value) -> (&'static str, Value) {
    let data_type = p.get("_data").and_then(|d| s(d, "type"));
    let mime = p.get("media").and_then(|m| s(m, "mimetype")).unwrap_or("");
    let kind = match data_type {
        Some("chat") => "text",
        Some("image") => "image",
        Some("video") => "video",
        Some("audio") => "audio",
        Some("ptt") => "voice",
        Some("document") => "document",
        Some("sticker") => "sticker",
        Some("location") => "location",
        Some("vcard") | Some("multi_vcard") => "contacts",
        Some("buttons_response") | Some("template_button_reply") => "button",
        Some("list_response") => "interactive",
        Some("order") => "order",
        Some(_) => "unknown",
        None if p.get("location").is_some_and(|l| !l.is_null()) => "location",
        None if mime.starts_with("image/") => "image",
        None if mime.starts_with("video/") => "video",
        None if mime.starts_with("audio/") => "audio",
        None if !mime.is_empty() => "document",
        None => "text",
    };
    let mut c = json!({});
    if let Some(b) = s(p, "body") {
        c["body"] = json!(b);
    }
    if let Some(m) = p.get("media").filter(|m| !m.is_null()) {
        c["media"] = m.clone();
    }
    if let Some(l) = p.get("location").filter(|l| !l.is_null()) {
        c["location"] = l.clone();
    }
    if kind == "unknown" {
        c["raw"] = p.clone();
    }
    (kind, c)
}
