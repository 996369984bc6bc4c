//! Sending through Gupshup's WhatsApp API (docs.gupshup.io/docs/session-messages).
//!
//! `POST {base}/wa/api/v1/msg` (session messages) or `{base}/wa/api/v1/template/msg`
//! (templates), form-encoded, header `apikey`; fields `channel=whatsapp`, `source`,
//! `destination` (digits), `src.name` (the app name, our account id) and `message` (a JSON
//! string in Gupshup's own shapes). Templates go by Gupshup template id with positional
//! `params`: the canonical `template.name` carries that id, and the body's text
//! parameters become `params` in order.
//! Success: 2xx `{"status":"submitted","messageId":"<uuid>"}`; the uuid is what
//! Gupshup's status webhooks carry as `gsId`. Errors: `{"status":"error","message":...}`.

use serde_json::{json, Value};

use crate::send::{
    by_http_status, codes, credential, digits, snippet, Accepted, ErrorKind, Outbound, Route,
    SendError,
};

pub const TYPES: [&str; 10] = [
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "interactive",
    "reaction",
];

fn unsupported(what: &str) -> SendError {
    SendError::new(
        ErrorKind::Permanent,
        codes::UNSUPPORTED,
        format!("Gupshup's API has no {what}"),
    )
}

/// Gupshup's `message` JSON for a canonical session message.
pub fn message(m: &Value) -> Result<Value, SendError> {
    let t = m["type"].as_str().unwrap_or_default();
    let o = &m[t];
    let link = |o: &Value| o.get("link").or_else(|| o.get("id")).cloned();
    let mut out = match t {
        "text" => {
            json!({"type": "text", "text": o["body"], "previewUrl": o.get("preview_url").and_then(Value::as_bool).unwrap_or(false)})
        }
        "image" => {
            json!({"type": "image", "originalUrl": link(o), "previewUrl": link(o), "caption": o.get("caption")})
        }
        "document" => {
            json!({"type": "file", "url": link(o), "filename": o.get("filename"), "caption": o.get("caption")})
        }
        "audio" => json!({"type": "audio", "url": link(o)}),
        "video" => json!({"type": "video", "url": link(o), "caption": o.get("caption")}),
        "sticker" => json!({"type": "sticker", "url": link(o)}),
        "location" => {
            json!({"type": "location", "latitude": o["latitude"], "longitude": o["longitude"], "name": o.get("name"), "address": o.get("address")})
        }
        "interactive" => match o["type"].as_str() {
            Some("button") => json!({
                "type": "quick_reply",
                "content": {"type": "text", "text": o["body"]["text"], "caption": o.pointer("/footer/text")},
                "options": o["action"]["buttons"].as_array().into_iter().flatten()
                    .map(|b| json!({"type": "text", "title": b["reply"]["title"], "postbackText": b["reply"]["id"]}))
                    .collect::<Vec<_>>(),
            }),
            Some("list") => json!({
                "type": "list",
                "body": o["body"]["text"],
                "globalButtons": [{"type": "text", "title": o["action"]["button"]}],
                "items": o["action"]["sections"].as_array().into_iter().flatten()
                    .map(|s| json!({"title": s.get("title"), "options": s["rows"].as_array().into_iter().flatten()
                        .map(|r| json!({"type": "text", "title": r["title"], "description": r.get("description"), "postbackText": r["id"]}))
                        .collect::<Vec<_>>()}))
                    .collect::<Vec<_>>(),
            }),
            _ => return Err(unsupported("interactive message of this type")),
        },
        "reaction" => return Err(unsupported("reaction message in its v1 API")),
        other => return Err(unsupported(&format!("{other} message"))),
    };
    if let (Some(ctx), Some(obj)) = (m.pointer("/context/message_id"), out.as_object_mut()) {
        obj.insert("context".into(), json!({"msgId": ctx}));
    }
    Ok(out)
}

/// Positional template params: the body component's text parameters, in order.
pub fn template_params(m: &Value) -> Vec<Value> {
    m.pointer("/template/components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "body")
        .flat_map(|c| c["parameters"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.get("text").cloned())
        .collect()
}

pub fn request(
    http: &reqwest::Client,
    route: &Route<'_>,
    msg: &Outbound<'_>,
) -> Result<reqwest::RequestBuilder, SendError> {
    let base = route.base_url.trim_end_matches('/');
    let destination = if msg.to.starts_with('+') {
        digits(msg.to)
    } else {
        msg.to
    };
    let mut form = vec![
        ("channel", "whatsapp".to_string()),
        ("source", digits(msg.from).to_string()),
        ("destination", destination.to_string()),
        ("src.name", route.account_id.to_string()),
    ];
    let url = if msg.message["type"] == "template" {
        let id = msg
            .message
            .pointer("/template/name")
            .cloned()
            .unwrap_or_default();
        form.push((
            "template",
            json!({"id": id, "params": template_params(msg.message)}).to_string(),
        ));
        format!("{base}/wa/api/v1/template/msg")
    } else {
        form.push(("message", message(msg.message)?.to_string()));
        format!("{base}/wa/api/v1/msg")
    };
    Ok(http
        .post(url)
        .header("apikey", credential(route, "api_key")?)
        .form(&form))
}

pub fn response(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let state = v.get("status").and_then(Value::as_str);
    if (200..300).contains(&status) && matches!(state, Some("submitted" | "success")) {
        if let Some(id) = v.get("messageId").and_then(Value::as_str) {
            return Ok(Accepted {
                bsp_message_id: id.to_string(),
            });
        }
    }
    let text = v
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| snippet(body));
    if (200..300).contains(&status) && state != Some("error") {
        return Err(SendError::new(
            ErrorKind::Permanent,
            codes::BAD_RESPONSE,
            format!("2xx without messageId: {}", snippet(body)),
        ));
    }
    let lower = text.to_ascii_lowercase();
    let err = if status == 429 || lower.contains("too many") {
        SendError::new(ErrorKind::Throttled, codes::RATE_LIMITED, text)
    } else if lower.contains("invalid destination") {
        SendError::new(ErrorKind::Permanent, codes::INVALID_RECIPIENT, text)
    } else if lower.contains("template") {
        SendError::new(ErrorKind::Permanent, codes::TEMPLATE_INVALID, text)
    } else if status == 200 || status == 202 {
        SendError::new(ErrorKind::Permanent, codes::INVALID_REQUEST, text)
    } else {
        by_http_status(status, text)
    };
    Err(err.with_bsp_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_messages_and_answers() {
        let m = json!({"type":"document","document":{"link":"https://x.test/a.pdf","filename":"a.pdf"},"context":{"message_id":"gs-1"}});
        let g = message(&m).unwrap();
        assert_eq!(g["type"], "file");
        assert_eq!(g["url"], "https://x.test/a.pdf");
        assert_eq!(g["context"]["msgId"], "gs-1");
        let t = json!({"type":"template","template":{"name":"tpl-uuid","language":{"code":"en"},
            "components":[{"type":"body","parameters":[{"type":"text","text":"Ann"},{"type":"text","text":"42"}]}]}});
        assert_eq!(template_params(&t), vec![json!("Ann"), json!("42")]);
        let ok = br#"{"status":"submitted","messageId":"ee4a68a0-1203-4c85-8dc3-49d0b3226a35"}"#;
        assert_eq!(
            response(202, ok).unwrap().bsp_message_id,
            "ee4a68a0-1203-4c85-8dc3-49d0b3226a35"
        );
        let bad = br#"{"status":"error","message":"Invalid Destination"}"#;
        assert_eq!(
            response(400, bad).unwrap_err().code,
            codes::INVALID_RECIPIENT
        );
        let slow = br#"{"status":"error","message":"Too Many Requests"}"#;
        assert_eq!(response(429, slow).unwrap_err().kind, ErrorKind::Throttled);
        let auth = br#"{"status":"error","message":"Authentication Failed"}"#;
        assert_eq!(response(401, auth).unwrap_err().code, codes::AUTH_FAILED);
    }
}
