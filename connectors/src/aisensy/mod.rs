//! AiSensy. Two webhook formats, depending on the AiSensy product:
//! - "Direct APIs" forward Meta's Cloud API payloads unchanged (parsed by `meta`);
//! - Project API webhooks: `{id, created_at, topic, delivery_attempt, project_id, data}`
//!   with `data.message`, topics `message.status.updated` and `message.sender.user`.
//!
//! No official payload reference was reachable when this was written; the format follows
//! several public integrations built from captured deliveries. Verify against real
//! captures (see connectors/README.md).

pub mod inbound;
pub mod signature;
