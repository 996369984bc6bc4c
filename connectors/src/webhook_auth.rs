//! How a webhook proves it comes from its BSP, for every BSP: which secret the check
//! needs, under which name, and the check itself.
//!
//! A secret is a field of the tenant's credentials for that BSP (the same sealed object
//! the router sends with: Twilio signs webhooks with the account's `auth_token`, which
//! the router already holds) or, for a single-tenant deployment, the gateway's global
//! setting of the same meaning. The gateway picks which (see its `ingest` module); this
//! module only knows the names and the checks, so a BSP's rules stay in the connectors.

use serde_json::{Map, Value};

use crate::{aisensy, meta, twilio, waha, Bsp, ParseError, SignatureError, WebhookRequest};

/// The credential fields that can prove this BSP's webhooks, strongest first.
pub fn fields(bsp: Bsp) -> &'static [&'static str] {
    match bsp {
        Bsp::Meta => &["app_secret"],
        Bsp::Twilio => &["auth_token"],
        Bsp::Waha => &["webhook_hmac_key"],
        Bsp::Aisensy => &["webhook_secret", "webhook_token"],
        Bsp::Dialog360 | Bsp::Gupshup | Bsp::Karix => &["webhook_token"],
    }
}

/// Does `secrets` hold a secret that can prove this BSP's webhooks?
pub fn has_secret(bsp: Bsp, secrets: &Map<String, Value>) -> bool {
    fields(bsp).iter().any(|f| !field(secrets, f).is_empty())
}

fn field<'a>(secrets: &'a Map<String, Value>, name: &str) -> &'a str {
    secrets.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Check `req` against the secrets of one tenant (or the global ones). An empty secret
/// refuses every webhook ([`SignatureError::NotConfigured`]).
pub fn verify(
    bsp: Bsp,
    secrets: &Map<String, Value>,
    public_url: &str,
    req: &WebhookRequest<'_>,
) -> Result<(), SignatureError> {
    let f = |name| field(secrets, name);
    match bsp {
        Bsp::Meta => meta::signature::verify(f("app_secret"), req),
        Bsp::Twilio => twilio::signature::verify(f("auth_token"), public_url, req),
        Bsp::Waha => waha::signature::verify(f("webhook_hmac_key"), req),
        Bsp::Aisensy if !f("webhook_secret").is_empty() => {
            aisensy::signature::verify(f("webhook_secret"), req)
        }
        Bsp::Aisensy | Bsp::Dialog360 | Bsp::Gupshup | Bsp::Karix => {
            crate::verify_shared_token(f("webhook_token"), req)
        }
    }
}

/// Every business account a webhook body names (one for most BSPs; a Meta-format body
/// may batch entries of several phone numbers). Whoever proves the webhook must own all
/// of them.
pub fn accounts(bsp: Bsp, body: &[u8]) -> Result<Vec<String>, ParseError> {
    Ok(match bsp {
        Bsp::Meta | Bsp::Dialog360 => meta::inbound::account_ids(body)?,
        Bsp::Aisensy => aisensy::inbound::account_ids(body)?,
        Bsp::Twilio => vec![crate::twilio::inbound::account_id(body)?],
        Bsp::Gupshup => vec![crate::gupshup::inbound::account_id(body)?],
        Bsp::Karix => vec![crate::karix::inbound::account_id(body)?],
        Bsp::Waha => vec![crate::waha::inbound::account_id(body)?],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn each_bsp_is_checked_with_its_own_field() {
        let body = br#"{"x":1}"#;
        let url = "https://hooks.example.com/webhooks/twilio";
        type Headers = HashMap<String, String>;
        let cases: Vec<(Bsp, Map<String, Value>, Headers)> = vec![
            (
                Bsp::Meta,
                map(json!({"app_secret": "s"})),
                HashMap::from([(
                    meta::signature::HEADER.into(),
                    meta::signature::sign("s", body),
                )]),
            ),
            (
                Bsp::Twilio,
                map(json!({"auth_token": "s", "account_sid": "AC1"})),
                HashMap::from([(
                    twilio::signature::HEADER.into(),
                    twilio::signature::sign("s", url, body),
                )]),
            ),
            (
                Bsp::Waha,
                map(json!({"webhook_hmac_key": "s"})),
                HashMap::from([
                    (
                        waha::signature::HEADER.into(),
                        waha::signature::sign("s", body),
                    ),
                    (waha::signature::ALGORITHM_HEADER.into(), "sha512".into()),
                ]),
            ),
            (
                Bsp::Aisensy,
                map(json!({"webhook_secret": "s", "webhook_token": "t"})),
                HashMap::from([(
                    aisensy::signature::HEADER.into(),
                    aisensy::signature::sign("s", body),
                )]),
            ),
            (
                Bsp::Aisensy,
                map(json!({"webhook_token": "t"})),
                HashMap::from([("x-switchboard-token".into(), "t".into())]),
            ),
            (
                Bsp::Gupshup,
                map(json!({"api_key": "k", "webhook_token": "t"})),
                HashMap::from([("x-switchboard-token".into(), "t".into())]),
            ),
        ];
        for (bsp, secrets, headers) in cases {
            let req = WebhookRequest {
                headers: &headers,
                body,
                url: "/webhooks/twilio",
            };
            assert!(has_secret(bsp, &secrets), "{bsp}");
            assert_eq!(
                verify(bsp, &secrets, "https://hooks.example.com", &req),
                Ok(()),
                "{bsp}"
            );
            // The same request against another secret of the same name fails.
            let other: Map<String, Value> = secrets
                .iter()
                .map(|(k, _)| (k.clone(), json!("other")))
                .collect();
            assert!(
                verify(bsp, &other, "https://hooks.example.com", &req).is_err(),
                "{bsp}"
            );
        }
    }

    #[test]
    fn send_credentials_alone_prove_nothing_except_twilios() {
        let send_only = map(json!({"api_key": "k", "access_token": "a", "api_pwd": "p"}));
        for bsp in Bsp::ALL {
            assert!(!has_secret(bsp, &send_only), "{bsp}");
            let req = WebhookRequest {
                headers: &HashMap::from([("x-switchboard-token".into(), "k".into())]),
                body: b"{}",
                url: "/",
            };
            assert!(verify(bsp, &send_only, "", &req).is_err(), "{bsp}");
        }
        assert!(has_secret(
            Bsp::Twilio,
            &map(json!({"account_sid": "AC1", "auth_token": "t"}))
        ));
    }

    #[test]
    fn every_account_of_a_batched_meta_body_is_named() {
        let body = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "w1", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "p1"}}}]},
            {"id": "w2", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "p2"}}}]}
        ]})
        .to_string();
        assert_eq!(accounts(Bsp::Meta, body.as_bytes()).unwrap(), ["p1", "p2"]);
        assert_eq!(
            accounts(Bsp::Aisensy, body.as_bytes()).unwrap(),
            ["p1", "p2"]
        );
        assert_eq!(
            accounts(Bsp::Gupshup, br#"{"app":"shop","type":"message-event"}"#).unwrap(),
            ["shop"]
        );
        assert!(accounts(Bsp::Gupshup, b"not json").is_err());
    }
}
