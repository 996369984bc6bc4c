//! Twilio WhatsApp fixtures (written from Twilio's messaging webhook reference).

use std::collections::HashMap;

use switchboard_connectors::{parse, Parsed};
use switchboard_schemas::{inbound_event_id, status_event_id, Event, RawWebhook, Status};

fn raw(body: &[u8]) -> RawWebhook {
    RawWebhook {
        request_id: "req-t".into(),
        bsp: "twilio".into(),
        received_at_ms: 1_750_263_999_123,
        content_type: "application/x-www-form-urlencoded".into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    }
}

fn one(name: &str) -> Event {
    let p = format!(
        "{}/tests/fixtures/twilio/{name}.form",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let Parsed { events, rejects } = parse(&raw(&body)).expect(name);
    assert!(rejects.is_empty(), "{name}: {rejects:?}");
    assert_eq!(events.len(), 1);
    events.into_iter().next().unwrap()
}

#[test]
fn status_callbacks() {
    for (name, status) in [
        ("status_sent", "sent"),
        ("status_delivered", "delivered"),
        ("status_read", "read"),
    ] {
        let e = one(name);
        assert_eq!(e.event_type, "message.status");
        assert_eq!(e.status.as_deref(), Some(status));
        assert_eq!(e.wamid, "SM5b6b8a2f0c6e4f1b9a1d2c3e4f5a6b7c");
        assert_eq!(
            e.business_number, "+14155238886",
            "whatsapp: prefix stripped"
        );
        assert_eq!(e.customer_id, "+16505551234");
        assert_eq!(
            e.business_account_id.as_deref(),
            Some("AC0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            e.occurred_at_ms, 1_750_263_999_123,
            "no Twilio timestamp: receive time"
        );
        assert_eq!(
            e.event_id,
            status_event_id("twilio", &e.wamid, status.parse::<Status>().unwrap())
        );
    }
    let f = one("status_undelivered");
    assert_eq!(f.status.as_deref(), Some("failed"));
    assert_eq!(f.error_code.as_deref(), Some("63016"));
    assert!(f
        .error_title
        .as_deref()
        .unwrap()
        .contains("outside the allowed window"));
}

#[test]
fn incoming_messages() {
    let t = one("message_text");
    assert_eq!(t.event_type, "message.received");
    assert_eq!(
        (t.business_number.as_str(), t.customer_id.as_str()),
        ("+14155238886", "+16505551234")
    );
    assert_eq!(t.message_type.as_deref(), Some("text"));
    assert!(t
        .content
        .as_deref()
        .unwrap()
        .contains("\"body\":\"Hello! Is my order shipped?\""));
    assert_eq!(
        t.event_id,
        inbound_event_id("twilio", "SMin0000000000000000000000000001")
    );

    let i = one("message_image");
    assert_eq!(i.message_type.as_deref(), Some("image"));
    assert!(i
        .content
        .as_deref()
        .unwrap()
        .contains("\"content_type\":\"image/jpeg\""));

    let l = one("message_location");
    assert_eq!(l.message_type.as_deref(), Some("location"));
    assert!(l
        .content
        .as_deref()
        .unwrap()
        .contains("\"latitude\":37.483307"));

    let b = one("message_button");
    assert_eq!(b.message_type.as_deref(), Some("button"));
    assert!(b
        .content
        .as_deref()
        .unwrap()
        .contains("\"payload\":\"CONFIRM_ORDER_42\""));
    assert_eq!(
        b.context_wamid.as_deref(),
        Some("SMout000000000000000000000000042")
    );

    // A Click-to-WhatsApp referral, under Meta's names; none on a plain message.
    let r = one("message_referral");
    let c: serde_json::Value = serde_json::from_str(r.content.as_deref().unwrap()).unwrap();
    assert_eq!(c["referral"]["source_type"], "ad");
    assert_eq!(c["referral"]["source_id"], "120226305854810726");
    assert_eq!(c["referral"]["ctwa_clid"], "ARAkLkA8rmlFeiCk");
    let plain: serde_json::Value = serde_json::from_str(t.content.as_deref().unwrap()).unwrap();
    assert!(plain.get("referral").is_none());
}

#[test]
fn bad_twilio_bodies() {
    assert_eq!(
        parse(&raw(b"MessageStatus=sent")).unwrap_err().reason,
        "bad_shape"
    );
    assert_eq!(
        parse(&raw(b"MessageSid=SM1&MessageStatus=teleported&From=whatsapp%3A%2B14155238886&To=whatsapp%3A%2B16505551234")).unwrap_err().reason,
        "unknown_status"
    );
    assert_eq!(
        parse(&raw(
            b"MessageSid=SM1&MessageStatus=sent&From=whatsapp%3A%2B14155238886&To=whatsapp%3Anope"
        ))
        .unwrap_err()
        .reason,
        "bad_phone_number"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_forms_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&raw(&body));
        }
        #[test]
        fn arbitrary_field_values_never_panic(sid in ".{0,12}", st in ".{0,12}", from in ".{0,20}", n in ".{0,3}") {
            let body = serde_urlencoded::to_string([("MessageSid", sid), ("MessageStatus", st), ("From", from), ("To", "whatsapp:+16505551234".into()), ("NumMedia", n)]).unwrap();
            let _ = parse(&raw(body.as_bytes()));
        }
    }
}
