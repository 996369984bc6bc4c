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
    let env = env_settings(std::env::vars(), |path| std::fs::read_to_string(path))?;
    fig = fig.merge(Serialized::defaults(env));
    fig.extract_lossy::<T>()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// The `SWITCHBOARD_*` variables as settings. `SWITCHBOARD_X_FILE=/path` sets `x` to the
/// file's content (without its final newline), so secrets can come from mounted files
/// (Kubernetes Secrets, Docker secrets) instead of the environment.
///
/// Values stay strings (figment's `Env` would turn "0123" into 123, breaking a String
/// field); `extract_lossy` still parses them where a field wants a number or a bool.
fn env_settings(
    vars: impl Iterator<Item = (String, String)>,
    read: impl Fn(&str) -> std::io::Result<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut plain = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (k, v) in vars {
        let Some(name) = k.strip_prefix(ENV_PREFIX).map(str::to_ascii_lowercase) else {
            continue;
        };
        if name == "config_file" {
            continue;
        }
        match name.strip_suffix("_file") {
            Some(base) => files.insert(base.to_string(), v),
            None => plain.insert(name, v),
        };
    }
    for (name, path) in files {
        anyhow::ensure!(
            !plain.contains_key(&name),
            "both {ENV_PREFIX}{0} and {ENV_PREFIX}{0}_FILE are set; set one",
            name.to_ascii_uppercase()
        );
        let value = read(&path).map_err(|e| {
            anyhow::anyhow!(
                "{ENV_PREFIX}{}_FILE: cannot read {path}: {e}",
                name.to_ascii_uppercase()
            )
        })?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        plain.insert(name, value.to_string());
    }
    Ok(plain)
}

/// For numbers and booleans of a struct that is `#[serde(flatten)]`ed into another: serde
/// buffers such fields, so figment's string-to-number conversion never sees them and
/// `SWITCHBOARD_KAFKA_MESSAGE_MAX_BYTES=6000` would be "a string, expected usize". Takes
/// the value itself or its text.
pub fn lossy<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<T> {
        Value(T),
        Text(String),
    }
    match Raw::<T>::deserialize(d)? {
        Raw::Value(v) => Ok(v),
        Raw::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// librdkafka properties passed through as they are (`SWITCHBOARD_KAFKA_PROPERTIES`):
/// `key=value` entries separated by `;` or new lines in a variable, or a table in the
/// config file.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Properties(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Table(BTreeMap<String, String>),
        }
        match Raw::deserialize(d)? {
            Raw::Table(t) => Ok(Properties(t)),
            Raw::Text(s) => s
                .split([';', '\n'])
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| {
                    e.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| serde::de::Error::custom(format!("{e:?} is not key=value")))
                })
                .collect::<Result<_, _>>()
                .map(Properties),
        }
    }
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
    /// Producers' `compression.type`: `lz4` (default), `zstd`, `snappy`, `gzip` or `none`
    /// (on loopback compression can cost more CPU than the bytes it saves).
    #[serde(default = "default_compression")]
    pub kafka_compression: String,
    /// Largest record value, end to end: producers' `message.max.bytes`, topics'
    /// `max.message.bytes` (set when topics are created) and consumers' fetch sizes. It
    /// must hold the largest body the gateway accepts plus the record's framing.
    #[serde(default = "default_message_max", deserialize_with = "lossy")]
    pub kafka_message_max_bytes: usize,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default = "default_protocol")]
    pub kafka_security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (with `sasl_*`).
    #[serde(default)]
    pub kafka_sasl_mechanism: String,
    #[serde(default)]
    pub kafka_sasl_username: String,
    #[serde(default)]
    pub kafka_sasl_password: String,
    /// CA bundle (PEM) the broker's certificate must chain to; empty: the system's.
    #[serde(default)]
    pub kafka_ssl_ca_location: String,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub kafka_ssl_certificate_location: String,
    #[serde(default)]
    pub kafka_ssl_key_location: String,
    #[serde(default)]
    pub kafka_ssl_key_password: String,
    /// `https`: the broker's certificate must name the host connected to; `none`: not
    /// checked (never in production).
    #[serde(default = "default_identification")]
    pub kafka_ssl_endpoint_identification: String,
    /// Any other librdkafka property, applied last (see [`Properties`]).
    #[serde(default)]
    pub kafka_properties: Properties,
    /// Replication factor of the topics Switchboard creates (3 in production).
    #[serde(default = "default_replication", deserialize_with = "lossy")]
    pub kafka_replication_factor: i32,
    /// Settings of the topics Switchboard creates, `[topic:]key=value` separated by `;`:
    /// without a topic for every topic (e.g. `min.insync.replicas=2`), with one for that
    /// topic (`wa.webhooks.raw:retention.ms=1209600000`). Topic names without the prefix.
    #[serde(default)]
    pub kafka_topic_config: String,
    /// Replace a producer whose deliveries have failed this long (librdkafka's can get
    /// stuck after an outage; a fatal error replaces it at once): see `producer.rs`.
    #[serde(default = "default_rebuild_after", with = "humantime_serde")]
    pub producer_rebuild_after: std::time::Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            kafka_brokers: default_brokers(),
            topic_prefix: String::new(),
            schema_registry_url: default_registry(),
            kafka_linger: default_linger(),
            kafka_compression: default_compression(),
            kafka_message_max_bytes: default_message_max(),
            kafka_security_protocol: default_protocol(),
            kafka_sasl_mechanism: String::new(),
            kafka_sasl_username: String::new(),
            kafka_sasl_password: String::new(),
            kafka_ssl_ca_location: String::new(),
            kafka_ssl_certificate_location: String::new(),
            kafka_ssl_key_location: String::new(),
            kafka_ssl_key_password: String::new(),
            kafka_ssl_endpoint_identification: default_identification(),
            kafka_properties: Properties::default(),
            kafka_replication_factor: default_replication(),
            kafka_topic_config: String::new(),
            producer_rebuild_after: default_rebuild_after(),
        }
    }
}

impl KafkaConfig {
    /// The topic settings `kafka_topic_config` gives `topic` (named without the prefix).
    pub fn topic_settings(&self, topic: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for entry in self
            .kafka_topic_config
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (k, v) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "SWITCHBOARD_KAFKA_TOPIC_CONFIG: {entry:?} is not [topic:]key=value"
                )
            })?;
            match k.split_once(':') {
                Some((t, key)) if t.trim() == topic => {
                    out.insert(key.trim().to_string(), v.trim().to_string());
                }
                Some(_) => {}
                None => {
                    out.entry(k.trim().to_string())
                        .or_insert_with(|| v.trim().to_string());
                }
            }
        }
        Ok(out)
    }
}

fn default_protocol() -> String {
    "plaintext".into()
}
fn default_identification() -> String {
    "https".into()
}
fn default_replication() -> i32 {
    1
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_rebuild_after() -> std::time::Duration {
    std::time::Duration::from_secs(10)
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
///
/// Panics on a setting whose name ends in `_file`: its variable would be read as the
/// file indirection of another setting (`SWITCHBOARD_X_FILE`), never as itself.
pub fn variables_of<T: serde::Serialize>(cfg: &T) -> std::collections::BTreeSet<String> {
    match serde_json::to_value(cfg) {
        Ok(serde_json::Value::Object(m)) => m
            .keys()
            .inspect(|k| {
                assert!(
                    !k.ends_with("_file"),
                    "setting {k} cannot be set: {ENV_PREFIX}{}=... names a file holding `{}`",
                    k.to_ascii_uppercase(),
                    k.trim_end_matches("_file")
                )
            })
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

    #[test]
    fn secrets_come_from_files_and_librdkafka_properties_pass_through() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pw", "s3cret\n")?;
            jail.create_file(
                "c.toml",
                "[kafka_properties]\n\"socket.keepalive.enable\" = \"true\"\n",
            )?;
            jail.set_env("SWITCHBOARD_CONFIG_FILE", "c.toml");
            jail.set_env("SWITCHBOARD_KAFKA_SASL_PASSWORD_FILE", "pw");
            let t: T = load().map_err(|e| e.to_string())?;
            assert_eq!(t.kafka.kafka_sasl_password, "s3cret");
            assert_eq!(
                t.kafka.kafka_properties.0.get("socket.keepalive.enable"),
                Some(&"true".to_string())
            );
            jail.set_env(
                "SWITCHBOARD_KAFKA_PROPERTIES",
                "client.id=sb; debug=broker,protocol",
            );
            let t: T = load().map_err(|e| e.to_string())?;
            assert_eq!(t.kafka.kafka_properties.0["debug"], "broker,protocol");
            assert_eq!(t.kafka.kafka_properties.0["client.id"], "sb");
            jail.set_env("SWITCHBOARD_KAFKA_SASL_PASSWORD", "also");
            let e = load::<T>().err().expect("both set").to_string();
            assert!(e.contains("set one"), "{e}");
            Ok(())
        });
        let e = env_settings(
            [("SWITCHBOARD_X_FILE".to_string(), "/nope".to_string())].into_iter(),
            |p| std::fs::read_to_string(p),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SWITCHBOARD_X_FILE") && e.contains("/nope"),
            "{e}"
        );
    }

    #[test]
    fn numbers_of_flattened_settings_come_from_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_KAFKA_MESSAGE_MAX_BYTES", "6000");
            jail.set_env("SWITCHBOARD_KAFKA_REPLICATION_FACTOR", "3");
            let t: T = load().map_err(|e| e.to_string())?;
            assert_eq!(t.kafka.kafka_message_max_bytes, 6000);
            assert_eq!(t.kafka.kafka_replication_factor, 3);
            jail.create_file("c.toml", "kafka_replication_factor = 2\n")?;
            jail.clear_env();
            jail.set_env("SWITCHBOARD_CONFIG_FILE", "c.toml");
            let t: T = load().map_err(|e| e.to_string())?;
            assert_eq!(t.kafka.kafka_replication_factor, 2);
            Ok(())
        });
    }

    #[test]
    fn topic_settings_apply_to_all_or_one_topic() {
        let k = KafkaConfig {
            kafka_topic_config:
                "min.insync.replicas=2; wa.events:retention.ms=1; wa.events:min.insync.replicas=3"
                    .into(),
            ..Default::default()
        };
        let ev = k.topic_settings("wa.events").unwrap();
        assert_eq!(ev["retention.ms"], "1");
        assert_eq!(
            ev["min.insync.replicas"], "3",
            "the topic's own setting wins"
        );
        let raw = k.topic_settings("wa.webhooks.raw").unwrap();
        assert_eq!(raw.len(), 1);
        assert_eq!(raw["min.insync.replicas"], "2");
        let bad = KafkaConfig {
            kafka_topic_config: "retention".into(),
            ..Default::default()
        };
        assert!(bad.topic_settings("x").is_err());
    }
}
