//! The records carried on Switchboard's topics.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const RAW_WEBHOOK_SCHEMA: &str = include_str!("../avro/raw_webhook.avsc");
pub const EVENT_SCHEMA: &str = include_str!("../avro/event.avsc");
pub const DEAD_LETTER_SCHEMA: &str = include_str!("../avro/dead_letter.avsc");
pub const SEND_REQUEST_SCHEMA: &str = include_str!("../avro/send_request.avsc");
pub const CONFIG_RECORD_SCHEMA: &str = include_str!("../avro/config_record.avsc");
pub const DELIVERY_TASK_SCHEMA: &str = include_str!("../avro/delivery_task.avsc");
pub const DELIVERY_ATTEMPTS_SCHEMA: &str = include_str!("../avro/delivery_attempts.avsc");

/// A BSP webhook request as the gateway received it (`wa.webhooks.raw`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawWebhook {
    pub request_id: String,
    pub bsp: String,
    pub received_at_ms: i64,
    pub content_type: String,
    pub headers: HashMap<String, String>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub body: Vec<u8>,
}

/// One canonical event (`wa.events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Event {
    pub event_id: String,
    pub event_type: String,
    pub bsp: String,
    pub tenant_id: Option<String>,
    pub business_number: String,
    pub business_account_id: Option<String>,
    pub customer_id: String,
    pub wamid: String,
    pub status: Option<String>,
    pub message_type: Option<String>,
    pub content: Option<String>,
    pub context_wamid: Option<String>,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    pub error_code: Option<String>,
    pub error_title: Option<String>,
    pub error_detail: Option<String>,
    pub conversation_id: Option<String>,
    pub conversation_category: Option<String>,
    pub pricing_category: Option<String>,
    pub billable: Option<bool>,
    pub request_id: String,
    pub message_id: Option<String>,
    pub metadata: Option<String>,
    #[serde(default)]
    pub pricing_model: Option<String>,
    #[serde(default)]
    pub pricing_type: Option<String>,
}

impl Event {
    /// The `wa.events` key: all events of one conversation land in one partition, in order.
    pub fn conversation_key(&self) -> String {
        format!("{}:{}", self.business_number, self.customer_id)
    }

    pub fn status(&self) -> Option<Status> {
        self.status.as_deref().and_then(|s| s.parse().ok())
    }

    /// The template (name, language code) of a template send through the API: its
    /// content is the Cloud API message object.
    pub fn template(&self) -> Option<(String, String)> {
        if self.message_type.as_deref() != Some("template") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(self.content.as_deref()?).ok()?;
        let t = v.get("template")?;
        let name = t.get("name")?.as_str()?.to_string();
        let lang = t
            .pointer("/language/code")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        Some((name, lang))
    }

    /// The `campaign` tag of the sender's metadata, if it set one.
    pub fn campaign(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.metadata.as_deref()?).ok()?;
        match v.get("campaign")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Whether the message is charged. Meta deprecates `billable` in favour of the
    /// pricing type (`regular` is charged, `free_*` are not), so the type decides and
    /// `billable` only speaks for payloads without one.
    pub fn is_billable(&self) -> bool {
        match self.pricing_type.as_deref() {
            Some("regular") => true,
            Some(_) => false,
            None => self.billable == Some(true),
        }
    }
}

/// A validated client send request (`wa.send.requests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SendRequest {
    pub message_id: String,
    pub tenant_id: String,
    pub from_number: String,
    pub to: String,
    pub message_type: String,
    pub message: String,
    pub idempotency_key: Option<String>,
    pub metadata: Option<String>,
    pub scheduled_at_ms: Option<i64>,
    pub accepted_at_ms: i64,
    pub request_id: String,
}

impl SendRequest {
    /// The `wa.send.requests` key: one sender number's requests share a partition, so
    /// one router instance owns that number's rate limit.
    pub fn sender_key(&self) -> String {
        format!("{}:{}", self.tenant_id, self.from_number)
    }
}

/// One configuration entity (`wa.config`, compacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub entity: String,
    pub id: String,
    pub tenant_id: String,
    pub deleted: bool,
    pub body: String,
    pub version: i64,
}

impl ConfigRecord {
    /// The compaction key: the latest record per entity survives.
    pub fn key(&self) -> String {
        format!("{}:{}", self.entity, self.id)
    }
}

/// One event to deliver to one endpoint later (`wa.deliveries.retry.*`), or given up
/// (`wa.deliveries.dlq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeliveryTask {
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub endpoint_id: String,
    pub conversation: String,
    pub attempt: i32,
    pub not_before_ms: i64,
    pub first_attempt_ms: i64,
    pub trigger: String,
    pub body: String,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
}

/// Attempts settled together (`wa.deliveries.attempts`): the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeliveryAttempts {
    pub attempts: Vec<DeliveryAttempt>,
}

/// One delivery attempt, for the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeliveryAttempt {
    pub attempt_id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i32,
    pub trigger: String,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
    pub attempted_at_ms: i64,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub body: String,
}

/// A record a stage could not handle, with where it came from (each stage's dead-letter topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: String,
    pub detail: String,
    pub failed_at_ms: i64,
    pub key: Option<String>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub source_timestamp_ms: Option<i64>,
    #[serde(default)]
    pub payload_truncated: bool,
    #[serde(default)]
    pub payload_size: i64,
    #[serde(default)]
    pub headers: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Status,
    Received,
    SendAccepted,
    SendFailed,
    /// An inbound message's media is kept by Switchboard: `content` holds `{media_id,
    /// sha256, size, mime_type, url}`.
    MediaStored,
    /// A customer stopped or resumed marketing messages (Meta's `user_preferences`);
    /// `content` holds `{category, value, detail}`. Not a message event: the message
    /// stores skip it.
    Preference,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Status => "message.status",
            EventType::Received => "message.received",
            EventType::SendAccepted => "message.send_accepted",
            EventType::SendFailed => "message.send_failed",
            EventType::MediaStored => "message.media_stored",
            EventType::Preference => "customer.preference",
        }
    }
}

/// Canonical message status. The order of the variants is the monotonic-merge rank: a
/// message's current status only moves to a higher rank (a late `failed` does not undo a
/// `delivered`; `read` without `delivered` is fine). `deleted` ranks last because a
/// message the customer deleted stays deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Accepted,
    Sent,
    Failed,
    Delivered,
    Read,
    Played,
    Deleted,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Accepted,
        Status::Sent,
        Status::Failed,
        Status::Delivered,
        Status::Read,
        Status::Played,
        Status::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Played => "played",
            Status::Deleted => "deleted",
        }
    }

    /// Rank used by the sinks' monotonic merge (1 = lowest).
    pub fn rank(self) -> i16 {
        self as i16 + 1
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown canonical status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use apache_avro::Schema;

    use super::*;

    /// Field names of a serialized Rust value, in order.
    fn field_names(v: &Value) -> Vec<String> {
        match v {
            Value::Record(fields) => fields.iter().map(|(k, _)| k.clone()).collect(),
            other => panic!("not a record: {other:?}"),
        }
    }

    fn schema_field_names(schema: &Schema) -> Vec<String> {
        match schema {
            Schema::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
            other => panic!("not a record schema: {other:?}"),
        }
    }

    fn check<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
        avsc: &str,
        sample: T,
    ) {
        let schema = Schema::parse_str(avsc).expect("valid Avro schema");
        let value = apache_avro::to_value(&sample).expect("serializes");
        assert_eq!(
            field_names(&value),
            schema_field_names(&schema),
            "Rust fields = schema fields, in order"
        );
        let resolved = value
            .resolve(&schema)
            .expect("the Rust value fits the schema");
        let back: T = apache_avro::from_value(&resolved).expect("decodes back");
        assert_eq!(back, sample);
    }

    #[test]
    fn types_match_schemas() {
        check(
            RAW_WEBHOOK_SCHEMA,
            RawWebhook {
                request_id: "r".into(),
                bsp: "meta".into(),
                received_at_ms: 1,
                content_type: "application/json".into(),
                headers: HashMap::from([("user-agent".to_string(), "x".to_string())]),
                body: b"{}".to_vec(),
            },
        );
        check(
            EVENT_SCHEMA,
            Event {
                event_id: "evt_1".into(),
                event_type: EventType::Status.as_str().into(),
                status: Some("sent".into()),
                billable: Some(true),
                error_code: Some("131049".into()),
                ..Event::default()
            },
        );
        check(
            DELIVERY_TASK_SCHEMA,
            DeliveryTask {
                event_id: "evt_1".into(),
                attempt: 2,
                last_status: Some(503),
                ..DeliveryTask::default()
            },
        );
        check(
            DELIVERY_ATTEMPTS_SCHEMA,
            DeliveryAttempts {
                attempts: vec![DeliveryAttempt {
                    attempt_id: "att_1".into(),
                    status_code: Some(200),
                    is_final: true,
                    response_snippet: Some("ok".into()),
                    ..DeliveryAttempt::default()
                }],
            },
        );
        check(
            DEAD_LETTER_SCHEMA,
            DeadLetter {
                source_topic: "t".into(),
                source_partition: 1,
                source_offset: 2,
                reason: "bad_shape".into(),
                detail: "d".into(),
                failed_at_ms: 3,
                key: None,
                payload: vec![0, 1, 2],
                stage: "pg-sink".into(),
                source_timestamp_ms: Some(4),
                payload_truncated: false,
                payload_size: 3,
                headers: [("request-id".to_string(), "r".to_string())].into(),
            },
        );
        check(
            SEND_REQUEST_SCHEMA,
            SendRequest {
                message_id: "msg_1".into(),
                tenant_id: "ten_1".into(),
                from_number: "+15550001111".into(),
                to: "+15550002222".into(),
                message_type: "text".into(),
                message: r#"{"type":"text","text":{"body":"hi"}}"#.into(),
                idempotency_key: Some("k".into()),
                metadata: Some("{}".into()),
                scheduled_at_ms: Some(5),
                accepted_at_ms: 4,
                request_id: "r".into(),
            },
        );
        check(
            CONFIG_RECORD_SCHEMA,
            ConfigRecord {
                entity: "tenant".into(),
                id: "ten_1".into(),
                tenant_id: "ten_1".into(),
                deleted: false,
                body: "{}".into(),
                version: 7,
            },
        );
    }
}
