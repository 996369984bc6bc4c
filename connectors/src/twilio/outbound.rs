//! Sending through Twilio's Programmable Messaging (twilio.com/docs/messaging/api/message-resource).
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP Basic
//! with the account SID and auth token; `From`/`To` as `whatsapp:+E164`. Text is `Body`,
//! media is `MediaUrl` (+ `Body` as caption), templates are Content API templates:
//! `ContentSid` (the canonical `template.name`) and `ContentVariables` (`{"1": ...}` from
//! the body's text parameters). Success: 201 `{"sid": "SM...", "status": "queued"}`.
//! Errors: `{"code", "message", "more_info", "status"}`; 20429 is never processed and safe
//! to retry.

use serde_json::Value;

use crate::send::{
    by_http_status, codes, credential, snippet, Accepted, ErrorKind, Outbound, Route, SendError,
};

pub const TYPES: [&str; 6] = ["text", "template", "image", "audio", "video", "document"];

pub fn form(msg: &Outbound<'_>) -> Result<Vec<(&'static str, String)>, SendError> {
    let mut f = vec![
        ("From", format!("whatsapp:{}", msg.from)),
        ("To", format!("whatsapp:{}", msg.to)),
    ];
    let m = msg.message;
    let t = m["type"].as_str().unwrap_or_default();
    let o = &m[t];
    match t {
        "text" => f.push(("Body", o["body"].as_str().unwrap_or_default().to_string())),
        "image" | "audio" | "video" | "document" => {
            let link = o.get("link").and_then(Value::as_str).ok_or_else(|| {
                SendError::new(
                    ErrorKind::Permanent,
                    codes::UNSUPPORTED,
                    "Twilio sends media by URL only, not by media id",
                )
            })?;
            f.push(("MediaUrl", link.to_string()));
            if let Some(c) = o.get("caption").and_then(Value::as_str) {
                f.push(("Body", c.to_string()));
            }
        }
        "template" => {
            f.push((
                "ContentSid",
                o["name"].as_str().unwrap_or_default().to_string(),
            ));
            let vars: serde_json::Map<String, Value> = crate::gupshup::outbound::template_params(m)
                .into_iter()
                .enumerate()
                .map(|(i, v)| ((i + 1).to_string(), v))
                .collect();
            if !vars.is_empty() {
                f.push(("ContentVariables", Value::Object(vars).to_string()));
            }
        }
        other => {
            return Err(SendError::new(
                ErrorKind::Permanent,
                codes::UNSUPPORTED,
                format!("Twilio needs a Content API template for {other} messages"),
            ))
        }
    }
    Ok(f)
}

pub fn request(
    http: &reqwest::Client,
    route: &Route<'_>,
    msg: &Outbound<'_>,
) -> Result<reqwest::RequestBuilder, SendError> {
    let base = route.base_url.trim_end_matches('/');
    let sid = route.account_id;
    let mut f = form(msg)?;
    if let Some(cb) = route
        .credentials
        .get("status_callback")
        .and_then(Value::as_str)
    {
        f.push(("StatusCallback", cb.to_string()));
    }
    Ok(http
        .post(format!("{base}/2010-04-01/Accounts/{sid}/Messages.json"))
        .basic_auth(sid, Some(credential(route, "auth_token")?))
        .form(&f))
}

pub fn response(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return v
            .get("sid")
            .and_then(Value::as_str)
            .map(|sid| Accepted {
                bsp_message_id: sid.to_string(),
            })
            .ok_or_else(|| {
                SendError::new(
                    ErrorKind::Permanent,
                    codes::BAD_RESPONSE,
                    format!("2xx without sid: {}", snippet(body)),
                )
            });
    }
    let code = v.get("code").and_then(Value::as_i64);
    let text = v
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| snippet(body));
    let err = match code {
        Some(20429) | Some(63018) => {
            SendError::new(ErrorKind::Throttled, codes::RATE_LIMITED, text)
        }
        Some(21211) | Some(21614) | Some(63024) | Some(63003) => {
            SendError::new(ErrorKind::Permanent, codes::INVALID_RECIPIENT, text)
        }
        Some(63016) => SendError::new(ErrorKind::Permanent, codes::OUTSIDE_SERVICE_WINDOW, text),
        Some(20003) => SendError::new(ErrorKind::Permanent, codes::AUTH_FAILED, text),
        Some(63021) => SendError::new(ErrorKind::Permanent, codes::TEMPLATE_INVALID, text),
        _ => by_http_status(status, text),
    };
    Err(match code {
        Some(c) => err.with_bsp_code(c),
        None => err,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn forms_and_answers() {
        let m = json!({"type":"image","image":{"link":"https://x.test/a.jpg","caption":"look"}});
        let f = form(&Outbound {
            message_id: "m",
            from: "+14155238886",
            to: "+15005550006",
            message: &m,
        })
        .unwrap();
        assert!(f.contains(&("From", "whatsapp:+14155238886".into())));
        assert!(f.contains(&("MediaUrl", "https://x.test/a.jpg".into())));
        assert!(f.contains(&("Body", "look".into())));
        let ok = br#"{"sid":"SM29f4e8f4d2b24a0db4e1d3e1c3a1b2c3","status":"queued"}"#;
        assert_eq!(
            response(201, ok).unwrap().bsp_message_id,
            "SM29f4e8f4d2b24a0db4e1d3e1c3a1b2c3"
        );
        let bad = br#"{"code":21211,"message":"The 'To' number is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        let e = response(400, bad).unwrap_err();
        assert_eq!(
            (e.code, e.bsp_code.as_deref()),
            (codes::INVALID_RECIPIENT, Some("21211"))
        );
        let slow = br#"{"code":20429,"message":"Too Many Requests","status":429}"#;
        assert_eq!(response(429, slow).unwrap_err().kind, ErrorKind::Throttled);
    }
}
