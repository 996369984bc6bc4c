//! One module per BSP, each with the same shape:
//!
//! - `signature.rs`: how that BSP proves a webhook is genuine (checked by the gateway);
//! - `inbound.rs`: the parser from that BSP's documented webhook payloads to canonical
//!   [`Event`]s (run by the normalizer), plus the partition key the gateway uses;
//! - `outbound.rs`: that BSP's send API: request from a canonical message, answer to a
//!   message id or a classified [`send::SendError`] (run by the router).
//!
//! Parsers are pure functions of a [`RawWebhook`]: no I/O, no clock, so the same raw
//! record always yields the same events (and event ids).

pub mod aisensy;
pub mod bsp;
pub mod common;
pub mod dialog360;
pub mod gupshup;
pub mod karix;
pub mod media;
pub mod meta;
pub mod send;
pub mod twilio;
pub mod waha;
pub mod webhook_auth;

pub use bsp::Bsp;
pub use common::{verify_shared_token, ParseError, Parsed, SignatureError, WebhookRequest};

use switchboard_schemas::RawWebhook;

/// Parse a raw webhook of any BSP into canonical events.
pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
    let bsp: Bsp = raw.bsp.parse().map_err(|_| {
        ParseError::new("unknown_bsp", format!("no connector for BSP {:?}", raw.bsp))
    })?;
    match bsp {
        Bsp::Meta => meta::inbound::parse(raw, Bsp::Meta),
        Bsp::Dialog360 => dialog360::inbound::parse(raw),
        Bsp::Twilio => twilio::inbound::parse(raw),
        Bsp::Gupshup => gupshup::inbound::parse(raw),
        Bsp::Aisensy => aisensy::inbound::parse(raw),
        Bsp::Karix => karix::inbound::parse(raw),
        Bsp::Waha => waha::inbound::parse(raw),
    }
}

/// The key of the record on `wa.webhooks.raw`: BSP + business account (the first the body
/// names, see [`webhook_auth::accounts`]), so retries of one webhook land in one
/// partition and are deduplicated in order.
pub fn routing_key(bsp: Bsp, accounts: &[String]) -> String {
    format!(
        "{}:{}",
        bsp.slug(),
        accounts.first().map(String::as_str).unwrap_or("-")
    )
}
