//! The ingest spine end to end: gateway → wa.webhooks.raw → normalizer → wa.events →
//! pg-sink / ch-sink, every binary a real process, against the real broker, registry,
//! PostgreSQL and ClickHouse.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use switchboard_e2e::bsp::{meta_status, meta_text};
use switchboard_e2e::{Options, Pipeline};
use switchboard_schemas::{RawWebhook, Status};

const BUSINESS: &str = "15550783881";

fn fixtures() -> Vec<(String, Vec<u8>)> {
    fixtures_of("meta")
}

fn fixtures_of(bsp: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!(
        "{}/../connectors/tests/fixtures/{bsp}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .map(|e| {
            let p = e.expect("entry").path();
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).expect("fixture"),
            )
        })
        .collect();
    out.sort();
    out
}

fn parse(bsp: &str, body: &[u8]) -> Vec<switchboard_schemas::Event> {
    parse_at(bsp, body, 0)
}

fn parse_at(bsp: &str, body: &[u8], received_at_ms: i64) -> Vec<switchboard_schemas::Event> {
    let raw = RawWebhook {
        request_id: "x".into(),
        bsp: bsp.into(),
        received_at_ms,
        content_type: "application/json".into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    };
    switchboard_connectors::parse(&raw)
        .expect("fixture parses")
        .events
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fixture_lands_in_postgres_and_clickhouse_with_canonical_fields() -> anyhow::Result<()>
{
    let p = Pipeline::start(Options::default()).await?;
    let mut expected = Vec::new();
    for (name, body) in fixtures() {
        let r = p.post_meta(&body).await?;
        assert_eq!(r.status(), 200, "{name}: {}", r.text().await?);
        expected.extend(parse("meta", &body));
    }
    // The same Cloud API payloads through 360dialog, with its shared token.
    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "status_failed")
        .unwrap();
    let r = p
        .http
        .post(format!(
            "{}/webhooks/360dialog?token={}",
            p.gateway_url, p.dialog360_token
        ))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    expected.extend(parse("360dialog", &body));
    // Twilio (form bodies, X-Twilio-Signature over the public URL) and WAHA (HMAC-SHA512).
    for bsp in ["twilio", "waha", "gupshup", "aisensy", "karix"] {
        for (name, body) in fixtures_of(bsp) {
            let r = p.post_bsp(bsp, &body).await?;
            assert_eq!(r.status(), 200, "{bsp}/{name}: {}", r.text().await?);
            expected.extend(parse_at(bsp, &body, 1));
        }
    }
    assert!(expected.iter().any(|e| e.bsp == "twilio") && expected.iter().any(|e| e.bsp == "waha"));
    // A customer's preference (Meta's user_preferences, Gupshup's opt-out and opt-in) is
    // no message event: the message stores skip it (the normalizer keeps it in
    // `suppressions`).
    let (preferences, expected): (Vec<_>, Vec<_>) = expected
        .into_iter()
        .partition(|e| e.event_type == "customer.preference");
    let by_bsp = |bsp: &str| preferences.iter().filter(|e| e.bsp == bsp).count();
    assert_eq!(
        (by_bsp("meta"), by_bsp("gupshup"), preferences.len()),
        (1, 2, 3),
        "the user_preferences fixture and Gupshup's two user events"
    );

    let statuses: Vec<_> = expected.iter().filter(|e| e.status.is_some()).collect();
    let inbound: Vec<_> = expected
        .iter()
        .filter(|e| e.event_type == "message.received")
        .collect();
    assert!(
        statuses.len() >= 9 && inbound.len() >= 16,
        "fixtures cover statuses and inbound types"
    );
    p.wait_for_status_events(statuses.len() as i64, Duration::from_secs(60))
        .await?;
    switchboard_e2e::wait_until(
        "all events in ClickHouse",
        Duration::from_secs(60),
        || async { Ok(p.ch_count("SELECT count() FROM events").await? == expected.len() as i64) },
    )
    .await?;
    let suppressed = p
        .pg_count(
            "SELECT count(*) FROM suppressions WHERE customer_id = '+16505551234' AND suppressed",
        )
        .await?;
    assert_eq!(suppressed, 0, "an untenanted number's opt-out was kept");

    // History: every status event, with its canonical fields.
    for e in &statuses {
        let row: (String, String, String, Option<String>) = sqlx::query_as(
            "SELECT bsp, wamid, status, error_code FROM message_status_history WHERE event_id = $1",
        )
        .bind(&e.event_id)
        .fetch_one(&p.pg)
        .await?;
        assert_eq!(
            row,
            (
                e.bsp.clone(),
                e.wamid.clone(),
                e.status.clone().unwrap(),
                e.error_code.clone()
            )
        );
    }
    // Current status of the message that went sent → delivered → read.
    let (status, customer, business, conv): (String, String, String, Option<String>) = sqlx::query_as(
        "SELECT status, customer_id, business_number, conversation_category FROM messages WHERE bsp = 'meta' AND wamid = $1",
    )
    .bind("wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA")
    .fetch_one(&p.pg)
    .await?;
    assert_eq!(
        (
            status.as_str(),
            customer.as_str(),
            business.as_str(),
            conv.as_deref()
        ),
        ("read", "+16505551234", "+15550783881", Some("marketing"))
    );
    // Failed message keeps its error; BSUID customers are kept whole.
    let (status, code): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_code FROM messages WHERE bsp = '360dialog'")
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("131049"))
    );
    assert_eq!(p.pg_count("SELECT count(*) FROM messages WHERE customer_id = 'US.13491208655302741918' AND status = 'played'").await?, 1);

    // Inbound messages: one row each, with type and content.
    for e in &inbound {
        let (direction, mtype, content): (String, Option<String>, Option<serde_json::Value>) =
            sqlx::query_as("SELECT direction, message_type, content FROM messages WHERE bsp = $1 AND wamid = $2")
                .bind(&e.bsp)
                .bind(&e.wamid)
                .fetch_one(&p.pg)
                .await?;
        assert_eq!(direction, "inbound");
        assert_eq!(mtype, e.message_type);
        let want: serde_json::Value = serde_json::from_str(e.content.as_deref().unwrap())?;
        assert_eq!(content.as_ref(), Some(&want), "{}", e.wamid);
    }

    // ClickHouse: one row per event with the canonical columns. Twilio sends no event
    // time, so its events carry the gateway's receive time: checked apart.
    for e in &expected {
        if e.bsp == "twilio" {
            let age = p.ch_count(&format!("SELECT toInt64(now()) - toInt64(occurred_at) FROM events WHERE event_id = '{}'", e.event_id)).await?;
            assert!(
                (0..600).contains(&age),
                "twilio occurred_at is the receive time, {age} s ago"
            );
        }
        let got = p
            .ch(&format!(
                "SELECT event_type, status, bsp, business_number, customer_id, wamid, message_type, error_code, toUnixTimestamp(occurred_at) FROM events WHERE event_id = '{}' FORMAT TSV",
                e.event_id
            ))
            .await?;
        let want = format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            e.event_type,
            e.status.clone().unwrap_or_default(),
            e.bsp,
            e.business_number,
            e.customer_id,
            e.wamid,
            e.message_type.clone().unwrap_or_default(),
            e.error_code.clone().unwrap_or_default(),
            if e.bsp == "twilio" {
                p.ch(&format!("SELECT toUnixTimestamp(occurred_at) FROM events WHERE event_id = '{}' FORMAT TSV", e.event_id)).await?.trim().parse::<i64>()?
            } else {
                e.occurred_at_ms / 1000
            }
        );
        assert_eq!(got, want, "{}", e.event_id);
    }
    // The rollup answers per business number and day without the raw rows.
    let count = |st: &str| {
        statuses
            .iter()
            .filter(|e| e.business_number == "+15550783881" && e.status.as_deref() == Some(st))
            .count()
    };
    let summary = p.ch("SELECT business_number, sent, delivered, read, failed FROM daily_summary WHERE business_number = '+15550783881' AND day = '2025-06-18' FORMAT TSV").await?;
    assert_eq!(
        summary,
        format!(
            "+15550783881\t{}\t{}\t{}\t{}\n",
            count("sent"),
            count("delivered"),
            count("read"),
            count("failed")
        )
    );
    // Delivery latency: every message of that number with both a sent and a delivered.
    let mut lat = Vec::new();
    for d in statuses
        .iter()
        .filter(|e| e.business_number == "+15550783881" && e.status.as_deref() == Some("delivered"))
    {
        if let Some(s) = statuses
            .iter()
            .find(|s| s.bsp == d.bsp && s.wamid == d.wamid && s.status.as_deref() == Some("sent"))
        {
            lat.push(d.occurred_at_ms - s.occurred_at_ms);
        }
    }
    assert!(lat.len() >= 2, "{lat:?}");
    let got = p.ch("SELECT countMerge(deliveries), quantilesMerge(0.5, 0.9, 0.99)(latency_quantiles)[3] FROM daily_delivery_latency WHERE business_number = '+15550783881' FORMAT TSV").await?;
    let (n, p99) = got.trim().split_once('\t').unwrap();
    assert_eq!(n.parse::<usize>()?, lat.len());
    let p99: f64 = p99.parse()?;
    let (lo, hi) = (
        *lat.iter().min().unwrap() as f64,
        *lat.iter().max().unwrap() as f64,
    );
    assert!(p99 >= lo && p99 <= hi, "p99 {p99} within [{lo}, {hi}]");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_webhooks_and_a_restart_yield_one_row_each() -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options::default()).await?;
    let bodies: Vec<Vec<u8>> = (0..20)
        .flat_map(|i| {
            let w = format!("wamid.REPEAT{i}");
            let c = format!("1650555{i:04}");
            vec![
                meta_status(BUSINESS, &c, &w, "sent", 1_750_000_000 + i),
                meta_status(BUSINESS, &c, &w, "delivered", 1_750_000_100 + i),
            ]
        })
        .collect();
    for _ in 0..3 {
        for b in &bodies {
            assert_eq!(p.post_meta(b).await?.status(), 200);
        }
    }
    p.wait_for_status_events(40, Duration::from_secs(60))
        .await?;
    // Restart the normalizer (its dedupe state lives in PostgreSQL) and send them again.
    p.normalizer.stop().await?;
    p.normalizer.start()?;
    for b in &bodies {
        assert_eq!(p.post_meta(b).await?.status(), 200);
    }
    // Prove the repeats were processed (the consumer caught up) before counting.
    let raw = p
        .read_topic("wa.webhooks.raw", 160, Duration::from_secs(30))
        .await?;
    assert_eq!(
        raw.len(),
        160,
        "all 160 accepted webhooks are on wa.webhooks.raw"
    );
    switchboard_e2e::wait_until(
        "normalizer dedupe hits for the last round",
        Duration::from_secs(60),
        || async { Ok(p.pg_count("SELECT count(*) FROM dedupe_ids").await? == 40) },
    )
    .await?;
    let events = p
        .read_topic("wa.events", 41, Duration::from_secs(10))
        .await?;
    assert_eq!(events.len(), 40, "wa.events carries each event once");
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        40
    );
    assert_eq!(p.pg_count("SELECT count(*) FROM messages").await?, 20);
    assert_eq!(
        p.pg_count("SELECT count(*) FROM messages WHERE status = 'delivered'")
            .await?,
        20
    );
    assert_eq!(p.ch_count("SELECT count() FROM events").await?, 40);
    assert_eq!(
        p.ch_count("SELECT sum(events) FROM daily_status_counts")
            .await?,
        40
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_statuses_end_in_the_right_current_status_with_full_history(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    // (wamid, arrival order, expected current status)
    let cases: [(&str, &[&str], &str); 4] = [
        ("wamid.OOO1", &["read", "delivered", "sent"], "read"),
        ("wamid.OOO2", &["delivered", "failed"], "delivered"),
        ("wamid.OOO3", &["sent", "read"], "read"),
        ("wamid.OOO4", &["failed", "sent"], "failed"),
    ];
    let mut n = 0;
    for (i, (wamid, order, _)) in cases.iter().enumerate() {
        for s in order.iter() {
            let ts = 1_750_000_000 + s.parse::<Status>().unwrap().rank() as i64;
            // One webhook at a time, each acknowledged before the next, so arrival order
            // is exactly `order`.
            assert_eq!(
                p.post_meta(&meta_status(
                    BUSINESS,
                    &format!("1650555000{i}"),
                    wamid,
                    s,
                    ts
                ))
                .await?
                .status(),
                200
            );
            n += 1;
        }
    }
    p.wait_for_status_events(n, Duration::from_secs(60)).await?;
    for (wamid, order, want) in cases {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM messages WHERE wamid = $1")
            .bind(wamid)
            .fetch_one(&p.pg)
            .await?;
        assert_eq!(status, want, "{wamid}");
        let hist: Vec<(String,)> = sqlx::query_as(
            "SELECT status FROM message_status_history WHERE wamid = $1 ORDER BY occurred_at",
        )
        .bind(wamid)
        .fetch_all(&p.pg)
        .await?;
        let mut expect: Vec<&str> = order.to_vec();
        expect.sort_by_key(|s| s.parse::<Status>().unwrap().rank());
        assert_eq!(
            hist.iter().map(|(s,)| s.as_str()).collect::<Vec<_>>(),
            expect,
            "{wamid}"
        );
    }
    let (code,): (Option<String>,) =
        sqlx::query_as("SELECT error_code FROM messages WHERE wamid = 'wamid.OOO2'")
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(
        code.as_deref(),
        Some("131026"),
        "a late failure's error stays visible"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_normalizer_and_sinks_mid_stream_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let mut p = Pipeline::start(Options::default()).await?;
    const MESSAGES: usize = 1000;
    let bodies: Vec<Vec<u8>> = (0..MESSAGES)
        .flat_map(|i| {
            let w = format!("wamid.KILL{i}");
            let c = format!("1650{:07}", i);
            vec![
                meta_status(BUSINESS, &c, &w, "sent", 1_750_000_000 + i as i64),
                meta_status(BUSINESS, &c, &w, "delivered", 1_750_000_001 + i as i64),
                meta_text(
                    BUSINESS,
                    &c,
                    &format!("wamid.KILLIN{i}"),
                    "hi",
                    1_750_000_002 + i as i64,
                ),
            ]
        })
        .collect();
    let total_status = 2 * MESSAGES as i64;
    let total_events = 3 * MESSAGES as i64;

    let chunks: Vec<&[Vec<u8>]> = bodies.chunks(bodies.len() / 6).collect();
    for (round, chunk) in chunks.iter().enumerate() {
        // Send concurrently, as BSPs do.
        let sends = chunk.iter().map(|b| p.post_meta_until_accepted(b));
        for r in futures::future::join_all(sends).await {
            r?;
        }
        match round % 3 {
            0 => {
                p.normalizer.kill9().await;
                p.normalizer.start()?;
            }
            1 => {
                p.pg_sink.kill9().await;
                p.pg_sink.start()?;
            }
            _ => {
                p.ch_sink.kill9().await;
                p.ch_sink.start()?;
            }
        }
    }
    p.wait_for_status_events(total_status, Duration::from_secs(120))
        .await?;
    switchboard_e2e::wait_until(
        "every event in ClickHouse",
        Duration::from_secs(120),
        || async { Ok(p.ch_count("SELECT count() FROM events").await? >= total_events) },
    )
    .await?;
    switchboard_e2e::wait_until(
        "every message row in PostgreSQL",
        Duration::from_secs(60),
        || async { Ok(p.pg_count("SELECT count(*) FROM messages").await? >= 2 * MESSAGES as i64) },
    )
    .await?;
    // Let anything still in flight land before counting exactly.
    p.normalizer.stop().await?;
    p.pg_sink.stop().await?;
    p.ch_sink.stop().await?;

    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        total_status
    );
    assert_eq!(
        p.pg_count(
            "SELECT count(*) FROM messages WHERE direction = 'outbound' AND status = 'delivered'"
        )
        .await?,
        MESSAGES as i64
    );
    assert_eq!(
        p.pg_count("SELECT count(*) FROM messages WHERE direction = 'inbound'")
            .await?,
        MESSAGES as i64
    );
    // Exactly once in ClickHouse without FINAL: no row twice, and the rollups agree.
    assert_eq!(
        p.ch_count("SELECT count() FROM events").await?,
        total_events
    );
    assert_eq!(
        p.ch_count("SELECT uniqExact(event_id) FROM events").await?,
        total_events
    );
    assert_eq!(
        p.ch_count("SELECT sum(events) FROM daily_status_counts")
            .await?,
        total_status
    );
    let ids: HashSet<String> =
        sqlx::query_as::<_, (String,)>("SELECT event_id FROM message_status_history")
            .fetch_all(&p.pg)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
    assert_eq!(ids.len() as i64, total_status);
    Ok(())
}

/// The dedupe store forgets ids past the retention (14 days) and keeps the rest: the
/// normalizer prunes when it starts (then every ten minutes), oldest first by the BRIN
/// index on `first_seen`.
#[tokio::test(flavor = "multi_thread")]
async fn the_dedupe_store_forgets_ids_past_the_retention_only() -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options::default()).await?;
    // 25,000 ids 20 days old (more than one 10,000-row pruning chunk), 500 from today.
    sqlx::query(
        "INSERT INTO dedupe_ids (id, first_seen) \
         SELECT decode(md5('old' || i), 'hex'), now() - interval '20 days' - i * interval '1 second' \
         FROM generate_series(1, 25000) i",
    )
    .execute(&p.pg)
    .await?;
    sqlx::query(
        "INSERT INTO dedupe_ids (id) SELECT decode(md5('new' || i), 'hex') FROM generate_series(1, 500) i",
    )
    .execute(&p.pg)
    .await?;
    p.normalizer.stop().await?;
    p.normalizer.start()?;
    switchboard_e2e::wait_until("the old ids pruned", Duration::from_secs(60), || async {
        Ok(p.pg_count(
            "SELECT count(*) FROM dedupe_ids WHERE first_seen < now() - interval '14 days'",
        )
        .await?
            == 0)
    })
    .await?;
    assert_eq!(p.pg_count("SELECT count(*) FROM dedupe_ids").await?, 500);
    Ok(())
}
