//! `X-AiSensy-Signature`: hex HMAC-SHA256 of the body with the webhook secret set in
//! AiSensy. Accounts without signing use the shared token instead (gateway config).

use hmac::Hmac;
use sha2::Sha256;

use crate::common::{hex_hmac, verify_hex_hmac, SignatureError, WebhookRequest};

pub const HEADER: &str = "x-aisensy-signature";

pub fn verify(secret: &str, req: &WebhookRequest<'_>) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = req
        .headers
        .get(HEADER)
        .ok_or(SignatureError::Missing(HEADER))?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .unwrap_or(header.trim());
    verify_hex_hmac::<Hmac<Sha256>>(secret, HEADER, hex_sig, req.body)
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    hex_hmac::<Hmac<Sha256>>(secret, body)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn verifies_hex_hmac_sha256() {
        let body = br#"{"topic":"message.status.updated"}"#;
        let mut h = HashMap::new();
        h.insert(HEADER.to_string(), sign("s", body));
        let req = WebhookRequest {
            headers: &h,
            body,
            url: "",
        };
        assert_eq!(verify("s", &req), Ok(()));
        assert_eq!(verify("t", &req), Err(SignatureError::Mismatch));
        h.insert(HEADER.to_string(), "nothex".into());
        let req = WebhookRequest {
            headers: &h,
            body,
            url: "",
        };
        assert_eq!(verify("s", &req), Err(SignatureError::Malformed(HEADER)));
    }
}
