//! 360dialog (WhatsApp Business API via 360dialog's Cloud API hosting). Webhooks are
//! Meta's Cloud API payloads forwarded unchanged; 360dialog does not sign them, so the
//! gateway checks a shared token the operator puts in the webhook URL or a header.

pub mod inbound {
    use switchboard_schemas::RawWebhook;

    use crate::bsp::Bsp;
    use crate::common::{ParseError, Parsed};

    pub fn parse(raw: &RawWebhook) -> Result<Parsed, ParseError> {
        crate::meta::inbound::parse(raw, Bsp::Dialog360)
    }
}
