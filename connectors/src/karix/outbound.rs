//! Sending through Karix (Tanla) RCM: `POST {base}/services/rcm/sendMessage`, header
//! `Authentication: Bearer <token>` (sic, not `Authorization`), body
//! `{"message": {"channel": "WABA", "content", "recipient", "sender"}, "metaData"}`.
//! Content types TEXT, TEMPLATE (Karix `templateId` = canonical `template.name`, 0-indexed
//! `parameterValues`), ATTACHMENT and INTERACTIVE (Meta's interactive object).
//!
//! No official reference was reachable: the request follows several public integrations;
//! the answer's message id field (`mid`, the id Karix's delivery events carry as
//! `events.mid`) is assumed. Verify against a real account before relying on it.

use serde_json::{json, Map, Value};

use crate::send::{
    by_http_status, codes, credential, digits, snippet, Accepted, ErrorKind, Outbound, Route,
    SendError,
};

pub const TYPES: [&str; 7] = [
    "text",
    "template",
    "image",
    "video",
    "audio",
    "document",
    "interactive",
];

pub fn body(msg: &Outbound<'_>) -> Result<Value, SendError> {
    let m = msg.message;
    let t = m["type"].as_str().unwrap_or_default();
    let o = &m[t];
    let content = match t {
        "text" => {
            json!({"preview_url": o.get("preview_url").and_then(Value::as_bool).unwrap_or(false), "type": "TEXT", "text": o["body"]})
        }
        "template" => {
            let values: Map<String, Value> = crate::gupshup::outbound::template_params(m)
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect();
            json!({"preview_url": false, "type": "TEMPLATE", "template": {"templateId": o["name"], "parameterValues": values}})
        }
        "image" | "video" | "audio" | "document" => {
            let url = o.get("link").and_then(Value::as_str).ok_or_else(|| {
                SendError::new(
                    ErrorKind::Permanent,
                    codes::UNSUPPORTED,
                    "Karix attachments go by URL",
                )
            })?;
            json!({"type": "ATTACHMENT", "attachment": {"type": t, "url": url, "caption": o.get("caption"), "fileName": o.get("filename")}})
        }
        "interactive" => json!({"type": "INTERACTIVE", "interactive": o}),
        other => {
            return Err(SendError::new(
                ErrorKind::Permanent,
                codes::UNSUPPORTED,
                format!("Karix's API has no {other} message"),
            ))
        }
    };
    Ok(json!({
        "message": {
            "channel": "WABA",
            "content": content,
            "recipient": {
                "to": digits(msg.to),
                "recipient_type": "individual",
                "reference": {"cust_ref": msg.message_id},
            },
            "sender": {"from": digits(msg.from)},
            "preferences": {"webHookDNId": "1001"},
        },
        "metaData": {"version": "v1.0.9"},
    }))
}

pub fn request(
    http: &reqwest::Client,
    route: &Route<'_>,
    msg: &Outbound<'_>,
) -> Result<reqwest::RequestBuilder, SendError> {
    let base = route.base_url.trim_end_matches('/');
    Ok(http
        .post(format!("{base}/services/rcm/sendMessage"))
        .header(
            "Authentication",
            format!("Bearer {}", credential(route, "api_key")?),
        )
        .json(&body(msg)?))
}

pub fn response(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v.get("statusCode").and_then(|c| {
        c.as_str()
            .map(str::to_string)
            .or_else(|| c.as_i64().map(|n| n.to_string()))
    });
    let text = v
        .get("statusDesc")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| snippet(body));
    if (200..300).contains(&status) && code.as_deref() == Some("200") {
        return v
            .get("mid")
            .and_then(Value::as_str)
            .map(|mid| Accepted {
                bsp_message_id: mid.to_string(),
            })
            .ok_or_else(|| {
                SendError::new(
                    ErrorKind::Permanent,
                    codes::BAD_RESPONSE,
                    format!("accepted without mid: {text}"),
                )
            });
    }
    let http_like = code
        .as_deref()
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(status);
    let err = by_http_status(
        if (200..300).contains(&status) {
            http_like
        } else {
            status
        },
        text,
    );
    Err(match code {
        Some(c) => err.with_bsp_code(c),
        None => err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_answers() {
        let m = json!({"type":"template","template":{"name":"lowbalance_alert","language":{"code":"en"},
            "components":[{"type":"body","parameters":[{"type":"text","text":"Ravi"}]}]}});
        let b = body(&Outbound {
            message_id: "msg_1",
            from: "+919000000001",
            to: "+919876543210",
            message: &m,
        })
        .unwrap();
        assert_eq!(
            b["message"]["content"]["template"]["templateId"],
            "lowbalance_alert"
        );
        assert_eq!(
            b["message"]["content"]["template"]["parameterValues"]["0"],
            "Ravi"
        );
        assert_eq!(b["message"]["recipient"]["reference"]["cust_ref"], "msg_1");
        let ok = br#"{"statusCode":"200","statusDesc":"Successfully Accepted","mid":"1725012345678123"}"#;
        assert_eq!(
            response(200, ok).unwrap().bsp_message_id,
            "1725012345678123"
        );
        let slow = br#"{"statusCode":"429","statusDesc":"Too many requests"}"#;
        assert_eq!(response(200, slow).unwrap_err().kind, ErrorKind::Throttled);
    }
}
