//! AiSensy and Karix fixtures. Neither BSP's payload reference was reachable; these follow
//! public integrations built from captured deliveries (see connectors/README.md).

use std::collections::HashMap;

use switchboard_connectors::{parse, Parsed};
use switchboard_schemas::{inbound_event_id, status_event_id, Event, RawWebhook, Status};

fn raw(bsp: &str, body: &[u8]) -> RawWebhook {
    RawWebhook {
        request_id: "req-ak".into(),
        bsp: bsp.into(),
        received_at_ms: 1_750_263_999_000,
        content_type: "application/json".into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    }
}

fn parsed(bsp: &str, name: &str) -> Parsed {
    let p = format!(
        "{}/tests/fixtures/{bsp}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    parse(&raw(bsp, &body)).expect(name)
}

fn one(bsp: &str, name: &str) -> Event {
    let Parsed { events, rejects } = parsed(bsp, name);
    assert!(rejects.is_empty(), "{name}: {rejects:?}");
    assert_eq!(events.len(), 1, "{name}");
    events.into_iter().next().unwrap()
}

#[test]
fn aisensy_project_webhooks() {
    let wamid = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQUlTRU5TWTAwMDAwMDAwMQA=";
    for (name, st, ts) in [
        ("status_sent", "sent", 1_750_263_773_000),
        ("status_delivered", "delivered", 1_750_263_775_000),
        ("status_read", "read", 1_750_263_790_000),
    ] {
        let e = one("aisensy", name);
        assert_eq!(e.status.as_deref(), Some(st), "{name}");
        assert_eq!(e.wamid, wamid, "{name}: the WhatsApp id, not AiSensy's");
        assert_eq!(e.occurred_at_ms, ts, "{name}: the <status>_at time");
        assert_eq!(e.customer_id, "+919876543210");
        assert_eq!(
            e.business_number, "655b383d2c1f7c51b62a7338",
            "the project stands in"
        );
        assert_eq!(
            e.event_id,
            status_event_id("aisensy", wamid, st.parse::<Status>().unwrap())
        );
    }
    let f = one("aisensy", "status_failed");
    assert_eq!(
        (
            f.status.as_deref(),
            f.error_code.as_deref(),
            f.error_title.as_deref()
        ),
        (
            Some("failed"),
            Some("131047"),
            Some("Re-engagement message")
        )
    );

    let t = one("aisensy", "message_text");
    assert_eq!(t.message_type.as_deref(), Some("text"));
    assert_eq!(t.occurred_at_ms, 1_750_263_801_000);
    assert!(t
        .content
        .as_deref()
        .unwrap()
        .contains("Is the blue one in stock?"));
    assert_eq!(t.event_id, inbound_event_id("aisensy", &t.wamid));
    let q = one("aisensy", "message_quick_reply");
    assert_eq!(q.message_type.as_deref(), Some("button"));
    assert_eq!(q.context_wamid.as_deref(), Some(wamid));
    assert_eq!(
        one("aisensy", "message_image").message_type.as_deref(),
        Some("image")
    );

    let ignored = parsed("aisensy", "contact_created");
    assert!(
        ignored.events.is_empty() && ignored.rejects.is_empty(),
        "non-message topics are ignored"
    );
}

#[test]
fn aisensy_direct_api_forwards_meta_payloads() {
    let e = one("aisensy", "meta_forwarded_status");
    assert_eq!(e.bsp, "aisensy");
    assert_eq!(e.business_number, "+15550783881");
    assert_eq!(
        e.event_id,
        status_event_id("aisensy", &e.wamid, Status::Sent)
    );
}

#[test]
fn karix_delivery_reports_and_user_messages() {
    let wamid = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSS0FSSVgwMDAwMDAwMDAwMQA=";
    for (name, st, ts) in [
        ("dlr_sent", "sent", 1_750_263_773_000),
        ("dlr_delivered", "delivered", 1_750_263_775_000),
        ("dlr_read", "read", 1_750_263_790_000),
    ] {
        let e = one("karix", name);
        assert_eq!(e.status.as_deref(), Some(st));
        assert_eq!(e.wamid, wamid);
        assert_eq!(e.occurred_at_ms, ts, "millisecond string timestamps");
        assert_eq!(
            (e.business_number.as_str(), e.customer_id.as_str()),
            ("+918000000000", "+919876543210")
        );
        assert_eq!(
            e.event_id,
            status_event_id("karix", wamid, st.parse::<Status>().unwrap())
        );
    }
    let f = one("karix", "dlr_failed");
    assert_eq!(
        (f.error_code.as_deref(), f.error_title.as_deref()),
        (Some("131026"), Some("Message undeliverable"))
    );
    let t = one("karix", "user_text");
    assert_eq!(t.message_type.as_deref(), Some("text"));
    assert!(t
        .content
        .as_deref()
        .unwrap()
        .contains("\"profile_name\":\"Smit\""));
    let b = one("karix", "user_button_reply");
    assert_eq!(b.message_type.as_deref(), Some("interactive"));
    assert_eq!(b.context_wamid.as_deref(), Some(wamid));
    assert!(one("karix", "user_location")
        .content
        .as_deref()
        .unwrap()
        .contains("\"latitude\":12.9716"));
    assert_eq!(
        one("karix", "user_image").message_type.as_deref(),
        Some("image")
    );
}

#[test]
fn bad_aisensy_and_karix_bodies() {
    assert_eq!(
        parse(&raw("aisensy", br#"{"hello":1}"#))
            .unwrap_err()
            .reason,
        "bad_shape"
    );
    assert_eq!(parse(&raw("aisensy", br#"{"topic":"message.status.updated","project_id":"p","data":{"message":{"id":"m","phone_number":"919876543210","status":"BEAMED"}}}"#)).unwrap_err().reason, "unknown_status");
    assert_eq!(
        parse(&raw(
            "karix",
            br#"{"events":{"eventType":"SESSION EVENTS"}}"#
        ))
        .unwrap_err()
        .reason,
        "unsupported_event"
    );
    assert_eq!(parse(&raw("karix", br#"{"events":{"eventType":"DELIVERY EVENTS","mid":"w"},"notificationAttributes":{"status":"sent"},"recipient":{"to":"12"}}"#)).unwrap_err().reason, "bad_phone_number");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]
        #[test]
        fn mutated_fixtures_never_panic(idx in 0usize..2000, byte in any::<u8>(), f in prop::sample::select(vec![("aisensy", "status_failed"), ("aisensy", "message_quick_reply"), ("karix", "dlr_failed"), ("karix", "user_button_reply")])) {
            let mut body = std::fs::read(format!("{}/tests/fixtures/{}/{}.json", env!("CARGO_MANIFEST_DIR"), f.0, f.1)).unwrap();
            let i = idx % body.len();
            body[i] = byte;
            let _ = parse(&raw(f.0, &body));
        }
    }
}
