//! The send path under pressure and failure: per-number throughput limits, a BSP outage
//! (breaker, failover, retries, DLQ), and the router killed mid-stream, with the BSP
//! simulator counting every request it gets.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_loadtest::bsp_sim::{max_per_second, Behavior};
use switchboard_schemas::{Codec, DeadLetter};

fn opts(router_env: Vec<(&'static str, String)>) -> Options {
    Options {
        send_path: true,
        router_env,
        ..Default::default()
    }
}

/// Send `n` texts `"{prefix}-{i}"` from `from` through the batch API; returns the ids.
async fn send_many(
    p: &Pipeline,
    t: &TestTenant,
    from: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"from": from, "to": "+4915112345678", "type": "text", "text": {"body": format!("{prefix}-{i}")}}))
            .collect();
        let (s, b) = p
            .call(
                Method::POST,
                "/v1/messages/batch",
                &t.key,
                Some(json!({"messages": messages})),
                &[],
            )
            .await?;
        anyhow::ensure!(s == 200 && b["rejected"] == 0, "batch: {s} {b}");
        for r in b["results"].as_array().unwrap() {
            ids.push(r["message"]["id"].as_str().unwrap().to_string());
        }
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_number_stays_within_its_tier_and_nothing_is_lost() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    p.number(&t, "+15550000002", "meta", "15550000002", 1000, None)
        .await?;
    // The simulator enforces the same tiers, as Meta does (130429 beyond them).
    p.sim().set_behavior(Behavior {
        tiers: HashMap::from([("15550000001".into(), 80), ("15550000002".into(), 1000)]),
        no_callbacks: true,
        ..Behavior::default()
    });
    let (slow, fast) = tokio::join!(
        send_many(&p, &t, "+15550000001", "slow", 5000),
        send_many(&p, &t, "+15550000002", "fast", 5000),
    );
    let ids: Vec<String> = slow?.into_iter().chain(fast?).collect();
    let started = Instant::now();
    let states = p.wait_final(&ids, Duration::from_secs(150)).await?;
    let took = started.elapsed();
    assert!(
        states.values().all(|s| s == "accepted"),
        "every send accepted"
    );

    let calls = p.sim().calls();
    let throttled = calls.iter().filter(|c| c.status == 429).count();
    let mut throttled_by: HashMap<&str, usize> = HashMap::new();
    for c in calls.iter().filter(|c| c.status == 429) {
        *throttled_by.entry(&c.sender).or_default() += 1;
    }
    let peaks = max_per_second(&calls);
    let parked = p
        .send_path()
        .router
        .metric("switchboard_router_parked_total")
        .await;
    println!(
        "peaks per one-second window: {peaks:?}; throttled: {throttled_by:?}; {parked} parked; all final after {took:?}"
    );
    assert!(
        peaks["15550000001"] <= 80,
        "80-mps number peaked at {}",
        peaks["15550000001"]
    );
    assert!(
        peaks["15550000002"] <= 1000,
        "1000-mps number peaked at {}",
        peaks["15550000002"]
    );
    assert_eq!(throttled, 0, "the router never made the BSP throttle");
    // Exactly one accepted request per message.
    let mut per_text: HashMap<&str, usize> = HashMap::new();
    for c in calls.iter().filter(|c| c.status == 200) {
        *per_text.entry(&c.text).or_default() += 1;
    }
    assert_eq!(per_text.len(), 10_000);
    assert!(per_text.values().all(|n| *n == 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bsp_outage_opens_the_breaker_fails_over_and_exhausts_into_the_dlq() -> anyhow::Result<()>
{
    let p = Pipeline::start(opts(vec![
        ("SWITCHBOARD_BREAKER_FAILURES", "3".into()),
        ("SWITCHBOARD_BREAKER_OPEN_FOR", "1s".into()),
        ("SWITCHBOARD_RETRY_INITIAL", "300ms".into()),
        ("SWITCHBOARD_RETRY_MAX", "2s".into()),
        ("SWITCHBOARD_RETRY_BUDGET", "25s".into()),
        ("SWITCHBOARD_MAX_ATTEMPTS", "100".into()),
    ]))
    .await?;
    let t = p.tenant("acme").await?;
    // X may fail over to 360dialog; Y may not; Z is on Gupshup, which stays down.
    p.number(
        &t,
        "+15550000001",
        "meta",
        "15550000001",
        1000,
        Some(("360dialog", "360dialog-number")),
    )
    .await?;
    p.number(&t, "+15550000002", "meta", "15550000002", 1000, None)
        .await?;
    p.number(&t, "+15550000003", "gupshup", "AcmeApp", 1000, None)
        .await?;
    p.sim().set_behavior(Behavior {
        down_bsps: vec!["meta".into(), "gupshup".into()],
        no_callbacks: true,
        ..Behavior::default()
    });
    let outage_start = Instant::now();
    let x = send_many(&p, &t, "+15550000001", "x", 50).await?;
    let y = send_many(&p, &t, "+15550000002", "y", 50).await?;
    let z = send_many(&p, &t, "+15550000003", "z", 5).await?;

    // X goes out through 360dialog while Meta is down.
    let states = p.wait_final(&x, Duration::from_secs(30)).await?;
    assert!(states.values().all(|s| s == "accepted"));
    let by_text = p.calls_by_text();
    for i in 0..50 {
        let ok: Vec<_> = by_text[&format!("x-{i}")]
            .iter()
            .filter(|c| c.status == 200)
            .collect();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].bsp, "360dialog");
    }

    // The breaker opens (the router's gauge says so) ...
    let router = &p.send_path().router;
    wait_until("a breaker open", Duration::from_secs(30), || async {
        Ok(router.metric("switchboard_router_breaker_open").await >= 1.0)
    })
    .await?;
    // ... and keeps calls to Meta far below one per message and retry while Meta stays
    // down for the scenario's 10 s (50 messages retried every ~1 s would be hundreds of
    // calls). The wait is the outage's length, not a wait for something to happen.
    tokio::time::sleep_until((outage_start + Duration::from_secs(10)).into()).await;
    let meta_calls_in_outage = p.sim().calls().iter().filter(|c| c.bsp == "meta").count();
    println!("calls to Meta during its 10 s outage: {meta_calls_in_outage}");
    assert!(
        meta_calls_in_outage <= 60,
        "request storm: {meta_calls_in_outage} calls to a down BSP"
    );
    p.sim().set_behavior(Behavior {
        down_bsps: vec!["gupshup".into()],
        no_callbacks: true,
        ..Behavior::default()
    });

    // Y goes out after the recovery, once each.
    let states = p.wait_final(&y, Duration::from_secs(30)).await?;
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    let by_text = p.calls_by_text();
    for i in 0..50 {
        let ok = by_text[&format!("y-{i}")]
            .iter()
            .filter(|c| c.status == 200 && c.bsp == "meta")
            .count();
        assert_eq!(ok, 1);
    }

    // Z exhausts its retry budget: send failed, retries_exhausted, in the DLQ.
    let states = p.wait_final(&z, Duration::from_secs(60)).await?;
    assert!(states.values().all(|s| s == "failed"), "{states:?}");
    let (_, m) = p.message(&t, &z[0]).await?;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["error"]["code"], "retries_exhausted", "{m}");
    let codec = Codec::new(&p.services.registry);
    let dlq = p
        .read_topic("wa.send.dlq", 5, Duration::from_secs(20))
        .await?;
    assert_eq!(dlq.len(), 5);
    for (_, payload) in &dlq {
        let d: DeadLetter = codec.decode(payload).await?;
        assert_eq!(d.reason, "retries_exhausted");
        // The last error is the BSP's 5xx, or the breaker that kept it from being called.
        assert!(
            d.detail.contains("attempts; last: bsp_unavailable")
                || d.detail.contains("attempts; last: circuit_open"),
            "{}",
            d.detail
        );
    }
    // The failure reached the stores as the message's status.
    wait_until("send failed in PostgreSQL", Duration::from_secs(20), || async {
        Ok(p.pg_count("SELECT count(*) FROM messages WHERE status = 'failed' AND error_code = 'retries_exhausted'").await? == 5)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_router_mid_stream_never_sends_a_message_twice() -> anyhow::Result<()> {
    let mut p = Pipeline::start(opts(vec![("SWITCHBOARD_SEND_TIMEOUT", "2s".into())])).await?;
    let t = p.tenant("acme").await?;
    let numbers = [
        "+15550000001",
        "+15550000002",
        "+15550000003",
        "+15550000004",
    ];
    // 100 mps each: the 2,400 sends take about 6 s, so every round has calls to make
    // (at 1,000 mps a quick router sent them all before the second kill), and the
    // numbers' queues overflow, so parked sends are killed and resumed too.
    for (i, n) in numbers.iter().enumerate() {
        p.number(&t, n, "meta", &format!("1555000000{}", i + 1), 100, None)
            .await?;
    }
    // A little BSP latency keeps calls in flight when the kill lands.
    p.sim().set_behavior(Behavior {
        latency_ms: 20,
        no_callbacks: true,
        ..Behavior::default()
    });
    let mut ids = Vec::new();
    for (i, n) in numbers.iter().enumerate() {
        ids.extend(send_many(&p, &t, n, &format!("k{i}"), 600).await?);
    }
    let mut in_flight_at_kills: HashSet<String> = HashSet::new();
    for round in 0..3 {
        // Let some calls happen, then kill.
        let before = p.sim().calls().len();
        // A restarted router first settles what its predecessor had claimed (after the
        // lease); on a loaded machine that takes a while.
        wait_until("router sending", Duration::from_secs(180), || async {
            Ok(p.sim().calls().len() > before + 200)
        })
        .await
        .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", p.logs()))?;
        let router = &mut p.send.as_mut().unwrap().router;
        router.kill9().await;
        // Statements the router sent before dying still run to their commit (one may
        // still be on its way to its backend): wait until its backends are gone, which
        // happens once they have read everything it sent.
        wait_until("the dead router's connections to close", Duration::from_secs(30), || async {
            Ok(p.pg_count(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'switchboard-router' AND datname = current_database()",
            )
            .await?
                == 0)
        })
        .await?;
        // What the dead router had claimed and not settled: exactly these end unknown.
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT message_id FROM outbound_messages WHERE state = 'sending'")
                .fetch_all(&p.pg)
                .await?;
        in_flight_at_kills.extend(rows.into_iter().map(|r| r.0));
        let router = &mut p.send.as_mut().unwrap().router;
        router.start()?;
    }
    let states = p.wait_final(&ids, Duration::from_secs(120)).await?;

    let mut per_text: HashMap<String, usize> = HashMap::new();
    for c in p.sim().calls() {
        *per_text.entry(c.text.clone()).or_default() += 1;
    }
    let texts: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT message_id, message->'text'->>'body' FROM outbound_messages",
    )
    .fetch_all(&p.pg)
    .await?
    .into_iter()
    .collect();
    let mut unknown = 0;
    for id in &ids {
        let calls = per_text.get(&texts[id]).copied().unwrap_or(0);
        assert!(calls <= 1, "{id} reached the BSP {calls} times");
        match states[id].as_str() {
            "accepted" => assert_eq!(calls, 1, "{id}: accepted without a BSP request"),
            "unknown" => unknown += 1,
            other => panic!("{id} ended {other}"),
        }
    }
    println!(
        "{} sends, {unknown} with an unknown outcome after 3 kills ({} in flight at the kills)",
        ids.len(),
        in_flight_at_kills.len()
    );
    // Exactly the requests in flight (claimed, not settled) at a kill end unknown.
    assert_eq!(
        unknown,
        in_flight_at_kills.len(),
        "unknown outcomes vs in flight at the kills"
    );
    for id in &in_flight_at_kills {
        assert_eq!(states[id], "unknown", "{id} was in flight at a kill");
    }
    // Every send has exactly one outcome in the stores.
    wait_until(
        "one message row per send",
        Duration::from_secs(30),
        || async {
            Ok(p.pg_count(
                "SELECT count(DISTINCT message_id) FROM messages WHERE message_id IS NOT NULL",
            )
            .await?
                == ids.len() as i64)
        },
    )
    .await?;
    assert_eq!(
        p.pg_count("SELECT count(*) FROM messages WHERE message_id IS NOT NULL")
            .await?,
        ids.len() as i64
    );
    let unknown_rows = p
        .pg_count("SELECT count(*) FROM messages WHERE error_code = 'outcome_unknown'")
        .await?;
    assert_eq!(unknown_rows, unknown as i64);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_errors_fail_at_once_with_a_stable_code() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = p.tenant("acme").await?;
    p.number(
        &t,
        "+15550000001",
        "meta",
        "15550000001",
        1000,
        Some(("360dialog", "360dialog-number")),
    )
    .await?;
    p.sim().set_behavior(Behavior {
        errors: HashMap::from([
            ("4915100000047".into(), 131047),
            ("4915100000026".into(), 131026),
            ("4915100000001".into(), 132001),
        ]),
        no_callbacks: true,
        ..Behavior::default()
    });
    let mut ids = Vec::new();
    for to in ["+4915100000047", "+4915100000026", "+4915100000001"] {
        let (s, b) = p
            .send_text(&t, "+15550000001", to, &format!("to {to}"))
            .await?;
        assert_eq!(s, 202, "{b}");
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let states = p.wait_final(&ids, Duration::from_secs(30)).await?;
    assert!(states.values().all(|s| s == "failed"), "{states:?}");
    let want = [
        "outside_service_window",
        "invalid_recipient",
        "template_not_found",
    ];
    for (id, code) in ids.iter().zip(want) {
        let (_, m) = p.message(&t, id).await?;
        assert_eq!(m["error"]["code"], code, "{m}");
    }
    // One call each: no retry, no failover after a definite answer.
    let by_text = p.calls_by_text();
    for to in ["+4915100000047", "+4915100000026", "+4915100000001"] {
        let calls = &by_text[&format!("to {to}")];
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].bsp, "meta");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_mid_send_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let pg = switchboard_e2e::services::PrivatePostgres::start().await?;
    let p = Pipeline::start(Options {
        pg_url: Some(pg.url()),
        send_path: true,
        ..Default::default()
    })
    .await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 200, None)
        .await?;
    p.sim().set_behavior(Behavior {
        no_callbacks: true,
        ..Behavior::default()
    });
    let ids = send_many(&p, &t, "+15550000001", "pg", 600).await?;
    wait_until("sends under way", Duration::from_secs(30), || async {
        Ok(p.sim().calls().len() >= 100)
    })
    .await?;
    pg.crash()?;
    // The send API cannot record a send without its database: 503, retry later.
    let (s, b) = p
        .send_text(&t, "+15550000001", "+4915112345678", "during the outage")
        .await?;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("database_unavailable")),
        "{b}"
    );
    let calls_at_crash = p.sim().calls().len();
    // The router feels it too: its readiness (which pings the database) fails.
    let ops = p
        .send_path()
        .router
        .env_var("SWITCHBOARD_OPS_ADDR")
        .unwrap_or_default();
    wait_until("the router not ready", Duration::from_secs(30), || async {
        Ok(p.http
            .get(format!("http://{ops}/readyz"))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true))
    })
    .await?;
    pg.resume().await?;

    let states = p.wait_final(&ids, Duration::from_secs(120)).await?;
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for c in p.sim().calls() {
        *per_text.entry(c.text.clone()).or_default() += 1;
    }
    let mut unknown = 0;
    for i in 0..600 {
        let n = per_text.get(&format!("pg-{i}")).copied().unwrap_or(0);
        assert!(n <= 1, "pg-{i} sent {n} times");
    }
    for s in states.values() {
        match s.as_str() {
            "accepted" => {}
            "unknown" => unknown += 1,
            other => panic!("ended {other}"),
        }
    }
    println!("calls at the crash: {calls_at_crash}; unknown outcomes: {unknown}");
    let accepted = states.values().filter(|s| *s == "accepted").count();
    let sent = per_text.keys().filter(|k| k.starts_with("pg-")).count();
    assert!(
        sent >= accepted,
        "{sent} BSP requests for {accepted} accepted sends"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bsp_throttling_a_number_backs_it_off_and_loses_nothing() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![])).await?;
    let t = p.tenant("acme").await?;
    // Configured at 200 mps, but the BSP only allows 50 for this number.
    p.number(&t, "+15550000001", "meta", "15550000001", 200, None)
        .await?;
    p.sim().set_behavior(Behavior {
        tiers: HashMap::from([("15550000001".into(), 50)]),
        no_callbacks: true,
        ..Behavior::default()
    });
    let ids = send_many(&p, &t, "+15550000001", "th", 300).await?;
    let states = p.wait_final(&ids, Duration::from_secs(90)).await?;
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    let calls = p.sim().calls();
    let throttled = calls.iter().filter(|c| c.status == 429).count();
    let mut per_text: HashMap<&str, usize> = HashMap::new();
    for c in calls.iter().filter(|c| c.status == 200) {
        *per_text.entry(&c.text).or_default() += 1;
    }
    println!("throttled {throttled} of {} calls", calls.len());
    assert!(throttled > 0, "the BSP did throttle");
    // Backing off keeps the refused calls to a fraction, not one per message and retry.
    assert!(
        throttled < 150,
        "{throttled} throttled calls: the number did not back off"
    );
    assert_eq!(per_text.len(), 300);
    assert!(per_text.values().all(|n| *n == 1));
    Ok(())
}

/// A BSP that answers after the router's timeout already has the message: the router
/// must not send it again. Every send reaches the BSP exactly once; those whose answer
/// came too late end `outcome_unknown` (and in `wa.send.dlq`), the rest are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bsp_answering_after_the_timeout_never_gets_a_message_twice() -> anyhow::Result<()> {
    let p = Pipeline::start(opts(vec![("SWITCHBOARD_SEND_TIMEOUT", "1s".into())])).await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 1000, None)
        .await?;
    p.sim().set_behavior(Behavior {
        latency_ms: 1500,
        no_callbacks: true,
        ..Behavior::default()
    });
    let mut ids = send_many(&p, &t, "+15550000001", "late", 100).await?;
    wait_until(
        "late answers to end unknown",
        Duration::from_secs(60),
        || async {
            Ok(
                p.pg_count("SELECT count(*) FROM outbound_messages WHERE state = 'unknown'")
                    .await?
                    >= 5,
            )
        },
    )
    .await?;
    p.sim().set_behavior(Behavior {
        no_callbacks: true,
        ..Behavior::default()
    });
    ids.extend(send_many(&p, &t, "+15550000001", "prompt", 100).await?);
    let states = p.wait_final(&ids, Duration::from_secs(120)).await?;
    // The simulator records a late call when it answers, after the router gave up.
    let unknown: Vec<&String> = ids.iter().filter(|id| states[*id] == "unknown").collect();
    wait_until(
        "the simulator to finish every late call",
        Duration::from_secs(30),
        || async { Ok(p.sim().calls().len() >= ids.len()) },
    )
    .await?;
    let texts: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT message_id, message->'text'->>'body' FROM outbound_messages",
    )
    .fetch_all(&p.pg)
    .await?
    .into_iter()
    .collect();
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for c in p.sim().calls() {
        *per_text.entry(c.text.clone()).or_default() += 1;
    }
    for id in &ids {
        let calls = per_text.get(&texts[id]).copied().unwrap_or(0);
        assert_eq!(
            calls, 1,
            "{id} ({}) reached the BSP {calls} times",
            states[id]
        );
        assert!(
            matches!(states[id].as_str(), "accepted" | "unknown"),
            "{id} ended {}",
            states[id]
        );
        if texts[id].starts_with("prompt") {
            assert_eq!(states[id], "accepted", "{id}: a prompt answer is accepted");
        }
    }
    let codes = p
        .pg_count(
            "SELECT count(*) FROM outbound_messages WHERE state = 'unknown' AND error_code = 'outcome_unknown'",
        )
        .await?;
    assert_eq!(codes, unknown.len() as i64);
    let dlq = p
        .dead_letters("wa.send.dlq", unknown.len(), Duration::from_secs(30))
        .await?;
    assert_eq!(
        dlq.len(),
        unknown.len(),
        "every unknown outcome is dead-lettered"
    );
    assert!(dlq.iter().all(|d| d.reason == "outcome_unknown"), "{dlq:?}");
    println!(
        "{} sends: {} ended unknown after a late answer, none sent twice",
        ids.len(),
        unknown.len()
    );
    Ok(())
}

/// One tenant's backlog on a slow number waits in the outbox (parked), not in the
/// router's shared slots: another tenant's sends go through while the backlog is still
/// in its first half. The backlog itself keeps its tier, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenants_backlog_does_not_hold_up_another_tenants_sends() -> anyhow::Result<()> {
    // 300 slots: fewer than the backlog, so without parking it takes them all; parking
    // itself needs slots for its database writes (a loaded machine makes them slow).
    let p = Pipeline::start(opts(vec![("SWITCHBOARD_MAX_IN_FLIGHT", "300".into())])).await?;
    let a = p.tenant("backlogged").await?;
    let b = p.tenant("bystander").await?;
    p.number(&a, "+15550000011", "meta", "15550000011", 40, None)
        .await?;
    p.number(&b, "+15550000012", "meta", "15550000012", 1000, None)
        .await?;
    p.sim().set_behavior(Behavior {
        tiers: HashMap::from([("15550000011".into(), 40), ("15550000012".into(), 1000)]),
        no_callbacks: true,
        ..Behavior::default()
    });
    let backlog = send_many(&p, &a, "+15550000011", "backlog", 800).await?;
    let sent_by = |sender: &str| {
        p.sim()
            .calls()
            .iter()
            .filter(|c| c.sender == sender && c.status == 200)
            .count()
    };
    wait_until(
        "the backlog being paced",
        Duration::from_secs(60),
        || async { Ok(sent_by("15550000011") >= 40) },
    )
    .await?;
    let bystander = send_many(&p, &b, "+15550000012", "bystander", 200).await?;
    let states = p.wait_final(&bystander, Duration::from_secs(60)).await?;
    let backlog_done = sent_by("15550000011");
    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    println!("the bystander's 200 sends were through after {backlog_done} of the 800 backlogged");
    assert!(
        backlog_done < 400,
        "another tenant waited for the backlog: {backlog_done}/800 sent before its 200 were"
    );
    let states = p.wait_final(&backlog, Duration::from_secs(120)).await?;
    assert!(
        states.values().all(|s| s == "accepted"),
        "every backlogged send accepted"
    );
    let calls = p.sim().calls();
    let peaks = max_per_second(&calls);
    assert!(
        peaks["15550000011"] <= 40,
        "the backlog's tier held: {peaks:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.status == 429).count(), 0);
    let mut per_text: HashMap<&str, usize> = HashMap::new();
    for c in calls.iter().filter(|c| c.status == 200) {
        *per_text.entry(&c.text).or_default() += 1;
    }
    assert_eq!(per_text.len(), 1000);
    assert!(per_text.values().all(|n| *n == 1), "nothing sent twice");
    Ok(())
}
