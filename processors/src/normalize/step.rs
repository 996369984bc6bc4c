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

pub fn normalize_record(raw: &RawWebhook) -> Outcome {
    match switchboard_connectors::parse(raw) {
        Err(e) => Outcome {
            events: vec![],
            dead_letter: Some((e.reason.to_string(), e.detail)),
        },
        Ok(parsed) => {
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
            received_at_ms: 1,
            content_type: "application/json".into(),
            headers: HashMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn wrong_shape_is_a_dead_letter_with_reason() {
        let o = normalize_record(&raw(r#"{"hello":"world"}"#));
        assert!(o.events.is_empty());
        assert_eq!(o.dead_letter.unwrap().0, "bad_shape");
    }

    #[test]
    fn partly_bad_webhook_keeps_good_events_and_dead_letters_the_rest() {
        let o = normalize_record(&raw(
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881"},"statuses":[
            {"id":"wamid.ok","status":"sent","timestamp":"1750264000","recipient_id":"16505550001"},
            {"id":"wamid.no","status":"sent","timestamp":"1750264000","recipient_id":"x"}]}}]}]}"#,
        ));
        assert_eq!(o.events.len(), 1);
        let (reason, detail) = o.dead_letter.unwrap();
        assert_eq!(reason, "bad_phone_number");
        assert!(detail.contains("\"x\""), "{detail}");
    }
}
