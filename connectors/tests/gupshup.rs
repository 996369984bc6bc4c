//! Gupshup v2 fixtures (written from Gupshup's inbound message and message-event docs).

use std::collections::HashMap;

use switchboard_connectors::{parse, Parsed};
use switchboard_schemas::{inbound_event_id, status_event_id, Event, RawWebhook, Status};

fn raw(body: &[u8]) -> RawWebhook {
    RawWebhook {
        request_id: "req-g".into(),
        bsp: "gupshup".into(),
        received_at_ms: 1_750_263_999_000,
        content_type: "application/json".into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    }
}

fn parsed(name: &str) -> Parsed {
    let p = format!(
        "{}/tests/fixtures/gupshup/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    parse(&raw(&body)).expect(name)
}

fn one(name: &str) -> Event {
    let Parsed { events, rejects } = parsed(name);
    assert!(rejects.is_empty(), "{name}: {rejects:?}");
    assert_eq!(events.len(), 1, "{name}");
    events.into_iter().next().unwrap()
}

#[test]
fn status_events_join_on_gupshups_message_id() {
    for (name, st, ts) in [
        ("event_enqueued", "accepted", 1_750_263_770_123),
        ("event_sent", "sent", 1_750_263_773_000),
        ("event_delivered", "delivered", 1_750_263_775_000),
        ("event_read", "read", 1_750_263_790_000),
    ] {
        let e = one(name);
        assert_eq!(e.status.as_deref(), Some(st), "{name}");
        assert_eq!(
            e.wamid, "59f8db86-8a30-4ab4-8a9b-1b5bb0d1c4d6",
            "{name}: one id for every status"
        );
        assert_eq!(
            e.business_number, "AcmeShop",
            "the app stands in for the number"
        );
        assert_eq!(e.customer_id, "+919876543210");
        assert_eq!(e.occurred_at_ms, ts, "{name}");
        assert_eq!(
            e.event_id,
            status_event_id("gupshup", &e.wamid, st.parse::<Status>().unwrap())
        );
    }
    let f = one("event_failed");
    assert_eq!(f.status.as_deref(), Some("failed"));
    assert_eq!(f.error_code.as_deref(), Some("1002"));
    assert_eq!(
        f.error_title.as_deref(),
        Some("Number Does Not Exists On WhatsApp")
    );
}

#[test]
fn inbound_messages() {
    let t = one("message_text");
    assert_eq!(t.event_type, "message.received");
    assert_eq!(t.message_type.as_deref(), Some("text"));
    assert_eq!(
        t.event_id,
        inbound_event_id("gupshup", "ABEGkYaYVSEEAhAL3SLAWwHKeKrt6s3FKB0c")
    );
    assert!(t
        .content
        .as_deref()
        .unwrap()
        .contains("\"profile_name\":\"Smit\""));
    assert_eq!(one("message_image").message_type.as_deref(), Some("image"));
    assert!(one("message_location")
        .content
        .as_deref()
        .unwrap()
        .contains("\"latitude\":12.9716"));
    let b = one("message_button_reply");
    assert_eq!(b.message_type.as_deref(), Some("interactive"));
    assert!(b
        .content
        .as_deref()
        .unwrap()
        .contains("\"kind\":\"button_reply\""));
    assert_eq!(
        b.context_wamid.as_deref(),
        Some("59f8db86-8a30-4ab4-8a9b-1b5bb0d1c4d6")
    );
}

#[test]
fn opt_outs_and_opt_ins_are_preferences_and_bad_user_events_rejected() {
    for (name, value, at) in [
        ("user_event_opted_out", "stop", 1_750_263_800_456),
        ("user_event_opted_in", "resume", 1_750_263_700_123),
    ] {
        let p = parsed(name);
        assert!(p.rejects.is_empty(), "{name}");
        assert_eq!(p.events.len(), 1, "{name}");
        let e = &p.events[0];
        assert_eq!(e.event_type, "customer.preference");
        assert_eq!(e.customer_id, "+919876543210");
        assert_eq!(e.business_number, "AcmeShop");
        assert_eq!(e.occurred_at_ms, at);
        let c: serde_json::Value = serde_json::from_str(e.content.as_deref().unwrap()).unwrap();
        assert_eq!(
            (c["category"].as_str(), c["value"].as_str()),
            (Some("notifications"), Some(value))
        );
    }
    // The same opt-out twice is one event (a BSP retry is deduplicated downstream).
    assert_eq!(
        parsed("user_event_opted_out").events[0].event_id,
        parsed("user_event_opted_out").events[0].event_id
    );
    let sandbox = parse(&raw(br#"{"app":"A","type":"user-event","payload":{"phone":"callbackSetPhone","type":"sandbox-start"}}"#)).unwrap();
    assert!(sandbox.events.is_empty() && sandbox.rejects.is_empty());
    for (body, reason) in [
        (
            &br#"{"app":"A","type":"user-event","payload":{"phone":"919876543210"}}"#[..],
            "bad_shape",
        ),
        (
            br#"{"app":"A","type":"user-event","payload":{"phone":"12","type":"opted-out"}}"#,
            "bad_phone_number",
        ),
        (
            br#"{"app":"A","type":"user-event","payload":{"type":"opted-out"}}"#,
            "missing_customer",
        ),
        (
            br#"{"app":"A","type":"user-event","payload":"opted-out"}"#,
            "bad_shape",
        ),
    ] {
        assert_eq!(
            parse(&raw(body)).unwrap_err().reason,
            reason,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let billing = parse(&raw(br#"{"app":"A","type":"billing-event","payload":{}}"#)).unwrap();
    assert!(billing.events.is_empty() && billing.rejects.is_empty());
    assert_eq!(parse(&raw(br#"{"app":"A","type":"message-event","payload":{"id":"x","type":"teleported","destination":"919876543210"}}"#)).unwrap_err().reason, "unknown_status");
    assert_eq!(parse(&raw(br#"{"app":"A","type":"message-event","payload":{"id":"x","type":"sent","destination":"12"}}"#)).unwrap_err().reason, "bad_phone_number");
    assert_eq!(
        parse(&raw(br#"{"app":"A","type":"surprise","payload":{}}"#))
            .unwrap_err()
            .reason,
        "unsupported_event"
    );
    assert_eq!(
        parse(&raw(br#"{"type":"message"}"#)).unwrap_err().reason,
        "bad_shape"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]
        #[test]
        fn mutated_fixtures_never_panic(idx in 0usize..2000, byte in any::<u8>(), name in prop::sample::select(vec!["event_failed", "message_button_reply", "message_image"])) {
            let mut body = std::fs::read(format!("{}/tests/fixtures/gupshup/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let i = idx % body.len();
            body[i] = byte;
            let _ = parse(&raw(&body));
        }
    }
}
