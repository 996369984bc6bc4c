//! Typed configuration: defaults in the struct, then an optional TOML file named by
//! `SWITCHBOARD_CONFIG_FILE`, then `SWITCHBOARD_*` environment variables (highest).
//! Variable names are the field names upper-cased: `kafka_brokers` is
//! `SWITCHBOARD_KAFKA_BROKERS`.

use std::collections::BTreeMap;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "SWITCHBOARD_";

pub fn load<T: DeserializeOwned>() -> anyhow::Result<T> {
    let mut fig = Figment::new();
    if let Ok(path) = std::env::var("SWITCHBOARD_CONFIG_FILE") {
        fig = fig.merge(Toml::file_exact(path));
    }
    // Env values stay strings (figment's `Env` would turn "0123" into 123, breaking a
    // String field); `extract_lossy` still parses them where a field wants a number/bool.
    let env: BTreeMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase(), v)))
        .filter(|(k, _)| k != "config_file")
        .collect();
    fig = fig.merge(Serialized::defaults(env));
    fig.extract_lossy::<T>()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// Settings every Kafka-facing binary shares.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    #[serde(default = "default_brokers")]
    pub kafka_brokers: String,
    /// Prefix for every topic name (tests isolate themselves with it).
    #[serde(default)]
    pub topic_prefix: String,
    /// Confluent-compatible schema registry.
    #[serde(default = "default_registry")]
    pub schema_registry_url: String,
    /// How long the producer waits to fill a batch (`linger.ms`): more batching, fewer
    /// wake-ups of librdkafka's threads, against added latency.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub kafka_linger: std::time::Duration,
    /// Largest record value, end to end: producers' `message.max.bytes`, topics'
    /// `max.message.bytes` (set when topics are created) and consumers' fetch sizes. It
    /// must hold the largest body the gateway accepts plus the record's framing.
    #[serde(default = "default_message_max")]
    pub kafka_message_max_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            kafka_brokers: default_brokers(),
            topic_prefix: String::new(),
            schema_registry_url: default_registry(),
            kafka_linger: default_linger(),
            kafka_message_max_bytes: default_message_max(),
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_linger() -> std::time::Duration {
    std::time::Duration::from_millis(5)
}
/// 4 MiB of gateway body plus 1 MiB for framing and headers.
fn default_message_max() -> usize {
    5 * 1024 * 1024
}
fn default_registry() -> String {
    "http://127.0.0.1:8081".into()
}

/// Defaults several binaries share, so that they agree (serde `default = "..."` paths).
pub mod defaults {
    /// The local PostgreSQL of `deploy/infra.sh`.
    pub fn database_url() -> String {
        "postgres://switchboard:switchboard@127.0.0.1/switchboard".into()
    }
    pub fn clickhouse_url() -> String {
        "http://127.0.0.1:8123".into()
    }
    pub fn clickhouse_database() -> String {
        "switchboard".into()
    }
    /// The fan-out's delivery retry schedule: 8 attempts over about 28 h.
    pub fn retry_schedule() -> String {
        "5s,5m,30m,2h,5h,10h,10h".into()
    }
}

/// The `SWITCHBOARD_*` variables a config struct reads: its serialized field names,
/// upper-cased. Used to test the README's configuration table against the code.
pub fn variables_of<T: serde::Serialize>(cfg: &T) -> std::collections::BTreeSet<String> {
    match serde_json::to_value(cfg) {
        Ok(serde_json::Value::Object(m)) => m
            .keys()
            .map(|k| format!("{ENV_PREFIX}{}", k.to_ascii_uppercase()))
            .collect(),
        _ => Default::default(),
    }
}

/// The variables the README's configuration table documents for `binary` (rows whose
/// binaries column names it, names `all`, or names `sinks` for either sink).
pub fn documented_variables(readme: &str, binary: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `SWITCHBOARD_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (vars, bins) = (
            cells.get(1).copied().unwrap_or(""),
            cells.get(2).copied().unwrap_or(""),
        );
        let applies = bins.split(',').map(str::trim).any(|b| {
            b == binary
                || b == "all"
                || (b == "sinks" && (binary == "pg-sink" || binary == "ch-sink"))
        });
        if applies {
            out.extend(
                vars.split('`')
                    .filter(|v| v.starts_with(ENV_PREFIX))
                    .map(str::to_string),
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(flatten)]
        kafka: KafkaConfig,
        #[serde(default = "d")]
        port_ish: String,
        #[serde(default, with = "humantime_serde")]
        wait: Option<std::time::Duration>,
        #[serde(default)]
        n: u32,
        #[serde(default)]
        flag: bool,
    }
    fn d() -> String {
        "x".into()
    }

    #[test]
    fn env_overrides_defaults_and_numbers_stay_strings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_KAFKA_BROKERS", "10.0.0.1:9092");
            jail.set_env("SWITCHBOARD_PORT_ISH", "0123");
            jail.set_env("SWITCHBOARD_WAIT", "5s");
            jail.set_env("SWITCHBOARD_N", "42");
            jail.set_env("SWITCHBOARD_FLAG", "true");
            let t: T = load().map_err(|e| e.to_string())?;
            assert_eq!(t.kafka.kafka_brokers, "10.0.0.1:9092");
            assert_eq!(t.kafka.schema_registry_url, "http://127.0.0.1:8081");
            assert_eq!(t.port_ish, "0123");
            assert_eq!(t.wait, Some(std::time::Duration::from_secs(5)));
            assert_eq!(t.n, 42);
            assert!(t.flag);
            Ok(())
        });
    }

    #[test]
    fn file_is_read_and_env_wins() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "kafka_brokers = \"file:1\"\ntopic_prefix = \"p.\"\n",
            )?;
            jail.set_env("SWITCHBOARD_CONFIG_FILE", "c.toml");
            jail.set_env("SWITCHBOARD_TOPIC_PREFIX", "env.");
            let t: T = load().map_err(|e| e.to_string())?;
            assert_eq!(t.kafka.kafka_brokers, "file:1");
            assert_eq!(t.kafka.topic_prefix, "env.");
            Ok(())
        });
    }
}
