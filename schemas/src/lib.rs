//! Avro schemas of every Switchboard topic, the Rust types that mirror them, and the codec
//! that frames them in the Confluent wire format through a schema registry.
//!
//! Evolution rule (see `schemas/README.md`): a schema only ever gains optional fields with
//! defaults, so every reader can decode every record ever written to a topic. The Rust
//! types here are the single source of field names; `event::tests::types_match_schemas` pins them
//! to the `.avsc` files.

pub mod codec;
pub mod config;
mod event;
mod ids;

pub use codec::{Codec, CodecError};
pub use event::{
    ConfigRecord, DeadLetter, DeliveryAttempt, DeliveryAttempts, DeliveryTask, Event, EventType,
    RawWebhook, SendRequest, Status, CONFIG_RECORD_SCHEMA, DEAD_LETTER_SCHEMA,
    DELIVERY_ATTEMPTS_SCHEMA, DELIVERY_TASK_SCHEMA, EVENT_SCHEMA, RAW_WEBHOOK_SCHEMA,
    SEND_REQUEST_SCHEMA,
};
pub use ids::{
    inbound_event_id, media_event_id, preference_event_id, send_event_id, status_event_id,
};
