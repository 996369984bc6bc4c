//! Gupshup WhatsApp API, v2 webhook format: `message` (inbound) and `message-event`
//! (statuses) envelopes, JSON. Gupshup does not sign webhooks: the gateway checks a
//! shared token (`?token=` or `X-Switchboard-Token`).
//! Docs: docs.gupshup.io/docs/inbound-message-events, .../message-events

pub mod inbound;
pub mod outbound;
