//! Twilio's WhatsApp channel: status callbacks and incoming-message webhooks, both
//! `application/x-www-form-urlencoded`.
//! Docs: twilio.com/docs/usage/webhooks/messaging-webhooks,
//! twilio.com/docs/usage/security#validating-requests

pub mod inbound;
pub mod outbound;
pub mod signature;
