//! One bad record never stops a stream: it lands sanitized, or it is dead-lettered by
//! the stage that cannot handle it, with its reason and source position, and the records
//! after it flow. Real gateway, normalizer, sinks, broker, PostgreSQL and ClickHouse.

use std::time::Duration;

use switchboard_e2e::bsp::{meta_status, meta_text};
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_schemas::{Codec, Event, EVENT_SCHEMA};

const BUSINESS: &str = "15550783881";

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A plain status posted after the poison reaches both stores within seconds.
async fn next_status_lands(p: &Pipeline, wamid: &str) -> anyhow::Result<()> {
    p.post_meta_until_accepted(&meta_status(
        BUSINESS,
        "16505550099",
        wamid,
        "sent",
        now_s(),
    ))
    .await?;
    let pg = format!("SELECT count(*) FROM message_status_history WHERE wamid = '{wamid}'");
    let ch = format!("SELECT count() FROM events WHERE wamid = '{wamid}'");
    wait_until(
        "the next status in both stores",
        Duration::from_secs(30),
        || async {
            Ok(p.pg_count(&pg).await.unwrap_or(0) == 1 && p.ch_count(&ch).await.unwrap_or(0) == 1)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_in_customer_text_lands_sanitized_in_postgres_and_the_next_status_follows(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    // `json!` writes the NUL as the escape `\u0000`, as a BSP would.
    let body = meta_text(
        BUSINESS,
        "16505550001",
        "wamid.NUL",
        "hello\u{0}world",
        now_s(),
    );
    assert!(String::from_utf8_lossy(&body).contains("\\u0000"));
    assert_eq!(p.post_meta(&body).await?.status(), 200);
    next_status_lands(&p, "wamid.AFTER_NUL").await?;

    let (content,): (serde_json::Value,) =
        sqlx::query_as("SELECT content FROM messages WHERE wamid = 'wamid.NUL'")
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(content["body"], "hello\u{FFFD}world", "{content}");
    assert_eq!(
        p.ch_count("SELECT count() FROM events WHERE wamid = 'wamid.NUL'")
            .await?,
        1
    );
    // Nothing was dead-lettered for it, and the raw topic keeps the original bytes.
    assert_eq!(p.topic_records("wa.pg-sink.dlq").await?, 0);
    let raw = p
        .read_topic("wa.webhooks.raw", 1, Duration::from_secs(10))
        .await?;
    let rec: switchboard_schemas::RawWebhook =
        Codec::new(&p.services.registry).decode(&raw[0].1).await?;
    assert_eq!(rec.body, body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_event_times_are_dead_lettered_before_any_store() -> anyhow::Result<()> {
    // The default window: 400 days back, one day ahead of receipt.
    let p = Pipeline::start(Options {
        normalizer_env: vec![
            ("SWITCHBOARD_EVENT_TIME_MAX_AGE", "400days".into()),
            ("SWITCHBOARD_EVENT_TIME_MAX_AHEAD", "1day".into()),
        ],
        ..Default::default()
    })
    .await?;
    let statuses = |items: &[(&str, i64)]| {
        let list: Vec<serde_json::Value> = items
            .iter()
            .map(|(w, ts)| serde_json::json!({"id": w, "status": "delivered", "timestamp": ts.to_string(), "recipient_id": "16505550001"}))
            .collect();
        serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": BUSINESS, "phone_number_id": "pnid"},
            "statuses": list}}]}]})
        .to_string()
        .into_bytes()
    };
    let body = statuses(&[
        ("wamid.T1970", 1),
        ("wamid.T5138", 99_999_999_999),
        ("wamid.TOLD", now_s() - 500 * 86_400),
        ("wamid.TNOW", now_s()),
    ]);
    assert_eq!(p.post_meta(&body).await?.status(), 200);
    next_status_lands(&p, "wamid.AFTER_TIMES").await?;

    let dl = p
        .dead_letters("wa.webhooks.dlq", 1, Duration::from_secs(30))
        .await?;
    assert_eq!(dl.len(), 1, "{dl:?}");
    let d = &dl[0];
    assert_eq!(
        (d.reason.as_str(), d.stage.as_str()),
        ("bad_timestamp", "normalizer")
    );
    assert_eq!(d.source_topic, format!("{}wa.webhooks.raw", p.topic_prefix));
    assert!(d.source_offset >= 0 && d.source_timestamp_ms.is_some());
    for w in ["wamid.T1970", "wamid.T5138", "wamid.TOLD"] {
        assert!(d.detail.contains(w), "{w} in {}", d.detail);
    }
    // Only the sane status and the next one reached the stores; no partition was made
    // for 1970 or 5138.
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        2
    );
    assert_eq!(p.ch_count("SELECT count() FROM events").await?, 2);
    assert_eq!(
        p.pg_count("SELECT count(*) FROM pg_class WHERE relname IN ('message_status_history_y1970m01', 'message_status_history_y5138m11')")
            .await?,
        0
    );
    assert_eq!(
        p.ch_count("SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND (partition = '197001' OR partition LIKE '5%')")
            .await?,
        0
    );
    Ok(())
}

/// A wamid PostgreSQL cannot index (a btree row is at most 2704 bytes; random hex does
/// not compress): only PostgreSQL refuses it.
fn unindexable_wamid() -> String {
    let mut s = String::from("wamid.LONG");
    while s.len() < 12_000 {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_only_postgres_refuses_is_dead_lettered_while_the_pg_sink_is_killed_midway(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options::default()).await?;
    let long = unindexable_wamid();
    let ts = now_s();
    // 150 good statuses with the poison among them, so it shares a batch with many.
    for i in 0..150 {
        if i == 60 {
            let body = meta_status(BUSINESS, "16505550001", &long, "sent", ts);
            assert_eq!(p.post_meta(&body).await?.status(), 200);
        }
        let body = meta_status(BUSINESS, "16505550002", &format!("wamid.G{i}"), "sent", ts);
        assert_eq!(p.post_meta(&body).await?.status(), 200);
        if i == 75 {
            p.pg_sink.kill9().await;
        }
    }
    p.pg_sink.start()?;
    next_status_lands(&p, "wamid.AFTER_LONG").await?;
    p.wait_for_status_events(151, Duration::from_secs(60))
        .await?;

    // Every good status exactly once in PostgreSQL, the long one in ClickHouse too.
    assert_eq!(
        p.pg_count(
            "SELECT count(DISTINCT wamid) FROM message_status_history WHERE wamid LIKE 'wamid.G%'"
        )
        .await?,
        150
    );
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        151
    );
    assert_eq!(
        p.ch_count("SELECT count() FROM events WHERE length(wamid) > 10000")
            .await?,
        1
    );
    let dl = p
        .dead_letters("wa.pg-sink.dlq", 1, Duration::from_secs(30))
        .await?;
    assert!(!dl.is_empty());
    // A crash after the dead letter and before the commit may write it again: the
    // same source position, never another record.
    let positions: std::collections::BTreeSet<(i32, i64)> = dl
        .iter()
        .map(|d| (d.source_partition, d.source_offset))
        .collect();
    assert_eq!(positions.len(), 1, "{dl:?}");
    let d = &dl[0];
    assert_eq!(
        (d.stage.as_str(), d.reason.as_str()),
        ("pg-sink", "pg_too_large")
    );
    assert_eq!(d.source_topic, format!("{}wa.events", p.topic_prefix));
    assert!(d.detail.contains("index row"), "{}", d.detail);
    let ev: Event = Codec::new(&p.services.registry).decode(&d.payload).await?;
    assert_eq!(ev.wamid, long);
    assert!(p.pg_sink.metric("switchboard_dead_letters_total").await >= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn records_only_clickhouse_refuses_and_undecodable_ones_are_dead_lettered_per_sink(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    // A foreign (or older) producer wrote an event dated 2200 and bytes that are no
    // record at all straight onto wa.events.
    let codec = Codec::new(&p.services.registry);
    let topic = format!("{}wa.events", p.topic_prefix);
    let future = Event {
        event_id: "evt_2200".into(),
        event_type: "message.status".into(),
        bsp: "meta".into(),
        business_number: format!("+{BUSINESS}"),
        customer_id: "+16505550001".into(),
        wamid: "wamid.Y2200".into(),
        status: Some("sent".into()),
        occurred_at_ms: 7_258_118_400_000, // 2200-01-01
        received_at_ms: now_s() * 1000,
        request_id: "r".into(),
        ..Event::default()
    };
    let payload = codec.encode(&topic, EVENT_SCHEMA, &future).await?;
    p.produce_raw("wa.events", &future.conversation_key(), &payload)
        .await?;
    p.produce_raw("wa.events", "x", b"not an avro record")
        .await?;
    next_status_lands(&p, "wamid.AFTER_FOREIGN").await?;

    // The 2200 event's conversation may sit on another partition than the next status's,
    // which the pg-sink handles on its own: wait for it rather than assume it came first.
    wait_until(
        "PostgreSQL to hold 2200",
        Duration::from_secs(30),
        || async {
            Ok(p.pg_count(
                "SELECT count(*) FROM message_status_history WHERE wamid = 'wamid.Y2200'",
            )
            .await?
                == 1)
        },
    )
    .await?;
    assert_eq!(
        p.ch_count("SELECT count() FROM events WHERE wamid = 'wamid.Y2200'")
            .await?,
        0
    );
    let ch = p
        .dead_letters("wa.ch-sink.dlq", 2, Duration::from_secs(30))
        .await?;
    let mut reasons: Vec<&str> = ch.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, vec!["ch_out_of_range", "undecodable"], "{ch:?}");
    assert!(ch.iter().all(|d| d.stage == "ch-sink"));
    let pg = p
        .dead_letters("wa.pg-sink.dlq", 1, Duration::from_secs(30))
        .await?;
    assert_eq!(pg.len(), 1);
    assert_eq!(pg[0].reason, "undecodable");
    assert_eq!(pg[0].payload, b"not an avro record");
    Ok(())
}

/// A Meta webhook of `n` statuses (about 200 bytes each).
fn big_meta_webhook(n: usize, ts: i64) -> Vec<u8> {
    let statuses: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"id": format!("wamid.BIG{i:06}"), "status": "delivered", "timestamp": ts.to_string(), "recipient_id": format!("1650555{:04}", i % 10_000),
            "conversation": {"id": format!("conv{i}"), "origin": {"type": "service"}}, "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}}))
        .collect();
    serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS, "phone_number_id": "pnid"},
        "statuses": statuses}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_3_mb_webhook_lands_completely_and_a_5_mib_one_is_413_with_nothing_written(
) -> anyhow::Result<()> {
    // The gateway's default body limit (4 MiB) and message limit.
    let p = Pipeline::start(Options {
        gateway_env: vec![("SWITCHBOARD_MAX_BODY_BYTES", (4 << 20).to_string())],
        ..Default::default()
    })
    .await?;
    let mut n = 14_000;
    let body = loop {
        let b = big_meta_webhook(n, now_s());
        if b.len() >= 3_000_000 {
            break b;
        }
        n += 1_000;
    };
    let r = p.post_meta(&body).await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    let want = n as i64;
    wait_until(
        "every status of the big webhook",
        Duration::from_secs(120),
        || async {
            Ok(p.pg_count("SELECT count(*) FROM message_status_history")
                .await
                .unwrap_or(0)
                == want
                && p.ch_count("SELECT count() FROM events").await.unwrap_or(0) == want)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    assert_eq!(p.pg_count("SELECT count(*) FROM messages").await?, want);

    let huge = big_meta_webhook(n * 2, now_s());
    assert!(huge.len() > 5 << 20, "{}", huge.len());
    let r = p.post_meta(&huge).await?;
    assert_eq!(r.status(), 413);
    let err: serde_json::Value = r.json().await?;
    assert_eq!(err["error"]["code"], "body_too_large", "{err}");
    assert_eq!(p.topic_records("wa.webhooks.raw").await?, 1);
    Ok(())
}
