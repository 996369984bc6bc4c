//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed by the app secret>`.

use hmac::Hmac;
use sha2::Sha256;

use crate::common::{hex_hmac, verify_hex_hmac, SignatureError, WebhookRequest};

pub const HEADER: &str = "x-hub-signature-256";

pub fn verify(app_secret: &str, req: &WebhookRequest<'_>) -> Result<(), SignatureError> {
    if app_secret.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = req
        .headers
        .get(HEADER)
        .ok_or(SignatureError::Missing(HEADER))?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(HEADER))?;
    verify_hex_hmac::<Hmac<Sha256>>(app_secret, HEADER, hex_sig, req.body)
}

/// The header value for `body` (the simulator and tests sign with it).
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex_hmac::<Hmac<Sha256>>(app_secret, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn req<'a>(h: &'a HashMap<String, String>, body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            headers: h,
            body,
            url: "",
        }
    }

    #[test]
    fn accepts_own_signature_and_rejects_tampering() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut h = HashMap::new();
        h.insert(HEADER.to_string(), sign("s3cret", body));
        assert_eq!(verify("s3cret", &req(&h, body)), Ok(()));
        assert_eq!(
            verify("other", &req(&h, body)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", &req(&h, b"{}")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("", &req(&h, body)),
            Err(SignatureError::NotConfigured)
        );
        h.insert(HEADER.to_string(), "sha1=abc".into());
        assert_eq!(
            verify("s3cret", &req(&h, body)),
            Err(SignatureError::Malformed(HEADER))
        );
        h.insert(HEADER.to_string(), "sha256=zz".into());
        assert_eq!(
            verify("s3cret", &req(&h, body)),
            Err(SignatureError::Malformed(HEADER))
        );
        h.clear();
        assert_eq!(
            verify("s3cret", &req(&h, body)),
            Err(SignatureError::Missing(HEADER))
        );
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
