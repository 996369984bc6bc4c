use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::stream::StreamConfig;

/// Normalizer configuration (`SWITCHBOARD_*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Oldest event time accepted, before the gateway's receipt of its webhook.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub event_time_max_age: Duration,
    /// Latest event time accepted, after the gateway's receipt (BSP clock skew).
    #[serde(default = "default_max_ahead", with = "humantime_serde")]
    pub event_time_max_ahead: Duration,
    /// A send the BSP would not deliver because of the customer's marketing limit (Meta
    /// 131049) is sent again this much later ...
    #[serde(default = "default_marketing_defer", with = "humantime_serde")]
    pub marketing_limit_defer: Duration,
    /// ... at most this many times.
    #[serde(default = "default_marketing_deferrals")]
    pub marketing_limit_deferrals: u32,
}

fn default_marketing_defer() -> Duration {
    super::handler::Deferral::default().after
}

fn default_marketing_deferrals() -> u32 {
    super::handler::Deferral::default().max
}

impl Config {
    pub fn deferral(&self) -> super::handler::Deferral {
        super::handler::Deferral {
            after: self.marketing_limit_defer,
            max: self.marketing_limit_deferrals,
        }
    }

    pub fn time_window(&self) -> super::step::TimeWindow {
        super::step::TimeWindow::new(self.event_time_max_age, self.event_time_max_ahead)
    }
}

pub fn default_max_age() -> Duration {
    Duration::from_secs(400 * 24 * 3600)
}
pub fn default_max_ahead() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_retention() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}
fn default_ops() -> String {
    "127.0.0.1:9101".into()
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::config::{documented_variables, variables_of};

    #[test]
    fn readme_documents_exactly_the_normalizer_variables() {
        let cfg: super::Config =
            serde_json::from_value(serde_json::json!({"database_url": "postgres://x"}))
                .expect("defaults");
        let readme = include_str!("../../../README.md");
        assert_eq!(
            variables_of(&cfg),
            documented_variables(readme, "normalizer")
        );
    }
}
