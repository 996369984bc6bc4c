//! WAHA signs with `X-Webhook-Hmac`: hex HMAC of the raw body with the configured key,
//! algorithm named in `X-Webhook-Hmac-Algorithm` (WAHA uses `sha512`).

use hmac::Hmac;
use sha2::Sha512;

use crate::common::{hex_hmac, verify_hex_hmac, SignatureError, WebhookRequest};

pub const HEADER: &str = "x-webhook-hmac";
pub const ALGORITHM_HEADER: &str = "x-webhook-hmac-algorithm";

pub fn verify(key: &str, req: &WebhookRequest<'_>) -> Result<(), SignatureError> {
    if key.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    if let Some(alg) = req.headers.get(ALGORITHM_HEADER) {
        if !alg.eq_ignore_ascii_case("sha512") {
            return Err(SignatureError::Malformed(ALGORITHM_HEADER));
        }
    }
    let header = req
        .headers
        .get(HEADER)
        .ok_or(SignatureError::Missing(HEADER))?;
    verify_hex_hmac::<Hmac<Sha512>>(key, HEADER, header, req.body)
}

pub fn sign(key: &str, body: &[u8]) -> String {
    hex_hmac::<Hmac<Sha512>>(key, body)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn verifies_sha512_hmac() {
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        let body = b"what do ya want for nothing?";
        let want = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737";
        assert_eq!(sign("Jefe", body), want);
        let mut h = HashMap::new();
        h.insert(HEADER.to_string(), want.to_string());
        h.insert(ALGORITHM_HEADER.to_string(), "sha512".to_string());
        let req = WebhookRequest {
            headers: &h,
            body,
            url: "",
        };
        assert_eq!(verify("Jefe", &req), Ok(()));
        assert_eq!(verify("jefe", &req), Err(SignatureError::Mismatch));
        h.insert(ALGORITHM_HEADER.to_string(), "md5".to_string());
        let req = WebhookRequest {
            headers: &h,
            body,
            url: "",
        };
        assert_eq!(
            verify("Jefe", &req),
            Err(SignatureError::Malformed(ALGORITHM_HEADER))
        );
    }
}
