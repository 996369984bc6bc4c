//! Replay, backfill and redrive through the operator CLI (`switchboard`), as real
//! processes against the real broker (and the older Tansu), PostgreSQL and ClickHouse.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use switchboard_e2e::bsp::{meta_status, meta_text};
use switchboard_e2e::services::PrivateBroker;
use switchboard_e2e::{wait_until, Options, Pipeline};

const BUSINESS: &str = "15550783881";

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json_out(stdout: &str) -> anyhow::Result<Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{') || l.starts_with('['))
        .ok_or_else(|| anyhow::anyhow!("no JSON in {stdout:?}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Run the CLI and insist on success.
async fn cli_ok(p: &Pipeline, args: &[&str], extra: &[(&str, &str)]) -> anyhow::Result<String> {
    let (code, out, err) = p.cli_with(args, extra).await?;
    anyhow::ensure!(
        code == 0,
        "switchboard {args:?} exited {code}\n{out}\n{err}"
    );
    Ok(out)
}

/// Records with timestamps `t0 + i s` in each of 3 partitions, then a replay of the
/// middle of the range copies exactly those, on the given broker.
async fn middle_of_the_range(
    p: &Pipeline,
    broker: &str,
    expect_method: &str,
) -> anyhow::Result<()> {
    let kafka = switchboard_runtime::config::KafkaConfig {
        kafka_brokers: broker.to_string(),
        topic_prefix: p.topic_prefix.clone(),
        ..Default::default()
    };
    let topic = format!("{}wa.events", p.topic_prefix);
    switchboard_runtime::kafka::ensure_topics(
        &kafka,
        &[switchboard_runtime::kafka::TopicSpec {
            name: topic.clone(),
            partitions: 3,
            compacted: false,
        }],
    )
    .await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("broker.address.family", "v4")
        .create()?;
    let t0 = (now_s() - 3600) * 1000;
    for part in 0..3 {
        let sends = (0..200).map(|i| {
            let key = format!("k{part}-{i}");
            let value = format!("v{part}-{i}");
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .partition(part)
                            .key(&key)
                            .payload(&value)
                            .timestamp(t0 + i * 1000)
                            .headers(OwnedHeaders::new().insert(Header {
                                key: "h",
                                value: Some(value.as_bytes()),
                            })),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        // In order per partition: one at a time.
        for s in sends {
            s.await?;
        }
    }
    let env = [("SWITCHBOARD_KAFKA_BROKERS", broker)];
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let (from, to) = (rfc(t0 + 50_000), rfc(t0 + 150_000));
    let plan = json_out(
        &cli_ok(
            p,
            &[
                "--json",
                "replay",
                "start",
                "--source",
                "wa.events",
                "--from",
                &from,
                "--to",
                &to,
                "--target",
                "topic",
                "--to-topic",
                "wa.events.copy",
                "--dry-run",
            ],
            &env,
        )
        .await?,
    )?;
    for part in plan["plan"]["partitions"].as_array().unwrap() {
        assert_eq!(
            (part["start"].as_i64(), part["end"].as_i64()),
            (Some(50), Some(150)),
            "{plan}"
        );
        assert_eq!(part["method"], expect_method, "{plan}");
    }
    // A time after every record: the end offset, never 0.
    let late = rfc(t0 + 500_000);
    let plan_late = json_out(
        &cli_ok(
            p,
            &[
                "--json",
                "replay",
                "start",
                "--source",
                "wa.events",
                "--from",
                &late,
                "--target",
                "topic",
                "--to-topic",
                "wa.events.copy",
                "--dry-run",
            ],
            &env,
        )
        .await?,
    )?;
    for part in plan_late["plan"]["partitions"].as_array().unwrap() {
        assert_eq!(
            (part["start"].as_i64(), part["end"].as_i64()),
            (Some(200), Some(200)),
            "{plan_late}"
        );
    }
    // Run it.
    let job = json_out(
        &cli_ok(
            p,
            &[
                "--json",
                "replay",
                "start",
                "--source",
                "wa.events",
                "--from",
                &from,
                "--to",
                &to,
                "--target",
                "topic",
                "--to-topic",
                "wa.events.copy",
            ],
            &env,
        )
        .await?,
    )?;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["records_written"], 300, "{job}");
    // The copy holds exactly the records of the range, keys, headers and times kept.
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("broker.address.family", "v4")
        .set("group.id", format!("{}-copy-reader", p.id))
        .set("auto.offset.reset", "earliest")
        .create()?;
    c.subscribe(&[&format!("{}wa.events.copy", p.topic_prefix)])?;
    let mut seen: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 300 {
        let m = tokio::time::timeout_at(deadline, c.recv()).await??;
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let h = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "h")
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
            .unwrap_or_default();
        assert!(
            seen.insert(key, (m.timestamp().to_millis().unwrap_or(0), h))
                .is_none(),
            "a record copied twice"
        );
    }
    for part in 0..3 {
        for i in 50..150 {
            let (ts, h) = &seen[&format!("k{part}-{i}")];
            assert_eq!(*ts, t0 + i * 1000);
            assert_eq!(h, &format!("v{part}-{i}"));
        }
    }
    // Nothing else arrives.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), c.recv())
            .await
            .is_err(),
        "more than the range was copied"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_time_range_in_the_middle_of_a_topic_replays_exactly_its_records_on_nisshi_and_on_tansu(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    let nisshi = PrivateBroker::start().await?;
    middle_of_the_range(&p, &nisshi.addr(), "broker").await?;
    // The older Tansu answers offsets_for_times with 0: the plan notices and searches.
    let tansu = PrivateBroker::start_tansu().await?;
    middle_of_the_range(&p, &tansu.addr(), "search").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_replay_requests_get_clear_errors_and_change_nothing() -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    for (args, want) in [
        (
            vec![
                "replay", "start", "--source", "wa.nope", "--all", "--target", "postgres",
            ],
            "unknown source topic",
        ),
        (
            vec![
                "replay",
                "start",
                "--source",
                "wa.webhooks.raw",
                "--all",
                "--target",
                "postgres",
            ],
            "does not take records of wa.webhooks.raw",
        ),
        (
            vec![
                "replay",
                "start",
                "--source",
                "wa.events",
                "--from",
                "yesterday",
                "--target",
                "postgres",
            ],
            "bad time",
        ),
        (
            vec![
                "replay",
                "start",
                "--source",
                "wa.events",
                "--from",
                "-1h",
                "--to",
                "-2h",
                "--target",
                "postgres",
            ],
            "empty range",
        ),
        (
            vec![
                "replay",
                "start",
                "--source",
                "wa.events",
                "--target",
                "postgres",
            ],
            "give one range",
        ),
        (
            vec![
                "replay",
                "start",
                "--source",
                "wa.events",
                "--all",
                "--target",
                "fanout",
            ],
            "needs endpoint_id or tenant_id",
        ),
        (
            vec![
                "replay",
                "start",
                "--source",
                "wa.events",
                "--all",
                "--partitions",
                "99",
                "--target",
                "postgres",
            ],
            "has no partition 99",
        ),
        (vec!["dlq", "list", "--stage", "nope"], "unknown stage"),
    ] {
        let (code, out, err) = p.cli(&args).await?;
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    // Every subcommand has --help; the CLI has --version.
    for args in [
        vec!["--help"],
        vec!["replay", "start", "--help"],
        vec!["dlq", "redrive", "--help"],
        vec!["create-topics", "--help"],
        vec!["--version"],
    ] {
        let (code, out, _) = p.cli(&args).await?;
        assert_eq!(code, 0, "{args:?}");
        assert!(
            out.contains("switchboard") || out.contains("Usage"),
            "{args:?}: {out}"
        );
    }
    let (_, out, _) = p.cli(&["--json", "replay", "list"]).await?;
    assert_eq!(json_out(&out)?, json!([]), "no job was created");
    Ok(())
}

/// Counts per event type, status and day: what an analyst would compare.
async fn per_type_and_day(p: &Pipeline, db: &str) -> anyhow::Result<String> {
    switchboard_e2e::ch_query(
        &p.http,
        &p.services.clickhouse_url,
        db,
        "SELECT event_type, status, toDate(occurred_at) AS d, count() FROM events GROUP BY event_type, status, d ORDER BY event_type, status, d FORMAT TSV",
    )
    .await
}

async fn rollup(p: &Pipeline, db: &str) -> anyhow::Result<String> {
    switchboard_e2e::ch_query(
        &p.http,
        &p.services.clickhouse_url,
        db,
        "SELECT day, business_number, sum(sent), sum(delivered), sum(read) FROM daily_summary GROUP BY day, business_number ORDER BY day, business_number FORMAT TSV",
    )
    .await
}

fn fresh_db() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_of_events_replayed_into_an_empty_clickhouse_database_matches_live_again_and_after_kill9(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    // 400 messages over the last day, three statuses each, and 100 inbound texts.
    let now = now_s();
    let mut n = 0;
    for m in 0..400 {
        let c = format!("1650555{:04}", m % 50);
        let at = now - 86_000 + m * 200;
        for (i, s) in ["sent", "delivered", "read"].iter().enumerate() {
            p.post_meta_until_accepted(&meta_status(
                BUSINESS,
                &c,
                &format!("wamid.D{m}"),
                s,
                at + i as i64 * 30,
            ))
            .await?;
            n += 1;
        }
        if m % 4 == 0 {
            p.post_meta_until_accepted(&meta_text(BUSINESS, &c, &format!("wamid.IN{m}"), "hi", at))
                .await?;
            n += 1;
        }
    }
    wait_until(
        "every event in the live ClickHouse",
        Duration::from_secs(60),
        || async { Ok(p.ch_count("SELECT count() FROM events").await.unwrap_or(0) == n) },
    )
    .await?;
    // A view's rows become visible a moment after the insert's own (18.16): wait for the
    // rollup to hold every status too (400 messages × sent, delivered, read).
    wait_until(
        "the live rollup complete",
        Duration::from_secs(30),
        || async {
            Ok(
                p.ch_count("SELECT sum(sent) + sum(delivered) + sum(read) FROM daily_summary")
                    .await
                    .unwrap_or(0)
                    == 1200,
            )
        },
    )
    .await?;
    let live = per_type_and_day(&p, &p.ch_db).await?;
    let live_rollup = rollup(&p, &p.ch_db).await?;
    assert!(live.lines().count() >= 4, "{live}");

    // Backfill a new database from the last day of wa.events.
    let db = fresh_db();
    let out = cli_ok(
        &p,
        &[
            "replay",
            "start",
            "--source",
            "wa.events",
            "--from",
            "-1d",
            "--target",
            "clickhouse",
            "--clickhouse-database",
            &db,
        ],
        &[],
    )
    .await?;
    assert!(out.contains("(done)"), "{out}");
    assert_eq!(per_type_and_day(&p, &db).await?, live);
    assert_eq!(rollup(&p, &db).await?, live_rollup);
    // The same replay again changes nothing.
    cli_ok(
        &p,
        &[
            "replay",
            "start",
            "--source",
            "wa.events",
            "--from",
            "-1d",
            "--target",
            "clickhouse",
            "--clickhouse-database",
            &db,
        ],
        &[],
    )
    .await?;
    assert_eq!(per_type_and_day(&p, &db).await?, live);
    assert_eq!(rollup(&p, &db).await?, live_rollup);

    // kill -9 midway (paced so that there is a midway), then resume.
    let db2 = fresh_db();
    let mut child = p
        .cli_command(
            &[
                "--json",
                "replay",
                "start",
                "--source",
                "wa.events",
                "--from",
                "-1d",
                "--target",
                "clickhouse",
                "--clickhouse-database",
                &db2,
                "--rate",
                "300",
            ],
            &[],
        )
        .spawn()?;
    let halfway = || async {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT id, records_read FROM replay_jobs WHERE spec->'target'->>'database' = $1",
        )
        .bind(&db2)
        .fetch_optional(&p.pg)
        .await
        .unwrap_or(None);
        row.filter(|(_, read)| *read > 200 && *read < n - 200)
            .map(|(id, _)| id)
    };
    wait_until(
        "the paced replay halfway",
        Duration::from_secs(60),
        || async { Ok(halfway().await.is_some()) },
    )
    .await?;
    let id = halfway()
        .await
        .ok_or_else(|| anyhow::anyhow!("lost the halfway point"))?;
    child.kill().await?;
    let partial = switchboard_e2e::ch_query(
        &p.http,
        &p.services.clickhouse_url,
        &db2,
        "SELECT count() FROM events",
    )
    .await?;
    assert!(
        partial.trim().parse::<i64>()? < n,
        "killed before the end: {partial}"
    );
    let out = cli_ok(&p, &["replay", "resume", &id], &[]).await?;
    assert!(out.contains("(done)"), "{out}");
    assert_eq!(per_type_and_day(&p, &db2).await?, live);
    assert_eq!(rollup(&p, &db2).await?, live_rollup);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_webhooks_dead_lettered_for_their_times_land_after_a_config_change_and_a_redrive(
) -> anyhow::Result<()> {
    // The default window: statuses 500 days old are dead-lettered.
    let p = Pipeline::start(Options {
        normalizer_env: vec![("SWITCHBOARD_EVENT_TIME_MAX_AGE", "400days".into())],
        ..Default::default()
    })
    .await?;
    let old = now_s() - 500 * 86_400;
    for i in 0..5 {
        p.post_meta_until_accepted(&meta_status(
            BUSINESS,
            "16505550001",
            &format!("wamid.OLD{i}"),
            "delivered",
            old,
        ))
        .await?;
    }
    // One more, still failing after the fix: a status no parser knows.
    p.post_meta_until_accepted(&meta_status(
        BUSINESS,
        "16505550001",
        "wamid.WEIRD",
        "teleported",
        now_s(),
    ))
    .await?;
    let letters = p
        .dead_letters("wa.webhooks.dlq", 6, Duration::from_secs(30))
        .await?;
    assert_eq!(letters.len(), 6);
    let out = cli_ok(&p, &["--json", "dlq", "list", "--stage", "normalizer"], &[]).await?;
    let listed = json_out(&out)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(6), "{listed}");
    let out = cli_ok(
        &p,
        &[
            "dlq",
            "list",
            "--stage",
            "normalizer",
            "--reason",
            "bad_timestamp",
        ],
        &[],
    )
    .await?;
    assert!(
        out.contains("bad_timestamp") && out.contains("       5"),
        "{out}"
    );
    let first = &listed[0];
    let pos = format!("{}:{}", first["partition"], first["offset"]);
    let out = cli_ok(&p, &["dlq", "show", "normalizer", &pos], &[]).await?;
    assert!(
        out.contains("raw webhook from meta") && out.contains("wamid."),
        "{out}"
    );

    // The fix: a wider window for the redrive's normalizer.
    let fix = [("SWITCHBOARD_EVENT_TIME_MAX_AGE", "3650days")];
    let dry = cli_ok(
        &p,
        &[
            "dlq",
            "redrive",
            "--stage",
            "normalizer",
            "--reason",
            "bad_timestamp",
            "--dry-run",
        ],
        &fix,
    )
    .await?;
    assert!(
        dry.contains("5 letters selected") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        0,
        "a dry run changes nothing"
    );
    let out = cli_ok(
        &p,
        &[
            "dlq",
            "redrive",
            "--stage",
            "normalizer",
            "--reason",
            "bad_timestamp",
        ],
        &fix,
    )
    .await?;
    assert!(
        out.contains(
            "5 letters before, 5 handed back to normalizer, 5 now marked redriven; 0 new letters"
        ),
        "{out}"
    );
    p.wait_for_status_events(5, Duration::from_secs(30)).await?;
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history WHERE wamid LIKE 'wamid.OLD%'")
            .await?,
        5
    );
    let out = cli_ok(&p, &["dlq", "list", "--stage", "normalizer"], &[]).await?;
    assert_eq!(out.matches("[redriven]").count(), 5, "{out}");
    // Purge the one nothing fixes: hidden from the list, kept on the topic.
    let out = cli_ok(
        &p,
        &[
            "dlq",
            "purge",
            "--stage",
            "normalizer",
            "--reason",
            "unknown_status",
        ],
        &[],
    )
    .await?;
    assert!(out.contains("1 letters purged"), "{out}");
    let listed =
        json_out(&cli_ok(&p, &["--json", "dlq", "list", "--stage", "normalizer"], &[]).await?)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(5));
    // A second redrive of the same letters changes nothing (dedupe).
    cli_ok(
        &p,
        &[
            "dlq",
            "redrive",
            "--stage",
            "normalizer",
            "--reason",
            "bad_timestamp",
        ],
        &fix,
    )
    .await?;
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        5
    );
    assert_eq!(p.ch_count("SELECT count() FROM events").await?, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redriven_sends_never_reach_the_bsp_twice() -> anyhow::Result<()> {
    use switchboard_loadtest::bsp_sim::Behavior;
    let mut p = Pipeline::start(Options {
        send_path: true,
        router_env: vec![("SWITCHBOARD_SEND_TIMEOUT", "2s".into())],
        ..Default::default()
    })
    .await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 1000, None)
        .await?;
    // Slow BSP answers keep calls in flight when the router is killed: those end
    // `outcome_unknown` in wa.send.dlq (they may have reached the BSP).
    p.sim().set_behavior(Behavior {
        latency_ms: 1500,
        no_callbacks: true,
        ..Behavior::default()
    });
    let mut ids = Vec::new();
    for i in 0..40 {
        let (s, v) = p
            .send_text(&t, "+15550000001", "+16505550002", &format!("r-{i}"))
            .await?;
        assert_eq!(s, 202, "{v}");
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    wait_until("calls in flight", Duration::from_secs(30), || async {
        Ok(
            p.pg_count("SELECT count(*) FROM outbound_messages WHERE state = 'sending'")
                .await?
                >= 5,
        )
    })
    .await?;
    p.send.as_mut().unwrap().router.kill9().await;
    p.send.as_mut().unwrap().router.start()?;
    let states = p.wait_final(&ids, Duration::from_secs(90)).await?;
    let unknown = states.values().filter(|s| *s == "unknown").count();
    assert!(unknown >= 1, "{states:?}");
    let calls_before: HashMap<String, usize> = p
        .calls_by_text()
        .into_iter()
        .map(|(k, v)| (k, v.len()))
        .collect();
    let letters = p
        .dead_letters("wa.send.dlq", unknown, Duration::from_secs(30))
        .await?;
    assert!(
        letters.iter().all(|l| l.reason == "outcome_unknown"),
        "{letters:?}"
    );

    // Redrive every send dead letter, and replay every send request too.
    let out = cli_ok(&p, &["dlq", "redrive", "--stage", "router"], &[]).await?;
    assert!(
        out.contains(&format!("{unknown} handed back to router")),
        "{out}"
    );
    cli_ok(
        &p,
        &[
            "replay",
            "start",
            "--source",
            "wa.send.requests",
            "--all",
            "--target",
            "router",
        ],
        &[],
    )
    .await?;
    p.wait_router_caught_up(Duration::from_secs(60)).await?;
    let calls_after: HashMap<String, usize> = p
        .calls_by_text()
        .into_iter()
        .map(|(k, v)| (k, v.len()))
        .collect();
    assert_eq!(
        calls_after, calls_before,
        "a redriven or replayed send reached the BSP again"
    );
    assert!(calls_after.values().all(|n| *n <= 1));
    let after = p.wait_final(&ids, Duration::from_secs(10)).await?;
    assert_eq!(after, states, "no send changed state");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn re_driving_to_one_endpoint_gives_it_every_event_again_with_the_same_ids_and_others_nothing(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        fanout: true,
        ..Default::default()
    })
    .await?;
    let number = "+15550783881";
    let t = p.tenant("redrive").await?;
    p.number(&t, number, "meta", "pnid-+15550783881", 1000, None)
        .await?;
    let (a, _) = p.endpoint(&t, "a", json!({})).await?;
    p.endpoint(&t, "b", json!({})).await?;
    let n = p.post_statuses(number, 5, 6).await? as u64;
    p.wait_delivered(&["a", "b"], n, Duration::from_secs(60))
        .await?;
    let b_before = p.endpoint_sim().stats_of("b");

    let out = cli_ok(
        &p,
        &[
            "replay",
            "start",
            "--source",
            "wa.events",
            "--from",
            "-1h",
            "--target",
            "fanout",
            "--endpoint",
            &a,
            "--rate",
            "200",
        ],
        &[],
    )
    .await?;
    assert!(out.contains(&format!("{n} written")), "{out}");
    wait_until(
        "every event again at a",
        Duration::from_secs(60),
        || async { Ok(p.endpoint_sim().stats_of("a").duplicates_ok >= n) },
    )
    .await?;
    let a_stats = p.endpoint_sim().stats_of("a");
    assert_eq!(a_stats.unique_ok, n, "no new webhook-id: {a_stats:?}");
    assert_eq!(
        a_stats.duplicates_ok, n,
        "each event exactly once more: {a_stats:?}"
    );
    assert_eq!(a_stats.bad_signatures, 0);
    assert_eq!(
        p.endpoint_sim().stats_of("b").requests,
        b_before.requests,
        "b got nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_starts_shows_and_cancels_replays_that_a_replayer_runs() -> anyhow::Result<()>
{
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let admin = p.send_path().admin_key.clone();
    for m in 0..60 {
        p.post_meta_until_accepted(&meta_status(
            BUSINESS,
            "16505550001",
            &format!("wamid.A{m}"),
            "sent",
            now_s(),
        ))
        .await?;
    }
    p.wait_for_status_events(60, Duration::from_secs(30))
        .await?;
    let replayer = switchboard_e2e::Proc::spawn(
        "replayer",
        p.operator_env()
            .into_iter()
            .chain([(
                "SWITCHBOARD_OPS_ADDR".to_string(),
                format!("127.0.0.1:{}", switchboard_e2e::free_port()),
            )])
            .collect(),
        &p.log_dir.0,
    )?;
    p.wait_ready(&replayer).await?;
    let db = fresh_db();
    let body = json!({"source": "wa.events", "from": "-1h", "target": {"kind": "clickhouse", "database": db}});
    let (s, v) = p.call(reqwest::Method::POST, "/admin/replays", &admin, Some(json!({"dry_run": true, "source": "wa.events", "from": "-1h", "target": {"kind": "clickhouse", "database": db}})), &[]).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"], 60, "{v}");
    let (s, v) = p
        .call(
            reqwest::Method::POST,
            "/admin/replays",
            &admin,
            Some(body),
            &[],
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_string();
    wait_until(
        "the replayer to finish the job",
        Duration::from_secs(60),
        || async {
            let (_, v) = p
                .call(
                    reqwest::Method::GET,
                    &format!("/admin/replays/{id}"),
                    &admin,
                    None,
                    &[],
                )
                .await?;
            Ok(v["job"]["state"] == "done")
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", replayer.log_tail()))?;
    let (_, v) = p
        .call(
            reqwest::Method::GET,
            &format!("/admin/replays/{id}"),
            &admin,
            None,
            &[],
        )
        .await?;
    assert_eq!(v["progress"]["read"], 60, "{v}");
    assert_eq!(v["job"]["records_written"], 60, "{v}");
    let copied = switchboard_e2e::ch_query(
        &p.http,
        &p.services.clickhouse_url,
        &db,
        "SELECT count() FROM events",
    )
    .await?;
    assert_eq!(copied.trim(), "60");

    // A slow one, cancelled midway, stops and says so.
    let (s, v) = p
        .call(
            reqwest::Method::POST,
            "/admin/replays",
            &admin,
            Some(json!({"source": "wa.events", "all": true, "rate_per_sec": 10, "target": {"kind": "clickhouse", "database": fresh_db()}})),
            &[],
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let slow = v["job"]["id"].as_str().unwrap().to_string();
    wait_until("the slow job running", Duration::from_secs(30), || async {
        let (_, v) = p
            .call(
                reqwest::Method::GET,
                &format!("/admin/replays/{slow}"),
                &admin,
                None,
                &[],
            )
            .await?;
        Ok(v["progress"]["read"].as_i64().unwrap_or(0) > 0)
    })
    .await?;
    let (s, _) = p
        .call(
            reqwest::Method::DELETE,
            &format!("/admin/replays/{slow}"),
            &admin,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200);
    wait_until(
        "the slow job cancelled",
        Duration::from_secs(30),
        || async {
            let (_, v) = p
                .call(
                    reqwest::Method::GET,
                    &format!("/admin/replays/{slow}"),
                    &admin,
                    None,
                    &[],
                )
                .await?;
            Ok(v["job"]["state"] == "cancelled"
                && v["progress"]["remaining"].as_i64().unwrap_or(0) > 0)
        },
    )
    .await?;

    // Bad requests: a clear 4xx, nothing created.
    let (_, before) = p
        .call(reqwest::Method::GET, "/admin/replays", &admin, None, &[])
        .await?;
    for (body, status, code) in [
        (
            json!({"source": "wa.nope", "all": true, "target": {"kind": "postgres"}}),
            400,
            "invalid_replay",
        ),
        (
            json!({"source": "wa.events", "all": true, "target": {"kind": "postgres"}, "surprise": 1}),
            400,
            "malformed_body",
        ),
        (
            json!({"source": "wa.events", "from": "-1h"}),
            400,
            "invalid_replay",
        ),
    ] {
        let (s, v) = p
            .call(
                reqwest::Method::POST,
                "/admin/replays",
                &admin,
                Some(body.clone()),
                &[],
            )
            .await?;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    let (s, _) = p
        .call(
            reqwest::Method::POST,
            "/admin/replays",
            "wrong",
            Some(json!({})),
            &[],
        )
        .await?;
    assert_eq!(s, 401);
    let (_, after) = p
        .call(reqwest::Method::GET, "/admin/replays", &admin, None, &[])
        .await?;
    assert_eq!(
        before["replays"].as_array().map(Vec::len),
        after["replays"].as_array().map(Vec::len)
    );
    let (s, v) = p
        .call(
            reqwest::Method::GET,
            "/admin/dead-letters?stage=normalizer",
            &admin,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["letters"], json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_deliveries_redriven_after_the_receiver_is_back_reach_it() -> anyhow::Result<()> {
    use switchboard_loadtest::endpoint_sim::Behavior;
    let p = Pipeline::start(Options {
        send_path: true,
        fanout: true,
        fanout_env: vec![("SWITCHBOARD_BREAKER_FAILURES", "1000".into())],
        ..Default::default()
    })
    .await?;
    let number = "+15550783882";
    let t = p.tenant("exhausted").await?;
    p.number(&t, number, "meta", "pnid-+15550783882", 1000, None)
        .await?;
    p.endpoint(&t, "down", json!({})).await?;
    p.endpoint(&t, "up", json!({})).await?;
    // Both get a probe, so the fan-out has the endpoints.
    p.post_meta_until_accepted(&meta_status(
        number,
        "+919000000000",
        "wamid.probe",
        "sent",
        now_s(),
    ))
    .await?;
    p.wait_delivered(&["down", "up"], 1, Duration::from_secs(30))
        .await?;
    p.endpoint_sim().set(
        "down",
        None,
        Some(Behavior {
            down: true,
            ..Default::default()
        }),
    )?;
    p.endpoint_sim().clear("up");
    let n = p.post_statuses(number, 4, 1).await?;
    p.wait_delivered(&["up"], n as u64, Duration::from_secs(30))
        .await?;
    // The test schedule (1 s, 2 s, 3 s) runs out: every task in wa.deliveries.dlq.
    let tasks = p
        .read_topic("wa.deliveries.dlq", n, Duration::from_secs(60))
        .await?;
    assert_eq!(tasks.len(), n, "{}", p.logs());
    let listed =
        json_out(&cli_ok(&p, &["--json", "dlq", "list", "--stage", "deliveries"], &[]).await?)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(n), "{listed}");
    assert!(listed[0]["reason"] == "exhausted", "{listed}");

    p.endpoint_sim()
        .set("down", None, Some(Behavior::default()))?;
    let up_before = p.endpoint_sim().stats_of("up").requests;
    let out = cli_ok(&p, &["dlq", "redrive", "--stage", "deliveries"], &[]).await?;
    assert!(
        out.contains(&format!("{n} handed back to deliveries")),
        "{out}"
    );
    // The probe plus every redriven event.
    wait_until(
        "the redriven deliveries",
        Duration::from_secs(30),
        || async { Ok(p.endpoint_sim().stats_of("down").unique_ok > n as u64) },
    )
    .await?;
    assert_eq!(
        p.endpoint_sim().stats_of("up").requests,
        up_before,
        "a redrive of one endpoint's tasks reaches no other"
    );
    Ok(())
}

/// `create-topics` leaves existing topics alone and says where they differ from what it
/// would create (partitions, settings), with exit code 3.
#[tokio::test(flavor = "multi_thread")]
async fn create_topics_reports_existing_topics_that_differ() -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    let (code, _, err) = p.cli(&["create-topics", "--partitions", "6"]).await?;
    assert_eq!((code, err.contains("differs")), (0, false), "{err}");
    let (code, out, err) = p
        .cli_with(
            &["create-topics", "--partitions", "3"],
            &[(
                "SWITCHBOARD_KAFKA_TOPIC_CONFIG",
                "wa.events:retention.ms=86400000",
            )],
        )
        .await?;
    assert_eq!(code, 3, "{out}{err}");
    let events = format!("{}wa.events", p.topic_prefix);
    assert!(
        err.contains(&format!(
            "{events}: partitions is 6, Switchboard creates it with 3"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{events}: retention.ms is")), "{err}");
    assert!(
        !err.contains("wa.webhooks.raw: retention.ms"),
        "a topic's setting applies to that topic only: {err}"
    );
    // Nothing was altered.
    let (code, _, err) = p.cli(&["create-topics", "--partitions", "6"]).await?;
    assert_eq!((code, err.contains("differs")), (0, false), "{err}");
    Ok(())
}
