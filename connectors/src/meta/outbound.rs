//! Sending through the Cloud API, and through the BSPs that expose it unchanged
//! (360dialog's v2 API, AiSensy's Project API): same body, different URL and auth.
//!
//! Meta: `POST {base}/{phone_number_id}/messages`, `Authorization: Bearer <token>`
//! (base includes the Graph version, e.g. `https://graph.facebook.com/v21.0`).
//! 360dialog: `POST {base}/messages`, `D360-API-KEY`.
//! AiSensy: `POST {base}/project-apis/v1/project/{project_id}/messages`,
//! `X-AiSensy-Project-API-Pwd`.
//! Errors: `{"error": {"message", "type", "code", "error_subcode", "error_data"}}`
//! (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).

use serde_json::{json, Value};

use crate::send::{
    by_http_status, codes, credential, digits, snippet, Accepted, ErrorKind, Outbound, Route,
    SendError,
};
use crate::Bsp;

/// The Cloud API request body for a canonical message. A business-scoped user id goes
/// in `recipient`: in `to` the Cloud API answers 200 and drops the message.
pub fn body(msg: &Outbound<'_>) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
    });
    let (field, to) = if crate::send::validate::is_bsuid(msg.to) {
        ("recipient", msg.to)
    } else {
        ("to", digits(msg.to))
    };
    body[field] = Value::from(to);
    if let (Some(b), Some(m)) = (body.as_object_mut(), msg.message.as_object()) {
        for (k, v) in m {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

pub fn request(
    http: &reqwest::Client,
    route: &Route<'_>,
    msg: &Outbound<'_>,
) -> Result<reqwest::RequestBuilder, SendError> {
    let base = route.base_url.trim_end_matches('/');
    let req = match route.bsp {
        Bsp::Dialog360 => http
            .post(format!("{base}/messages"))
            .header("D360-API-KEY", credential(route, "api_key")?),
        Bsp::Aisensy => http
            .post(format!(
                "{base}/project-apis/v1/project/{}/messages",
                route.account_id
            ))
            .header("X-AiSensy-Project-API-Pwd", credential(route, "api_pwd")?),
        _ => http
            .post(format!("{base}/{}/messages", route.account_id))
            .bearer_auth(credential(route, "access_token")?),
    };
    Ok(req.json(&body(msg)))
}

pub fn response(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return v
            .pointer("/messages/0/id")
            .and_then(Value::as_str)
            .map(|id| Accepted {
                bsp_message_id: id.to_string(),
            })
            .ok_or_else(|| {
                SendError::new(
                    ErrorKind::Permanent,
                    codes::BAD_RESPONSE,
                    format!("2xx without messages[0].id: {}", snippet(body)),
                )
            });
    }
    let Some(err) = v.get("error") else {
        return Err(by_http_status(status, snippet(body)));
    };
    let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
    let detail = err
        .pointer("/error_data/details")
        .or_else(|| err.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Err(classify(status, code, detail).with_bsp_code(code))
}

/// Map a Cloud API error code to a stable code and a retry decision.
pub fn classify(status: u16, code: i64, detail: String) -> SendError {
    use ErrorKind::*;
    let (kind, stable) = match code {
        // Throughput, pair rate and spam-rate limits, and the generic app/WABA limits.
        4 | 80007 | 130429 | 131048 => (Throttled, codes::RATE_LIMITED),
        131056 => (Throttled, codes::PAIR_RATE_LIMITED),
        // "Something went wrong", "service unavailable", generic temporary errors.
        1 | 2 | 131000 | 131016 => (Retryable, codes::BSP_UNAVAILABLE),
        131047 => (Permanent, codes::OUTSIDE_SERVICE_WINDOW),
        131050 => (Permanent, codes::CUSTOMER_OPTED_OUT),
        131026 | 131030 | 131045 => (Permanent, codes::INVALID_RECIPIENT),
        132001 => (Permanent, codes::TEMPLATE_NOT_FOUND),
        132015 | 132016 => (Permanent, codes::TEMPLATE_NOT_APPROVED),
        132000 | 132005 | 132007 | 132012 => (Permanent, codes::TEMPLATE_INVALID),
        131051..=131053 => (Permanent, codes::MEDIA_ERROR),
        0 | 190 | 10 | 200..=299 => (Permanent, codes::AUTH_FAILED),
        131031 | 133010 | 368 => (Permanent, codes::SENDER_BLOCKED),
        _ if status >= 500 => (Retryable, codes::BSP_UNAVAILABLE),
        _ if status == 429 => (Throttled, codes::RATE_LIMITED),
        _ => (Permanent, codes::INVALID_REQUEST),
    };
    SendError::new(kind, stable, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_merges_the_message_object() {
        let m =
            json!({"type": "text", "text": {"body": "hi"}, "context": {"message_id": "wamid.X"}});
        let b = body(&Outbound {
            message_id: "msg_1",
            from: "+15550001111",
            to: "+4915112345678",
            message: &m,
        });
        assert_eq!(b["to"], "4915112345678");
        assert_eq!(b["messaging_product"], "whatsapp");
        assert_eq!(b["text"]["body"], "hi");
        assert_eq!(b["context"]["message_id"], "wamid.X");
    }

    #[test]
    fn a_business_scoped_user_id_goes_in_recipient_never_in_to() {
        let m = json!({"type": "text", "text": {"body": "hi"}});
        let b = body(&Outbound {
            message_id: "msg_1",
            from: "+15550001111",
            to: "US.13491208655302741918",
            message: &m,
        });
        assert_eq!(b["recipient"], "US.13491208655302741918");
        assert!(b.get("to").is_none(), "{b}");
    }

    #[test]
    fn answers_map_to_stable_codes() {
        let ok = br#"{"messaging_product":"whatsapp","contacts":[{"input":"49151","wa_id":"49151"}],"messages":[{"id":"wamid.HBg"}]}"#;
        assert_eq!(response(200, ok).unwrap().bsp_message_id, "wamid.HBg");
        let throttle = br#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"error_data":{"messaging_product":"whatsapp","details":"Cloud API message throughput has been reached."},"fbtrace_id":"A"}}"#;
        let e = response(400, throttle).unwrap_err();
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::Throttled, codes::RATE_LIMITED)
        );
        assert_eq!(e.bsp_code.as_deref(), Some("130429"));
        let window = br#"{"error":{"message":"Re-engagement message","code":131047}}"#;
        assert_eq!(
            response(400, window).unwrap_err().code,
            codes::OUTSIDE_SERVICE_WINDOW
        );
        // Too many to one customer: that pair only, and not an attempt.
        let pair = br#"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","code":131056}}"#;
        let e = response(400, pair).unwrap_err();
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::Throttled, codes::PAIR_RATE_LIMITED)
        );
        let down = b"<html>502 Bad Gateway</html>";
        assert_eq!(response(502, down).unwrap_err().kind, ErrorKind::Retryable);
        assert_eq!(response(200, b"{}").unwrap_err().code, codes::BAD_RESPONSE);
    }
}
