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
pub const ENDPOINT: &str = "endpoint";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub default_number: Option<String>,
    /// Requests per second the tenant may make to the send API.
    pub api_rate_per_sec: u32,
    /// Refuse free-form sends outside the customer-service window before any BSP call
    /// (off: the BSP decides, and reports 131047).
    #[serde(default = "yes")]
    pub enforce_service_window: bool,
    /// The business portfolio's daily limit of unique customers reached by templates
    /// (Meta: 250, 2,000, 10,000, 100,000; none: unlimited). Campaigns keep under it.
    #[serde(default)]
    pub daily_unique_limit: Option<u32>,
}

fn yes() -> bool {
    true
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
    /// Meta: the WhatsApp Business Account of the number, where its templates live.
    #[serde(default)]
    pub waba_id: Option<String>,
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

/// Every webhook type an endpoint can subscribe to. `message.status.<status>` is one per
/// canonical status; `endpoint.disabled` is operational.
pub const WEBHOOK_TYPES: [&str; 13] = [
    "message.status.accepted",
    "message.status.sent",
    "message.status.failed",
    "message.status.delivered",
    "message.status.read",
    "message.status.played",
    "message.status.deleted",
    "message.received",
    "message.send_accepted",
    "message.send_failed",
    "message.media_stored",
    "customer.preference",
    "endpoint.disabled",
];

/// How an endpoint wants events of one conversation ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// First attempts go out in conversation order; a failed event is retried later on
    /// its own and does not hold the conversation back.
    #[default]
    Conversation,
    /// A failing event holds back later events of its conversation, for this endpoint
    /// only, until it is delivered or given up.
    Strict,
}

/// A signing secret, encrypted with the credentials keyring (owner: the endpoint id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub key_id: String,
    pub ciphertext: String,
    /// A rotated-out secret keeps signing until then (Unix ms); `None` = current.
    pub expires_at_ms: Option<i64>,
}

/// A client's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// Type filters: exact types or prefixes ending in `.*`; empty = every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Business numbers; empty = every number of the tenant.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Deliveries per second (token bucket); `None` = unlimited.
    pub rate_per_sec: Option<u32>,
    /// Requests in flight at once.
    pub max_in_flight: u32,
    /// Custom headers in plain text: only endpoints stored before headers were sealed.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The custom headers (a JSON object), sealed like the signing secrets with the
    /// endpoint id + `/headers` as associated data: receivers often put credentials there.
    #[serde(default)]
    pub sealed_headers: Option<SealedSecret>,
    /// Their names, for answers that must not show the values.
    #[serde(default)]
    pub header_names: Vec<String>,
    #[serde(default)]
    pub ordering: Ordering,
    #[serde(default)]
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub secrets: Vec<SealedSecret>,
}

/// Does `filter` (an exact type, `prefix.*` or `*`) select `event_type`?
pub fn type_matches(filter: &str, event_type: &str) -> bool {
    match filter.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => filter == event_type,
    }
}

/// Is `filter` a valid type filter: a known type, or a prefix of one ending in `.*`?
pub fn valid_type_filter(filter: &str) -> bool {
    if filter == "*" {
        return true;
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => WEBHOOK_TYPES
            .iter()
            .any(|t| t.starts_with(prefix) && t.as_bytes().get(prefix.len()) == Some(&b'.')),
        None => WEBHOOK_TYPES.contains(&filter),
    }
}

impl Endpoint {
    /// Should this endpoint get an event of `event_type` about `number` (empty for
    /// operational events, which every endpoint whose type filter allows gets)?
    pub fn wants(&self, event_type: &str, number: &str) -> bool {
        !self.disabled
            && (self.event_types.is_empty()
                || self.event_types.iter().any(|f| type_matches(f, event_type)))
            && (number.is_empty()
                || self.numbers.is_empty()
                || self.numbers.iter().any(|n| n == number))
    }
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
    pub endpoints: HashMap<String, Endpoint>,
    /// Tenant → its endpoint ids.
    endpoints_by_tenant: HashMap<String, std::collections::BTreeSet<String>>,
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
            ENDPOINT => {
                if let Some(old) = self.endpoints.remove(&rec.id) {
                    if let Some(ids) = self.endpoints_by_tenant.get_mut(&old.tenant_id) {
                        ids.remove(&rec.id);
                    }
                }
                if !rec.deleted {
                    let e: Endpoint = serde_json::from_str(&rec.body)?;
                    self.endpoints_by_tenant
                        .entry(e.tenant_id.clone())
                        .or_default()
                        .insert(rec.id.clone());
                    self.endpoints.insert(rec.id.clone(), e);
                }
            }
            // Entities of later versions are kept for whoever knows them.
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

    /// A tenant's endpoints, by id.
    pub fn endpoints_of(&self, tenant_id: &str) -> impl Iterator<Item = &Endpoint> {
        self.endpoints_by_tenant
            .get(tenant_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.endpoints.get(id))
    }

    /// The version held for an entity (the µs timestamp of its last change).
    pub fn version_of(&self, entity: &str, id: &str) -> Option<i64> {
        self.versions.get(&format!("{entity}:{id}")).copied()
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
                waba_id: None,
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
    fn type_filters() {
        assert!(type_matches("message.status.*", "message.status.read"));
        assert!(!type_matches("message.status.*", "message.received"));
        assert!(type_matches("*", "endpoint.disabled"));
        assert!(type_matches("message.received", "message.received"));
        for ok in [
            "*",
            "message.*",
            "message.status.*",
            "message.send_failed",
            "endpoint.*",
        ] {
            assert!(valid_type_filter(ok), "{ok}");
        }
        for bad in [
            "message",
            "message.stat.*",
            "message.status.seen",
            "",
            "mess*",
            "message.status",
        ] {
            assert!(!valid_type_filter(bad), "{bad}");
        }
    }

    #[test]
    fn endpoints_follow_their_records() {
        let mut ix = ConfigIndex::default();
        let ep = Endpoint {
            id: "ep_1".into(),
            tenant_id: "ten_a".into(),
            url: "https://example.com/hook".into(),
            description: String::new(),
            event_types: vec!["message.status.*".into()],
            numbers: vec!["+1555".into()],
            rate_per_sec: None,
            max_in_flight: 10,
            headers: Default::default(),
            ordering: Ordering::Strict,
            disabled: false,
            sealed_headers: None,
            header_names: vec![],
            disabled_reason: None,
            secrets: vec![],
        };
        ix.apply(&record(ENDPOINT, "ep_1", "ten_a", &ep, 1))
            .unwrap();
        let got: Vec<_> = ix.endpoints_of("ten_a").collect();
        assert_eq!(got, vec![&ep]);
        assert!(ep.wants("message.status.read", "+1555"));
        assert!(!ep.wants("message.status.read", "+1666"));
        assert!(!ep.wants("message.received", "+1555"));
        ix.apply(&deletion(ENDPOINT, "ep_1", "ten_a", 2)).unwrap();
        assert_eq!(ix.endpoints_of("ten_a").count(), 0);
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
