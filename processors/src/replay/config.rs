use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::config::KafkaConfig;

/// Configuration of `switchboard` (the operator CLI) and `replayer` (`SWITCHBOARD_*`):
/// everything a replay target needs to reach the stores and topics the live stages use.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    /// PostgreSQL: replay jobs, the PostgreSQL target, the normalizer's dedupe store.
    #[serde(default = "switchboard_runtime::config::defaults::database_url")]
    pub database_url: String,
    /// ClickHouse HTTP endpoint (ClickHouse target).
    #[serde(default = "switchboard_runtime::config::defaults::clickhouse_url")]
    pub clickhouse_url: String,
    /// The live ClickHouse database (a replay may name another).
    #[serde(default = "switchboard_runtime::config::defaults::clickhouse_database")]
    pub clickhouse_database: String,
    /// Row type validation (needs a server newer than 18.16).
    #[serde(default, deserialize_with = "switchboard_runtime::config::lossy")]
    pub clickhouse_validation: bool,
    /// The normalizer target's event-time window (same meaning as the normalizer's).
    #[serde(
        default = "crate::normalize::default_max_age",
        with = "humantime_serde"
    )]
    pub event_time_max_age: Duration,
    #[serde(
        default = "crate::normalize::default_max_ahead",
        with = "humantime_serde"
    )]
    pub event_time_max_ahead: Duration,
    /// The fan-out's retry schedule: fan-out targets put their tasks on the topic of its
    /// shortest delay, as recover and resend do.
    #[serde(default = "switchboard_runtime::config::defaults::retry_schedule")]
    pub retry_schedule: String,
    /// Records per batch handed to a target.
    #[serde(
        default = "default_batch",
        deserialize_with = "switchboard_runtime::config::lossy"
    )]
    pub replay_batch: usize,
}

/// The `replayer`'s configuration: [`Config`] and its own service settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReplayerConfig {
    #[serde(flatten)]
    pub replay: Config,
    /// Ops endpoints.
    #[serde(default = "default_ops")]
    pub ops_addr: String,
    /// How often an idle replayer looks for jobs.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub replay_poll_interval: Duration,
}

impl Config {
    pub fn time_window(&self) -> crate::normalize::TimeWindow {
        crate::normalize::TimeWindow::new(self.event_time_max_age, self.event_time_max_ahead)
    }
}

/// Large batches: ClickHouse parts and look-ups per batch cost the same at any size
/// (measured: 1M events into ClickHouse in 25 s at 5,000, 10.5 s at 50,000).
pub fn default_batch() -> usize {
    50_000
}
fn default_ops() -> String {
    "127.0.0.1:9106".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::config::{documented_variables, variables_of};

    #[test]
    fn readme_documents_exactly_the_replay_variables() {
        let cfg: super::Config =
            serde_json::from_value(serde_json::json!({})).expect("all defaults");
        let readme = include_str!("../../../README.md");
        assert_eq!(
            variables_of(&cfg),
            documented_variables(readme, "switchboard")
        );
        let cfg: super::ReplayerConfig =
            serde_json::from_value(serde_json::json!({})).expect("all defaults");
        assert_eq!(variables_of(&cfg), documented_variables(readme, "replayer"));
    }
}
