//! Parser for Cloud API webhook payloads: `entry[].changes[].value` with `statuses[]`
//! and `messages[]`, several per request. Status vocabulary: `sent`, `delivered`,
//! `read`, `played` (voice), `failed`, `deleted`; no `accepted` (that comes from the
//! send API's answer, via the router).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use switchboard_schemas::{Event, RawWebhook, Status};

use crate::bsp::Bsp;
use crate::common::{customer_id, e164, timestamp_ms, Origin, ParseError, Parsed};

#[derive(Deserialize)]
struct Envelope {
    object: Option<String>,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: Option<String>,
    value: Option<ChangeValue>,
}

#[derive(Deserialize, Default)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<Value>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    contacts: Vec<Value>,
    #[serde(default)]
    user_preferences: Vec<Value>,
}

#[derive(Deserialize, Clone)]
struct Metadata {
    display_phone_number: Option<String>,
    phone_number_id: Option<String>,
}

/// Only what routing needs: the first `phone_number_id` in the payload.
pub fn account_id(body: &[u8]) -> Result<String, ParseError> {
    Ok(account_ids(body)?
        .into_iter()
        .next()
        .unwrap_or_else(|| "-".into()))
}

/// Every `phone_number_id` in the payload, in order (one webhook may batch several
/// entries); empty when none names one (template or account updates).
pub fn account_ids(body: &[u8]) -> Result<Vec<String>, ParseError> {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        entry: Vec<En>,
    }
    #[derive(Deserialize)]
    struct En {
        #[serde(default)]
        changes: Vec<Ch>,
    }
    #[derive(Deserialize)]
    struct Ch {
        value: Option<V>,
    }
    #[derive(Deserialize)]
    struct V {
        metadata: Option<Metadata>,
    }
    let e: E = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("malformed_json", e.to_string()))?;
    Ok(e.entry
        .iter()
        .flat_map(|en| en.changes.iter())
        .filter_map(|c| c.value.as_ref()?.metadata.as_ref()?.phone_number_id.clone())
        .collect())
}

pub fn parse(raw: &RawWebhook, bsp: Bsp) -> Result<Parsed, ParseError> {
    let env: Envelope = serde_json::from_slice(&raw.body)
        .map_err(|e| ParseError::new("bad_shape", format!("not a Cloud API webhook: {e}")))?;
    if let Some(o) = &env.object {
        if o != "whatsapp_business_account" {
            return Err(ParseError::new(
                "bad_shape",
                format!("object {o:?} is not whatsapp_business_account"),
            ));
        }
    }
    let mut out = Parsed::default();
    for change in env.entry.into_iter().flat_map(|e| e.changes) {
        if change
            .field
            .as_deref()
            .is_some_and(|f| f != "messages" && f != "user_preferences")
        {
            // Account updates, template status and the like are not message events.
            continue;
        }
        let Some(value) = change.value else { continue };
        let Some(meta) = value.metadata.clone() else {
            out.rejects
                .push(ParseError::new("bad_shape", "change without metadata"));
            continue;
        };
        let business = match meta.display_phone_number.as_deref().map(e164) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                out.rejects.push(e);
                continue;
            }
            None => match &meta.phone_number_id {
                Some(id) => id.clone(),
                None => {
                    out.rejects.push(ParseError::new(
                        "bad_shape",
                        "metadata names no business number",
                    ));
                    continue;
                }
            },
        };
        let origin = Origin {
            raw,
            bsp,
            business,
            account: meta.phone_number_id.clone(),
        };
        for s in &value.statuses {
            match status_event(&origin, s) {
                Ok(ev) => out.events.push(ev),
                Err(e) => out.rejects.push(e),
            }
        }
        for m in &value.messages {
            match message_event(&origin, m, &value.contacts) {
                Ok(ev) => out.events.push(ev),
                Err(e) => out.rejects.push(e),
            }
        }
        for p in &value.user_preferences {
            match preference_event(&origin, p) {
                Ok(ev) => out.events.push(ev),
                Err(e) => out.rejects.push(e),
            }
        }
    }
    if out.events.is_empty() && out.rejects.is_empty() {
        return Err(ParseError::new(
            "no_events",
            "the webhook carries no status or message",
        ));
    }
    Ok(out)
}

fn str_field<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str)
}

fn map_status(s: &str) -> Option<Status> {
    Some(match s {
        "sent" => Status::Sent,
        "delivered" => Status::Delivered,
        "read" => Status::Read,
        "played" => Status::Played,
        "failed" => Status::Failed,
        "deleted" => Status::Deleted,
        _ => return None,
    })
}

fn status_event(o: &Origin<'_>, s: &Value) -> Result<Event, ParseError> {
    let wamid = str_field(s, "id")
        .filter(|w| !w.is_empty())
        .ok_or_else(|| ParseError::new("bad_shape", "status without id"))?;
    let raw_status = str_field(s, "status")
        .ok_or_else(|| ParseError::new("bad_shape", format!("status of {wamid} has no status")))?;
    let status = map_status(raw_status).ok_or_else(|| {
        ParseError::new(
            "unknown_status",
            format!("status {raw_status:?} of {wamid} is not in Meta's vocabulary"),
        )
    })?;
    let ts = timestamp_ms(s.get("timestamp").unwrap_or(&Value::Null))?;
    let customer = customer_id(
        str_field(s, "recipient_id"),
        str_field(s, "recipient_user_id"),
    )?;
    let mut ev = o.status(wamid, status, customer, ts);
    if let Some(conv) = s.get("conversation") {
        ev.conversation_id = str_field(conv, "id").map(str::to_string);
        ev.conversation_category = conv
            .get("origin")
            .and_then(|o| str_field(o, "type"))
            .map(str::to_string);
    }
    if let Some(p) = s.get("pricing") {
        ev.pricing_category = str_field(p, "category").map(str::to_string);
        ev.pricing_model = str_field(p, "pricing_model").map(str::to_string);
        ev.pricing_type = str_field(p, "type").map(str::to_string);
        ev.billable = p.get("billable").and_then(Value::as_bool);
    }
    if let Some(err) = s
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        ev.error_code = err.get("code").map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        ev.error_title = str_field(err, "title")
            .or_else(|| str_field(err, "message"))
            .map(str::to_string);
        ev.error_detail = err
            .get("error_data")
            .and_then(|d| str_field(d, "details"))
            .or_else(|| str_field(err, "message"))
            .map(str::to_string);
    }
    Ok(ev)
}

/// A `user_preferences` item: `{wa_id, detail, category: "marketing_messages", value:
/// "stop" | "resume", timestamp}`.
fn preference_event(o: &Origin<'_>, p: &Value) -> Result<Event, ParseError> {
    let customer = customer_id(str_field(p, "wa_id"), str_field(p, "user_id"))?;
    let category = str_field(p, "category")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ParseError::new("bad_shape", "user preference without category"))?;
    let value = match str_field(p, "value") {
        Some(v @ ("stop" | "resume")) => v,
        other => {
            return Err(ParseError::new(
                "bad_shape",
                format!("user preference value {other:?} is neither stop nor resume"),
            ))
        }
    };
    let ts = timestamp_ms(p.get("timestamp").unwrap_or(&Value::Null))?;
    Ok(o.preference(customer, category, value, str_field(p, "detail"), ts))
}

fn message_event(o: &Origin<'_>, m: &Value, contacts: &[Value]) -> Result<Event, ParseError> {
    let wamid = str_field(m, "id")
        .filter(|w| !w.is_empty())
        .ok_or_else(|| ParseError::new("bad_shape", "message without id"))?;
    let ts = timestamp_ms(m.get("timestamp").unwrap_or(&Value::Null))?;
    let from = str_field(m, "from");
    let from_user = str_field(m, "from_user_id")
        .or_else(|| contacts.first().and_then(|c| str_field(c, "user_id")));
    let customer = customer_id(from, from_user)?;
    let mut ev = o.received(wamid, customer, ts);
    let (kind, content) = content_of(m);
    ev.message_type = Some(kind.into());
    let mut content = content;
    if let Some(name) = contacts
        .first()
        .and_then(|c| c.get("profile"))
        .and_then(|p| str_field(p, "name"))
    {
        if let Value::Object(o) = &mut content {
            o.insert("profile_name".into(), json!(name));
        }
    }
    // A message from a Click-to-WhatsApp ad or a Page's call to action: it opens a
    // free entry point window (db::conversations).
    if let (Some(r @ Value::Object(_)), Value::Object(o)) = (m.get("referral"), &mut content) {
        o.insert("referral".into(), r.clone());
    }
    ev.content = Some(content.to_string());
    ev.context_wamid = m
        .get("context")
        .and_then(|c| str_field(c, "id"))
        .or_else(|| m.get("reaction").and_then(|r| str_field(r, "message_id")))
        .map(str::to_string);
    Ok(ev)
}

/// The canonical message type and content of an inbound message. Known types keep their
/// documented object; anything else is kept whole under `unknown`.
fn content_of(m: &Value) -> (&'static str, Value) {
    let t = str_field(m, "type").unwrap_or("unknown");
    let part = |k: &str| m.get(k).cloned().unwrap_or(Value::Object(Map::new()));
    match t {
        "text" => ("text", part("text")),
        "image" => ("image", part("image")),
        "video" => ("video", part("video")),
        "document" => ("document", part("document")),
        "sticker" => ("sticker", part("sticker")),
        "audio" => {
            let a = part("audio");
            let voice = a.get("voice").and_then(Value::as_bool).unwrap_or(false);
            (if voice { "voice" } else { "audio" }, a)
        }
        "voice" => ("voice", part("voice")),
        "location" => ("location", part("location")),
        "contacts" => (
            "contacts",
            json!({ "contacts": m.get("contacts").cloned().unwrap_or(Value::Array(vec![])) }),
        ),
        "interactive" => {
            let i = part("interactive");
            let kind = str_field(&i, "type").unwrap_or("unknown").to_string();
            let reply = i.get(&kind).cloned().unwrap_or(Value::Null);
            ("interactive", json!({ "kind": kind, "reply": reply }))
        }
        "button" => ("button", part("button")),
        "reaction" => ("reaction", part("reaction")),
        "order" => ("order", part("order")),
        "system" => ("system", part("system")),
        _ => ("unknown", m.clone()),
    }
}
