//! Campaigns end to end: an audience with duplicates, invalid numbers and opted-out
//! customers through the pre-flight; released by the router at the number's tier,
//! paused and resumed, with the router and the gateway killed midway; then every valid
//! recipient counted at the BSP simulator, in PostgreSQL and in ClickHouse.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_loadtest::bsp_sim::Behavior;

const NUMBER: &str = "+15550000001";
const WABA: &str = "102290129340398";

fn behavior() -> Behavior {
    Behavior {
        templates: [(
            WABA.to_string(),
            vec![
                json!({"name": "summer_sale", "language": "en_US", "status": "APPROVED", "category": "MARKETING",
                    "components": [{"type": "BODY", "text": "{{1}}, 20% off this week."}]}),
                json!({"name": "order_update", "language": "en_US", "status": "APPROVED", "category": "UTILITY",
                    "components": [{"type": "BODY", "text": "Hi {{1}}, order {{2}} ships today."}]}),
            ],
        )]
        .into(),
        // Meta's tier, enforced the way the BSP does (130429 beyond it).
        tiers: [("15550000001".to_string(), 80)].into(),
        ..Default::default()
    }
}

async fn setup(p: &Pipeline) -> anyhow::Result<TestTenant> {
    setup_at(p, 80).await
}

/// The tenant, and its number at `tier` messages a second with the WABA's templates.
async fn setup_at(p: &Pipeline, tier: u32) -> anyhow::Result<TestTenant> {
    p.sim().set_behavior(behavior());
    let t = p.tenant("acme").await?;
    // The number with its credentials, then its WABA.
    p.number(&t, NUMBER, "meta", "15550000001", tier, None)
        .await?;
    p.admin(
        Method::PUT,
        &format!("/admin/tenants/{}/numbers/%2B15550000001", t.id),
        Some(json!({"bsp": "meta", "bsp_account_id": "15550000001", "tier_mps": tier, "waba_id": WABA})),
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
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    Ok(t)
}

fn opts() -> Options {
    Options {
        send_path: true,
        router_env: vec![("SWITCHBOARD_TEMPLATE_SYNC_INTERVAL", "1s".into())],
        ..Default::default()
    }
}

async fn campaign(p: &Pipeline, t: &TestTenant, id: &str) -> anyhow::Result<Value> {
    let (s, v) = p
        .call(
            Method::GET,
            &format!("/v1/campaigns/{id}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    anyhow::ensure!(s == 200, "GET campaign: {s} {v}");
    Ok(v)
}

async fn wait_calls(p: &Pipeline, n: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{n} calls at the BSP"),
        Duration::from_secs(240),
        || async { Ok(p.sim().calls().len() >= n) },
    )
    .await
}

/// The most calls the simulator took from the number in any one-second window.
fn peak_per_second(mut at: Vec<i64>) -> usize {
    at.sort();
    let mut peak = 0;
    let mut lo = 0;
    for hi in 0..at.len() {
        while at[hi] - at[lo] >= 1000 {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_valid_recipient_once_through_pauses_and_kills() -> anyhow::Result<()> {
    let mut p = Pipeline::start(opts()).await?;
    let t = setup(&p).await?;
    // 10,000 lines: 9,850 distinct valid customers (50 of them opted out), 100 repeats,
    // 50 invalid.
    let customer = |i: usize| format!("+49151{:08}", 30_000_000 + i);
    let mut csv = String::from("to,name\n");
    for i in 0..9_850 {
        csv.push_str(&format!("{},Customer {i}\n", customer(i)));
    }
    for i in 0..100 {
        csv.push_str(&format!("{},Again {i}\n", customer(i * 7)));
    }
    for i in 0..50 {
        let bad = if i % 2 == 0 {
            "+1415555".to_string()
        } else {
            format!("not-a-number-{i}")
        };
        csv.push_str(&format!("{bad},Nobody\n"));
    }
    for i in 0..50 {
        let (s, v) = p
            .call(
                Method::PUT,
                &format!("/v1/suppressions/%2B{}", &customer(9_000 + i)[1..]),
                &t.key,
                None,
                &[],
            )
            .await?;
        anyhow::ensure!(s == 200, "{v}");
    }
    // Uploaded as a file, as `curl -F campaign=@c.json -F recipients=@audience.csv` does.
    let summer = json!({"name": "Summer sale", "template": {"name": "summer_sale", "language": "en_US"},
        "from": NUMBER, "rate_per_sec": 80, "metadata": {"team": "growth"}});
    let form = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"campaign\"; filename=\"c.json\"\r\n\
         Content-Type: application/json\r\n\r\n{summer}\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"recipients\"; filename=\"audience.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n{csv}\r\n--b0undary--\r\n"
    );
    let r = p
        .http
        .post(format!("{}/v1/campaigns", p.gateway_url))
        .bearer_auth(&t.key)
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(form)
        .send()
        .await?;
    let s = r.status().as_u16();
    let c: serde_json::Value = r.json().await?;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["state"], "running");
    assert_eq!(
        c["audience"],
        json!({"total": 9_850, "invalid": 50, "duplicates": 100, "suppressed": 50}),
        "{c}"
    );
    assert_eq!(c["preflight"]["sendable"], 9_800);
    assert_eq!(c["preflight"]["marketing"], true);
    assert_eq!(
        c["preflight"]["invalid_examples"].as_array().map(Vec::len),
        Some(20)
    );

    let calls = |p: &Pipeline| p.sim().calls().len();
    wait_calls(&p, 1_000).await?;
    // Pause: what was released goes, then nothing.
    let (s, v) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/pause"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, &v["state"]), (200, &json!("paused")), "{v}");
    wait_until(
        "the released sends to drain",
        Duration::from_secs(30),
        || async {
            let before = calls(&p);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(calls(&p) == before)
        },
    )
    .await?;
    let held = calls(&p);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls(&p), held, "sends went out while paused");
    let (s, v) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/pause"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("invalid_state")),
        "{v}"
    );
    let (s, _) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/resume"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200);

    // kill -9 the router twice and the gateway once while it runs.
    for (at, what) in [(3_500, "router"), (6_000, "gateway"), (8_000, "router")] {
        wait_calls(&p, at).await?;
        if what == "router" {
            let r = &mut p.send.as_mut().unwrap().router;
            r.kill9().await;
            r.start()?;
        } else {
            p.gateway.kill9().await;
            p.gateway.start()?;
        }
    }
    wait_until(
        "the campaign released completely",
        Duration::from_secs(300),
        || async { Ok(campaign(&p, &t, &id).await?["state"] == "completed") },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM campaign_recipients WHERE campaign_id = $1 AND state = 'released'",
    )
    .bind(&id)
    .fetch_all(&p.pg)
    .await?;
    assert_eq!(ids.len(), 9_800, "released recipients");
    let states = p.wait_final(&ids, Duration::from_secs(120)).await?;
    let mut by_state: HashMap<&str, usize> = HashMap::new();
    for s in states.values() {
        *by_state.entry(s.as_str()).or_default() += 1;
    }
    // Sends in flight at a router's kill end `unknown` (never re-sent); the rest went.
    let accepted = by_state.get("accepted").copied().unwrap_or(0);
    let unknown = by_state.get("unknown").copied().unwrap_or(0);
    assert_eq!(accepted + unknown, 9_800, "{by_state:?}");
    assert!(unknown <= 200, "{by_state:?}");

    // At the BSP: each valid recipient at most once (once unless its outcome is unknown),
    // never an opted-out or invalid one, never over the tier.
    let sim_calls = p.sim().calls();
    let mut per: HashMap<String, usize> = HashMap::new();
    for c in sim_calls.iter().filter(|c| c.status == 200) {
        *per.entry(format!("+{}", c.to.trim_start_matches('+')))
            .or_default() += 1;
    }
    assert!(per.values().all(|n| *n == 1), "a recipient got two sends");
    assert!(
        per.len() >= accepted && per.len() <= 9_800,
        "{} at the BSP, {accepted} accepted",
        per.len()
    );
    for i in 0..50 {
        assert!(
            !per.contains_key(&customer(9_000 + i)),
            "an opted-out customer got the campaign"
        );
    }
    assert!(
        sim_calls.iter().all(|c| c.status != 429),
        "the BSP throttled the number"
    );
    let peak = peak_per_second(sim_calls.iter().map(|c| c.at_ms).collect());
    assert!(peak <= 80, "{peak} calls in one second on an 80-mps number");

    // Progress agrees with the stores; every send is tagged with the campaign in both.
    wait_until("statuses stored", Duration::from_secs(60), || async {
        let v = campaign(&p, &t, &id).await?;
        Ok(v["progress"]["read"].as_i64() == Some(accepted as i64))
    })
    .await?;
    let v = campaign(&p, &t, &id).await?;
    let pr = &v["progress"];
    assert_eq!(pr["pending"], 0, "{v}");
    assert_eq!(pr["released"], 9_800);
    assert_eq!(pr["suppressed"], 50);
    assert_eq!(pr["accepted"].as_u64(), Some(accepted as u64));
    assert_eq!(pr["sent"].as_u64(), Some(accepted as u64));
    let pg = p
        .pg_count(&format!(
            "SELECT count(*) FROM messages WHERE metadata->>'campaign' = '{id}' AND status = 'read'"
        ))
        .await?;
    assert_eq!(pg, accepted as i64);
    wait_until("the campaign's sends in ClickHouse", Duration::from_secs(60), || async {
        Ok(p.ch_count(&format!(
            "SELECT count(DISTINCT event_id) FROM events WHERE campaign = '{id}' AND event_type = 'message.send_accepted'"
        ))
        .await
        .unwrap_or(0)
            == accepted as i64)
    })
    .await?;
    Ok(())
}

/// A cancel takes back the sends a campaign released that have not gone out: on a number
/// whose queue the tenant's own traffic keeps full they wait parked in the outbox, and
/// none of them reaches the BSP after the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_takes_back_released_sends_that_have_not_gone() -> anyhow::Result<()> {
    let p = Pipeline::start(opts()).await?;
    // One message a second, and eight of the tenant's own sends ahead of the campaign.
    let t = setup_at(&p, 1).await?;
    let order = |to: &str| {
        json!({"from": NUMBER, "to": to, "type": "template", "template": {
            "name": "order_update", "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Ann"}, {"type": "text", "text": "1"}]}]}})
    };
    let mut own = Vec::new();
    for i in 0..8 {
        let (s, v) = p
            .call(
                Method::POST,
                "/v1/messages",
                &t.key,
                Some(order(&format!("+491515550{i:04}"))),
                &[],
            )
            .await?;
        assert_eq!(s, 202, "{v}");
        own.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let audience: Vec<String> = (0..5).map(|i| format!("+491516660{i:04}")).collect();
    let recipients: Vec<Value> = audience
        .iter()
        .map(|to| json!({"to": to, "parameters": ["Bo", "2"]}))
        .collect();
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/campaigns",
            &t.key,
            Some(
                json!({"name": "c", "template": {"name": "order_update", "language": "en_US"},
                "from": NUMBER, "rate_per_sec": 1, "recipients": recipients}),
            ),
            &[],
        )
        .await?;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_until(
        "two recipients released",
        Duration::from_secs(30),
        || async { Ok(campaign(&p, &t, &id).await?["progress"]["released"].as_i64() >= Some(2)) },
    )
    .await?;
    let (s, v) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/cancel"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, &v["state"]), (200, &json!("cancelled")), "{v}");

    // What a router had claimed went; the rest of what was released is cancelled, and
    // stays so once the tenant's own sends (and the parked places before them) are done.
    let released: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM campaign_recipients WHERE campaign_id = $1 AND state = 'released'",
    )
    .bind(&id)
    .fetch_all(&p.pg)
    .await?;
    let states = p.wait_final(&released, Duration::from_secs(60)).await?;
    let own_states = p.wait_final(&own, Duration::from_secs(60)).await?;
    assert!(
        own_states.values().all(|s| s == "accepted"),
        "{own_states:?}"
    );
    let count = |state: &str| states.values().filter(|s| *s == state).count();
    let (accepted, cancelled) = (count("accepted"), count("cancelled"));
    assert_eq!(accepted + cancelled, released.len(), "{states:?}");
    assert!(
        cancelled >= 1,
        "nothing released was still waiting: {states:?}"
    );
    let at_bsp = p
        .sim()
        .calls()
        .iter()
        .filter(|c| {
            c.status == 200
                && audience
                    .iter()
                    .any(|a| a[1..] == *c.to.trim_start_matches('+'))
        })
        .count();
    assert_eq!(at_bsp, accepted, "a cancelled send reached the BSP");
    let v = campaign(&p, &t, &id).await?;
    assert_eq!(
        v["progress"]["cancelled"].as_u64(),
        Some(5 - accepted as u64),
        "{v}"
    );
    assert_eq!(v["progress"]["queued"], 0, "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drafts_schedules_cancels_limits_and_bad_input() -> anyhow::Result<()> {
    let p = Pipeline::start(opts()).await?;
    let t = setup(&p).await?;
    let other = p.tenant("other").await?;
    // The portfolio's daily limit: 5 unique customers a day.
    p.admin(
        Method::PATCH,
        &format!("/admin/tenants/{}", t.id),
        Some(json!({"daily_unique_limit": 5})),
    )
    .await?;
    let create = |body: Value| {
        let p = &p;
        let key = t.key.clone();
        async move {
            p.call(Method::POST, "/v1/campaigns", &key, Some(body), &[])
                .await
        }
    };
    let base = || {
        json!({"name": "c", "template": {"name": "order_update", "language": "en_US"}, "from": NUMBER,
            "recipients": [{"to": "+4915112345601", "parameters": ["Ann", "1"]},
                           {"to": "+4915112345602", "parameters": ["Bo", "2"]},
                           {"to": "+4915112345603", "parameters": ["Cy", "3"]}]})
    };
    // A draft waits for its start, then completes.
    let mut d = base();
    d["start"] = json!(false);
    let (s, v) = create(d).await?;
    assert_eq!((s, &v["state"]), (201, &json!("draft")), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(campaign(&p, &t, &id).await?["progress"]["released"], 0);
    let (s, v) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/start"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, &v["state"]), (200, &json!("running")), "{v}");
    wait_until(
        "the draft's three sent",
        Duration::from_secs(30),
        || async {
            let v = campaign(&p, &t, &id).await?;
            Ok(v["state"] == "completed" && v["progress"]["accepted"] == 3)
        },
    )
    .await?;
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/campaigns/{id}"),
            &other.key,
            None,
            &[]
        )
        .await?
        .0,
        404
    );

    // Scheduled in the tenant's time zone an hour ahead, then cancelled: nothing goes.
    // India keeps +05:30 all year.
    let ist = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let local = (chrono::Utc::now() + chrono::Duration::hours(1)).with_timezone(&ist);
    let mut sch = base();
    sch["schedule"] =
        json!({"at": local.format("%Y-%m-%dT%H:%M").to_string(), "time_zone": "Asia/Kolkata"});
    let (s, v) = create(sch).await?;
    assert_eq!((s, &v["state"]), (201, &json!("scheduled")), "{v}");
    assert_eq!(v["schedule"]["time_zone"], "Asia/Kolkata");
    let sid = v["id"].as_str().unwrap().to_string();
    let (s, v) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{sid}/cancel"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, &v["state"]), (200, &json!("cancelled")), "{v}");
    let v = campaign(&p, &t, &sid).await?;
    assert_eq!(
        (&v["progress"]["cancelled"], &v["progress"]["released"]),
        (&json!(3), &json!(0)),
        "{v}"
    );
    let (s, _) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{sid}/resume"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 409);

    // The daily limit: 3 of the 5 went to the draft's customers already.
    let mut big = base();
    big["recipients"] = json!((0..6)
        .map(|i| json!({"to": format!("+49151123456{:02}", 10 + i), "parameters": ["X", "Y"]}))
        .collect::<Vec<_>>());
    let (s, v) = create(big).await?;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["preflight"]["days_needed"], 2);
    let lid = v["id"].as_str().unwrap().to_string();
    wait_until("the limit reached", Duration::from_secs(30), || async {
        let v = campaign(&p, &t, &lid).await?;
        Ok(v["waiting"] == "daily_unique_limit" && v["progress"]["released"] == 2)
    })
    .await?;
    assert_eq!(campaign(&p, &t, &lid).await?["progress"]["pending"], 4);

    // Bad input: a precise error, nothing created.
    let before = p.pg_count("SELECT count(*) FROM campaigns").await?;
    let mut cases: Vec<(Value, u16, &str)> = Vec::new();
    let mut b = base();
    b["from"] = json!("+15559999999");
    cases.push((b, 422, "unknown_sender"));
    let mut b = base();
    b["template"]["name"] = json!("no_such_template");
    cases.push((b, 422, "template_not_found"));
    let mut b = base();
    b["recipients"] = json!(["not-a-number", "+1415555"]);
    cases.push((b, 422, "empty_audience"));
    let mut b = base();
    b["recipients_csv"] = json!("+4915112345601,A,B\n");
    cases.push((b, 400, "invalid_field"));
    let mut b = base();
    b["schedule"] = json!({"at": "2026-03-29T02:30", "time_zone": "Europe/Berlin"});
    cases.push((b, 400, "invalid_field"));
    let mut b = base();
    b["rate_per_sec"] = json!(81);
    cases.push((b, 400, "invalid_field"));
    let mut b = base();
    b["colour"] = json!("red");
    cases.push((b, 400, "malformed_body"));
    for (body, status, code) in cases {
        let (s, v) = create(body.clone()).await?;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    assert_eq!(p.pg_count("SELECT count(*) FROM campaigns").await?, before);
    // Parameters that do not fit the template are counted per recipient.
    let mut b = base();
    b["recipients"][1]["parameters"] = json!(["only one"]);
    let (s, v) = create(b).await?;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["audience"]["invalid"], 1);
    assert_eq!(
        v["preflight"]["invalid_examples"][0]["code"],
        "template_params_invalid"
    );
    Ok(())
}

/// A router that dies between claiming a recipient and creating its send leaves the
/// recipient `released` with a message id and no send. The campaign must not complete
/// over it: once the grace period passes, another router creates the send under the same
/// id, and only then is the campaign completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recipient_claimed_by_a_router_that_died_is_still_sent() -> anyhow::Result<()> {
    let p = Pipeline::start(opts()).await?;
    let t = setup(&p).await?;
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/campaigns",
            &t.key,
            Some(
                json!({"name": "c", "template": {"name": "order_update", "language": "en_US"},
                "from": NUMBER, "start": false,
                "recipients": [{"to": "+4915112345611", "parameters": ["Ann", "1"]},
                               {"to": "+4915112345612", "parameters": ["Bo", "2"]},
                               {"to": "+4915112345613", "parameters": ["Cy", "3"]}]}),
            ),
            &[],
        )
        .await?;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    // What the dead router left behind: the second recipient claimed, no send.
    let orphan = "msg_0000000000000000000000000000dead";
    let n = sqlx::query(
        "UPDATE campaign_recipients SET state = 'released', released_at = now(), message_id = $2 \
         WHERE campaign_id = $1 AND recipient = '+4915112345612'",
    )
    .bind(&id)
    .bind(orphan)
    .execute(&p.pg)
    .await?
    .rows_affected();
    assert_eq!(n, 1);
    let (s, _) = p
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/start"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200);
    wait_until(
        "the two unclaimed recipients sent",
        Duration::from_secs(30),
        || async { Ok(p.sim().calls().len() >= 2) },
    )
    .await?;
    assert_ne!(
        campaign(&p, &t, &id).await?["state"],
        "completed",
        "completed with a claimed recipient unsent"
    );
    wait_until(
        "the orphan sent and the campaign completed",
        Duration::from_secs(90),
        || async {
            let v = campaign(&p, &t, &id).await?;
            Ok(v["state"] == "completed" && v["progress"]["accepted"] == 3)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let mut to: Vec<String> = p.sim().calls().into_iter().map(|c| c.to).collect();
    to.sort();
    assert_eq!(to, ["4915112345611", "4915112345612", "4915112345613"]);
    let (state,): (String,) =
        sqlx::query_as("SELECT state FROM outbound_messages WHERE message_id = $1")
            .bind(orphan)
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(state, "accepted", "sent under the id it was claimed with");
    Ok(())
}
