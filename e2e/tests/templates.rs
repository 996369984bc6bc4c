//! Templates synced from the BSP and checked before a send: the routers fetch each
//! WABA's templates from the simulator (Meta's Graph API, paged), the API shows them, and
//! a template send must name one that exists, is approved and gets its parameters.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_loadtest::bsp_sim::Behavior;

const NUMBER: &str = "+15550000001";
const WABA: &str = "102290129340398";

fn template(name: &str, category: &str, status: &str, body: &str) -> Value {
    json!({"name": name, "language": "en_US", "status": status, "category": category, "id": format!("id-{name}"),
        "components": [{"type": "BODY", "text": body}]})
}

fn send_template(name: &str, params: &[&str]) -> Value {
    let params: Vec<Value> = params
        .iter()
        .map(|p| json!({"type": "text", "text": p}))
        .collect();
    json!({"from": NUMBER, "to": "+4915112345678", "type": "template", "template": {
        "name": name, "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": params}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_are_synced_and_a_send_must_fit_one() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        router_env: vec![("SWITCHBOARD_TEMPLATE_SYNC_INTERVAL", "1s".into())],
        ..Default::default()
    })
    .await?;
    // 130 templates: two pages of the Graph API's answer.
    let mut templates = vec![
        template(
            "order_update",
            "UTILITY",
            "APPROVED",
            "Hi {{1}}, order {{2}} ships today.",
        ),
        template(
            "summer_sale",
            "MARKETING",
            "APPROVED",
            "{{1}}, 20% off this week.",
        ),
        template("new_promo", "MARKETING", "PENDING", "Coming soon."),
    ];
    templates
        .extend((0..127).map(|i| template(&format!("filler_{i}"), "UTILITY", "APPROVED", "x")));
    p.sim().set_behavior(Behavior {
        templates: [(WABA.to_string(), templates.clone())].into(),
        ..Default::default()
    });
    let t = p.tenant("acme").await?;
    let other = p.tenant("other").await?;
    // Before its WABA is known, the BSP decides.
    p.number(&t, NUMBER, "meta", "15550000001", 80, None)
        .await?;
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(send_template("never_heard_of", &[])),
            &[],
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    p.admin(
        Method::PUT,
        &format!("/admin/tenants/{}/numbers/%2B15550000001", t.id),
        Some(json!({"bsp": "meta", "bsp_account_id": "15550000001", "tier_mps": 80, "waba_id": WABA})),
    )
    .await?;
    wait_until(
        "the WABA's templates synced",
        Duration::from_secs(30),
        || async {
            let (_, v) = p
                .call(Method::GET, "/v1/templates", &t.key, None, &[])
                .await?;
            Ok(v["data"].as_array().map(Vec::len) == Some(130))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let (_, v) = p
        .call(Method::GET, "/v1/templates", &t.key, None, &[])
        .await?;
    let order = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "order_update")
        .unwrap();
    assert_eq!(order["category"], "UTILITY");
    assert_eq!(order["parameters"]["body"], 2);
    assert_eq!(v["syncs"][0]["waba_id"], WABA);
    assert_eq!(v["syncs"][0]["templates"], 130);
    let (_, v) = p
        .call(Method::GET, "/v1/templates", &other.key, None, &[])
        .await?;
    assert_eq!(v["data"], json!([]), "another tenant's templates");

    for (body, code) in [
        (send_template("never_heard_of", &[]), "template_not_found"),
        (send_template("new_promo", &[]), "template_not_approved"),
        (
            send_template("order_update", &["Ann"]),
            "template_params_invalid",
        ),
    ] {
        let (s, v) = p
            .call(Method::POST, "/v1/messages", &t.key, Some(body), &[])
            .await?;
        assert_eq!((s, v["error"]["code"].as_str()), (422, Some(code)), "{v}");
        assert_eq!(v["error"]["field"], "template");
    }
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(send_template("order_update", &["Ann", "42"])),
            &[],
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let states = p.wait_final(&[id], Duration::from_secs(30)).await?;
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    assert_eq!(p.calls_by_text().get("order_update").map(Vec::len), Some(1));

    // A template deleted at the BSP goes at the next sync.
    templates.retain(|t| t["name"] != "order_update");
    p.sim().set_behavior(Behavior {
        templates: [(WABA.to_string(), templates)].into(),
        ..Default::default()
    });
    wait_until(
        "the deleted template gone",
        Duration::from_secs(30),
        || async {
            let (s, v) = p
                .call(
                    Method::POST,
                    "/v1/messages",
                    &t.key,
                    Some(send_template("order_update", &["Ann", "42"])),
                    &[],
                )
                .await?;
            Ok(s == 422 && v["error"]["code"] == "template_not_found")
        },
    )
    .await?;
    Ok(())
}

fn preference(customer: &str, value: &str, ts: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "user_preferences", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": "15550000001"},
        "contacts": [{"profile": {"name": "Test"}, "wa_id": customer}],
        "user_preferences": [{"wa_id": customer, "detail": "User requested to stop marketing messages",
            "category": "marketing_messages", "value": value, "timestamp": ts}]}}]}]})
    .to_string()
    .into_bytes()
}

fn to(mut body: Value, customer: &str) -> Value {
    body["to"] = json!(customer);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_who_stop_marketing_get_no_marketing_templates() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        router_env: vec![("SWITCHBOARD_TEMPLATE_SYNC_INTERVAL", "1s".into())],
        ..Default::default()
    })
    .await?;
    p.sim().set_behavior(Behavior {
        templates: [(
            WABA.to_string(),
            vec![
                template(
                    "order_update",
                    "UTILITY",
                    "APPROVED",
                    "Hi {{1}}, order {{2}} ships today.",
                ),
                template(
                    "summer_sale",
                    "MARKETING",
                    "APPROVED",
                    "{{1}}, 20% off this week.",
                ),
            ],
        )]
        .into(),
        ..Default::default()
    });
    let t = p.tenant("acme").await?;
    let other = p.tenant("other").await?;
    // The number with its credentials, then its WABA.
    p.number(&t, NUMBER, "meta", "15550000001", 80, None)
        .await?;
    p.admin(
        Method::PUT,
        &format!("/admin/tenants/{}/numbers/%2B15550000001", t.id),
        Some(json!({"bsp": "meta", "bsp_account_id": "15550000001", "tier_mps": 80, "waba_id": WABA})),
    )
    .await?;
    wait_until(
        "the WABA's templates synced",
        Duration::from_secs(30),
        || async {
            let (_, v) = p
                .call(Method::GET, "/v1/templates", &t.key, None, &[])
                .await?;
            Ok(v["data"].as_array().map(Vec::len) == Some(2))
        },
    )
    .await?;
    let sale = |c: &str, who: &str| to(send_template("summer_sale", &[who]), c);
    let utility = |c: &str| to(send_template("order_update", &["Ann", "42"]), c);
    let send = |body: Value| async {
        p.call(Method::POST, "/v1/messages", &t.key, Some(body), &[])
            .await
    };
    let state = |c: &'static str| {
        let p = &p;
        let key = t.key.clone();
        async move {
            let (s, v) = p
                .call(
                    Method::GET,
                    &format!("/v1/suppressions/%2B{}", &c[1..]),
                    &key,
                    None,
                    &[],
                )
                .await?;
            anyhow::Ok((s, v))
        }
    };

    // A customer's stop, through the gateway and the normalizer.
    let now = chrono::Utc::now().timestamp();
    let (a, b) = ("+4915112345671", "+4915112345672");
    p.post_meta_until_accepted(&preference(&a[1..], "stop", now - 60))
        .await?;
    wait_until("the stop recorded", Duration::from_secs(30), || async {
        Ok(state(a).await?.1["suppressed"] == true)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let (_, v) = state(a).await?;
    assert_eq!(v["source"], "user_preferences", "{v}");
    let (s, v) = send(sale(a, "Ann")).await?;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("customer_opted_out")),
        "{v}"
    );
    // Not marketing, or another customer: they go.
    let mut ids = Vec::new();
    for body in [utility(a), sale(b, "Bo")] {
        let (s, v) = send(body).await?;
        assert_eq!(s, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Another tenant's customers are its own.
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/suppressions/%2B{}", &a[1..]),
            &other.key,
            None,
            &[]
        )
        .await?
        .0,
        404
    );

    // Resumed; then a stop dated before the resume arrives late and changes nothing.
    p.post_meta_until_accepted(&preference(&a[1..], "resume", now - 30))
        .await?;
    wait_until("the resume recorded", Duration::from_secs(30), || async {
        Ok(state(a).await?.1["suppressed"] == false)
    })
    .await?;
    p.post_meta_until_accepted(&preference(&a[1..], "stop", now - 45))
        .await?;
    // A marker after it on the same partition (same account): once it is in, the late
    // stop has been through the normalizer too.
    let marker =
        switchboard_e2e::bsp::meta_text("15550000001", "4915112345670", "wamid.marker", "hi", now);
    p.post_meta_until_accepted(&marker).await?;
    wait_until("the marker through", Duration::from_secs(30), || async {
        Ok(p.call(
            Method::GET,
            "/v1/conversations/%2B15550000001/%2B4915112345670",
            &t.key,
            None,
            &[],
        )
        .await?
        .0 == 200)
    })
    .await?;
    assert_eq!(
        state(a).await?.1["suppressed"],
        false,
        "a late, older stop won"
    );
    let (s, v) = send(sale(a, "Ann again")).await?;
    assert_eq!(s, 202, "{v}");
    ids.push(v["id"].as_str().unwrap().to_string());

    // A failed status with 131050 suppresses its customer.
    let c = "+4915112345673";
    let mut failed =
        switchboard_e2e::bsp::meta_status("15550000001", &c[1..], "wamid.x131050", "failed", now);
    let s = String::from_utf8(failed)
        .unwrap()
        .replace("131026", "131050");
    failed = s.into_bytes();
    p.post_meta_until_accepted(&failed).await?;
    wait_until("the 131050 recorded", Duration::from_secs(30), || async {
        Ok(state(c).await?.1["source"] == "bsp_error")
    })
    .await?;

    // The tenant's own list: add with a reason, list, remove.
    let d = "+4915112345674";
    let (s, v) = p
        .call(
            Method::PUT,
            &format!("/v1/suppressions/%2B{}", &d[1..]),
            &t.key,
            Some(json!({"reason": "asked by phone"})),
            &[],
        )
        .await?;
    assert_eq!(
        (s, &v["suppressed"], &v["source"]),
        (200, &json!(true), &json!("api")),
        "{v}"
    );
    let (_, l) = p
        .call(Method::GET, "/v1/suppressions?limit=1", &t.key, None, &[])
        .await?;
    assert_eq!(l["data"][0]["customer"], d, "{l}");
    let next = l["next_cursor"].as_str().unwrap().to_string();
    let (_, l2) = p
        .call(
            Method::GET,
            &format!("/v1/suppressions?limit=10&cursor={next}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    let rest: Vec<&str> = l2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["customer"].as_str().unwrap())
        .collect();
    assert_eq!(rest, [c], "{l2}");
    for bad in [
        "/v1/suppressions/not-a-number",
        "/v1/suppressions?limit=0",
        "/v1/suppressions?cursor=x",
    ] {
        let (s, v) = p.call(Method::GET, bad, &t.key, None, &[]).await?;
        assert!(s == 400 || s == 422, "{bad}: {s} {v}");
    }

    // Scheduled, then the customer is suppressed: the router refuses it at its time.
    let e = "+4915112345675";
    let mut later = sale(e, "Eve");
    later["scheduled_at"] = json!((chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339());
    let (s, v) = send(later).await?;
    assert_eq!(s, 202, "{v}");
    let late_id = v["id"].as_str().unwrap().to_string();
    p.call(
        Method::PUT,
        &format!("/v1/suppressions/%2B{}", &e[1..]),
        &t.key,
        None,
        &[],
    )
    .await?;
    let (s, v) = p
        .call(
            Method::DELETE,
            &format!("/v1/suppressions/%2B{}", &d[1..]),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, &v["suppressed"]), (200, &json!(false)), "{v}");

    let states = p.wait_final(&ids, Duration::from_secs(30)).await?;
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    let states = p
        .wait_final(std::slice::from_ref(&late_id), Duration::from_secs(60))
        .await?;
    assert_eq!(states[&late_id], "failed");
    let (_, m) = p.message(&t, &late_id).await?;
    assert_eq!(m["error"]["code"], "customer_opted_out", "{m}");
    let at_bsp: Vec<String> = p.sim().calls().into_iter().map(|c| c.to).collect();
    assert!(
        !at_bsp.iter().any(|t| t.ends_with(&e[1..])),
        "the refused send reached the BSP"
    );
    assert_eq!(
        at_bsp.iter().filter(|t| t.ends_with(&a[1..])).count(),
        2,
        "{at_bsp:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_held_back_by_the_marketing_limit_goes_again_later_once() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        normalizer_env: vec![("SWITCHBOARD_MARKETING_LIMIT_DEFER", "2s".into())],
        ..Default::default()
    })
    .await?;
    let customer = "+4915112345681";
    // Meta takes the first marketing message, then reports 131049 for it.
    p.sim().set_behavior(Behavior {
        async_errors: [(customer[1..].to_string(), 131049)].into(),
        ..Default::default()
    });
    let t = p.tenant("acme").await?;
    p.number(&t, NUMBER, "meta", "15550000001", 80, None)
        .await?;
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(to(send_template("summer_sale", &["Ann"]), customer)),
            &[],
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    // Deferred, then sent again under a new wamid, then read: not a failure.
    wait_until(
        "the deferred send read",
        Duration::from_secs(60),
        || async {
            let (_, m) = p.message(&t, &id).await?;
            Ok(m["send_state"] == "accepted" && m["status"] == "read")
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let calls: Vec<_> = p.calls_by_text().remove("summer_sale").unwrap_or_default();
    assert_eq!(
        calls.len(),
        2,
        "one send, one after the deferral: {calls:?}"
    );
    assert_ne!(calls[0].message_id, calls[1].message_id);
    let (deferrals,): (i32,) =
        sqlx::query_as("SELECT deferrals FROM outbound_messages WHERE message_id = $1")
            .bind(&id)
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(deferrals, 1);
    // The first BSP message stays failed with 131049 in the history; ClickHouse does not
    // count it as a failed message.
    let first = calls[0].message_id.clone().unwrap();
    assert_eq!(
        p.pg_count(&format!(
            "SELECT count(*) FROM messages WHERE wamid = '{first}' AND error_code = '131049'"
        ))
        .await?,
        1
    );
    wait_until(
        "both acceptances in ClickHouse",
        Duration::from_secs(30),
        || async {
            Ok(
                p.ch_count("SELECT count() FROM events WHERE event_type = 'message.send_accepted'")
                    .await
                    .unwrap_or(0)
                    == 2,
            )
        },
    )
    .await?;
    assert_eq!(
        p.ch_count("SELECT count() FROM events WHERE bitAnd(stages, 8) != 0")
            .await
            .unwrap_or(-1),
        0,
        "a failed stage was credited"
    );
    Ok(())
}

/// Gupshup's `opted-out` (of all the business's notifications), through the gateway and
/// the normalizer, suppresses the customer's marketing; its `opted-in` lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gupshup_opt_outs_and_opt_ins_change_the_suppression() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550090011", "gupshup", "acme-app", 80, None)
        .await?;
    let mut creds = p.send_path().credentials("gupshup");
    creds["webhook_token"] = json!("tok-acme");
    p.admin(
        Method::PUT,
        &format!("/admin/tenants/{}/credentials/gupshup", t.id),
        Some(creds),
    )
    .await?;
    let event = |kind: &str, ts: i64| {
        json!({"app": "acme-app", "timestamp": ts, "version": 2, "type": "user-event",
            "payload": {"phone": "919876543210", "type": kind}})
        .to_string()
    };
    let post = |body: String| {
        let r = p
            .http
            .post(format!("{}/webhooks/gupshup", p.gateway_url))
            .header("content-type", "application/json")
            .header("x-switchboard-token", "tok-acme")
            .body(body);
        async move { anyhow::Ok(r.send().await?.status().as_u16()) }
    };
    let suppressed = || async {
        let (s, v) = p
            .call(
                Method::GET,
                "/v1/suppressions/%2B919876543210",
                &t.key,
                None,
                &[],
            )
            .await?;
        anyhow::Ok((s == 200).then_some(v))
    };
    let now = chrono::Utc::now().timestamp_millis();
    // The gateway learns the tenant's token from wa.config: posted until it takes it.
    wait_until("the opt-out accepted", Duration::from_secs(30), || async {
        Ok(post(event("opted-out", now - 60_000)).await? == 200)
    })
    .await?;
    wait_until("the opt-out recorded", Duration::from_secs(30), || async {
        Ok(suppressed().await?.is_some_and(|v| v["suppressed"] == true))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let v = suppressed().await?.unwrap_or_default();
    assert_eq!(v["source"], "user_preferences", "{v}");
    assert_eq!(post(event("opted-in", now - 30_000)).await?, 200);
    wait_until("the opt-in recorded", Duration::from_secs(30), || async {
        Ok(suppressed()
            .await?
            .is_some_and(|v| v["suppressed"] == false))
    })
    .await?;
    Ok(())
}
