//! A tenant's events by polling (`GET /v1/events`): pages from a cursor through the real
//! gateway, normalizer and broker; every event of the tenant once, in order per
//! conversation, none of another tenant's, across a gateway restart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_schemas::{status_event_id, Status};

async fn poll(p: &Pipeline, t: &TestTenant, query: &str) -> anyhow::Result<(u16, Value)> {
    p.call(
        Method::GET,
        &format!("/v1/events?{query}"),
        &t.key,
        None,
        &[],
    )
    .await
}

/// Every page from `after` (none: the oldest) until `done`.
async fn drain(
    p: &Pipeline,
    t: &TestTenant,
    after: Option<&str>,
    extra: &str,
) -> anyhow::Result<(Vec<Value>, String)> {
    let mut events = Vec::new();
    let mut cursor = after.map(str::to_string);
    loop {
        let q = match &cursor {
            Some(c) => format!("after={c}&limit=7{extra}"),
            None => format!("limit=7{extra}"),
        };
        let (s, page) = poll(p, t, &q).await?;
        anyhow::ensure!(s == 200, "poll: {s} {page}");
        anyhow::ensure!(page["gap"] == false, "no gap expected: {page}");
        events.extend(page["data"].as_array().cloned().unwrap_or_default());
        cursor = Some(page["next_cursor"].as_str().unwrap_or_default().to_string());
        if page["done"] == true {
            return Ok((events, cursor.unwrap_or_default()));
        }
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["data"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_pages_through_a_tenants_events_once_in_order_across_a_restart(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let a = p.tenant("a").await?;
    let b = p.tenant("b").await?;
    p.number(&a, "+15550301", "meta", "pnid-301", 80, None)
        .await?;
    p.number(&b, "+15550302", "meta", "pnid-302", 80, None)
        .await?;
    // The normalizer stamps events with their tenant once it knows the numbers: a probe
    // per number, polled until it shows up as that tenant's.
    for (t, n) in [(&a, "+15550301"), (&b, "+15550302")] {
        let probe = format!("wamid.{}.probe.{n}", p.id);
        p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
            n,
            "+919000000000",
            &probe,
            "sent",
            chrono::Utc::now().timestamp(),
        ))
        .await?;
        let id = status_event_id("meta", &probe, Status::Sent);
        wait_until(
            "the probe polled as the tenant's",
            Duration::from_secs(60),
            || async { Ok(ids(&drain(&p, t, None, "").await?.0).contains(&id)) },
        )
        .await?;
    }
    let (_, start_a) = drain(&p, &a, None, "").await?;
    let (_, start_b) = drain(&p, &b, None, "").await?;

    // 20 conversations × sent, delivered, read for A; 10 × 3 for B.
    let na = p.post_statuses("+15550301", 20, 1).await?;
    let nb = p.post_statuses("+15550302", 10, 1).await?;
    let expected = |n: &str, conversations: usize| -> HashSet<String> {
        let mut s = HashSet::new();
        for c in 0..conversations {
            let wamid = format!("wamid.{}.{}.{c}.0", p.id, n.trim_start_matches('+'));
            for st in [Status::Sent, Status::Delivered, Status::Read] {
                s.insert(status_event_id("meta", &wamid, st));
            }
        }
        s
    };
    let (want_a, want_b) = (expected("+15550301", 20), expected("+15550302", 10));
    assert_eq!((want_a.len(), want_b.len()), (na, nb));

    // Page through A's new events (once all are on the topic), restarting the gateway
    // halfway.
    wait_until(
        "A's events on the topic",
        Duration::from_secs(60),
        || async { Ok(drain(&p, &a, Some(&start_a), "").await?.0.len() >= na) },
    )
    .await?;
    let mut got: Vec<Value> = Vec::new();
    let mut cursor = start_a.clone();
    let mut restarted = false;
    loop {
        let (s, page) = poll(&p, &a, &format!("after={cursor}&limit=7")).await?;
        assert_eq!(s, 200, "{page}");
        got.extend(page["data"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().unwrap().to_string();
        if !restarted && got.len() >= na / 2 {
            p.gateway.stop().await?;
            p.gateway.start()?;
            p.wait_send_path_ready().await?;
            restarted = true;
        }
        if page["done"] == true && got.len() >= na {
            break;
        }
    }
    assert!(restarted);
    let got_ids = ids(&got);
    assert_eq!(got_ids.len(), na, "no event twice");
    assert_eq!(
        got_ids.iter().cloned().collect::<HashSet<_>>(),
        want_a,
        "exactly A's events"
    );
    assert!(got.iter().all(|e| e["data"]["tenant_id"] == a.id.as_str()));
    // In order per conversation: sent, then delivered, then read.
    let mut per_conv: HashMap<String, Vec<String>> = HashMap::new();
    for e in &got {
        per_conv
            .entry(
                e["data"]["conversation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_default()
            .push(e["type"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(per_conv.len(), 20);
    for (conv, types) in &per_conv {
        assert_eq!(
            types,
            &[
                "message.status.sent",
                "message.status.delivered",
                "message.status.read"
            ],
            "{conv}"
        );
    }
    // An event's own cursor resumes right after it: the events after it, once each
    // (partitions interleave in whatever order the broker serves them).
    let tenth = got[9]["cursor"].as_str().unwrap().to_string();
    let (rest, _) = drain(&p, &a, Some(&tenth), "").await?;
    let rest = ids(&rest);
    assert_eq!(rest.len(), na - 10);
    assert_eq!(
        rest.into_iter().collect::<HashSet<_>>(),
        got_ids[10..].iter().cloned().collect::<HashSet<_>>()
    );

    // B sees exactly its own; a type filter; only what comes next.
    let (bs, _) = drain(&p, &b, Some(&start_b), "").await?;
    assert_eq!(ids(&bs).into_iter().collect::<HashSet<_>>(), want_b);
    let (reads, _) = drain(&p, &a, Some(&start_a), "&types=message.status.read").await?;
    assert_eq!(reads.len(), 20);
    assert!(reads.iter().all(|e| e["type"] == "message.status.read"));
    let (s, now) = poll(&p, &a, "after=now").await?;
    assert_eq!(
        (s, now["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{now}"
    );
    let from_now = now["next_cursor"].as_str().unwrap().to_string();
    let more = 2;
    for i in 0..more {
        p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
            "+15550301",
            "+919000000001",
            &format!("wamid.{}.fresh.{i}", p.id),
            "sent",
            chrono::Utc::now().timestamp(),
        ))
        .await?;
    }
    wait_until("the new events", Duration::from_secs(60), || async {
        Ok(drain(&p, &a, Some(&from_now), "").await?.0.len() >= more)
    })
    .await?;
    let fresh = ids(&drain(&p, &a, Some(&from_now), "").await?.0);
    assert_eq!(fresh.len(), more, "only what came after `now`");
    assert!(fresh.iter().all(|id| !got_ids.contains(id)));

    // Bad requests: precise 400s.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=v1.not-a-cursor!", "after"),
        ("after=v1.OTk6MA", "after"), // partition 99
        ("types=message.nonsense", "types"),
    ] {
        let (s, v) = poll(&p, &a, q).await?;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{q}: {v}"
        );
    }
    let (s, v) = poll(&p, &a, "since=yesterday").await?;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{v}"
    );
    let (s, _) = p
        .call(Method::GET, "/v1/events", "sb_not_a_key", None, &[])
        .await?;
    assert_eq!(s, 401);
    Ok(())
}
