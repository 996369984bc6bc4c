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
