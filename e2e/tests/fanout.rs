//! The fan-out end to end: real gateway, normalizer, router, sinks and fanout processes,
//! the BSP simulator as BSPs and the client-endpoint simulator as every receiver.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_loadtest::endpoint_sim::Behavior;
use switchboard_schemas::{Codec, DeliveryTask};

fn opts(fanout_env: Vec<(&'static str, String)>) -> Options {
    Options {
        send_path: true,
        fanout: true,
        fanout_env,
        ..Default::default()
    }
}

async fn tenant_with_number(p: &Pipeline, number: &str) -> anyhow::Result<TestTenant> {
    let t = p.tenant("fanout").await?;
    p.number(&t, number, "meta", &format!("pnid-{number}"), 1000, None)
        .await?;
    Ok(t)
}

/// Wait until the fan-out's copy of the config has the endpoints (the gateway applied
/// them at once; the fan-out reads `wa.config`): a probe event reaches `name`.
async fn settle(p: &Pipeline, number: &str, names: &[&str]) -> anyhow::Result<()> {
    let body = switchboard_e2e::bsp::meta_status(
        number,
        "+919000000000",
        &format!("wamid.probe.{}", p.id),
        "sent",
        chrono::Utc::now().timestamp(),
    );
    p.post_meta_until_accepted(&body).await?;
    p.wait_delivered(names, 1, Duration::from_secs(30)).await?;
    for n in names {
        p.endpoint_sim().clear(n);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_reaches_exactly_the_matching_endpoints_signed() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = tenant_with_number(&p, "+15550001").await?;
    p.number(&t, "+15550002", "meta", "pnid-+15550002", 1000, None)
        .await?;
    let (_, all_secret) = p.endpoint(&t, "all", json!({})).await?;
    p.endpoint(&t, "statuses", json!({"event_types": ["message.status.*"]}))
        .await?;
    p.endpoint(
        &t,
        "delivered",
        json!({"event_types": ["message.status.delivered"]}),
    )
    .await?;
    p.endpoint(&t, "inbound", json!({"event_types": ["message.received"]}))
        .await?;
    p.endpoint(&t, "other-number", json!({"numbers": ["+15550002"]}))
        .await?;
    let (rot_id, old_secret) = p
        .endpoint(
            &t,
            "rotating",
            json!({"event_types": ["message.status.read"]}),
        )
        .await?;
    p.endpoint(
        &t,
        "sends",
        json!({"event_types": ["message.send_accepted", "message.send_failed"]}),
    )
    .await?;
    settle(&p, "+15550001", &["all", "statuses"]).await?;

    // Two sends through the API: one the BSP accepts, one it refuses for good (no
    // status webhooks back, so the counts below stay exact).
    p.sim()
        .set_behavior(switchboard_loadtest::bsp_sim::Behavior {
            errors: std::collections::HashMap::from([("4915100000047".into(), 131047)]),
            no_callbacks: true,
            ..Default::default()
        });
    for to in ["+4915112345678", "+4915100000047"] {
        let (s, v) = p.send_text(&t, "+15550001", to, "fan me out").await?;
        assert_eq!(s, 202, "{v}");
    }
    // 2 conversations × 2 messages × sent/delivered/read, and one inbound message.
    let n = p.post_statuses("+15550001", 2, 2).await?;
    let now = chrono::Utc::now().timestamp() + 100;
    let inbound = switchboard_e2e::bsp::meta_text(
        "+15550001",
        "+919800000000",
        &format!("wamid.in.{}", p.id),
        "hello",
        now,
    );
    p.post_meta_until_accepted(&inbound).await?;
    p.wait_delivered(&["all"], n as u64 + 3, Duration::from_secs(60))
        .await?;
    p.wait_delivered(&["sends"], 2, Duration::from_secs(30))
        .await?;
    p.wait_delivered(&["statuses"], n as u64, Duration::from_secs(30))
        .await?;
    p.wait_delivered(&["delivered", "rotating"], 4, Duration::from_secs(30))
        .await?;
    p.wait_delivered(&["inbound"], 1, Duration::from_secs(30))
        .await?;
    let sim = p.endpoint_sim();
    let types = |name: &str| -> HashSet<String> {
        sim.received(name)
            .into_iter()
            .map(|r| r.event_type)
            .collect()
    };
    assert_eq!(
        types("delivered"),
        HashSet::from(["message.status.delivered".to_string()])
    );
    assert_eq!(
        types("inbound"),
        HashSet::from(["message.received".to_string()])
    );
    assert!(!types("statuses").contains("message.received"));
    assert_eq!(sim.stats_of("all").unique_ok, n as u64 + 3);
    assert_eq!(
        types("sends"),
        HashSet::from([
            "message.send_accepted".to_string(),
            "message.send_failed".to_string()
        ])
    );
    assert_eq!(sim.stats_of("delivered").unique_ok, 4);
    assert_eq!(
        sim.stats_of("other-number").requests,
        0,
        "events of another number"
    );
    for name in [
        "all",
        "statuses",
        "delivered",
        "inbound",
        "rotating",
        "sends",
    ] {
        let s = sim.stats_of(name);
        assert_eq!(s.bad_signatures, 0, "{name}: {s:?}");
        assert_eq!(s.duplicates_ok, 0, "{name}: {s:?}");
        assert_eq!(s.order_violations, 0, "{name}: {s:?}");
    }
    // The official Python library verifies every request.
    let (ok, checked) = p.verify_with_python("all", &all_secret)?;
    assert_eq!((ok, checked), (n + 3, n + 3));

    // Rotation with a 4 s grace period: both secrets verify, then only the new one.
    let (s, v) = p
        .call(
            Method::POST,
            &format!("/v1/endpoints/{rot_id}/secret/rotate"),
            &t.key,
            Some(json!({"grace_period": "4s"})),
            &[],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let new_secret = v["secret"].as_str().unwrap_or_default().to_string();
    assert_ne!(new_secret, old_secret);
    sim.set("rotating", Some(vec![new_secret.clone()]), None)?;
    sim.clear("rotating");
    let rotated_at = Instant::now();
    wait_until(
        "rotation reaches the fan-out",
        Duration::from_secs(20),
        || async {
            let ts = chrono::Utc::now().timestamp();
            let body = switchboard_e2e::bsp::meta_status(
                "+15550001",
                "+919811111111",
                &format!("wamid.rot.{ts}"),
                "read",
                ts,
            );
            p.post_meta_until_accepted(&body).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(sim
                .raw("rotating")
                .iter()
                .any(|r| r.headers.webhook_signature.split(' ').count() == 2))
        },
    )
    .await?;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(4),
        "checked within the grace period"
    );
    let during: Vec<_> = sim
        .raw("rotating")
        .into_iter()
        .filter(|r| r.headers.webhook_signature.split(' ').count() == 2)
        .collect();
    assert!(!during.is_empty());
    let (old_ok, _) = p.verify_with_python("rotating", &old_secret)?;
    let (new_ok, _) = p.verify_with_python("rotating", &new_secret)?;
    assert!(
        old_ok >= during.len() && new_ok >= during.len(),
        "both verify during the grace period"
    );
    // After the grace period the fan-out signs with the new secret only: poll until a
    // delivery carries one signature.
    let mut k = 0;
    let pr = &p;
    wait_until("the grace period to end", Duration::from_secs(30), || {
        k += 1;
        let body = switchboard_e2e::bsp::meta_status(
            "+15550001",
            "+919822222222",
            &format!("wamid.after.{k}"),
            "read",
            chrono::Utc::now().timestamp(),
        );
        async move {
            pr.post_meta_until_accepted(&body).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(sim
                .raw("rotating")
                .last()
                .is_some_and(|r| r.headers.webhook_signature.split(' ').count() == 1))
        }
    })
    .await?;
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(4),
        "not before the grace period ended"
    );
    sim.clear("rotating");
    let ts = chrono::Utc::now().timestamp();
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        "+15550001",
        "+919833333334",
        "wamid.after",
        "read",
        ts,
    ))
    .await?;
    p.wait_delivered(&["rotating"], 1, Duration::from_secs(20))
        .await?;
    assert_eq!(p.verify_with_python("rotating", &new_secret)?, (1, 1));
    assert_eq!(
        p.verify_with_python("rotating", &old_secret)?.0,
        0,
        "the old secret no longer signs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_catches_up_and_a_hanging_one_slows_no_one() -> anyhow::Result<()> {
    // 20 events in flight: were the hanging endpoint to hold events until its requests
    // time out (10 s), the fan-out would stall after 20 of the 60.
    let p = Pipeline::start(opts(vec![
        ("SWITCHBOARD_DELIVERY_TIMEOUT", "10s".into()),
        ("SWITCHBOARD_MAX_IN_FLIGHT", "20".into()),
    ]))
    .await?;
    let t = tenant_with_number(&p, "+15550011").await?;
    let names: Vec<String> = (0..8).map(|i| format!("healthy{i}")).collect();
    for n in &names {
        p.endpoint(&t, n, json!({})).await?;
    }
    p.endpoint(&t, "down", json!({})).await?;
    p.endpoint(&t, "hanging", json!({"max_in_flight": 5}))
        .await?;
    let healthy: Vec<&str> = names.iter().map(String::as_str).collect();
    settle(&p, "+15550011", &healthy).await?;
    let sim = p.endpoint_sim();
    let down_until = switchboard_runtime::now_ms() + 5000;
    sim.set(
        "down",
        None,
        Some(Behavior {
            down_until_ms: Some(down_until),
            ..Default::default()
        }),
    )?;
    sim.set(
        "hanging",
        None,
        Some(Behavior {
            timeout: true,
            ..Default::default()
        }),
    )?;
    sim.clear("down");
    sim.clear("hanging");

    let n = p.post_statuses("+15550011", 10, 2).await? as u64;
    // Every healthy endpoint has everything before the hanging one's first request has
    // even timed out (10 s): it holds its own 5 slots, nobody else's.
    p.wait_delivered(&healthy, n, Duration::from_secs(9))
        .await?;
    assert!(
        sim.received("hanging").len() <= 5,
        "only its in-flight limit is spent on it"
    );
    let deferred = p
        .fanout()
        .proc
        .metric("switchboard_fanout_attempts_total{outcome=\"deferred\",trigger=\"first\"}")
        .await;
    assert!(
        deferred > 0.0,
        "the hanging endpoint's deliveries were deferred"
    );
    // The down endpoint gets everything once back, through the 1s/2s/3s schedule.
    p.wait_delivered(&["down"], n, Duration::from_secs(40))
        .await?;
    let attempts: Vec<_> = sim.received("down");
    assert!(attempts.iter().any(|r| r.answered == 503), "it was down");
    // Its breaker (10 failures) stopped the hammering: far fewer failed requests than
    // events, the rest waited without a request, then probes found it back.
    let refused = attempts.iter().filter(|r| r.answered == 503).count() as u64;
    assert!(refused < n, "{refused} requests refused for {n} events");
    assert!(attempts
        .iter()
        .filter(|r| r.answered == 200)
        .all(|r| r.received_at_ms >= down_until));
    assert!(
        attempts.iter().any(|r| r.attempt.unwrap_or(1) > 1),
        "retries carry their attempt number"
    );
    for h in &healthy {
        assert_eq!(sim.stats_of(h).duplicates_ok, 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_fanout_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let mut p = Pipeline::start(opts(vec![])).await?;
    let t = tenant_with_number(&p, "+15550021").await?;
    for n in ["a", "b", "c"] {
        p.endpoint(&t, n, json!({"max_in_flight": 5})).await?;
    }
    settle(&p, "+15550021", &["a", "b", "c"]).await?;
    // Slow receivers (5 in flight × 100 ms: about 50 events/s each) keep deliveries in
    // flight when the process dies.
    for n in ["a", "b", "c"] {
        p.endpoint_sim().set(
            n,
            None,
            Some(Behavior {
                latency_ms: 100,
                ..Default::default()
            }),
        )?;
    }
    let n = p.post_statuses("+15550021", 50, 2).await? as u64;
    // After each kill, the events not committed yet are exactly those the restarted
    // fan-out handles again: the bound on duplicates, counted at the crash.
    let mut redone = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = p.endpoint_sim().stats_of("a").unique_ok;
        assert!(before < n, "killed mid-stream ({before} of {n} delivered)");
        let f = p.fanout_path.as_mut().expect("fanout");
        f.proc.kill9().await;
        redone += p.fanout_uncommitted()?;
        let f = p.fanout_path.as_mut().expect("fanout");
        f.proc.start()?;
        p.wait_fanout_ready().await?;
    }
    p.wait_delivered(&["a", "b", "c"], n, Duration::from_secs(120))
        .await?;
    let sim = p.endpoint_sim();
    let mut dups = 0;
    for name in ["a", "b", "c"] {
        let s = sim.stats_of(name);
        assert_eq!(s.unique_ok, n, "{name}: every event at least once");
        assert_eq!(s.bad_signatures, 0);
        dups += s.duplicates_ok;
    }
    // Duplicates only for events the crash left uncommitted (in flight, or finished after
    // the oldest unfinished one), at most one per endpoint each.
    eprintln!("kill -9 x3: {n} events x 3 endpoints, {dups} duplicate deliveries, bound {} ({redone} uncommitted events at the kills)", redone * 3);
    assert!(
        dups <= redone as u64 * 3,
        "duplicates {dups} > bound {}",
        redone * 3
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_holds_only_the_failing_conversation_for_its_endpoint() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = tenant_with_number(&p, "+15550031").await?;
    p.endpoint(&t, "strict", json!({"ordering": "strict"}))
        .await?;
    p.endpoint(&t, "relaxed", json!({})).await?;
    settle(&p, "+15550031", &["strict", "relaxed"]).await?;
    let sim = p.endpoint_sim();
    // Every other event fails twice before it is accepted, its neighbours go straight
    // through: without strict order its retries arrive after later events.
    let flaky = Behavior {
        fail_first: 2,
        fail_every: 2,
        ..Default::default()
    };
    sim.set("strict", None, Some(flaky.clone()))?;
    sim.set("relaxed", None, Some(flaky))?;
    let n = p.post_statuses("+15550031", 3, 2).await? as u64;
    p.wait_delivered(&["strict", "relaxed"], n, Duration::from_secs(90))
        .await?;
    let s = sim.stats_of("strict");
    assert_eq!(s.order_violations, 0, "{s:?}");
    for (conv, ids) in sim.order("strict") {
        assert_eq!(ids.len(), 6, "{conv}: {ids:?}");
    }
    // The same failures put the relaxed endpoint's retries out of order, which shows
    // the strict one's order is the mode's doing.
    assert!(sim.stats_of("relaxed").order_violations > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The breaker stays closed here so every delivery makes its 4 attempts (0, 1, 3, 6 s):
/// the first to use up its attempts, at 6 s, is past the 4 s disable limit, so it both
/// lands in the DLQ and disables the endpoint.
async fn dead_endpoints_are_disabled_and_can_be_recovered() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![
        ("SWITCHBOARD_DISABLE_AFTER", "4s".into()),
        ("SWITCHBOARD_BREAKER_FAILURES", "1000".into()),
    ]))
    .await?;
    let t = tenant_with_number(&p, "+15550041").await?;
    let (dead_id, _) = p.endpoint(&t, "dead", json!({})).await?;
    p.endpoint(&t, "ops", json!({"event_types": ["endpoint.disabled"]}))
        .await?;
    p.endpoint(&t, "watcher", json!({"event_types": ["message.status.*"]}))
        .await?;
    settle(&p, "+15550041", &["dead", "watcher"]).await?;
    let sim = p.endpoint_sim();
    sim.set(
        "dead",
        None,
        Some(Behavior {
            down: true,
            ..Default::default()
        }),
    )?;
    let n = p.post_statuses("+15550041", 4, 1).await? as u64;
    p.wait_delivered(&["watcher"], n, Duration::from_secs(30))
        .await?;
    // Failing for 4 s: disabled, and the tenant's other endpoint is told.
    p.wait_delivered(&["ops"], 1, Duration::from_secs(40))
        .await?;
    let told = sim.received("ops");
    assert_eq!(told[0].event_type, "endpoint.disabled");
    let (_, ep) = p
        .call(
            Method::GET,
            &format!("/v1/endpoints/{dead_id}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(ep["disabled"], true, "{ep}");
    assert!(ep["disabled_reason"]
        .as_str()
        .unwrap_or_default()
        .contains("failing"));

    // Every attempt is in the delivery log (ClickHouse), the exhausted ones in the DLQ.
    wait_until("attempts in the log", Duration::from_secs(30), || async {
        Ok(p.ch_count(&format!("SELECT count() FROM {}.delivery_attempts WHERE endpoint_id = '{dead_id}' AND is_final = 1", p.ch_db)).await? >= n as i64)
    })
    .await?;
    let (s, page) = p
        .call(
            Method::GET,
            &format!("/v1/endpoints/{dead_id}/attempts?limit=5"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(5));
    let cursor = page["next_cursor"].as_str().unwrap_or_default().to_string();
    let (_, next) = p
        .call(
            Method::GET,
            &format!("/v1/endpoints/{dead_id}/attempts?limit=5&cursor={cursor}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    let first: HashSet<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(next["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| !first.contains(a["id"].as_str().unwrap_or_default())));
    let dlq = p
        .read_topic("wa.deliveries.dlq", 1, Duration::from_secs(10))
        .await?;
    let codec = Codec::new(&p.services.registry);
    let task: DeliveryTask = codec.decode(&dlq[0].1).await?;
    assert_eq!(task.endpoint_id, dead_id);
    assert!(task.last_error.is_some(), "{task:?}");

    // Re-enable, receiver back, recover everything that failed since the start.
    sim.set("dead", None, Some(Behavior::default()))?;
    let (s, _) = p
        .call(
            Method::POST,
            &format!("/v1/endpoints/{dead_id}/enable"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200);
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (s, r) = p
        .call(
            Method::POST,
            &format!("/v1/endpoints/{dead_id}/recover"),
            &t.key,
            Some(json!({"since": since})),
            &[],
        )
        .await?;
    assert_eq!(s, 200, "{r}");
    assert!(r["scheduled"].as_u64().unwrap_or(0) >= n, "{r}");
    p.wait_delivered(&["dead"], n, Duration::from_secs(30))
        .await?;

    // Resend one event to every endpoint that wants it: same webhook-id.
    let one = sim.received("watcher")[0].webhook_id.clone();
    let (s, r) = p
        .call(
            Method::POST,
            &format!("/v1/events/{one}/resend"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 202, "{r}");
    wait_until("resend", Duration::from_secs(20), || async {
        Ok(sim
            .received("watcher")
            .iter()
            .filter(|x| x.webhook_id == one)
            .count()
            >= 2)
    })
    .await?;
    // The rollup follows the log as the ch-sink writes it: the failed attempts, then the
    // recovered deliveries.
    let stats_path = format!("/v1/endpoints/{dead_id}/stats");
    let rolled_up =
        wait_until(
            "stats include the recovery",
            Duration::from_secs(30),
            || async {
                let (s, v) = p.call(Method::GET, &stats_path, &t.key, None, &[]).await?;
                anyhow::ensure!(s == 200, "{v}");
                Ok(v["attempts"].as_u64().unwrap_or(0) > n
                    && v["delivered"].as_u64().unwrap_or(0) >= n)
            },
        )
        .await;
    let (_, stats) = p.call(Method::GET, &stats_path, &t.key, None, &[]).await?;
    assert!(rolled_up.is_ok(), "{stats}");
    let rate = stats["success_rate"].as_f64().unwrap_or(-1.0);
    assert!(
        rate > 0.0 && rate < 1.0,
        "some failed, some delivered: {stats}"
    );
    Ok(())
}

/// The oldest attempt to `ep` in the delivery log, once there is one.
async fn last_attempt(p: &Pipeline, t: &TestTenant, ep: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/endpoints/{ep}/attempts");
    wait_until("attempt logged", Duration::from_secs(30), || async {
        let (_, v) = p.call(Method::GET, &path, &t.key, None, &[]).await?;
        Ok(v["data"].as_array().is_some_and(|a| !a.is_empty()))
    })
    .await?;
    let (_, v) = p.call(Method::GET, &path, &t.key, None, &[]).await?;
    let data = v["data"].as_array().cloned().unwrap_or_default();
    Ok(data.last().cloned().unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_input_and_hostile_receivers() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = tenant_with_number(&p, "+15550051").await?;
    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "https://10.1.2.3/hook"}), "url"),
        (json!({"url": "https://169.254.169.254/latest"}), "url"),
        // Spellings the WHATWG parser (reqwest's) turns into private addresses.
        (json!({"url": "https://10.1/"}), "url"),
        (json!({"url": "https://0x0a.0.0.1/"}), "url"),
        (json!({"url": "https://10.0.0.1./"}), "url"),
        (json!({"url": "https://169.254.43518/"}), "url"),
        (json!({"url": "https://[2002:a00:1::]/"}), "url"),
        (json!({"url": "https://[::ffff:a9fe:a9fe]/"}), "url"),
        (json!({"url": "http://example.com/hook"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "https://example.com/h", "event_types": ["message.status.seen"]}),
            "event_types[0]",
        ),
        (
            json!({"url": "https://example.com/h", "event_types": ["mess*"]}),
            "event_types[0]",
        ),
        (
            json!({"url": "https://example.com/h", "numbers": ["+19999999999"]}),
            "numbers[0]",
        ),
        (
            json!({"url": "https://example.com/h", "rate_per_sec": 0}),
            "rate_per_sec",
        ),
        (
            json!({"url": "https://example.com/h", "headers": {"webhook-id": "x"}}),
            "headers.webhook-id",
        ),
        (json!({}), "url"),
    ] {
        let (s, v) = p
            .call(
                Method::POST,
                "/v1/endpoints",
                &t.key,
                Some(body.clone()),
                &[],
            )
            .await?;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/endpoints",
            &t.key,
            Some(json!({"url": "https://example.com/h", "colour": "red"})),
            &[],
        )
        .await?;
    assert_eq!(s, 400, "unknown field: {v}");
    let (s, _) = p
        .call(
            Method::POST,
            "/v1/endpoints",
            "sb_wrong",
            Some(json!({"url": "https://example.com/h"})),
            &[],
        )
        .await?;
    assert_eq!(s, 401);
    let (_, list) = p
        .call(Method::GET, "/v1/endpoints", &t.key, None, &[])
        .await?;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(0),
        "nothing was created"
    );

    let (huge, _) = p.endpoint(&t, "huge", json!({})).await?;
    let (redirect, _) = p.endpoint(&t, "redirect", json!({})).await?;
    let (abort, _) = p.endpoint(&t, "abort", json!({})).await?;
    let sim = p.endpoint_sim();
    sim.set(
        "huge",
        None,
        Some(Behavior {
            huge_body_bytes: 50 << 20,
            ..Default::default()
        }),
    )?;
    sim.set(
        "redirect",
        None,
        Some(Behavior {
            redirect_to: Some("http://127.0.0.1:1/".into()),
            ..Default::default()
        }),
    )?;
    sim.set(
        "abort",
        None,
        Some(Behavior {
            abort: true,
            ..Default::default()
        }),
    )?;
    let ts = chrono::Utc::now().timestamp();
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        "+15550051",
        "+919833333333",
        "wamid.h",
        "sent",
        ts,
    ))
    .await?;
    p.wait_delivered(&["huge"], 1, Duration::from_secs(30))
        .await?;
    let h = last_attempt(&p, &t, &huge).await?;
    assert_eq!(h["outcome"], "delivered", "{h}");
    assert!(
        h["response"].as_str().unwrap_or_default().len() <= 1024,
        "snippet capped"
    );
    let r = last_attempt(&p, &t, &redirect).await?;
    assert_eq!(r["outcome"], "failed", "{r}");
    assert_eq!(r["status_code"], 307);
    assert!(
        r["error"].as_str().unwrap_or_default().contains("redirect"),
        "{r}"
    );
    let a = last_attempt(&p, &t, &abort).await?;
    assert_eq!(a["outcome"], "aborted", "{a}");
    assert_eq!(a["final"], true);
    // The redirect's first two retries (1 s and 2 s later) mark the time by which the
    // aborted event would have been retried too.
    wait_until(
        "the redirect retried twice",
        Duration::from_secs(30),
        || async { Ok(sim.received("redirect").len() >= 3) },
    )
    .await?;
    assert_eq!(
        sim.received("abort").len(),
        1,
        "no retries after abort-message"
    );
    assert!(
        sim.received("redirect").len() >= 3,
        "a redirect is retried, never followed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_log_retention_drops_old_days_only() -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options::default()).await?;
    let table = format!("{}.delivery_attempts", p.ch_db);
    wait_until("delivery log table", Duration::from_secs(30), || async {
        Ok(p.ch_count(&format!("SELECT count() FROM system.tables WHERE database = '{}' AND name = 'delivery_attempts'", p.ch_db)).await? == 1)
    })
    .await?;
    let now = chrono::Utc::now().timestamp();
    for (id, age_days) in [("old1", 40), ("old2", 31), ("edge", 29), ("new", 0)] {
        let at = now - age_days * 86_400;
        p.ch(&format!(
            "INSERT INTO {table} (attempt_id, endpoint_id, attempted_at, attempted_at_ms, outcome) VALUES ('{id}', 'ep_x', {at}, {}, 'delivered')",
            at * 1000
        ))
        .await?;
    }
    assert_eq!(
        p.ch_count(&format!("SELECT count() FROM {table}")).await?,
        4
    );
    p.ch_sink.stop().await?;
    p.ch_sink
        .set_env("SWITCHBOARD_DELIVERY_LOG_RETENTION_DAYS", "30");
    p.ch_sink
        .set_env("SWITCHBOARD_DELIVERY_LOG_RETENTION_INTERVAL", "1s");
    p.ch_sink.start()?;
    wait_until("old days dropped", Duration::from_secs(30), || async {
        Ok(p.ch_count(&format!("SELECT count() FROM {table}")).await? == 2)
    })
    .await?;
    let left = p
        .ch(&format!(
            "SELECT attempt_id FROM {table} ORDER BY attempt_id"
        ))
        .await?;
    assert_eq!(left.split_whitespace().collect::<Vec<_>>(), ["edge", "new"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_rotation_reseals_endpoint_secrets() -> anyhow::Result<()> {
    let mut p = Pipeline::start(opts(vec![])).await?;
    let t = tenant_with_number(&p, "+15550061").await?;
    let (id, secret) = p.endpoint(&t, "a", json!({})).await?;
    let stored: String = sqlx::query_scalar("SELECT config::text FROM endpoints WHERE id = $1")
        .bind(&id)
        .fetch_one(&p.pg)
        .await?;
    assert!(
        !stored.contains(&secret["whsec_".len()..]),
        "the secret is stored in clear"
    );
    let old = p
        .gateway
        .env_var("SWITCHBOARD_CREDENTIALS_KEYS")
        .unwrap_or_default();
    let new = switchboard_runtime::secrets::Keyring::generate("k2");
    async fn restart(p: &mut Pipeline, ring: &str) -> anyhow::Result<()> {
        p.gateway.set_env("SWITCHBOARD_CREDENTIALS_KEYS", ring);
        p.gateway.stop().await?;
        p.gateway.start()?;
        let f = &mut p.fanout_path.as_mut().expect("fanout").proc;
        f.set_env("SWITCHBOARD_CREDENTIALS_KEYS", ring);
        f.stop().await?;
        f.start()?;
        p.wait_send_path_ready().await?;
        p.wait_fanout_ready().await
    }
    restart(&mut p, &format!("{new},{old}")).await?;
    let r = p
        .admin(Method::POST, "/admin/credentials/rotate", None)
        .await?;
    assert_eq!(r["endpoints_rotated"].as_i64(), Some(1), "{r}");
    let kid: String =
        sqlx::query_scalar("SELECT config->'secrets'->0->>'key_id' FROM endpoints WHERE id = $1")
            .bind(&id)
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(kid, "k2");
    // Only the new key left: the fan-out still opens the secret, and signs with it.
    restart(&mut p, &new).await?;
    let ts = chrono::Utc::now().timestamp();
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        "+15550061",
        "+919844444444",
        "wamid.k2",
        "sent",
        ts,
    ))
    .await?;
    p.wait_delivered(&["a"], 1, Duration::from_secs(30)).await?;
    assert_eq!(p.verify_with_python("a", &secret)?, (1, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_rate_limit_is_kept() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = tenant_with_number(&p, "+15550071").await?;
    p.endpoint(&t, "limited", json!({"rate_per_sec": 10}))
        .await?;
    p.endpoint(&t, "free", json!({})).await?;
    settle(&p, "+15550071", &["limited", "free"]).await?;
    let n = p.post_statuses("+15550071", 20, 2).await? as u64;
    p.wait_delivered(&["free"], n, Duration::from_secs(30))
        .await?;
    p.wait_delivered(&["limited"], n, Duration::from_secs(60))
        .await?;
    let got = p.endpoint_sim().received("limited");
    let first = got.iter().map(|r| r.received_at_ms).min().unwrap_or(0);
    let last = got.iter().map(|r| r.received_at_ms).max().unwrap_or(0);
    let mut per_second: std::collections::HashMap<i64, u64> = Default::default();
    for r in &got {
        *per_second
            .entry((r.received_at_ms - first) / 1000)
            .or_default() += 1;
    }
    let peak = per_second.values().max().copied().unwrap_or(0);
    // A token bucket of 10/s with a burst of 10: at most 20 in the first second, 10 a
    // second after, so 120 events take at least 11 s.
    assert!(peak <= 20, "peak {peak}/s: {per_second:?}");
    assert!(
        last - first >= (n as i64 - 20) * 100,
        "{n} events in {} ms",
        last - first
    );
    Ok(())
}

/// An event for a tenant with many failing endpoints: all its attempts are logged, in as
/// many records as the message limit needs (here 6,000 bytes for the fan-out: one record
/// of 60 attempts would pass it and, before, was retried forever while the fan-out
/// stalled), and the next event flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_failing_endpoints_never_make_an_attempt_record_too_large() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![(
        "SWITCHBOARD_KAFKA_MESSAGE_MAX_BYTES",
        "6000".into(),
    )]))
    .await?;
    let t = tenant_with_number(&p, "+15550061").await?;
    let sim = p.endpoint_sim();
    let mut names = Vec::new();
    for i in 0..60 {
        let name = format!("down{i}");
        sim.set(
            &name,
            None,
            Some(Behavior {
                down: true,
                ..Default::default()
            }),
        )?;
        p.endpoint(&t, &name, json!({})).await?;
        names.push(name);
    }
    let ts = chrono::Utc::now().timestamp();
    for (i, wamid) in ["wamid.many.1", "wamid.many.2"].iter().enumerate() {
        p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
            "+15550061",
            "+919833333333",
            wamid,
            "sent",
            ts + i as i64,
        ))
        .await?;
    }
    wait_until(
        "every first attempt of both events logged",
        Duration::from_secs(60),
        || async {
            Ok(p.ch_count(
                "SELECT count() FROM delivery_attempts WHERE attempt = 1 AND outcome = 'failed'",
            )
            .await?
                >= 120)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    assert_eq!(
        p.ch_count(
            "SELECT uniqExact(event_id, endpoint_id) FROM delivery_attempts WHERE attempt = 1"
        )
        .await?,
        120,
        "each endpoint's first attempt of each event, once"
    );
    assert!(
        !p.logs().contains("cannot produce delivery records"),
        "no produce was refused"
    );
    Ok(())
}

/// A custom header (often the receiver's credential) is sealed at rest, in PostgreSQL
/// and on `wa.config`, masked in every answer, and still sent; a tenant's endpoints are
/// capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_sealed_at_rest_and_endpoints_are_capped() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        gateway_env: vec![("SWITCHBOARD_MAX_ENDPOINTS_PER_TENANT", "3".into())],
        ..opts(vec![])
    })
    .await?;
    let t = tenant_with_number(&p, "+15550071").await?;
    let secret = format!("Bearer receiver-credential-{}", p.id);
    let (ep, _) = p
        .endpoint(&t, "auth", json!({"headers": {"Authorization": secret}}))
        .await?;
    let (_, got) = p
        .call(
            Method::GET,
            &format!("/v1/endpoints/{ep}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(got["headers"]["Authorization"], "********", "{got}");
    assert!(!got.to_string().contains(&secret));
    assert_eq!(
        p.pg_count(&format!(
            "SELECT count(*) FROM endpoints WHERE config::text LIKE '%receiver-credential-{}%'",
            p.id
        ))
        .await?,
        0,
        "not in PostgreSQL"
    );
    let n = p.topic_records("wa.config").await? as usize;
    let records = p
        .read_topic("wa.config", n, Duration::from_secs(20))
        .await?;
    assert!(records.len() >= n && n > 0, "{} of {n}", records.len());
    assert!(
        records
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v).contains(&secret)),
        "not on wa.config"
    );
    settle(&p, "+15550071", &["auth"]).await?;
    let ts = chrono::Utc::now().timestamp();
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        "+15550071",
        "+919833333333",
        "wamid.sealed",
        "sent",
        ts,
    ))
    .await?;
    p.wait_delivered(&["auth"], 1, Duration::from_secs(30))
        .await?;
    let raw = p.endpoint_sim().raw("auth");
    assert!(
        !raw.is_empty() && raw.iter().all(|r| r.headers.authorization == secret),
        "the receiver gets its header: {:?}",
        raw.iter()
            .map(|r| &r.headers.authorization)
            .collect::<Vec<_>>()
    );

    p.endpoint(&t, "second", json!({})).await?;
    p.endpoint(&t, "third", json!({})).await?;
    let (s, v) = p
        .call(
            Method::POST,
            "/v1/endpoints",
            &t.key,
            Some(json!({"url": "https://example.com/fourth"})),
            &[],
        )
        .await?;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "too_many_endpoints", "{v}");
    let (_, list) = p
        .call(Method::GET, "/v1/endpoints", &t.key, None, &[])
        .await?;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(3));
    Ok(())
}

/// A strict endpoint that keeps failing holds at most SWITCHBOARD_STRICT_HOLD_MAX events
/// in place (here 3, with 20 slots in the fan-out); its other failing events wait on the
/// delay topics, so another tenant's deliveries go straight through and the strict
/// endpoint's events are all tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_strict_endpoint_cannot_take_every_slot() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![
        ("SWITCHBOARD_MAX_IN_FLIGHT", "20".into()),
        ("SWITCHBOARD_STRICT_HOLD_MAX", "3".into()),
        // Held events keep failing for 15 s before they are given up.
        ("SWITCHBOARD_RETRY_SCHEDULE", "5s,5s,5s".into()),
    ]))
    .await?;
    let noisy = tenant_with_number(&p, "+15550101").await?;
    let quiet = tenant_with_number(&p, "+15550102").await?;
    p.endpoint(&noisy, "failing-strict", json!({"ordering": "strict"}))
        .await?;
    p.endpoint(&quiet, "bystander", json!({})).await?;
    settle(&p, "+15550101", &["failing-strict"]).await?;
    // settle's probe id is per test: the second number gets a probe of its own.
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        "+15550102",
        "+919000000000",
        &format!("wamid.probe2.{}", p.id),
        "sent",
        chrono::Utc::now().timestamp(),
    ))
    .await?;
    p.wait_delivered(&["bystander"], 1, Duration::from_secs(30))
        .await?;
    p.endpoint_sim().clear("bystander");
    p.endpoint_sim().set(
        "failing-strict",
        None,
        Some(Behavior {
            down: true,
            ..Default::default()
        }),
    )?;
    // 30 conversations' events to the failing strict endpoint, then the bystander's.
    let held = p.post_statuses("+15550101", 30, 1).await?;
    let n = p.post_statuses("+15550102", 5, 1).await? as u64;
    p.wait_delivered(&["bystander"], n, Duration::from_secs(60))
        .await?;
    // The bystander did not wait for slots to free: none of the failing events had been
    // given up yet (the first is given up 15 s after it failed).
    let finals = p
        .ch_count("SELECT count() FROM delivery_attempts WHERE is_final = 1 AND outcome = 'failed'")
        .await?;
    let fanout = &p.fanout_path.as_ref().unwrap().proc;
    let overflow = fanout
        .metric("switchboard_fanout_strict_overflow_total")
        .await;
    println!("bystander served with {finals} strict events given up; {overflow} of {held} sent to delay topics");
    assert_eq!(
        finals, 0,
        "the bystander waited for the strict endpoint's slots"
    );
    assert!(overflow > 0.0, "the cap was reached");
    // Nothing dropped: every failing event comes back for another attempt (or a skip
    // while the endpoint's breaker is open), held in place or from a delay topic, except
    // the later events of the 3 held conversations, which wait their turn (strict order).
    wait_until(
        "every strict event not behind a held one tried again",
        Duration::from_secs(90),
        || async {
            Ok(p.ch_count(
                "SELECT uniqExact(event_id) FROM delivery_attempts WHERE outcome != 'delivered' AND (attempt > 1 OR outcome = 'circuit_open')",
            )
            .await?
                >= held as i64 - 2 * 3)
        },
    )
    .await?;
    Ok(())
}

/// A tenant whose many strict endpoints all fail cannot take the fan-out's slots: each
/// endpoint may hold 50 events (more than the 20 slots), but once half the slots are
/// taken the tenant, at its SWITCHBOARD_TENANT_MAX_IN_FLIGHT of 4, has further events
/// deferred, and another tenant's deliveries go straight through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_failing_strict_endpoints_cannot_take_another_tenants_slots() -> anyhow::Result<()>
{
    let p = Pipeline::start(opts(vec![
        ("SWITCHBOARD_MAX_IN_FLIGHT", "20".into()),
        ("SWITCHBOARD_TENANT_MAX_IN_FLIGHT", "4".into()),
        // Held events keep failing for 15 s before they are given up.
        ("SWITCHBOARD_RETRY_SCHEDULE", "5s,5s,5s".into()),
    ]))
    .await?;
    let noisy = p.tenant("noisy").await?;
    let numbers: Vec<String> = (0..5).map(|i| format!("+1555011{i}")).collect();
    for (i, n) in numbers.iter().enumerate() {
        p.number(&noisy, n, "meta", &format!("pnid-{n}"), 1000, None)
            .await?;
        p.endpoint(
            &noisy,
            &format!("strict-{i}"),
            json!({"ordering": "strict", "numbers": [n]}),
        )
        .await?;
    }
    let quiet = tenant_with_number(&p, "+15550120").await?;
    p.endpoint(&quiet, "bystander", json!({})).await?;
    settle(&p, "+15550120", &["bystander"]).await?;
    for (i, number) in numbers.iter().enumerate() {
        // Reached (so the fan-out knows it) before it starts failing.
        p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
            number,
            "+919000000000",
            &format!("wamid.probe.{}.{i}", p.id),
            "sent",
            chrono::Utc::now().timestamp(),
        ))
        .await?;
        p.wait_delivered(&[&format!("strict-{i}")], 1, Duration::from_secs(30))
            .await?;
        p.endpoint_sim().set(
            &format!("strict-{i}"),
            None,
            Some(Behavior {
                down: true,
                ..Default::default()
            }),
        )?;
    }
    // 6 conversations on each of the 5 numbers: 30 failing strict events, 6 per endpoint.
    let mut held = 0;
    for n in &numbers {
        held += p.post_statuses(n, 6, 1).await?;
    }
    let n = p.post_statuses("+15550120", 5, 1).await? as u64;
    p.wait_delivered(&["bystander"], n, Duration::from_secs(60))
        .await?;
    let finals = p
        .ch_count("SELECT count() FROM delivery_attempts WHERE is_final = 1 AND outcome = 'failed'")
        .await?;
    let fanout = &p.fanout_path.as_ref().unwrap().proc;
    let overflow = fanout
        .metric("switchboard_fanout_tenant_overflow_total")
        .await;
    println!("bystander served with {finals} strict events given up; {overflow} of {held} events deferred whole");
    assert_eq!(
        finals, 0,
        "the bystander waited for the noisy tenant's slots"
    );
    assert!(overflow > 0.0, "the tenant's cap was reached");
    // Nothing dropped: a deferred event is attempted later (the breaker may skip it:
    // `circuit_open`), and so is at least the first event of each of the 30
    // conversations, held in place or deferred (later ones of a held conversation wait
    // their turn).
    let tried = format!(
        "SELECT uniqExact(event_id) FROM delivery_attempts WHERE tenant_id = '{}' AND outcome IN ('failed', 'circuit_open')",
        noisy.id
    );
    wait_until(
        "the noisy tenant's events attempted again",
        Duration::from_secs(90),
        || async { Ok(p.ch_count(&tried).await? >= 30) },
    )
    .await?;
    let deferred_then_tried = format!(
        "SELECT count() FROM (SELECT event_id FROM delivery_attempts WHERE tenant_id = '{}' GROUP BY event_id, endpoint_id
           HAVING countIf(outcome = 'deferred') > 0 AND countIf(outcome IN ('failed', 'circuit_open')) > 0)",
        noisy.id
    );
    wait_until(
        "deferred events attempted from the delay topic",
        Duration::from_secs(90),
        || async { Ok(p.ch_count(&deferred_then_tried).await? > 0) },
    )
    .await?;
    Ok(())
}
