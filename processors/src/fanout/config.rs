use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::config::KafkaConfig;

/// Fan-out configuration (`SWITCHBOARD_*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    /// Consumer group id of the first-attempt consumer (default `switchboard-fanout`);
    /// the retry consumers use `<group>-retry-<delay>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Static group membership id, unique per replica (see the router's).
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// PostgreSQL with the endpoints table (the gateway's migrations): the fan-out records
    /// when an endpoint started failing and disables dead endpoints there.
    pub database_url: String,
    /// Ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default = "default_ops")]
    pub ops_addr: String,
    /// The credentials keyring (the gateway's): endpoint signing secrets are sealed with it.
    #[serde(default)]
    pub credentials_keys: String,
    /// Delays before each retry, comma-separated (`5s,5m,30m,2h,5h,10h,10h`: 8 attempts
    /// over about 28 hours). One delay topic per distinct delay.
    #[serde(default = "switchboard_runtime::config::defaults::retry_schedule")]
    pub retry_schedule: String,
    /// Timeout of one delivery, connect to last byte.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Bytes of a response body read (the rest is dropped with the connection).
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// Events of `wa.events` handled at once (first attempts).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Failing events a strict endpoint holds in place at once; more wait on a delay
    /// topic (their conversations then lose strict order), so one endpoint cannot hold
    /// every slot.
    #[serde(default = "default_strict_hold")]
    pub strict_hold_max: usize,
    /// Events one tenant may have in flight once half of `max_in_flight` is taken; its
    /// further events wait on a delay topic (see `fanout::admit`).
    #[serde(default = "default_tenant_in_flight")]
    pub tenant_max_in_flight: usize,
    /// Tasks handled at once per delay topic. A task sleeping until due holds one, so a
    /// delay topic passes at most this many tasks per delay (20,000 per 5 s is 4,000/s).
    #[serde(default = "default_retry_in_flight")]
    pub retry_max_in_flight: usize,
    /// Consecutive failures that open an endpoint's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before a probe (doubles up to 16×; ≥ 1 s).
    #[serde(default = "default_breaker_open", with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// An endpoint failing without a single success for this long is disabled.
    #[serde(default = "default_disable_after", with = "humantime_serde")]
    pub disable_after: Duration,
    /// Networks deliveries may reach although not public (CIDRs, comma-separated).
    #[serde(default)]
    pub endpoint_allow_nets: String,
    /// Partitions of the retry delay topics the fan-out creates (the local broker cannot
    /// add partitions later; match `wa.events`).
    #[serde(default = "default_retry_partitions")]
    pub retry_partitions: i32,
}

impl Config {
    /// The retry delays, in order.
    pub fn schedule(&self) -> anyhow::Result<Vec<Duration>> {
        let s = parse_schedule(&self.retry_schedule)?;
        anyhow::ensure!(!s.is_empty(), "retry_schedule: at least one delay");
        Ok(s)
    }
}

pub fn parse_schedule(spec: &str) -> anyhow::Result<Vec<Duration>> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| anyhow::anyhow!("retry_schedule: {s:?}: {e}"))
                .and_then(|d| {
                    anyhow::ensure!(
                        d >= Duration::from_millis(100),
                        "retry_schedule: {s:?} is under 100ms"
                    );
                    Ok(d)
                })
        })
        .collect()
}

fn default_retry_partitions() -> i32 {
    6
}
fn default_strict_hold() -> usize {
    50
}
fn default_ops() -> String {
    "127.0.0.1:9105".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_max_response() -> usize {
    64 * 1024
}
/// Events, not deliveries: each holds one future per endpoint it goes to. Fewer in flight
/// drained a 100-endpoint backlog faster (9,700–10,300/s at 20,000; 13,150/s at 1,000;
/// 14,500/s at 400: loadtest/REPORT.md); more leave room for strict endpoints holding
/// conversations and for a hanging endpoint's first second before it is deferred.
fn default_in_flight() -> usize {
    1000
}
fn default_tenant_in_flight() -> usize {
    100
}
fn default_retry_in_flight() -> usize {
    20_000
}
fn default_breaker_failures() -> u32 {
    10
}
fn default_breaker_open() -> Duration {
    Duration::from_secs(5)
}
fn default_disable_after() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_documents_exactly_the_fanout_variables() {
        use switchboard_runtime::config::{documented_variables, variables_of};
        let cfg: Config =
            serde_json::from_value(serde_json::json!({"database_url": "postgres://x"}))
                .expect("defaults");
        let readme = include_str!("../../../README.md");
        assert_eq!(variables_of(&cfg), documented_variables(readme, "fanout"));
    }

    #[test]
    fn default_schedule_is_close_to_svix() {
        let s = parse_schedule(&switchboard_runtime::config::defaults::retry_schedule()).unwrap();
        let secs: Vec<u64> = s.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert!(parse_schedule("1s, 2s,3s").is_ok());
        assert!(parse_schedule("1s,soon").is_err());
        assert!(parse_schedule("10ms").is_err());
    }
}
