//! Meta's WhatsApp Cloud API webhooks (also the format 360dialog forwards).
//! Docs: developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components

pub mod inbound;
pub mod media;
pub mod outbound;
pub mod signature;
pub mod templates;
