//! Conversations and the customer-service window, end to end: inbound webhooks through
//! the gateway and the normalizer open windows; the send API refuses free-form sends
//! outside them (and changes nothing); the router re-checks a scheduled send at its time;
//! templates always go; the conversations API shows it all, to its tenant only.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};

const NUMBER: &str = "+15550000001";
const HOUR: i64 = 3600;

fn meta_inbound(customer: &Value, wamid: &str, text: &str, ts: i64, referral: bool) -> Vec<u8> {
    // `customer`: {"wa_id": ...} or {"user_id": ...} (a business-scoped user, no number).
    let mut m =
        json!({"id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": text}});
    let mut contact = json!({"profile": {"name": "Test"}});
    if let Some(w) = customer.get("wa_id") {
        m["from"] = w.clone();
        contact["wa_id"] = w.clone();
    }
    if let Some(u) = customer.get("user_id") {
        m["from_user_id"] = u.clone();
        contact["user_id"] = u.clone();
    }
    if referral {
        m["referral"] = json!({"source_url": "https://fb.me/ad", "source_id": "120226305854810726",
            "source_type": "ad", "headline": "Chat with us", "body": "Summer sale", "ctwa_clid": "ARAk"});
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": "15550000001"},
        "contacts": [contact], "messages": [m]}}]}]})
    .to_string()
    .into_bytes()
}

async fn conversation(
    p: &Pipeline,
    t: &TestTenant,
    customer: &str,
) -> anyhow::Result<(u16, Value)> {
    p.call(
        Method::GET,
        &format!("/v1/conversations/%2B{}/{customer}", &NUMBER[1..]),
        &t.key,
        None,
        &[],
    )
    .await
}

async fn send(p: &Pipeline, t: &TestTenant, body: Value) -> anyhow::Result<(u16, Value)> {
    p.call(Method::POST, "/v1/messages", &t.key, Some(body), &[])
        .await
}

fn text(to: &str, body: &str) -> Value {
    json!({"from": NUMBER, "to": to, "type": "text", "text": {"body": body}})
}

fn template(to: &str, name: &str) -> Value {
    json!({"from": NUMBER, "to": to, "type": "template",
        "template": {"name": name, "language": {"code": "en"}}})
}

fn ts_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .map(|t| t.timestamp())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_decides_free_form_sends_before_any_bsp_call() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let t = p.tenant("acme").await?;
    let other = p.tenant("other").await?;
    // Test tenants leave the window to the BSP; this one enforces it, as tenants do by
    // default.
    let v = p
        .admin(
            Method::PATCH,
            &format!("/admin/tenants/{}", t.id),
            Some(json!({"enforce_service_window": true})),
        )
        .await?;
    assert_eq!(v["enforce_service_window"], true);
    p.number(&t, NUMBER, "meta", "15550000001", 80, None)
        .await?;

    let now = chrono::Utc::now().timestamp();
    let open = "+4915112345601"; // wrote a minute ago
    let closed = "+4915112345602"; // wrote 25 hours ago
    let never = "+4915112345603"; // never wrote
    let ad = "+4915112345604"; // came from an ad 48 hours ago
    let closing = "+4915112345605"; // wrote 24 hours ago less 60 seconds
    let user = "US.13491208655302741918"; // a business-scoped user, no number
    let digits = |n: &str| json!(n.trim_start_matches('+'));
    let inbound = [
        meta_inbound(
            &json!({"wa_id": digits(open)}),
            "wamid.in.open.2",
            "hi",
            now - 60,
            false,
        ),
        // An older message of the same customer, after the newer one and twice: the
        // conversation keeps the latest and the first.
        meta_inbound(
            &json!({"wa_id": digits(open)}),
            "wamid.in.open.1",
            "hello",
            now - 2 * HOUR,
            false,
        ),
        meta_inbound(
            &json!({"wa_id": digits(open)}),
            "wamid.in.open.1",
            "hello",
            now - 2 * HOUR,
            false,
        ),
        meta_inbound(
            &json!({"wa_id": digits(closed)}),
            "wamid.in.closed",
            "hi",
            now - 25 * HOUR,
            false,
        ),
        meta_inbound(
            &json!({"wa_id": digits(ad)}),
            "wamid.in.ad",
            "info?",
            now - 48 * HOUR,
            true,
        ),
        meta_inbound(
            &json!({"wa_id": digits(closing)}),
            "wamid.in.closing",
            "hi",
            now - 24 * HOUR + 60,
            false,
        ),
        meta_inbound(
            &json!({"user_id": user}),
            "wamid.in.user",
            "hi",
            now - 60,
            false,
        ),
    ];
    for body in &inbound {
        p.post_meta_until_accepted(body).await?;
    }
    for c in [open, closed, ad, closing, user] {
        let c = c.replace('+', "%2B");
        wait_until("the conversation", Duration::from_secs(30), || async {
            Ok(conversation(&p, &t, &c).await?.0 == 200)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    }

    // Accepted while the window is open, due after it closes: the router fails it at
    // its time, without a BSP call.
    let (_, c) = conversation(&p, &t, &closing.replace('+', "%2B")).await?;
    let closes = ts_of(&c["window"]["expires_at"]);
    assert_eq!(closes, now + 60);
    let due = chrono::DateTime::from_timestamp(closes + 3, 0)
        .unwrap()
        .to_rfc3339();
    let mut late = text(closing, "scheduled past the window");
    late["scheduled_at"] = json!(due);
    let (s, v) = send(&p, &t, late).await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "scheduled");
    let late_id = v["id"].as_str().unwrap().to_string();

    let (_, c) = conversation(&p, &t, &open.replace('+', "%2B")).await?;
    assert_eq!(c["window"]["open"], true, "{c}");
    assert_eq!(c["window"]["kind"], "service");
    assert_eq!(ts_of(&c["window"]["expires_at"]), now - 60 + 24 * HOUR);
    assert_eq!(c["last_inbound_wamid"], "wamid.in.open.2");
    assert_eq!(ts_of(&c["first_inbound_at"]), now - 2 * HOUR);
    assert_eq!(c["entry_point"], Value::Null);
    let (_, c) = conversation(&p, &t, &ad.replace('+', "%2B")).await?;
    assert_eq!(c["window"]["open"], true, "{c}");
    assert_eq!(c["window"]["kind"], "free_entry_point");
    assert_eq!(
        ts_of(&c["window"]["expires_at"]),
        now - 48 * HOUR + 72 * HOUR
    );
    assert_eq!(c["entry_point"]["source"], "ad");
    let (_, c) = conversation(&p, &t, &closed.replace('+', "%2B")).await?;
    assert_eq!(c["window"]["open"], false, "{c}");
    let (_, c) = conversation(&p, &t, user).await?;
    assert_eq!(c["customer"], user);
    assert_eq!(c["window"]["open"], true, "{c}");
    // Another tenant sees none of it.
    assert_eq!(conversation(&p, &other, user).await?.0, 404);
    let (s, l) = p
        .call(Method::GET, "/v1/conversations", &other.key, None, &[])
        .await?;
    assert_eq!(
        (s, l["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{l}"
    );

    // Inside a window: accepted. Outside: 422 with when it closed, nothing stored.
    let mut ids = Vec::new();
    for (to, body) in [
        (open, "in window"),
        (ad, "in entry point window"),
        (user, "to a user in window"),
    ] {
        let (s, v) = send(&p, &t, text(to, body)).await?;
        assert_eq!(s, 202, "{to}: {v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (s, v) = send(&p, &t, text(closed, "too late")).await?;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "outside_service_window");
    assert_eq!(v["error"]["field"], "to");
    assert_eq!(ts_of(&v["error"]["window_closed_at"]), now - HOUR);
    let (s, v) = send(&p, &t, text(never, "never wrote")).await?;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "outside_service_window");
    assert_eq!(v["error"]["window_closed_at"], Value::Null);
    // A batch: each item on its own.
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/messages/batch",
            &t.key,
            Some(json!({"messages": [
                text(open, "batch in window"), text(never, "batch never wrote"), template(never, "batch_welcome"),
            ]})),
            &[],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let codes: Vec<&Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(codes, [&json!(202), &json!(422), &json!(202)], "{v}");
    assert_eq!(v["results"][1]["error"]["code"], "outside_service_window");
    assert_eq!(v["results"][1]["error"]["window_closed_at"], Value::Null);
    for i in [0, 2] {
        ids.push(
            v["results"][i]["message"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Templates go whatever the window.
    let (s, v) = send(&p, &t, template(closed, "order_update_closed")).await?;
    assert_eq!(s, 202, "{v}");
    ids.push(v["id"].as_str().unwrap().to_string());
    let refused_rows = p
        .pg_count(&format!(
            "SELECT count(*) FROM outbound_messages WHERE to_id IN ('{closed}', '{never}') AND message_type <> 'template'"
        ))
        .await?;
    assert_eq!(refused_rows, 0, "a refused send left a row");

    let states = p.wait_final(&ids, Duration::from_secs(60)).await?;
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    let states = p
        .wait_final(std::slice::from_ref(&late_id), Duration::from_secs(90))
        .await?;
    assert_eq!(states[&late_id], "failed");
    let (_, m) = p.message(&t, &late_id).await?;
    assert_eq!(m["error"]["code"], "outside_service_window", "{m}");
    assert!(
        m["error"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("closed at"),
        "{m}"
    );
    // The simulator saw each accepted send once, and none of the refused ones.
    let calls = p.calls_by_text();
    for body in [
        "in window",
        "in entry point window",
        "to a user in window",
        "batch in window",
        "batch_welcome",
        "order_update_closed",
    ] {
        assert_eq!(calls.get(body).map(Vec::len), Some(1), "{body}");
    }
    for body in [
        "too late",
        "never wrote",
        "batch never wrote",
        "scheduled past the window",
    ] {
        assert!(!calls.contains_key(body), "{body} reached the BSP");
    }

    // The replies' `sent` statuses come back: the conversation's latest outbound message
    // and its pricing category (a reply in the window is a free service message).
    wait_until(
        "the outbound side of the conversation",
        Duration::from_secs(30),
        || async {
            let (_, c) = conversation(&p, &t, &open.replace('+', "%2B")).await?;
            Ok(c["pricing_category"] == "service" && !c["last_outbound_at"].is_null())
        },
    )
    .await?;
    wait_until(
        "the stored messages of the conversation",
        Duration::from_secs(30),
        || async {
            let (_, c) = conversation(&p, &t, &open.replace('+', "%2B")).await?;
            Ok(c["messages"].as_array().map(Vec::len) == Some(4))
        },
    )
    .await?;
    let (_, c) = conversation(&p, &t, &open.replace('+', "%2B")).await?;
    let dirs: Vec<&str> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["direction"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(dirs.iter().filter(|d| **d == "inbound").count(), 2, "{c}");
    assert_eq!(dirs.iter().filter(|d| **d == "outbound").count(), 2, "{c}");

    // The list: pages of 2, latest activity first, filters.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/conversations?limit=2".to_string(),
            Some(c) => format!("/v1/conversations?limit=2&cursor={c}"),
        };
        let (s, page) = p.call(Method::GET, &path, &t.key, None, &[]).await?;
        assert_eq!(s, 200, "{page}");
        for c in page["data"].as_array().unwrap() {
            seen.push((
                ts_of(&c["last_activity_at"]),
                c["customer"].as_str().unwrap().to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let customers: HashSet<&str> = seen.iter().map(|(_, c)| c.as_str()).collect();
    let want: HashSet<&str> = [open, closed, ad, closing, user, never].into();
    assert_eq!(customers, want, "{seen:?}");
    assert_eq!(seen.len(), want.len(), "a conversation twice: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "{seen:?}");
    let (_, l) = p
        .call(
            Method::GET,
            "/v1/conversations?window=closed",
            &t.key,
            None,
            &[],
        )
        .await?;
    let closed_now: HashSet<&str> = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer"].as_str().unwrap())
        .collect();
    assert_eq!(closed_now, [closed, closing, never].into(), "{l}");
    for bad in [
        "window=maybe",
        "limit=0",
        "cursor=nope",
        "number=abc",
        "colour=red",
    ] {
        let (s, v) = p
            .call(
                Method::GET,
                &format!("/v1/conversations?{bad}"),
                &t.key,
                None,
                &[],
            )
            .await?;
        assert_eq!(s, 400, "{bad}: {v}");
    }

    // A tenant that turns the check off leaves the window to the BSP.
    p.admin(
        Method::PATCH,
        &format!("/admin/tenants/{}", t.id),
        Some(json!({"enforce_service_window": false})),
    )
    .await?;
    wait_until(
        "the setting to reach the gateway",
        Duration::from_secs(30),
        || async { Ok(send(&p, &t, text(never, "check turned off")).await?.0 == 202) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_to_one_customer_are_paced_while_the_others_flow_at_the_tier() -> anyhow::Result<()> {
    let interval = Duration::from_millis(500);
    let burst = 2;
    let p = Pipeline::start(Options {
        send_path: true,
        router_env: vec![
            ("SWITCHBOARD_PAIR_INTERVAL", "500ms".into()),
            ("SWITCHBOARD_PAIR_BURST", burst.to_string()),
        ],
        ..Default::default()
    })
    .await?;
    let t = p.tenant("acme").await?;
    p.number(&t, NUMBER, "meta", "15550000001", 80, None)
        .await?;
    let one = "+4915112345600";
    // 20 to one customer among 200 to 200 others, in one batch, the 20 first.
    let mut messages: Vec<Value> = (0..20).map(|i| text(one, &format!("pair-{i}"))).collect();
    messages.extend((0..200).map(|i| {
        text(
            &format!("+49151{:08}", 20_000_000 + i),
            &format!("other-{i}"),
        )
    }));
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/messages/batch",
            &t.key,
            Some(json!({"messages": messages})),
            &[],
        )
        .await?;
    assert_eq!((s, &v["accepted"]), (200, &json!(220)), "{v}");
    let ids: Vec<String> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["id"].as_str().unwrap().to_string())
        .collect();
    let states = p.wait_final(&ids, Duration::from_secs(120)).await?;
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");

    let calls = p.calls_by_text();
    let at = |prefix: &str, n: usize| -> Vec<i64> {
        let mut v: Vec<i64> = (0..n)
            .map(|i| {
                let c = &calls[&format!("{prefix}-{i}")];
                assert_eq!(c.len(), 1, "{prefix}-{i} sent {} times", c.len());
                c[0].at_ms
            })
            .collect();
        v.sort();
        v
    };
    let pair = at("pair", 20);
    let others = at("other", 200);
    // After the burst, one per interval (20 ms for the clocks of two processes).
    let ms = interval.as_millis() as i64;
    for (k, t) in pair.iter().enumerate().skip(burst) {
        let due = pair[0] + (k - burst + 1) as i64 * ms;
        assert!(
            *t >= due - 20,
            "send {k} to one customer at +{} ms, due +{} ms: {pair:?}",
            t - pair[0],
            due - pair[0]
        );
    }
    // The number's other customers did not wait behind them: all 200 were through
    // (about 2.6 s at 80 mps) before the paced customer's last send (9 s in).
    assert!(
        others.last() < pair.last(),
        "others done at +{} ms, the paced customer's last at +{} ms",
        others.last().unwrap() - pair[0],
        pair.last().unwrap() - pair[0]
    );
    let parked = p
        .send_path()
        .router
        .metric("switchboard_router_pair_parked_total")
        .await;
    assert!(
        parked >= 1.0,
        "no send was parked for its customer ({parked})"
    );
    Ok(())
}
