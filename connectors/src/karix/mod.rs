//! Karix (Tanla) WhatsApp API: delivery reports (`events.eventType = "DELIVERY EVENTS"`)
//! and user-initiated messages (`"User initiated"`), JSON. Karix does not sign webhooks:
//! the gateway checks a shared token.
//!
//! No official payload reference was reachable when this was written; the format follows
//! public integrations of Karix's RCM API. Verify against real captures
//! (see connectors/README.md).

pub mod inbound;
pub mod outbound;
