//! Synthetic canonical events straight onto `wa.events` (as the normalizer would write
//! them), for benchmarks that start after ingest: replay and backfill.
//!
//! Per message: `sent`, `delivered`, `read` over the last day, 20 business numbers, 5,000
//! customers, a tenant per number; ids are derived like real ones, so a replay writes the
//! same rows a live pipeline would.

use std::time::{Duration, Instant};

use switchboard_runtime::config::KafkaConfig;
use switchboard_runtime::kafka::{produce_all, OutRecord, Topics};
use switchboard_schemas::{status_event_id, Codec, Event, Status, EVENT_SCHEMA};

pub async fn produce(kafka: &KafkaConfig, n: usize) -> anyhow::Result<()> {
    let topics = Topics::new(&kafka.topic_prefix);
    let codec = Codec::new(&kafka.schema_registry_url);
    let producer = switchboard_runtime::kafka::producer(kafka, Duration::from_secs(60))?;
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let statuses = [Status::Sent, Status::Delivered, Status::Read];
    let mut batch = Vec::with_capacity(10_000);
    let mut sent = 0;
    for i in 0..n {
        let m = i / 3;
        let status = statuses[i % 3];
        let number = format!("+1555000{:04}", m % 20);
        let wamid = format!("wamid.bench.{m}");
        let at =
            now - 86_000_000 + (m as i64 * 86_000_000 / (n as i64 / 3 + 1)) + (i % 3) as i64 * 1500;
        let e = Event {
            event_id: status_event_id("meta", &wamid, status),
            event_type: "message.status".into(),
            bsp: "meta".into(),
            tenant_id: Some(format!("ten_bench{}", m % 20)),
            business_number: number,
            business_account_id: Some(format!("pnid{}", m % 20)),
            customer_id: format!("+9198{:08}", m % 5000),
            wamid,
            status: Some(status.as_str().into()),
            occurred_at_ms: at,
            received_at_ms: at + 200,
            conversation_category: Some("service".into()),
            pricing_category: Some("service".into()),
            billable: Some(true),
            request_id: format!("req{m}"),
            ..Event::default()
        };
        batch.push(OutRecord {
            topic: topics.events.clone(),
            key: e.conversation_key(),
            payload: codec.encode(&topics.events, EVENT_SCHEMA, &e).await?,
            headers: vec![],
        });
        if batch.len() == batch.capacity() || i + 1 == n {
            produce_all(&producer, &batch).await?;
            sent += batch.len();
            batch.clear();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "events: {sent} produced to {} in {secs:.1} s ({:.0}/s)",
        topics.events,
        sent as f64 / secs
    );
    Ok(())
}
