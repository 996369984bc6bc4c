//! Dead letters: the record a stage gave up on, written to that stage's dead-letter
//! topic with the stage, a reason code, the error text, the source position and time,
//! the headers and (up to a cap) the record itself.
//!
//! A dead letter never outgrows the message limit: a payload larger than
//! [`DeadLetters::max_payload`] is left out (`payload_truncated`, with its size), and the
//! source position is always kept, so `switchboard dlq show` and redrive read it from
//! the source topic while it is retained. Every letter is counted
//! (`switchboard_dead_letters_total{stage,reason}`) and logged with its position once the
//! broker has acknowledged it.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::producer::ProducerSlot;
use prometheus::{register_int_counter_vec, IntCounterVec};
use rdkafka::message::{Headers, Message, OwnedMessage};
use switchboard_schemas::{Codec, DeadLetter, DEAD_LETTER_SCHEMA};

use crate::config::KafkaConfig;
use crate::kafka::{produce_all, OutRecord};

pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "switchboard_dead_letters_total",
        "Records a stage gave up on, by stage and reason (written to its dead-letter topic)",
        &["stage", "reason"]
    )
    .expect("registers once")
});

/// Room left in a dead letter for everything but the payload (position, reason, error
/// text, headers, Avro and Kafka framing).
const ENVELOPE_BYTES: usize = 64 * 1024;
/// The error text kept (a multi-megabyte error message helps no one).
const MAX_DETAIL_BYTES: usize = 8 * 1024;

/// One stage's dead-letter writer.
#[derive(Clone)]
pub struct DeadLetters {
    pub stage: &'static str,
    pub topic: String,
    producer: ProducerSlot,
    codec: Codec,
    max_payload: usize,
}

impl DeadLetters {
    pub fn new(
        stage: &'static str,
        topic: &str,
        producer: ProducerSlot,
        codec: Codec,
        kafka: &KafkaConfig,
    ) -> Self {
        Self {
            stage,
            topic: topic.to_string(),
            producer,
            codec,
            max_payload: kafka.kafka_message_max_bytes.saturating_sub(ENVELOPE_BYTES),
        }
    }

    /// The largest source payload embedded whole.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The dead letter of `m` for `reason`, with `detail` (the error text).
    pub fn letter(&self, m: &OwnedMessage, reason: &str, detail: &str) -> DeadLetter {
        let payload = m.payload().unwrap_or_default();
        let truncated = payload.len() > self.max_payload;
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                    headers.insert(h.key.to_string(), v.to_string());
                }
            }
        }
        DeadLetter {
            source_topic: m.topic().to_string(),
            source_partition: m.partition(),
            source_offset: m.offset(),
            reason: reason.to_string(),
            detail: cap(detail, MAX_DETAIL_BYTES),
            failed_at_ms: crate::now_ms(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: if truncated {
                Vec::new()
            } else {
                payload.to_vec()
            },
            stage: self.stage.to_string(),
            source_timestamp_ms: m.timestamp().to_millis(),
            payload_truncated: truncated,
            payload_size: payload.len() as i64,
            headers,
        }
    }

    /// Encode a letter for this stage's topic (for callers that produce it together with
    /// their other output).
    pub async fn record(&self, dl: &DeadLetter) -> anyhow::Result<OutRecord> {
        let payload = self
            .codec
            .encode(&self.topic, DEAD_LETTER_SCHEMA, dl)
            .await?;
        Ok(OutRecord {
            topic: self.topic.clone(),
            key: dl.key.clone().unwrap_or_default(),
            payload,
            headers: vec![("reason", dl.reason.clone()), ("stage", dl.stage.clone())],
        })
    }

    /// Produce `letters` and wait for the broker's acks; then count and log them.
    pub async fn write(&self, letters: &[DeadLetter]) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(letters.len());
        for dl in letters {
            out.push(self.record(dl).await?);
        }
        produce_all(&self.producer, &out).await?;
        for dl in letters {
            self.written(dl);
        }
        Ok(())
    }

    /// Count and log a letter the broker has acknowledged.
    pub fn written(&self, dl: &DeadLetter) {
        DEAD_LETTERS
            .with_label_values(&[dl.stage.as_str(), dl.reason.as_str()])
            .inc();
        tracing::warn!(
            stage = dl.stage,
            reason = dl.reason,
            detail = dl.detail,
            topic = dl.source_topic,
            partition = dl.source_partition,
            offset = dl.source_offset,
            dead_letter_topic = self.topic,
            payload_truncated = dl.payload_truncated,
            "record dead-lettered"
        );
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(max_message: usize) -> DeadLetters {
        let kafka = KafkaConfig {
            kafka_message_max_bytes: max_message,
            ..KafkaConfig::default()
        };
        // Neither connects before a record is produced.
        let producer =
            crate::producer::ProducerSlot::new(&kafka, std::time::Duration::from_secs(1))
                .expect("a producer");
        DeadLetters::new(
            "pg-sink",
            "t.dlq",
            producer,
            Codec::new("http://127.0.0.1:1"),
            &kafka,
        )
    }

    fn record(payload: &[u8]) -> OwnedMessage {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "request-id",
            value: Some("r1".as_bytes()),
        });
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"k".to_vec()),
            "t.wa.events".into(),
            rdkafka::Timestamp::CreateTime(1_700_000_000_000),
            3,
            42,
            Some(headers),
        )
    }

    #[test]
    fn a_letter_keeps_the_position_and_embeds_the_payload_up_to_the_cap() {
        let d = letters(5 << 20);
        let dl = d.letter(&record(b"abc"), "pg_data", "invalid byte sequence");
        assert_eq!(
            (
                dl.source_topic.as_str(),
                dl.source_partition,
                dl.source_offset
            ),
            ("t.wa.events", 3, 42)
        );
        assert_eq!(dl.source_timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(
            (dl.stage.as_str(), dl.reason.as_str()),
            ("pg-sink", "pg_data")
        );
        assert_eq!(dl.payload, b"abc");
        assert!(!dl.payload_truncated);
        assert_eq!(dl.headers.get("request-id").map(String::as_str), Some("r1"));
        assert_eq!(dl.key.as_deref(), Some("k"));

        // A payload past the cap is left out; its size and position stay.
        let d = letters(ENVELOPE_BYTES + 10);
        let dl = d.letter(&record(&[7u8; 11]), "too_large", "x");
        assert!(dl.payload_truncated);
        assert!(dl.payload.is_empty());
        assert_eq!(dl.payload_size, 11);
        assert_eq!(dl.source_offset, 42);
    }

    #[test]
    fn detail_is_capped_on_a_char_boundary() {
        assert_eq!(cap("abc", 5), "abc");
        assert_eq!(cap("ééé", 3), "é…");
    }
}
