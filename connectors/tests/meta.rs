//! Meta Cloud API fixtures (written from Meta's webhook reference) through the parser.

use std::collections::HashMap;

use switchboard_connectors::{parse, Parsed};
use switchboard_schemas::{inbound_event_id, status_event_id, RawWebhook, Status};

fn raw(bsp: &str, body: &[u8]) -> RawWebhook {
    RawWebhook {
        request_id: "req-1".into(),
        bsp: bsp.into(),
        received_at_ms: 1_750_263_999_000,
        content_type: "application/json".into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/tests/fixtures/meta/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn one(name: &str) -> switchboard_schemas::Event {
    let Parsed { events, rejects } = parse(&raw("meta", &fixture(name))).expect(name);
    assert!(rejects.is_empty(), "{name}: {rejects:?}");
    assert_eq!(events.len(), 1, "{name}");
    events.into_iter().next().unwrap()
}

#[test]
fn statuses_map_to_canonical_fields() {
    let e = one("status_sent");
    assert_eq!(e.event_type, "message.status");
    assert_eq!(e.status.as_deref(), Some("sent"));
    assert_eq!(e.business_number, "+15550783881");
    assert_eq!(e.business_account_id.as_deref(), Some("106540352242922"));
    assert_eq!(e.customer_id, "+16505551234");
    assert_eq!(
        e.wamid,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
    );
    assert_eq!(e.occurred_at_ms, 1_750_263_773_000);
    assert_eq!(e.received_at_ms, 1_750_263_999_000);
    assert_eq!(
        e.conversation_id.as_deref(),
        Some("4cb0e7c2b2f8bb57db6d61bbd9c4cc8e")
    );
    assert_eq!(e.conversation_category.as_deref(), Some("marketing"));
    assert_eq!(e.pricing_category.as_deref(), Some("marketing"));
    assert_eq!(e.billable, Some(true));
    assert_eq!(e.pricing_model.as_deref(), Some("PMP"));
    assert_eq!(e.pricing_type.as_deref(), Some("regular"));
    assert_eq!(e.event_id, status_event_id("meta", &e.wamid, Status::Sent));
    assert_eq!(e.conversation_key(), "+15550783881:+16505551234");

    assert_eq!(one("status_delivered").status.as_deref(), Some("delivered"));
    assert_eq!(one("status_read").status.as_deref(), Some("read"));

    let f = one("status_failed");
    assert_eq!(f.status.as_deref(), Some("failed"));
    assert_eq!(f.error_code.as_deref(), Some("131049"));
    assert!(f
        .error_title
        .as_deref()
        .unwrap()
        .contains("healthy ecosystem"));
    assert!(f
        .error_detail
        .as_deref()
        .unwrap()
        .starts_with("In order to maintain"));

    let p = one("status_played_bsuid");
    assert_eq!(p.status.as_deref(), Some("played"));
    assert_eq!(
        p.customer_id, "US.13491208655302741918",
        "business-scoped user id kept whole"
    );
}

#[test]
fn batched_payloads_yield_every_status() {
    let Parsed { events, rejects } = parse(&raw("meta", &fixture("batch_statuses"))).unwrap();
    assert!(rejects.is_empty());
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.wamid.as_str(),
                e.status.as_deref().unwrap(),
                e.business_number.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("wamid.BATCH0001", "sent", "+15550783881"),
            ("wamid.BATCH0002", "delivered", "+15550783881"),
            ("wamid.BATCH0003", "read", "+15550783881"),
            ("wamid.BATCH0004", "sent", "+442071838750"),
        ]
    );
}

#[test]
fn every_inbound_content_type() {
    let cases = [
        (
            "message_text",
            "text",
            "\"body\":\"Does it come in another color?\"",
        ),
        (
            "message_image",
            "image",
            "\"caption\":\"This is a caption\"",
        ),
        ("message_audio", "audio", "\"voice\":false"),
        ("message_voice", "voice", "\"voice\":true"),
        ("message_video", "video", "\"caption\":\"Look\""),
        (
            "message_document",
            "document",
            "\"filename\":\"invoice.pdf\"",
        ),
        ("message_sticker", "sticker", "\"mime_type\":\"image/webp\""),
        ("message_location", "location", "\"latitude\":37.483307"),
        (
            "message_contacts",
            "contacts",
            "\"formatted_name\":\"Barbara J. Johnson\"",
        ),
        (
            "message_button_reply",
            "interactive",
            "\"kind\":\"button_reply\"",
        ),
        (
            "message_list_reply",
            "interactive",
            "\"id\":\"priority_express\"",
        ),
        (
            "message_template_button",
            "button",
            "\"payload\":\"STOP_PROMOS\"",
        ),
        ("message_reaction", "reaction", "\"emoji\":\"😀\""),
        (
            "message_order",
            "order",
            "\"product_retailer_id\":\"di9ozbzfi4\"",
        ),
        (
            "message_system",
            "system",
            "\"type\":\"user_changed_number\"",
        ),
        ("message_unsupported", "unknown", "\"type\":\"unsupported\""),
    ];
    for (name, kind, needle) in cases {
        let e = one(name);
        assert_eq!(e.event_type, "message.received", "{name}");
        assert_eq!(e.message_type.as_deref(), Some(kind), "{name}");
        let content = e.content.as_deref().unwrap();
        assert!(content.contains(needle), "{name}: {content}");
        assert!(
            content.contains("\"profile_name\":\"Sheena Nelson\""),
            "{name}"
        );
        assert_eq!(e.customer_id, "+16505551234");
        assert_eq!(e.wamid, format!("wamid.IN_{name}"));
        assert_eq!(e.event_id, inbound_event_id("meta", &e.wamid));
        assert_eq!(e.status, None);
    }
    assert_eq!(
        one("message_button_reply").context_wamid.as_deref(),
        Some("wamid.OUT_BUTTONS")
    );
    assert_eq!(
        one("message_reaction").context_wamid.as_deref(),
        Some("wamid.OUT_REACTED")
    );
}

#[test]
fn a_click_to_whatsapp_referral_is_kept_with_the_message() {
    let e = one("message_referral");
    assert_eq!(e.message_type.as_deref(), Some("text"));
    let c: serde_json::Value = serde_json::from_str(e.content.as_deref().unwrap()).unwrap();
    assert_eq!(c["body"], "Can I get more info about this?");
    assert_eq!(c["referral"]["source_type"], "ad");
    assert_eq!(c["referral"]["source_id"], "120226305854810726");
    assert!(c["referral"]["ctwa_clid"]
        .as_str()
        .unwrap()
        .starts_with("ARAk"));
    let plain: serde_json::Value =
        serde_json::from_str(one("message_text").content.as_deref().unwrap()).unwrap();
    assert!(plain.get("referral").is_none());
}

#[test]
fn a_customer_stopping_marketing_is_a_preference_event() {
    let e = one("user_preferences_stop");
    assert_eq!(e.event_type, "customer.preference");
    assert_eq!(e.customer_id, "+16505551234");
    assert_eq!(e.business_number, "+15550783881");
    assert_eq!(e.occurred_at_ms, 1_750_263_900_000);
    let c: serde_json::Value = serde_json::from_str(e.content.as_deref().unwrap()).unwrap();
    assert_eq!(c["category"], "marketing_messages");
    assert_eq!(c["value"], "stop");
    assert_eq!(e.status, None);
    // A resume is another event; the same stop again is the same one.
    let body = String::from_utf8(fixture("user_preferences_stop")).unwrap();
    let resume = body.replace("\"stop\"", "\"resume\"");
    let Parsed { events, .. } = parse(&raw("meta", resume.as_bytes())).unwrap();
    assert_ne!(events[0].event_id, e.event_id);
    assert_eq!(one("user_preferences_stop").event_id, e.event_id);
    let bad = body.replace("\"stop\"", "\"maybe\"");
    let Parsed { events, rejects } = parse(&raw("meta", bad.as_bytes())).unwrap();
    assert!(events.is_empty());
    assert_eq!(rejects[0].reason, "bad_shape");
}

#[test]
fn dialog360_uses_the_same_format_under_its_own_name() {
    let Parsed { events, .. } = parse(&raw("360dialog", &fixture("status_sent"))).unwrap();
    assert_eq!(events[0].bsp, "360dialog");
    assert_eq!(
        events[0].event_id,
        status_event_id("360dialog", &events[0].wamid, Status::Sent)
    );
}

#[test]
fn bad_items_are_rejected_with_reasons_and_good_ones_kept() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},"statuses":[
        {"id":"wamid.ok","status":"sent","timestamp":"1750264000","recipient_id":"16505550001"},
        {"id":"wamid.bad1","status":"teleported","timestamp":"1750264000","recipient_id":"16505550001"},
        {"id":"wamid.bad2","status":"sent","timestamp":"1750264000","recipient_id":"12"},
        {"id":"wamid.bad3","status":"sent","timestamp":"later","recipient_id":"16505550001"}]}}]}]}"#;
    let Parsed { events, rejects } = parse(&raw("meta", body)).unwrap();
    assert_eq!(events.len(), 1);
    let reasons: Vec<&str> = rejects.iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        vec!["unknown_status", "bad_phone_number", "bad_timestamp"]
    );
}

#[test]
fn wrong_shapes_are_parse_errors() {
    for (body, reason) in [
        (&b"{\"entry\":"[..], "bad_shape"),
        (&b"[1,2,3]"[..], "bad_shape"),
        (&b"{\"object\":\"page\",\"entry\":[]}"[..], "bad_shape"),
        (
            &b"{\"object\":\"whatsapp_business_account\",\"entry\":[]}"[..],
            "no_events",
        ),
    ] {
        assert_eq!(parse(&raw("meta", body)).unwrap_err().reason, reason);
    }
    assert_eq!(
        parse(&raw("nope", b"{}")).unwrap_err().reason,
        "unknown_bsp"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&raw("meta", &body));
        }

        #[test]
        fn mutated_fixtures_never_panic(idx in 0usize..1000, byte in any::<u8>(), name in prop::sample::select(vec!["status_sent", "batch_statuses", "message_order", "message_button_reply"])) {
            let mut body = fixture(name);
            let i = idx % body.len();
            body[i] = byte;
            let _ = parse(&raw("meta", &body));
        }

        #[test]
        fn arbitrary_json_values_in_status_fields_never_panic(id in ".{0,20}", status in ".{0,10}", ts in any::<i64>(), rcpt in ".{0,20}") {
            let body = serde_json::json!({"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881"},"statuses":[{"id":id,"status":status,"timestamp":ts,"recipient_id":rcpt}]}}]}]});
            let _ = parse(&raw("meta", body.to_string().as_bytes()));
        }
    }
}
