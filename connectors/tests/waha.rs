//! WAHA fixtures (written from WAHA's events documentation).

use std::collections::HashMap;

use switchboard_connectors::{parse, Parsed};
use switchboard_schemas::{inbound_event_id, status_event_id, Event, RawWebhook, Status};

fn raw(body: &[u8]) -> RawWebhook {
    RawWebhook {
        request_id: "req-w".into(),
        bsp: "waha".into(),
        received_at_ms: 1_750_263_999_000,
        content_type: "application/json".into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    }
}

fn one(name: &str) -> Event {
    let p = format!(
        "{}/tests/fixtures/waha/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let Parsed { events, rejects } = parse(&raw(&body)).expect(name);
    assert!(rejects.is_empty(), "{name}: {rejects:?}");
    assert_eq!(events.len(), 1);
    events.into_iter().next().unwrap()
}

#[test]
fn ack_codes_map_to_canonical_statuses() {
    for st in ["failed", "sent", "delivered", "read", "played"] {
        let e = one(&format!("ack_{st}"));
        assert_eq!(e.event_type, "message.status");
        assert_eq!(e.status.as_deref(), Some(st));
        assert_eq!(e.business_number, "+15550783881");
        assert_eq!(
            e.customer_id, "+16505551234",
            "the recipient of our own message"
        );
        assert_eq!(
            e.wamid,
            "true_16505551234@c.us_4CC5EDD64BC22EBA6D639F2AF571346C"
        );
        assert_eq!(
            e.event_id,
            status_event_id("waha", &e.wamid, st.parse::<Status>().unwrap())
        );
    }
    assert_eq!(one("ack_failed").error_code.as_deref(), Some("ack_error"));
    assert_eq!(
        one("ack_read").occurred_at_ms,
        1_750_263_930_000,
        "millisecond event timestamp kept"
    );
}

#[test]
fn incoming_messages() {
    let t = one("message_text");
    assert_eq!(t.event_type, "message.received");
    assert_eq!(t.message_type.as_deref(), Some("text"));
    assert_eq!(t.customer_id, "+16505551234");
    assert_eq!(
        t.occurred_at_ms, 1_750_263_800_000,
        "second timestamps become milliseconds"
    );
    assert_eq!(
        t.event_id,
        inbound_event_id("waha", "false_16505551234@c.us_3EB0C767D71D3A5A1F9B")
    );
    assert!(t.content.as_deref().unwrap().contains("where is my order"));

    let i = one("message_image");
    assert_eq!(i.message_type.as_deref(), Some("image"));
    assert_eq!(
        i.context_wamid.as_deref(),
        Some("true_16505551234@c.us_AAAAAAAAAAAAAAAA")
    );
    assert_eq!(one("message_voice").message_type.as_deref(), Some("voice"));

    let r = one("message_reaction");
    assert_eq!(r.message_type.as_deref(), Some("reaction"));
    assert_eq!(
        r.context_wamid.as_deref(),
        Some("true_16505551234@c.us_AAAAAAAAAAAAAAAA")
    );
    assert!(r.content.as_deref().unwrap().contains("👍"));
}

#[test]
fn non_message_and_bad_events() {
    assert_eq!(parse(&raw(br#"{"event":"session.status","session":"default","payload":{"id":"x","status":"WORKING"}}"#)).unwrap_err().reason, "unsupported_event");
    assert_eq!(parse(&raw(br#"{"event":"message.ack","me":{"id":"15550783881@c.us"},"payload":{"id":"x","fromMe":true,"to":"16505551234@c.us","ack":9}}"#)).unwrap_err().reason, "unknown_status");
    assert_eq!(
        parse(&raw(br#"{"event":"message"}"#)).unwrap_err().reason,
        "bad_shape"
    );
    assert_eq!(parse(&raw(br#"{"event":"message","me":{"id":"15550783881@c.us"},"payload":{"id":"x","fromMe":true,"to":"16505551234@c.us","timestamp":1}}"#)).unwrap_err().reason, "no_events");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]
        #[test]
        fn mutated_fixtures_never_panic(idx in 0usize..2000, byte in any::<u8>(), name in prop::sample::select(vec!["ack_read", "message_image", "message_reaction"])) {
            let mut body = std::fs::read(format!("{}/tests/fixtures/waha/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let i = idx % body.len();
            body[i] = byte;
            let _ = parse(&raw(&body));
        }
    }
}
