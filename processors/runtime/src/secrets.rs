//! Encryption at rest for secrets (BSP credentials): AES-256-GCM with a keyring.
//!
//! The keyring is `kid:base64key[,kid:base64key...]`; the first key encrypts, every key
//! decrypts, so rotating is: put a new key first, re-encrypt (the admin API's
//! `POST /admin/credentials/rotate`), then drop the old key. The associated data binds a
//! ciphertext to its owner, so a ciphertext copied to another tenant's row fails to open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("invalid keyring: {0}")]
    Keyring(String),
    #[error("no key {0:?} in the keyring")]
    UnknownKey(String),
    #[error("ciphertext does not open (wrong key, owner or tampered)")]
    Open,
}

impl Keyring {
    pub fn parse(spec: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, b64) = part
                .split_once(':')
                .ok_or_else(|| SecretError::Keyring(format!("{part:?} is not kid:base64key")))?;
            let raw = B64
                .decode(b64)
                .map_err(|e| SecretError::Keyring(format!("key {kid}: {e}")))?;
            if raw.len() != 32 {
                return Err(SecretError::Keyring(format!(
                    "key {kid} has {} bytes; AES-256 needs 32",
                    raw.len()
                )));
            }
            keys.push((
                kid.to_string(),
                Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw)),
            ));
        }
        if keys.is_empty() {
            return Err(SecretError::Keyring("no keys".into()));
        }
        Ok(Keyring { keys })
    }

    /// A fresh random key in keyring syntax, for set-up scripts and tests.
    pub fn generate(kid: &str) -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        format!("{kid}:{}", B64.encode(key))
    }

    pub fn active_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Encrypt with the active key: (key id, base64(nonce ‖ ciphertext)).
    pub fn seal(&self, plaintext: &[u8], owner: &str) -> (String, String) {
        let (kid, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: owner.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        (kid.clone(), B64.encode(out))
    }

    pub fn open(&self, kid: &str, sealed: &str, owner: &str) -> Result<Vec<u8>, SecretError> {
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, c)| c)
            .ok_or_else(|| SecretError::UnknownKey(kid.to_string()))?;
        let raw = B64.decode(sealed).map_err(|_| SecretError::Open)?;
        if raw.len() < 12 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_rotate() {
        let old = Keyring::generate("k1");
        let new = Keyring::generate("k2");
        let ring1 = Keyring::parse(&old).unwrap();
        let (kid, ct) = ring1.seal(b"{\"token\":\"s\"}", "ten_a/meta");
        assert_eq!(kid, "k1");
        assert_eq!(
            ring1.open(&kid, &ct, "ten_a/meta").unwrap(),
            b"{\"token\":\"s\"}"
        );
        // Bound to its owner.
        assert!(ring1.open(&kid, &ct, "ten_b/meta").is_err());
        // After rotation both keys open; the new one seals.
        let ring2 = Keyring::parse(&format!("{new},{old}")).unwrap();
        assert!(ring2.open(&kid, &ct, "ten_a/meta").is_ok());
        assert_eq!(ring2.seal(b"x", "o").0, "k2");
        // Dropping the old key makes old ciphertexts unreadable, loudly.
        let ring3 = Keyring::parse(&new).unwrap();
        assert!(matches!(
            ring3.open(&kid, &ct, "ten_a/meta"),
            Err(SecretError::UnknownKey(_))
        ));
        assert!(Keyring::parse("k:c2hvcnQ=").is_err());
    }
}
