//! A dependency goes away mid-stream and comes back: nothing acknowledged is lost,
//! nothing is doubled. Each test owns the service it breaks.

use std::time::Duration;

use rdkafka::message::OwnedMessage;
use switchboard_e2e::bsp::meta_status;
use switchboard_e2e::services::{PrivateBroker, PrivateClickHouse, PrivatePostgres};
use switchboard_e2e::{ch_query, wait_until, Options, Pipeline};
use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::kafka::{OutRecord, TopicSpec};
use switchboard_runtime::producer::ProducerSlot;
use switchboard_runtime::stream::{BatchHandler, StreamConfig, StreamLoop};
use tokio_util::sync::CancellationToken;

fn bodies(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .flat_map(|i| {
            let w = format!("wamid.{tag}{i}");
            let c = format!("1650{i:07}");
            vec![
                meta_status("15550783881", &c, &w, "sent", 1_750_000_000 + i as i64),
                meta_status("15550783881", &c, &w, "read", 1_750_000_050 + i as i64),
            ]
        })
        .collect()
}

/// Stop the consumers gracefully, so exact counts afterwards cannot be racing late writes.
async fn stop_consumers(p: &mut Pipeline) -> anyhow::Result<()> {
    p.normalizer.stop().await?;
    p.pg_sink.stop().await?;
    p.ch_sink.stop().await
}

async fn send_all(p: &Pipeline, bodies: &[Vec<u8>]) -> anyhow::Result<()> {
    for chunk in bodies.chunks(50) {
        for r in
            futures::future::join_all(chunk.iter().map(|b| p.post_meta_until_accepted(b))).await
        {
            r?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_mid_stream_the_sink_waits_and_catches_up() -> anyhow::Result<()> {
    let pg = PrivatePostgres::start().await?;
    let mut p = Pipeline::start(Options {
        pg_url: Some(pg.url()),
        ..Options::default()
    })
    .await?;
    let all = bodies("PGDOWN", 600);
    let (first, rest) = all.split_at(400);
    send_all(&p, first).await?;
    pg.crash()?;
    // The gateway does not need PostgreSQL: webhooks keep being accepted.
    send_all(&p, rest).await?;
    // The outage must have been felt mid-stream: the normalizer (its dedupe store is in
    // PostgreSQL) and the pg-sink fail batches and retry them; nothing moves on.
    wait_until(
        "consumers retrying failed batches",
        Duration::from_secs(60),
        || async {
            let failures = p
                .normalizer
                .metric("switchboard_stream_batch_failures_total")
                .await
                + p.pg_sink
                    .metric("switchboard_stream_batch_failures_total")
                    .await;
            Ok(failures > 0.0)
        },
    )
    .await?;
    pg.resume().await?;
    p.wait_for_status_events(1200, Duration::from_secs(120))
        .await?;
    // Graceful stops drain in-flight work, so exact counts below cannot race late writes.
    stop_consumers(&mut p).await?;
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        1200
    );
    assert_eq!(
        p.pg_count("SELECT count(*) FROM messages WHERE status = 'read'")
            .await?,
        600
    );
    assert_eq!(p.ch_count("SELECT count() FROM events").await?, 1200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_mid_stream_the_sink_waits_and_catches_up() -> anyhow::Result<()> {
    let mut ch = PrivateClickHouse::start().await?;
    let mut p = Pipeline::start(Options {
        clickhouse_url: Some(ch.url()),
        ..Options::default()
    })
    .await?;
    p.services.clickhouse_url = ch.url();
    let all = bodies("CHDOWN", 600);
    let (first, rest) = all.split_at(300);
    send_all(&p, first).await?;
    ch.crash().await;
    send_all(&p, rest).await?;
    wait_until(
        "ch-sink retrying failed batches",
        Duration::from_secs(60),
        || async {
            Ok(p.ch_sink
                .metric("switchboard_stream_batch_failures_total")
                .await
                > 0.0)
        },
    )
    .await
    // Seen once in CI and not since: say what the ch-sink was doing.
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    ch.resume().await?;
    p.wait_for_status_events(1200, Duration::from_secs(120))
        .await?;
    // Graceful stops drain in-flight work, so exact counts below cannot race late writes.
    stop_consumers(&mut p).await?;
    let count = |sql: &'static str| {
        let http = p.http.clone();
        let url = ch.url();
        let db = p.ch_db.clone();
        async move {
            ch_query(&http, &url, &db, sql)
                .await
                .map(|s| s.trim().parse::<i64>().unwrap_or(-1))
        }
    };
    assert_eq!(count("SELECT count() FROM events").await?, 1200);
    assert_eq!(count("SELECT uniqExact(event_id) FROM events").await?, 1200);
    assert_eq!(
        count("SELECT sum(events) FROM daily_status_counts").await?,
        1200
    );
    assert_eq!(
        p.pg_count("SELECT count(*) FROM message_status_history")
            .await?,
        1200
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_means_503_with_retry_after_and_nothing_acknowledged_is_lost(
) -> anyhow::Result<()> {
    let mut broker = PrivateBroker::start().await?;
    let mut p = Pipeline::start(Options {
        brokers: Some(broker.addr()),
        ..Options::default()
    })
    .await?;
    p.services.brokers = broker.addr();
    let body = meta_status(
        "15550783881",
        "16505550001",
        "wamid.BROKER1",
        "sent",
        1_750_000_000,
    );
    assert_eq!(p.post_meta(&body).await?.status(), 200);

    broker.crash().await;
    let r = p
        .post_meta(&meta_status(
            "15550783881",
            "16505550002",
            "wamid.BROKER2",
            "sent",
            1_750_000_000,
        ))
        .await?;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: serde_json::Value = r.json().await?;
    assert_eq!(v["error"]["code"], "broker_unavailable");
    assert_eq!(
        p.http
            .get(format!("{}/readyz", p.gateway_ops_url))
            .send()
            .await?
            .status(),
        503,
        "not ready without a broker"
    );

    // The broker comes back (empty: memory storage); the BSP's retry goes through.
    broker.resume().await?;
    let kafka = switchboard_runtime::config::KafkaConfig {
        kafka_brokers: broker.addr(),
        topic_prefix: p.topic_prefix.clone(),
        schema_registry_url: p.services.registry.clone(),
        ..Default::default()
    };
    switchboard_runtime::kafka::ensure_topics(
        &kafka,
        &switchboard_runtime::kafka::Topics::new(&p.topic_prefix).with_partitions(6),
    )
    .await?;
    let retry = meta_status(
        "15550783881",
        "16505550002",
        "wamid.BROKER2",
        "sent",
        1_750_000_000,
    );
    wait_until("gateway accepts again", Duration::from_secs(60), || async {
        Ok(p.post_meta(&retry).await?.status() == 200)
    })
    .await?;
    let raw = p
        .read_topic("wa.webhooks.raw", 1, Duration::from_secs(20))
        .await?;
    assert_eq!(raw.len(), 1, "the retried webhook is on the new broker");
    Ok(())
}

/// Sends refused because the broker is away are taken back: the 503 guarantees nothing
/// was accepted, so a client that retries without an idempotency key sends once.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_refused_for_a_broker_outage_leaves_nothing_behind() -> anyhow::Result<()> {
    let mut broker = PrivateBroker::start().await?;
    let mut p = Pipeline::start(Options {
        brokers: Some(broker.addr()),
        send_path: true,
        gateway_env: vec![("SWITCHBOARD_PRODUCE_TIMEOUT", "2s".into())],
        ..Options::default()
    })
    .await?;
    p.services.brokers = broker.addr();
    let t = p.tenant("outage").await?;
    p.number(&t, "+15550091", "meta", "15550091", 1000, None)
        .await?;
    broker.crash().await;
    let messages: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"from": "+15550091", "to": "+4915112345678", "type": "text", "text": {"body": format!("outage-{i}")}}))
        .collect();
    let (s, v) = p
        .call(
            reqwest::Method::POST,
            "/v1/messages/batch",
            &t.key,
            Some(serde_json::json!({ "messages": messages })),
            &[],
        )
        .await?;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].get("accepted").is_none(), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was accepted"),
        "{v}"
    );
    let (s, v) = p
        .call(
            reqwest::Method::POST,
            "/v1/messages",
            &t.key,
            Some(serde_json::json!({"from": "+15550091", "to": "+4915112345678", "type": "text", "text": {"body": "outage-single"}})),
            &[],
        )
        .await?;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].get("accepted").is_none(), "{v}");
    assert_eq!(
        p.pg_count("SELECT count(*) FROM outbound_messages").await?,
        0,
        "no row is left for the router's sweeper to send later"
    );
    broker.resume().await?;
    Ok(())
}

/// Copies each batch to `to` through a [`ProducerSlot`], as every processor stage
/// produces its outputs; the second batch finds its producer made fatal under it.
struct CopyTurningFatal {
    slot: ProducerSlot,
    to: String,
    batches: usize,
    made_fatal: Option<rdkafka::producer::FutureProducer>,
}

impl BatchHandler for CopyTurningFatal {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        use rdkafka::message::Message;
        self.batches += 1;
        let out: Vec<OutRecord> = batch
            .iter()
            .map(|m| OutRecord {
                topic: self.to.clone(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: vec![],
            })
            .collect();
        let produced = switchboard_runtime::kafka::produce_all(&self.slot, &out);
        if self.batches == 2 {
            // What the local broker once did with OutOfOrderSequenceNumber: the idempotent
            // producer turns fatal with this batch in flight, and stays fatal.
            use rdkafka::producer::Producer;
            let p = self.slot.get();
            let reason = std::ffi::CString::new("injected by the test")?;
            // SAFETY: a live client handle and a NUL-terminated reason, as the librdkafka
            // test API asks; it only sets the client's fatal error state.
            unsafe {
                rdkafka::bindings::rd_kafka_test_fatal_error(
                    p.client().native_ptr(),
                    rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                    reason.as_ptr(),
                );
            }
            self.made_fatal = Some(p);
        }
        produced.await?;
        Ok(())
    }
}

/// A stage whose producer turns fatal mid-stream gets a new one by itself and loses
/// nothing: before `ProducerSlot`, every later produce failed and the stage retried its
/// batch forever (a router stalled a campaign this way in CI).
#[tokio::test(flavor = "multi_thread")]
async fn a_producer_turned_fatal_mid_stream_is_replaced_and_every_record_lands(
) -> anyhow::Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::Producer;

    let (services, kafka, prefix) = private_topics("fatal", &["in", "out", "dlq"], 3).await?;
    let (input, output, dlq) = (
        format!("{prefix}in"),
        format!("{prefix}out"),
        format!("{prefix}dlq"),
    );

    const N: usize = 4000;
    let feeder = ProducerSlot::new(&kafka, Duration::from_secs(10))?;
    switchboard_runtime::kafka::produce_all(&feeder, &numbered(&input, 0..N)).await?;

    let slot = ProducerSlot::new(&kafka, Duration::from_secs(10))?;
    let dead = DeadLetters::new(
        "fatal-test",
        &dlq,
        slot.clone(),
        switchboard_schemas::Codec::new(&services.registry),
        &kafka,
    );
    let stream = StreamLoop::new(
        &kafka,
        StreamConfig {
            max_batch: Some(500),
            ..Default::default()
        },
        &format!("{prefix}copy"),
        &[&input],
        dead,
    )?;
    let shutdown = CancellationToken::new();
    let first = slot.get();
    let copier = tokio::spawn(stream.run(
        CopyTurningFatal {
            slot: slot.clone(),
            to: output.clone(),
            batches: 0,
            made_fatal: None,
        },
        shutdown.clone(),
    ));

    let reader: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &services.brokers)
        .set("group.id", format!("{prefix}reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    reader.subscribe(&[&output])?;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < N {
        match tokio::time::timeout_at(deadline, reader.recv()).await {
            Err(_) => break,
            Ok(m) => {
                let m = m?;
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                assert_eq!(
                    m.payload().unwrap_or_default(),
                    format!("record {}", &key[1..]).as_bytes(),
                    "a copied record keeps its payload"
                );
                *seen.entry(key).or_default() += 1;
            }
        }
    }
    shutdown.cancel();
    copier.await??;

    assert_eq!(seen.len(), N, "every record is copied, none lost");
    let repeated: usize = seen.values().map(|c| c - 1).sum();
    // At least once: only the batch in flight when the producer turned fatal may repeat.
    assert!(repeated <= 500, "{repeated} records copied twice");
    assert!(
        first.client().fatal_error().is_some(),
        "the first producer was made fatal"
    );
    assert!(
        slot.get().client().fatal_error().is_none(),
        "the slot holds a working producer"
    );
    let metrics = prometheus::TextEncoder::new().encode_to_string(&prometheus::gather())?;
    let replaced: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_kafka_producer_replaced_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(replaced >= 1.0, "the replacement is counted:\n{metrics}");
    Ok(())
}

/// Kafka settings under a fresh prefix `<tag><uuid>.`, with the topics `names` under it
/// created `partitions` wide.
async fn private_topics(
    tag: &str,
    names: &[&str],
    partitions: i32,
) -> anyhow::Result<(switchboard_e2e::Services, KafkaConfig, String)> {
    let services = switchboard_e2e::Services::from_env();
    let prefix = format!("{tag}{}.", uuid::Uuid::new_v4().simple());
    let kafka = KafkaConfig {
        kafka_brokers: services.brokers.clone(),
        topic_prefix: prefix.clone(),
        schema_registry_url: services.registry.clone(),
        ..Default::default()
    };
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|n| TopicSpec {
            name: format!("{prefix}{n}"),
            partitions,
            compacted: false,
        })
        .collect();
    switchboard_runtime::kafka::ensure_topics(&kafka, &specs).await?;
    Ok((services, kafka, prefix))
}

/// Records `k<i>` → `record <i>` on `topic`, for each `i` of `range`.
fn numbered(topic: &str, range: std::ops::Range<usize>) -> Vec<OutRecord> {
    range
        .map(|i| OutRecord {
            topic: topic.to_string(),
            key: format!("k{i}"),
            payload: format!("record {i}").into_bytes(),
            headers: vec![],
        })
        .collect()
}

/// Offsets a stage handled, in order.
struct Offsets(std::sync::Arc<std::sync::Mutex<Vec<i64>>>);

impl BatchHandler for Offsets {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        use rdkafka::message::Message;
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.extend(batch.iter().map(|m| m.offset()));
        Ok(())
    }
}

/// A stage stopped and started again resumes at its group's committed offset, and its
/// gap guard takes that offset as where the partition starts (a hole at the head of the
/// log is then refetched, not skipped): a start learnt wrong would show as records read
/// twice or skipped, or as gaps counted where the log has none.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_stage_resumes_at_its_committed_offset_with_no_false_gap() -> anyhow::Result<()>
{
    let (services, kafka, prefix) = private_topics("resume", &["in", "dlq"], 1).await?;
    let (input, dlq) = (format!("{prefix}in"), format!("{prefix}dlq"));
    let slot = ProducerSlot::new(&kafka, Duration::from_secs(10))?;
    let produce = |from: usize, to: usize| {
        let records = numbered(&input, from..to);
        let slot = slot.clone();
        async move { switchboard_runtime::kafka::produce_all(&slot, &records).await }
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = || seen.lock().unwrap().len();
    let run = |seen| -> anyhow::Result<_> {
        let dead = DeadLetters::new(
            "resume-test",
            &dlq,
            slot.clone(),
            switchboard_schemas::Codec::new(&services.registry),
            &kafka,
        );
        let stream = StreamLoop::new(
            &kafka,
            StreamConfig::default(),
            &format!("{prefix}stage"),
            &[&input],
            dead,
        )?;
        let stop = CancellationToken::new();
        Ok((tokio::spawn(stream.run(Offsets(seen), stop.clone())), stop))
    };

    produce(0, 40).await?;
    let (first, stop) = run(seen.clone())?;
    wait_until(
        "the first run's records",
        Duration::from_secs(60),
        || async { Ok(count() == 40) },
    )
    .await?;
    stop.cancel();
    first.await??;

    produce(40, 100).await?;
    let (second, stop) = run(seen.clone())?;
    wait_until(
        "the second run's records",
        Duration::from_secs(60),
        || async { Ok(count() >= 100) },
    )
    .await?;
    stop.cancel();
    second.await??;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        (0..100).collect::<Vec<i64>>(),
        "each offset once, in order"
    );
    let metrics = prometheus::TextEncoder::new().encode_to_string(&prometheus::gather())?;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("switchboard_stream_offset_gaps_total") && l.contains(&input)),
        "a gap was counted on a log without holes:\n{metrics}"
    );
    Ok(())
}
