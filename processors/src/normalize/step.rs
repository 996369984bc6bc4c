//! The per-record step: one decoded raw webhook in, events and dead letters out.

use switchboard_connectors::ParseError;
use switchboard_schemas::{Event, RawWebhook};

/// What one raw webhook turns into.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<Event>,
    /// `(reason, detail)` when the raw record must also go to the DLQ.
    pub dead_letter: Option<(String, String)>,
}

/// The event times a stage accepts, relative to when the gateway received the webhook
/// (not to now, so a replay months later judges a record as it was judged live).
/// Outside it a time is a BSP bug or a forgery; stored, it would make a partition of
/// its own per month in both stores (a current ClickHouse refuses an insert spanning
/// more than 100) and skew every rollup.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    pub max_age_ms: i64,
    pub max_ahead_ms: i64,
}

impl TimeWindow {
    pub fn new(max_age: std::time::Duration, max_ahead: std::time::Duration) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            max_age_ms: ms(max_age),
            max_ahead_ms: ms(max_ahead),
        }
    }

    /// Why `occurred_at_ms` is refused for a webhook received at `received_at_ms`.
    fn refuse(&self, occurred_at_ms: i64, received_at_ms: i64) -> Option<String> {
        if occurred_at_ms < received_at_ms.saturating_sub(self.max_age_ms) {
            Some(format!(
                "event time {} is more than {} days before its receipt ({})",
                ms_to_rfc3339(occurred_at_ms),
                self.max_age_ms / 86_400_000,
                ms_to_rfc3339(received_at_ms)
            ))
        } else if occurred_at_ms > received_at_ms.saturating_add(self.max_ahead_ms) {
            Some(format!(
                "event time {} is more than {} h after its receipt ({})",
                ms_to_rfc3339(occurred_at_ms),
                self.max_ahead_ms / 3_600_000,
                ms_to_rfc3339(received_at_ms)
            ))
        } else {
            None
        }
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

pub fn normalize_record(raw: &RawWebhook, window: &TimeWindow) -> Outcome {
    match switchboard_connectors::parse(raw) {
        Err(e) => Outcome {
            events: vec![],
            dead_letter: Some((e.reason.to_string(), e.detail)),
        },
        Ok(mut parsed) => {
            parsed.events.retain(
                |e| match window.refuse(e.occurred_at_ms, e.received_at_ms) {
                    None => true,
                    Some(why) => {
                        parsed.rejects.push(ParseError::new(
                            "bad_timestamp",
                            format!("{} {}: {why}", e.event_type, e.wamid),
                        ));
                        false
                    }
                },
            );
            let dead_letter = (!parsed.rejects.is_empty()).then(|| summarize(&parsed.rejects));
            Outcome {
                events: parsed.events,
                dead_letter,
            }
        }
    }
}

/// One reason for the record (the first item's, or `partial` when some events were
/// still produced), every item's reason in the detail.
fn summarize(rejects: &[ParseError]) -> (String, String) {
    let reason = if rejects.iter().all(|r| r.reason == rejects[0].reason) {
        rejects[0].reason.to_string()
    } else {
        "multiple".to_string()
    };
    let detail = rejects
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    (reason, detail)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn raw(body: &str) -> RawWebhook {
        RawWebhook {
            request_id: "r".into(),
            bsp: "meta".into(),
            received_at_ms: 1_750_264_100_000,
            content_type: "application/json".into(),
            headers: HashMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    const WINDOW: TimeWindow = TimeWindow {
        max_age_ms: 400 * 86_400_000,
        max_ahead_ms: 86_400_000,
    };

    #[test]
    fn wrong_shape_is_a_dead_letter_with_reason() {
        let o = normalize_record(&raw(r#"{"hello":"world"}"#), &WINDOW);
        assert!(o.events.is_empty());
        assert_eq!(o.dead_letter.unwrap().0, "bad_shape");
    }

    #[test]
    fn partly_bad_webhook_keeps_good_events_and_dead_letters_the_rest() {
        let o = normalize_record(
            &raw(
                r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881"},"statuses":[
            {"id":"wamid.ok","status":"sent","timestamp":"1750264000","recipient_id":"16505550001"},
            {"id":"wamid.no","status":"sent","timestamp":"1750264000","recipient_id":"x"}]}}]}]}"#,
            ),
            &WINDOW,
        );
        assert_eq!(o.events.len(), 1);
        let (reason, detail) = o.dead_letter.unwrap();
        assert_eq!(reason, "bad_phone_number");
        assert!(detail.contains("\"x\""), "{detail}");
    }

    #[test]
    fn times_outside_the_window_around_receipt_are_dead_lettered_and_the_rest_kept() {
        let o = normalize_record(
            &raw(
                r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881"},"statuses":[
            {"id":"wamid.ok","status":"sent","timestamp":"1750264000","recipient_id":"16505550001"},
            {"id":"wamid.1970","status":"sent","timestamp":"1","recipient_id":"16505550001"},
            {"id":"wamid.5138","status":"sent","timestamp":"99999999999","recipient_id":"16505550001"}]}}]}]}"#,
            ),
            &WINDOW,
        );
        assert_eq!(o.events.len(), 1);
        assert_eq!(o.events[0].wamid, "wamid.ok");
        let (reason, detail) = o.dead_letter.unwrap();
        assert_eq!(reason, "bad_timestamp");
        assert!(
            detail.contains("wamid.1970") && detail.contains("1970-01-01"),
            "{detail}"
        );
        assert!(
            detail.contains("wamid.5138") && detail.contains("after its receipt"),
            "{detail}"
        );
    }
}
