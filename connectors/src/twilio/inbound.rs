//! Parser for Twilio WhatsApp webhooks. A status callback carries `MessageStatus`
//! (`queued`, `sending`, `sent`, `delivered`, `read`, `failed`, `undelivered`, ...) for
//! an outbound message `From` the business `To` the customer; an incoming message
//! carries `SmsStatus=received`, `Body`, media, location or button fields, `From` the
//! customer. Addresses come as `whatsapp:+E164`. Twilio sends no event timestamp, so
//! the gateway's receive time stands in for it.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use switchboard_schemas::{RawWebhook, Status};

use crate::bsp::Bsp;
use crate::common::{e164, Origin, ParseError, Parsed};

fn form(body: &[u8]) -> Result<HashMap<String, String>, ParseError> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|v| v.into_iter().collect())
        .map_err(|e| ParseError::new("bad_shape", format!("not a form body: {e}")))
}

/// Partition key part: the Twilio account.
pub fn account_id(body: &[u8]) -> Result<String, ParseError> {
    let f = form(body).map_err(|e| ParseError::new("malformed_body", e.detail))?;
    Ok(f.get("AccountSid").cloned().unwrap_or_else(|| "-".into()))
}

fn map_status(s: &str) -> Option<Status> {
    Some(match s {
        "queued" | "accepted" | "scheduled" | "sending" => Status::Accepted,
        "sent" => Status::Sent,
        "delivered" => Status::Delivered,
        "read" => Status::Read,
        "failed" | "undelivered" | "canceled" => Status::Failed,
        _ => return None,
    })
}

pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
    let f = form(&raw.body)?;
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or_else(|| ParseError::new("bad_shape", "no MessageSid"))?;
    let from = get("From").ok_or_else(|| ParseError::new("bad_shape", "no From"))?;
    let to = get("To").ok_or_else(|| ParseError::new("bad_shape", "no To"))?;
    let status_word = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .unwrap_or("received");
    // Twilio sends no event time: the gateway's receive time stands in.
    let origin = |business: String| Origin {
        raw,
        bsp: Bsp::Twilio,
        business,
        account: get("AccountSid").map(str::to_string),
    };
    let mut out = Parsed::default();
    if status_word == "received" || status_word == "receiving" {
        let business = e164(to)?;
        let mut ev = origin(business).received(sid, e164(from)?, raw.received_at_ms);
        let (kind, content) = content_of(&f);
        ev.message_type = Some(kind.into());
        ev.content = Some(content.to_string());
        ev.context_wamid = get("OriginalRepliedMessageSid").map(str::to_string);
        out.events.push(ev);
        return Ok(out);
    }
    let status = map_status(status_word).ok_or_else(|| {
        ParseError::new(
            "unknown_status",
            format!("MessageStatus {status_word:?} of {sid} is not in Twilio's vocabulary"),
        )
    })?;
    let business = e164(from)?;
    let mut ev = origin(business).status(sid, status, e164(to)?, raw.received_at_ms);
    if status == Status::Failed {
        ev.error_code = get("ErrorCode")
            .map(str::to_string)
            .or_else(|| Some(status_word.to_string()));
        ev.error_title = get("ErrorMessage")
            .map(str::to_string)
            .or_else(|| Some(format!("Twilio status {status_word}")));
    }
    out.events.push(ev);
    Ok(out)
}

fn content_of(f: &HashMap<String, String>) -> (&'static str, Value) {
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut c = Map::new();
    if let Some(b) = get("Body") {
        c.insert("body".into(), json!(b));
    }
    if let Some(n) = get("ProfileName") {
        c.insert("profile_name".into(), json!(n));
    }
    let media_n: usize = get("NumMedia").and_then(|n| n.parse().ok()).unwrap_or(0);
    let media: Vec<Value> = (0..media_n.min(10))
        .filter_map(|i| {
            Some(json!({"url": get(&format!("MediaUrl{i}"))?, "content_type": get(&format!("MediaContentType{i}")).unwrap_or("")}))
        })
        .collect();
    let first_type = media
        .first()
        .and_then(|m| m["content_type"].as_str())
        .unwrap_or("")
        .to_string();
    if !media.is_empty() {
        c.insert("media".into(), Value::Array(media));
    }
    let kind = match get("MessageType") {
        Some("text") => "text",
        Some("image") => "image",
        Some("video") => "video",
        Some("audio") => "audio",
        Some("document") => "document",
        Some("sticker") => "sticker",
        Some("location") => "location",
        Some("button") => "button",
        Some("interactive") => "interactive",
        Some("reaction") => "reaction",
        Some("contacts") => "contacts",
        Some(_) => "unknown",
        None if get("Latitude").is_some() => "location",
        None if get("ButtonPayload").is_some() => "button",
        None if first_type.starts_with("image/") => "image",
        None if first_type.starts_with("video/") => "video",
        None if first_type.starts_with("audio/") => "audio",
        None if !first_type.is_empty() => "document",
        None => "text",
    };
    // Twilio's form fields of a Click-to-WhatsApp referral, under Meta's names.
    let referral: Map<String, Value> = [
        ("ReferralSourceType", "source_type"),
        ("ReferralSourceId", "source_id"),
        ("ReferralSourceUrl", "source_url"),
        ("ReferralHeadline", "headline"),
        ("ReferralBody", "body"),
        ("ReferralCtwaClid", "ctwa_clid"),
    ]
    .into_iter()
    .filter_map(|(k, name)| Some((name.to_string(), json!(get(k)?))))
    .collect();
    if !referral.is_empty() {
        c.insert("referral".into(), Value::Object(referral));
    }
    for (k, name) in [
        ("Latitude", "latitude"),
        ("Longitude", "longitude"),
        ("Address", "address"),
        ("Label", "name"),
        ("ButtonText", "text"),
        ("ButtonPayload", "payload"),
    ] {
        if let Some(v) = get(k) {
            let v = v
                .parse::<f64>()
                .ok()
                .filter(|_| k == "Latitude" || k == "Longitude")
                .map(|n| json!(n))
                .unwrap_or_else(|| json!(v));
            c.insert(name.into(), v);
        }
    }
    let kind = if kind == "unknown" {
        c.insert("raw".into(), json!(f));
        kind
    } else {
        kind
    };
    (kind, Value::Object(c))
}
