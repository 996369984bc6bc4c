//! The webhook body: `{"type", "timestamp", "data"}` per the Standard Webhooks spec, one
//! event per request. `data.schema_version` versions the shape of `data`; fields are only
//! ever added within a version (receivers must ignore unknown fields). The shapes are
//! documented in `docs/webhooks.md`.

use serde_json::{json, Map, Value};
use switchboard_schemas::{Event, EventType};

/// The version of `data` this build sends.
pub const SCHEMA_VERSION: u32 = 1;

/// The webhook type of a canonical event: `message.status.<status>` for statuses, else
/// the event type itself.
pub fn webhook_type(e: &Event) -> String {
    if e.event_type == EventType::Status.as_str() {
        format!(
            "message.status.{}",
            e.status.as_deref().unwrap_or("unknown")
        )
    } else {
        e.event_type.clone()
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A JSON string field that holds JSON (content, metadata) is embedded as JSON.
fn embedded(s: &Option<String>) -> Value {
    s.as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// Render an event. Returns (webhook type, body).
pub fn render(e: &Event) -> (String, String) {
    let (ty, body) = envelope(e);
    (ty, body.to_string())
}

/// The webhook type and body of an event, as JSON (the polling API adds to it).
pub fn envelope(e: &Event) -> (String, Value) {
    let ty = webhook_type(e);
    let data = if e.event_type.starts_with("message.") {
        let error = e
            .error_code
            .as_ref()
            .map(|code| json!({"code": code, "title": e.error_title, "detail": e.error_detail}));
        let pricing = (e.conversation_id.is_some()
            || e.conversation_category.is_some()
            || e.pricing_category.is_some()
            || e.pricing_type.is_some()
            || e.billable.is_some())
        .then(|| {
            json!({
                "conversation_id": e.conversation_id,
                "conversation_category": e.conversation_category,
                "category": e.pricing_category,
                "pricing_model": e.pricing_model,
                "type": e.pricing_type,
                "billable": e.billable,
            })
        });
        let mut d = Map::new();
        d.insert("schema_version".into(), json!(SCHEMA_VERSION));
        d.insert("event_id".into(), json!(e.event_id));
        d.insert("tenant_id".into(), json!(e.tenant_id));
        d.insert("bsp".into(), json!(e.bsp));
        d.insert("business_number".into(), json!(e.business_number));
        d.insert("customer_id".into(), json!(e.customer_id));
        d.insert("conversation".into(), json!(e.conversation_key()));
        d.insert("wamid".into(), json!(e.wamid));
        d.insert("message_id".into(), json!(e.message_id));
        d.insert("status".into(), json!(e.status));
        d.insert("message_type".into(), json!(e.message_type));
        d.insert("content".into(), embedded(&e.content));
        d.insert("context_wamid".into(), json!(e.context_wamid));
        d.insert("occurred_at".into(), json!(rfc3339(e.occurred_at_ms)));
        d.insert("occurred_at_ms".into(), json!(e.occurred_at_ms));
        d.insert("error".into(), error.unwrap_or(Value::Null));
        d.insert("pricing".into(), pricing.unwrap_or(Value::Null));
        d.insert("metadata".into(), embedded(&e.metadata));
        Value::Object(d)
    } else {
        // Operational events carry their own JSON in `content`.
        let mut d = match embedded(&e.content) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        d.insert("schema_version".into(), json!(SCHEMA_VERSION));
        d.insert("event_id".into(), json!(e.event_id));
        d.insert("tenant_id".into(), json!(e.tenant_id));
        d.insert("occurred_at".into(), json!(rfc3339(e.occurred_at_ms)));
        d.insert("occurred_at_ms".into(), json!(e.occurred_at_ms));
        Value::Object(d)
    };
    let body = json!({"type": ty, "timestamp": rfc3339(e.occurred_at_ms), "data": data});
    (ty, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_events_render_with_their_status_in_the_type() {
        let e = Event {
            event_id: "evt_1".into(),
            event_type: "message.status".into(),
            status: Some("delivered".into()),
            bsp: "meta".into(),
            tenant_id: Some("ten_a".into()),
            business_number: "+15550001".into(),
            customer_id: "+919800000001".into(),
            wamid: "wamid.X".into(),
            occurred_at_ms: 1_700_000_000_123,
            metadata: Some(r#"{"order":"42"}"#.into()),
            pricing_category: Some("utility".into()),
            ..Event::default()
        };
        let (ty, body) = render(&e);
        assert_eq!(ty, "message.status.delivered");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "message.status.delivered");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["data"]["conversation"], "+15550001:+919800000001");
        assert_eq!(v["data"]["metadata"]["order"], "42");
        assert_eq!(v["data"]["pricing"]["category"], "utility");
        assert_eq!(v["data"]["error"], Value::Null);
        assert_eq!(v["data"]["schema_version"], 1);
    }

    #[test]
    fn operational_events_carry_their_content() {
        let e = Event {
            event_id: "evt_2".into(),
            event_type: "endpoint.disabled".into(),
            tenant_id: Some("ten_a".into()),
            content: Some(r#"{"endpoint_id":"ep_1","reason":"failing since x"}"#.into()),
            occurred_at_ms: 1,
            ..Event::default()
        };
        let (ty, body) = render(&e);
        assert_eq!(ty, "endpoint.disabled");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["endpoint_id"], "ep_1");
        assert!(v["data"].get("conversation").is_none());
    }
}
