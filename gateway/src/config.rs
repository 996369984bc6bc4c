//! Gateway configuration (`SWITCHBOARD_*`, see the README's table).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_connectors::Bsp;
use switchboard_runtime::config::KafkaConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(flatten)]
    pub kafka: KafkaConfig,
    /// Listen address for webhooks and the API (and `/healthz`).
    #[serde(default = "default_addr")]
    pub http_addr: String,
    /// Listen address for `/healthz`, `/readyz` and `/metrics`, kept off the public port.
    #[serde(default = "default_ops_addr")]
    pub ops_addr: String,
    /// Time a client has to send a request's head (line and headers).
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub http_body_timeout: Duration,
    /// Kernel send buffer of each public connection (0: the system's): what a client that
    /// stops reading can pin, and how soon an event stream notices it.
    #[serde(default = "default_send_buffer")]
    pub http_send_buffer_bytes: usize,
    /// Connections open at once on the public port; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub http_max_connections: usize,
    /// Endpoints one tenant may have (each event's delivery work grows with them).
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints_per_tenant: u32,
    /// Failed admin-key attempts a peer address may make per minute; then it gets 429
    /// (right key or not) until the minute is over.
    #[serde(default = "default_admin_failures")]
    pub admin_auth_failures_per_minute: u32,
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long a webhook may wait for the broker's ack before the BSP gets a 503.
    #[serde(default = "default_produce_timeout", with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Meta app secret (X-Hub-Signature-256). This and the other webhook secrets below
    /// are the global ones: they prove webhooks of accounts no tenant owns, and of a
    /// tenant whose credentials for that BSP carry no webhook secret of their own
    /// (`app_secret`, `webhook_token`, ...: README, "Webhook secrets per tenant"). Leave
    /// them empty in a multi-tenant deployment.
    #[serde(default)]
    pub meta_app_secret: String,
    /// Token Meta echoes in the subscription handshake.
    #[serde(default)]
    pub meta_verify_token: String,
    /// Shared token for 360dialog webhooks (`?token=` or `X-Switchboard-Token`).
    #[serde(default)]
    pub dialog360_token: String,
    /// Shared token for Gupshup webhooks (`?token=` or `X-Switchboard-Token`).
    #[serde(default)]
    pub gupshup_token: String,
    /// AiSensy webhook secret (X-AiSensy-Signature, HMAC-SHA256); when empty,
    /// `aisensy_token` (shared token) is checked instead.
    #[serde(default)]
    pub aisensy_webhook_secret: String,
    /// Shared token for AiSensy accounts that do not sign webhooks.
    #[serde(default)]
    pub aisensy_token: String,
    /// Shared token for Karix webhooks (Karix does not sign).
    #[serde(default)]
    pub karix_token: String,
    /// Twilio auth token (X-Twilio-Signature).
    #[serde(default)]
    pub twilio_auth_token: String,
    /// WAHA webhook HMAC key (X-Webhook-Hmac, SHA-512).
    #[serde(default)]
    pub waha_hmac_key: String,
    /// The public base URL Twilio calls (e.g. `https://hooks.example.com`); Twilio signs
    /// the full URL, which behind a proxy differs from what the gateway sees.
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// Networks endpoint URLs may point at although not public (CIDRs, comma-separated;
    /// the fan-out's setting of the same name must agree).
    #[serde(default)]
    pub endpoint_allow_nets: String,
    /// ClickHouse HTTP endpoint, for the delivery log API.
    #[serde(default = "switchboard_runtime::config::defaults::clickhouse_url")]
    pub clickhouse_url: String,
    /// ClickHouse database of the delivery log.
    #[serde(default = "switchboard_runtime::config::defaults::clickhouse_database")]
    pub clickhouse_database: String,
    /// The fan-out's retry schedule (comma-separated delays): recover and resend tasks go
    /// to the delay topic of its shortest delay, which exists once the fan-out ran.
    #[serde(default = "switchboard_runtime::config::defaults::retry_schedule")]
    pub retry_schedule: String,
    /// PostgreSQL: the configuration plane and the send API's message state.
    #[serde(default = "switchboard_runtime::config::defaults::database_url")]
    pub database_url: String,
    /// Bearer token of the admin API (`/admin/...`); empty disables it.
    #[serde(default)]
    pub admin_api_key: String,
    /// AES-256-GCM keyring for BSP credentials, `kid:base64key[,...]`, first key encrypts.
    #[serde(default)]
    pub credentials_keys: String,
    /// Records of `wa.events` one `GET /v1/events` may read at most (the topic holds every
    /// tenant's events; a poll that finds fewer than it asked for says `done: false`).
    #[serde(default = "default_events_scan_records")]
    pub events_scan_records: usize,
    /// Time one `GET /v1/events` may spend reading at most.
    #[serde(default = "default_events_scan_time", with = "humantime_serde")]
    pub events_scan_time: Duration,
    /// Event streams (`GET /v1/events/stream`) one tenant may have open on one gateway.
    #[serde(default = "default_stream_max_per_tenant")]
    pub stream_max_per_tenant: usize,
    /// Live events a stream may have waiting; beyond them it catches up from the topic.
    #[serde(default = "default_stream_buffer")]
    pub stream_buffer: usize,
    /// How long a stream's client may take to accept one more event before the stream
    /// ends as too slow.
    #[serde(default = "default_stream_stall_timeout", with = "humantime_serde")]
    pub stream_stall_timeout: Duration,
    /// How often an idle stream sends a heartbeat (an SSE comment, a WebSocket ping).
    #[serde(default = "default_stream_heartbeat", with = "humantime_serde")]
    pub stream_heartbeat: Duration,
    /// Longest `from`..`to` an analytics request may cover.
    #[serde(default = "default_analytics_max_range", with = "humantime_serde")]
    pub analytics_max_range: Duration,
    /// Most groups (distinct `group_by` values) and most rows (groups × periods) one
    /// analytics answer may have; more is a 400 asking for a narrower question.
    #[serde(default = "default_analytics_max_groups")]
    pub analytics_max_groups: usize,
    #[serde(default = "default_analytics_max_rows")]
    pub analytics_max_rows: usize,
    /// Largest body of `POST /v1/messages/batch` and `POST /v1/campaigns` (single sends
    /// use `max_body_bytes`).
    #[serde(default = "default_max_batch_body")]
    pub max_batch_body_bytes: usize,
    /// Where the routers keep inbound media (`GET /v1/media/{sha256}` reads it there).
    #[serde(default = "switchboard_processors::route::default_media_store")]
    pub media_store: String,
}

fn default_analytics_max_range() -> Duration {
    Duration::from_secs(366 * 86_400)
}
fn default_analytics_max_groups() -> usize {
    1_000
}
fn default_analytics_max_rows() -> usize {
    10_000
}

/// What a raw webhook record adds to its body: request id, BSP, kept headers, Avro and
/// Kafka framing (a few KiB at most; this leaves room).
pub const RAW_RECORD_OVERHEAD: usize = 64 * 1024;

impl Config {
    /// Refuse settings under which an accepted body could not be produced: a BSP would
    /// get `503` for it on every retry and finally give up.
    pub fn check(&self) -> anyhow::Result<()> {
        let need = self.max_body_bytes + RAW_RECORD_OVERHEAD;
        anyhow::ensure!(
            need <= self.kafka.kafka_message_max_bytes,
            "SWITCHBOARD_MAX_BODY_BYTES ({}) plus {} bytes of record framing exceeds SWITCHBOARD_KAFKA_MESSAGE_MAX_BYTES ({}): raise the message limit (producers and topics) or lower the body limit",
            self.max_body_bytes,
            RAW_RECORD_OVERHEAD,
            self.kafka.kafka_message_max_bytes
        );
        Ok(())
    }
}

impl Config {
    /// The global webhook secrets of `bsp`, under the credential field names a tenant's
    /// own would have (see `switchboard_connectors::webhook_auth`).
    pub fn webhook_secrets(&self, bsp: Bsp) -> serde_json::Map<String, serde_json::Value> {
        let pairs: &[(&str, &str)] = match bsp {
            Bsp::Meta => &[("app_secret", &self.meta_app_secret)],
            Bsp::Dialog360 => &[("webhook_token", &self.dialog360_token)],
            Bsp::Gupshup => &[("webhook_token", &self.gupshup_token)],
            Bsp::Twilio => &[("auth_token", &self.twilio_auth_token)],
            Bsp::Waha => &[("webhook_hmac_key", &self.waha_hmac_key)],
            Bsp::Aisensy => &[
                ("webhook_secret", &self.aisensy_webhook_secret),
                ("webhook_token", &self.aisensy_token),
            ],
            Bsp::Karix => &[("webhook_token", &self.karix_token)],
        };
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect()
    }
}

fn default_events_scan_records() -> usize {
    20_000
}
fn default_events_scan_time() -> Duration {
    Duration::from_secs(2)
}

fn default_stream_max_per_tenant() -> usize {
    20
}
fn default_stream_buffer() -> usize {
    1000
}
fn default_stream_stall_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_stream_heartbeat() -> Duration {
    Duration::from_secs(15)
}

fn default_max_batch_body() -> usize {
    16 * 1024 * 1024
}

fn default_public_url() -> String {
    "http://127.0.0.1:8080".into()
}

fn default_addr() -> String {
    "127.0.0.1:8080".into()
}
fn default_ops_addr() -> String {
    "127.0.0.1:9100".into()
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_send_buffer() -> usize {
    256 * 1024
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_endpoints() -> u32 {
    100
}
fn default_admin_failures() -> u32 {
    10
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_produce_timeout() -> Duration {
    Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use switchboard_runtime::config::{documented_variables, variables_of};

    #[test]
    fn a_body_limit_the_broker_cannot_take_is_refused_at_start() {
        let mut cfg: super::Config =
            serde_json::from_value(serde_json::json!({})).expect("all defaults");
        cfg.check().expect("the defaults fit");
        cfg.max_body_bytes = cfg.kafka.kafka_message_max_bytes;
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_KAFKA_MESSAGE_MAX_BYTES"), "{e}");
    }

    #[test]
    fn readme_documents_exactly_the_gateway_variables() {
        let cfg: super::Config =
            serde_json::from_value(serde_json::json!({})).expect("all defaults");
        let readme = include_str!("../../README.md");
        assert_eq!(variables_of(&cfg), documented_variables(readme, "gateway"));
    }
}
