use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_connectors::Bsp;
use switchboard_runtime::config::KafkaConfig;

/// Router configuration (`SWITCHBOARD_*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    /// Consumer group id (default `switchboard-router`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Static group membership id, unique per replica (e.g. a StatefulSet pod name): a
    /// restarted router takes its partitions back at once instead of after the dead
    /// process's session timeout. Empty: dynamic membership.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// PostgreSQL with the send path's tables (the gateway's migrations).
    pub database_url: String,
    /// Ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default = "default_ops")]
    pub ops_addr: String,
    /// AES-256-GCM keyring that opens BSP credentials (the gateway's).
    #[serde(default)]
    pub credentials_keys: String,
    /// Meta Cloud API base URL, including the Graph version.
    #[serde(default = "default_meta")]
    pub meta_api_url: String,
    /// 360dialog API base URL.
    #[serde(default = "default_360")]
    pub dialog360_api_url: String,
    /// Gupshup API base URL.
    #[serde(default = "default_gupshup")]
    pub gupshup_api_url: String,
    /// Twilio API base URL.
    #[serde(default = "default_twilio")]
    pub twilio_api_url: String,
    /// WAHA base URL (self-hosted).
    #[serde(default = "default_waha")]
    pub waha_api_url: String,
    /// AiSensy API base URL.
    #[serde(default = "default_aisensy")]
    pub aisensy_api_url: String,
    /// Karix API base URL.
    #[serde(default = "default_karix")]
    pub karix_api_url: String,
    /// Proxy for BSP calls (`http://host:port`); proxy variables of the environment are
    /// ignored. Empty: direct.
    #[serde(default)]
    pub bsp_proxy: Option<String>,
    /// Timeout of one BSP call.
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Fraction under each number's tier the router aims at, so that network jitter
    /// never makes the BSP see more than the tier in a second.
    #[serde(default = "default_headroom")]
    pub rate_headroom: f64,
    /// Seconds of a number's rate that may wait in the router; sends beyond that are
    /// parked (`scheduled`) until their turn instead of holding shared slots.
    #[serde(default = "default_rate_queue", with = "humantime_serde")]
    pub rate_queue: Duration,
    /// Per-pair pacing (one business number to one customer): one send per this
    /// interval (Meta: about one per 6 s; 0 turns it off) ...
    #[serde(default = "default_pair_interval", with = "humantime_serde")]
    pub pair_interval: Duration,
    /// ... and bursts of up to this many, borrowed from later intervals (Meta allows
    /// about 45).
    #[serde(default = "default_pair_burst")]
    pub pair_burst: u32,
    /// Records handled at once (across all senders).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// First retry delay; doubles per attempt, with full jitter.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Give up (send failed, `retries_exhausted`, DLQ) this long after the first attempt.
    #[serde(default = "default_retry_budget", with = "humantime_serde")]
    pub retry_budget: Duration,
    /// Give up after this many attempts.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Consecutive retryable failures that open a BSP's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before its first probe (doubles up to 16×).
    #[serde(default = "default_breaker_open", with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// How often due scheduled and retrying sends are released.
    #[serde(default = "default_scheduler_interval", with = "humantime_serde")]
    pub scheduler_interval: Duration,
    /// Where inbound media is kept: `file:///dir` or `s3://bucket/prefix` (`AWS_*`
    /// variables configure the bucket's client).
    #[serde(default = "default_media_store")]
    pub media_store: String,
    /// Largest media kept; larger is dead-lettered `media_too_large`.
    #[serde(default = "default_media_max_bytes")]
    pub media_max_bytes: u64,
    /// MIME types kept, comma-separated: exact ones, or families ending in `/`.
    #[serde(default = "default_media_types")]
    pub media_types: String,
    /// Networks a media URL from a webhook may reach although not public (CIDRs,
    /// comma-separated); the BSPs' own configured API URLs are always reachable.
    #[serde(default)]
    pub media_allow_nets: String,
    /// Sync each WABA's message templates from Meta this often (0: never).
    #[serde(default = "default_template_sync", with = "humantime_serde")]
    pub template_sync_interval: Duration,
    /// Republish accepted sends whose publication was never confirmed after this long.
    #[serde(default = "default_republish_after", with = "humantime_serde")]
    pub republish_after: Duration,
}

impl Config {
    pub fn base_url(&self, bsp: Bsp) -> &str {
        match bsp {
            Bsp::Meta => &self.meta_api_url,
            Bsp::Dialog360 => &self.dialog360_api_url,
            Bsp::Gupshup => &self.gupshup_api_url,
            Bsp::Twilio => &self.twilio_api_url,
            Bsp::Waha => &self.waha_api_url,
            Bsp::Aisensy => &self.aisensy_api_url,
            Bsp::Karix => &self.karix_api_url,
        }
    }
}

fn default_ops() -> String {
    "127.0.0.1:9104".into()
}
fn default_meta() -> String {
    "https://graph.facebook.com/v21.0".into()
}
fn default_360() -> String {
    "https://waba-v2.360dialog.io".into()
}
fn default_gupshup() -> String {
    "https://api.gupshup.io".into()
}
fn default_twilio() -> String {
    "https://api.twilio.com".into()
}
fn default_waha() -> String {
    "http://127.0.0.1:3000".into()
}
fn default_aisensy() -> String {
    "https://apis.aisensy.com".into()
}
fn default_karix() -> String {
    "https://rcmapi.instaalerts.zone".into()
}
fn default_send_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_headroom() -> f64 {
    0.05
}
fn default_rate_queue() -> Duration {
    Duration::from_secs(2)
}
pub fn default_media_store() -> String {
    "file:///var/lib/switchboard/media".into()
}
fn default_media_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_media_types() -> String {
    "image/,video/,audio/,application/pdf,text/plain,application/msword,application/vnd.ms-excel,\
     application/vnd.ms-powerpoint,application/vnd.openxmlformats-officedocument."
        .into()
}
fn default_template_sync() -> Duration {
    Duration::from_secs(600)
}
fn default_pair_interval() -> Duration {
    Duration::from_secs(6)
}
fn default_pair_burst() -> u32 {
    10
}
fn default_in_flight() -> usize {
    20_000
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_budget() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_attempts() -> u32 {
    12
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> Duration {
    Duration::from_secs(2)
}
fn default_scheduler_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_republish_after() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::config::{documented_variables, variables_of};

    #[test]
    fn readme_documents_exactly_the_router_variables() {
        let cfg: super::Config =
            serde_json::from_value(serde_json::json!({"database_url": "postgres://x"}))
                .expect("defaults");
        let readme = include_str!("../../../README.md");
        assert_eq!(variables_of(&cfg), documented_variables(readme, "router"));
    }
}
