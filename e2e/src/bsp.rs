//! Webhook bodies in the BSPs' documented formats, for tests (the fixtures live with the
//! connectors; these build many distinct ones).

use serde_json::json;

/// A Meta Cloud API status webhook for one message.
pub fn meta_status(business: &str, customer: &str, wamid: &str, status: &str, ts: i64) -> Vec<u8> {
    let mut s = json!({"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": customer});
    if status == "failed" {
        s["errors"] = json!([{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable", "error_data": {"details": "Message Undeliverable."}}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": business, "phone_number_id": format!("pnid-{business}")},
        "statuses": [s]}}]}]})
    .to_string()
    .into_bytes()
}

/// A Meta Cloud API inbound text message.
pub fn meta_text(business: &str, customer: &str, wamid: &str, text: &str, ts: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": business, "phone_number_id": format!("pnid-{business}")},
        "contacts": [{"profile": {"name": "Test"}, "wa_id": customer}],
        "messages": [{"from": customer, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": text}}]}}]}]})
    .to_string()
    .into_bytes()
}
