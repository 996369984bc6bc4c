//! Sending through WAHA, the self-hosted WhatsApp HTTP API (waha.devlike.pro/docs/how-to/send-messages).
//!
//! JSON to `{base}/api/sendText`, `sendImage`, `sendFile`, `sendVideo`, `sendVoice`,
//! `sendLocation`, or `PUT {base}/api/reaction`; header `X-Api-Key`; every body names the
//! `session` (our account id) and `chatId` (`<digits>@c.us`). WAHA drives a WhatsApp Web
//! session, so it has no templates and no 24-hour window. Success is 201 with the sent
//! message, whose id sits at `id` (string or `_serialized`), `_data.id._serialized` or
//! `key.id` depending on the engine.

use serde_json::{json, Value};

use crate::send::{
    by_http_status, codes, credential, digits, snippet, Accepted, ErrorKind, Outbound, Route,
    SendError,
};

pub const TYPES: [&str; 7] = [
    "text", "image", "audio", "video", "document", "location", "reaction",
];

/// `(method is PUT, path, body)` for a canonical message.
pub fn call(session: &str, msg: &Outbound<'_>) -> Result<(bool, &'static str, Value), SendError> {
    let chat = format!("{}@c.us", digits(msg.to));
    let m = msg.message;
    let t = m["type"].as_str().unwrap_or_default();
    let o = &m[t];
    let file = |o: &Value| -> Result<Value, SendError> {
        let url = o.get("link").and_then(Value::as_str).ok_or_else(|| {
            SendError::new(
                ErrorKind::Permanent,
                codes::UNSUPPORTED,
                "WAHA sends media by URL only",
            )
        })?;
        let mut f = json!({"url": url});
        if let Some(n) = o.get("filename") {
            f["filename"] = n.clone();
        }
        Ok(f)
    };
    let (put, path, mut body) = match t {
        "text" => (false, "/api/sendText", json!({"text": o["body"]})),
        "image" => (
            false,
            "/api/sendImage",
            json!({"file": file(o)?, "caption": o.get("caption")}),
        ),
        "document" => (
            false,
            "/api/sendFile",
            json!({"file": file(o)?, "caption": o.get("caption")}),
        ),
        "video" => (
            false,
            "/api/sendVideo",
            json!({"file": file(o)?, "caption": o.get("caption")}),
        ),
        "audio" => (false, "/api/sendVoice", json!({"file": file(o)?})),
        "location" => (
            false,
            "/api/sendLocation",
            json!({"latitude": o["latitude"], "longitude": o["longitude"], "title": o.get("name")}),
        ),
        "reaction" => (
            true,
            "/api/reaction",
            json!({"messageId": o["message_id"], "reaction": o["emoji"]}),
        ),
        other => {
            return Err(SendError::new(
                ErrorKind::Permanent,
                codes::UNSUPPORTED,
                format!("WAHA cannot send {other} messages (no official API behind it)"),
            ))
        }
    };
    body["session"] = json!(session);
    if t != "reaction" {
        body["chatId"] = json!(chat);
        if let Some(ctx) = m.pointer("/context/message_id") {
            body["reply_to"] = ctx.clone();
        }
    }
    Ok((put, path, body))
}

pub fn request(
    http: &reqwest::Client,
    route: &Route<'_>,
    msg: &Outbound<'_>,
) -> Result<reqwest::RequestBuilder, SendError> {
    let base = route.base_url.trim_end_matches('/');
    let (put, path, body) = call(route.account_id, msg)?;
    let url = format!("{base}{path}");
    let req = if put { http.put(url) } else { http.post(url) };
    Ok(req
        .header("X-Api-Key", credential(route, "api_key")?)
        .json(&body))
}

pub fn response(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let id = v
            .get("id")
            .and_then(|i| {
                i.as_str()
                    .or_else(|| i.get("_serialized").and_then(Value::as_str))
            })
            .or_else(|| v.pointer("/_data/id/_serialized").and_then(Value::as_str))
            .or_else(|| v.pointer("/key/id").and_then(Value::as_str));
        return id
            .map(|id| Accepted {
                bsp_message_id: id.to_string(),
            })
            .ok_or_else(|| {
                // Some WAHA releases answer 201 with an empty body: the message may well be
                // out, but without an id nothing can ever be joined to it.
                let mut e = SendError::new(
                    ErrorKind::Permanent,
                    codes::BAD_RESPONSE,
                    format!("2xx without a message id: {}", snippet(body)),
                );
                e.ambiguous = true;
                e
            });
    }
    let text = v
        .get("message")
        .map(|m| {
            m.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| m.to_string())
        })
        .unwrap_or_else(|| snippet(body));
    Err(by_http_status(status, text).with_bsp_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_answers() {
        let m =
            json!({"type":"text","text":{"body":"hi"},"context":{"message_id":"false_1@c.us_AAA"}});
        let (put, path, b) = call(
            "default",
            &Outbound {
                message_id: "m",
                from: "+1",
                to: "+4915112345678",
                message: &m,
            },
        )
        .unwrap();
        assert!(!put);
        assert_eq!(path, "/api/sendText");
        assert_eq!(b["chatId"], "4915112345678@c.us");
        assert_eq!(b["reply_to"], "false_1@c.us_AAA");
        let documented = br#"{"id":"true_4915112345678@c.us_3EB0A","ack":0}"#;
        assert_eq!(
            response(201, documented).unwrap().bsp_message_id,
            "true_4915112345678@c.us_3EB0A"
        );
        let noweb =
            br#"{"key":{"remoteJid":"4915112345678@s.whatsapp.net","fromMe":true,"id":"3EB0B"}}"#;
        assert_eq!(response(201, noweb).unwrap().bsp_message_id, "3EB0B");
        assert!(response(201, b"").unwrap_err().ambiguous);
        assert_eq!(
            response(401, br#"{"message":"Unauthorized","statusCode":401}"#)
                .unwrap_err()
                .code,
            codes::AUTH_FAILED
        );
    }
}
