//! The pure part of the PostgreSQL sink: fold a batch of events into one row per message,
//! with the same rules the upsert applies against what is stored.

use std::collections::HashMap;

use switchboard_schemas::{Event, Status};

/// A message row as one batch sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub bsp: String,
    pub wamid: String,
    pub tenant_id: Option<String>,
    pub business_number: String,
    pub business_account_id: Option<String>,
    pub customer_id: String,
    pub direction: &'static str,
    pub status: Option<String>,
    pub status_rank: i16,
    pub status_at_ms: Option<i64>,
    pub message_type: Option<String>,
    pub content: Option<String>,
    pub context_wamid: Option<String>,
    pub error_code: Option<String>,
    pub error_title: Option<String>,
    pub error_detail: Option<String>,
    pub conversation_id: Option<String>,
    pub conversation_category: Option<String>,
    pub pricing_category: Option<String>,
    pub billable: Option<bool>,
    pub first_event_at_ms: i64,
    pub message_id: Option<String>,
    pub metadata: Option<String>,
    /// Where Switchboard keeps the message's media (a `message.media_stored` event).
    pub media_sha256: Option<String>,
    pub media_size: Option<i64>,
    pub media_mime_type: Option<String>,
}

fn or<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
    if a.is_none() {
        a.clone_from(b);
    }
}

impl MessageRow {
    fn from_event(e: &Event) -> Self {
        let status = e.status();
        let media = (e.event_type == "message.media_stored")
            .then(|| serde_json::from_str::<serde_json::Value>(e.content.as_deref()?).ok())
            .flatten();
        let inbound = e.event_type == "message.received" || media.is_some();
        MessageRow {
            bsp: e.bsp.clone(),
            wamid: e.wamid.clone(),
            tenant_id: e.tenant_id.clone(),
            business_number: e.business_number.clone(),
            business_account_id: e.business_account_id.clone(),
            customer_id: e.customer_id.clone(),
            direction: if inbound { "inbound" } else { "outbound" },
            status: status.map(|s| s.as_str().to_string()),
            status_rank: status.map(Status::rank).unwrap_or(0),
            status_at_ms: status.map(|_| e.occurred_at_ms),
            message_type: e.message_type.clone(),
            // The media event's content describes the blob, not the message.
            content: if media.is_some() {
                None
            } else {
                e.content.clone()
            },
            context_wamid: e.context_wamid.clone(),
            error_code: e.error_code.clone(),
            error_title: e.error_title.clone(),
            error_detail: e.error_detail.clone(),
            conversation_id: e.conversation_id.clone(),
            conversation_category: e.conversation_category.clone(),
            pricing_category: e.pricing_category.clone(),
            billable: e.billable,
            first_event_at_ms: e.occurred_at_ms,
            message_id: e.message_id.clone(),
            metadata: e.metadata.clone(),
            media_sha256: media
                .as_ref()
                .and_then(|m| m.get("sha256")?.as_str().map(str::to_string)),
            media_size: media.as_ref().and_then(|m| m.get("size")?.as_i64()),
            media_mime_type: media
                .as_ref()
                .and_then(|m| m.get("mime_type")?.as_str().map(str::to_string)),
        }
    }

    /// Merge `other` (same message) into `self`: the higher-ranked status wins, facts
    /// only ever get filled in, never erased.
    pub fn absorb(&mut self, other: &MessageRow) {
        if other.status_rank > self.status_rank {
            self.status.clone_from(&other.status);
            self.status_rank = other.status_rank;
            self.status_at_ms = other.status_at_ms;
        }
        if other.direction == "inbound" {
            self.direction = "inbound";
        }
        self.first_event_at_ms = self.first_event_at_ms.min(other.first_event_at_ms);
        // The error of a failure stays visible even after a later delivery outranks it.
        if other.error_code.is_some() {
            self.error_code.clone_from(&other.error_code);
            self.error_title.clone_from(&other.error_title);
            self.error_detail.clone_from(&other.error_detail);
        }
        or(&mut self.tenant_id, &other.tenant_id);
        or(&mut self.business_account_id, &other.business_account_id);
        or(&mut self.message_type, &other.message_type);
        or(&mut self.content, &other.content);
        or(&mut self.context_wamid, &other.context_wamid);
        or(&mut self.conversation_id, &other.conversation_id);
        or(
            &mut self.conversation_category,
            &other.conversation_category,
        );
        or(&mut self.pricing_category, &other.pricing_category);
        or(&mut self.billable, &other.billable);
        or(&mut self.message_id, &other.message_id);
        or(&mut self.metadata, &other.metadata);
        or(&mut self.media_sha256, &other.media_sha256);
        or(&mut self.media_size, &other.media_size);
        or(&mut self.media_mime_type, &other.media_mime_type);
    }
}

/// One row per (bsp, wamid) for the batch, in first-seen order.
pub fn merge_batch<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<MessageRow> {
    let mut idx: HashMap<(&str, &str), usize> = HashMap::new();
    let mut rows: Vec<MessageRow> = Vec::new();
    for e in events {
        let row = MessageRow::from_event(e);
        match idx.get(&(e.bsp.as_str(), e.wamid.as_str())) {
            Some(&i) => rows[i].absorb(&row),
            None => {
                idx.insert((e.bsp.as_str(), e.wamid.as_str()), rows.len());
                rows.push(row);
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(wamid: &str, s: &str, at: i64) -> Event {
        Event {
            event_id: format!("{wamid}-{s}"),
            event_type: "message.status".into(),
            bsp: "meta".into(),
            business_number: "+1555".into(),
            customer_id: "+1666".into(),
            wamid: wamid.into(),
            status: Some(s.into()),
            occurred_at_ms: at,
            error_code: (s == "failed").then(|| "131049".to_string()),
            ..Event::default()
        }
    }

    #[test]
    fn out_of_order_statuses_converge_on_the_highest_rank() {
        let orders = [
            vec![
                status("w", "sent", 1),
                status("w", "delivered", 2),
                status("w", "read", 3),
            ],
            vec![
                status("w", "read", 3),
                status("w", "sent", 1),
                status("w", "delivered", 2),
            ],
            vec![
                status("w", "delivered", 2),
                status("w", "read", 3),
                status("w", "read", 3),
                status("w", "sent", 1),
            ],
        ];
        for events in orders {
            let rows = merge_batch(&events);
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].status.as_deref(), Some("read"));
            assert_eq!(rows[0].status_at_ms, Some(3));
            assert_eq!(rows[0].first_event_at_ms, 1);
        }
    }

    #[test]
    fn late_failure_does_not_undo_delivery_but_keeps_its_error() {
        let rows = merge_batch(&[status("w", "delivered", 2), status("w", "failed", 3)]);
        assert_eq!(rows[0].status.as_deref(), Some("delivered"));
        assert_eq!(rows[0].error_code.as_deref(), Some("131049"));
        let rows = merge_batch(&[status("w", "failed", 3), status("w", "sent", 1)]);
        assert_eq!(rows[0].status.as_deref(), Some("failed"));
    }
}
