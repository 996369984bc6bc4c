use std::time::Duration;

use serde::Deserialize;
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::stream::StreamConfig;

/// Normalizer configuration (`SWITCHBOARD_*`).
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    #[serde(flatten)]
    pub stream: StreamConfig,
    /// PostgreSQL holding the dedupe store.
    pub database_url: String,
    /// How long an event id is remembered.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub dedupe_retention: Duration,
    /// Ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default = "default_ops")]
    pub ops_addr: String,
}

fn default_retention() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}
fn default_ops() -> String {
    "127.0.0.1:9101".into()
}
