//! WAHA (self-hosted WhatsApp HTTP API): `message`, `message.reaction` and `message.ack`
//! webhook events, JSON.
//! Docs: waha.devlike.pro/docs/how-to/events, waha.devlike.pro/docs/how-to/security (HMAC)

pub mod inbound;
pub mod outbound;
pub mod signature;
