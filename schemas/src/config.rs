//! The configuration plane's entities, as carried in [`ConfigRecord`] bodies on the
//! compacted `wa.config` topic, and the in-memory index every process keeps of them.
//!
//! PostgreSQL is the source of truth (the gateway's admin API writes it); the topic is
//! how processes learn about changes without querying the database per message.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ConfigRecord;

pub const TENANT: &str = "tenant";
pub const API_KEY: &str = "api_key";
pub const NUMBER: &str = "number";
pub const CREDENTIAL: &str = "credential";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub default_number: Option<String>,
    /// Requests per second the tenant may make to the send API.
    pub api_rate_per_sec: u32,
}

/// An API key, by the SHA-256 of its secret (keys are 256-bit random, so a fast hash is
/// as good as a slow one, and the gateway can check it on every request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub hash: String,
    pub name: String,
}

/// A business number and how to send from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessNumber {
    pub number: String,
    pub tenant_id: String,
    pub bsp: String,
    pub bsp_account_id: String,
    /// Messages per second the BSP allows this number (Meta tiers: 80 or 1,000).
    pub tier_mps: u32,
    /// Another BSP this number may be sent through when its own is down.
    pub failover_bsp: Option<String>,
    pub failover_account_id: Option<String>,
}

/// A tenant's credentials for one BSP, AES-256-GCM encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    pub tenant_id: String,
    pub bsp: String,
    pub key_id: String,
    /// base64(nonce ‖ ciphertext ‖ tag)
    pub ciphertext: String,
}

/// The latest version of every entity, indexed the ways the hot paths look them up.
#[derive(Debug, Default, Clone)]
pub struct ConfigIndex {
    versions: HashMap<String, i64>,
    pub tenants: HashMap<String, Tenant>,
    /// By key hash (hex).
    pub api_keys: HashMap<String, ApiKey>,
    api_key_hash_by_id: HashMap<String, String>,
    pub numbers: HashMap<String, BusinessNumber>,
    /// (bsp, account id) → number, to stamp webhook events with their tenant.
    pub numbers_by_account: HashMap<(String, String), String>,
    pub credentials: HashMap<(String, String), Credential>,
}

impl ConfigIndex {
    /// Apply one record; older versions than what is held are ignored, so replaying the
    /// topic, or a record arriving twice, converges.
    pub fn apply(&mut self, rec: &ConfigRecord) -> Result<(), serde_json::Error> {
        let key = rec.key();
        if self.versions.get(&key).is_some_and(|v| *v > rec.version) {
            return Ok(());
        }
        match rec.entity.as_str() {
            TENANT => {
                self.tenants.remove(&rec.id);
                if !rec.deleted {
                    let t: Tenant = serde_json::from_str(&rec.body)?;
                    self.tenants.insert(rec.id.clone(), t);
                }
            }
            API_KEY => {
                if let Some(h) = self.api_key_hash_by_id.remove(&rec.id) {
                    self.api_keys.remove(&h);
                }
                if !rec.deleted {
                    let k: ApiKey = serde_json::from_str(&rec.body)?;
                    self.api_key_hash_by_id
                        .insert(rec.id.clone(), k.hash.clone());
                    self.api_keys.insert(k.hash.clone(), k);
                }
            }
            NUMBER => {
                if let Some(old) = self.numbers.remove(&rec.id) {
                    self.numbers_by_account
                        .remove(&(old.bsp.clone(), old.bsp_account_id.clone()));
                }
                if !rec.deleted {
                    let n: BusinessNumber = serde_json::from_str(&rec.body)?;
                    self.numbers_by_account
                        .insert((n.bsp.clone(), n.bsp_account_id.clone()), n.number.clone());
                    self.numbers.insert(rec.id.clone(), n);
                }
            }
            CREDENTIAL => {
                let (tenant, bsp) = rec
                    .id
                    .split_once('/')
                    .map(|(t, b)| (t.to_string(), b.to_string()))
                    .unwrap_or_default();
                self.credentials.remove(&(tenant.clone(), bsp.clone()));
                if !rec.deleted {
                    let c: Credential = serde_json::from_str(&rec.body)?;
                    self.credentials.insert((tenant, bsp), c);
                }
            }
            // Entities of later versions (endpoints) are kept for whoever knows them.
            _ => {}
        }
        self.versions.insert(key, rec.version);
        Ok(())
    }

    /// The tenant owning a business number, by its BSP account or the number itself.
    pub fn tenant_of(&self, bsp: &str, account_id: Option<&str>, number: &str) -> Option<&str> {
        account_id
            .and_then(|a| {
                self.numbers_by_account
                    .get(&(bsp.to_string(), a.to_string()))
            })
            .and_then(|n| self.numbers.get(n))
            .or_else(|| self.numbers.get(number))
            .map(|n| n.tenant_id.as_str())
    }

    /// A tenant's numbers, sorted.
    pub fn numbers_of(&self, tenant_id: &str) -> Vec<&BusinessNumber> {
        let mut v: Vec<_> = self
            .numbers
            .values()
            .filter(|n| n.tenant_id == tenant_id)
            .collect();
        v.sort_by(|a, b| a.number.cmp(&b.number));
        v
    }
}

/// Build the record for an entity.
pub fn record<T: Serialize>(
    entity: &str,
    id: &str,
    tenant_id: &str,
    body: &T,
    version: i64,
) -> ConfigRecord {
    ConfigRecord {
        entity: entity.to_string(),
        id: id.to_string(),
        tenant_id: tenant_id.to_string(),
        deleted: false,
        body: serde_json::to_string(body).unwrap_or_default(),
        version,
    }
}

/// A deletion record (kept as a record, not a tombstone, so readers that replay the topic
/// before compaction see the delete in order).
pub fn deletion(entity: &str, id: &str, tenant_id: &str, version: i64) -> ConfigRecord {
    ConfigRecord {
        entity: entity.to_string(),
        id: id.to_string(),
        tenant_id: tenant_id.to_string(),
        deleted: true,
        body: "{}".into(),
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(n: &str, tenant: &str, v: i64) -> ConfigRecord {
        record(
            NUMBER,
            n,
            tenant,
            &BusinessNumber {
                number: n.into(),
                tenant_id: tenant.into(),
                bsp: "meta".into(),
                bsp_account_id: format!("pn{n}"),
                tier_mps: 80,
                failover_bsp: None,
                failover_account_id: None,
            },
            v,
        )
    }

    #[test]
    fn latest_version_wins_and_deletes_apply() {
        let mut ix = ConfigIndex::default();
        ix.apply(&number("+1555", "ten_a", 2)).unwrap();
        // An older record arriving late (replay) does not undo the newer one.
        ix.apply(&number("+1555", "ten_b", 1)).unwrap();
        assert_eq!(ix.tenant_of("meta", Some("pn+1555"), "x"), Some("ten_a"));
        ix.apply(&deletion(NUMBER, "+1555", "ten_a", 3)).unwrap();
        assert_eq!(ix.tenant_of("meta", Some("pn+1555"), "+1555"), None);
        assert!(ix.numbers_by_account.is_empty());
    }

    #[test]
    fn revoked_keys_disappear() {
        let mut ix = ConfigIndex::default();
        let k = ApiKey {
            id: "key_1".into(),
            tenant_id: "ten_a".into(),
            hash: "ab".into(),
            name: "ci".into(),
        };
        ix.apply(&record(API_KEY, "key_1", "ten_a", &k, 1)).unwrap();
        assert!(ix.api_keys.contains_key("ab"));
        ix.apply(&deletion(API_KEY, "key_1", "ten_a", 2)).unwrap();
        assert!(ix.api_keys.is_empty());
    }
}
