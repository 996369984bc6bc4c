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
    let producer =
        switchboard_runtime::producer::ProducerSlot::new(kafka, Duration::from_secs(60))?;
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

/// Events for the analytics benchmark: `n` events of `tenants` tenants (two business
/// numbers each) spread over the last `days` days. Per message, in this order: the API
/// send (`accepted`, a template with a campaign tag), `sent`, `delivered` with Meta
/// pricing, then `read` (or, one message in 20, `failed` with one of four codes), and
/// one inbound text from its customer in 4. Customers are in five countries.
pub async fn produce_analytics(
    kafka: &KafkaConfig,
    n: usize,
    tenants: usize,
    days: i64,
) -> anyhow::Result<()> {
    let topics = Topics::new(&kafka.topic_prefix);
    let codec = Codec::new(&kafka.schema_registry_url);
    let producer =
        switchboard_runtime::producer::ProducerSlot::new(kafka, Duration::from_secs(60))?;
    let now = chrono::Utc::now().timestamp_millis();
    let span = days.max(1) * 86_400_000;
    let started = Instant::now();
    // (country prefix, digits after it)
    let countries = [
        ("+9198", 8),
        ("+5511", 9),
        ("+1415", 7),
        ("+4477", 8),
        ("+6281", 9),
    ];
    let templates = [
        "order_update",
        "otp",
        "promo_winter",
        "delivery_eta",
        "feedback",
    ];
    let categories = [
        ("utility", "regular"),
        ("authentication", "regular"),
        ("marketing", "regular"),
        ("utility", "regular"),
        ("service", "free_customer_service"),
    ];
    let errors = [
        ("131026", "Message undeliverable"),
        ("131047", "Re-engagement message"),
        ("131049", "Meta chose not to deliver"),
        ("130472", "User's number is part of an experiment"),
    ];
    let per_msg = 4.25; // accepted, sent, delivered, read|failed, and an inbound in 4
    let messages = (n as f64 / per_msg).ceil() as usize;
    let mut batch = Vec::with_capacity(10_000);
    let mut produced = 0;
    let mut m = 0;
    while produced + batch.len() < n {
        let tenant = m % tenants.max(1);
        // What varies per message is drawn from its index within its tenant, so that
        // every tenant has every kind.
        let k = m / tenants.max(1);
        let number = format!("+1555{:03}{:04}", tenant, k % 2);
        let (prefix, digits) = countries[(m / 7) % countries.len()];
        let customer = format!(
            "{prefix}{:0width$}",
            (m * 7919) % 10usize.pow(digits.min(8) as u32),
            width = digits
        );
        let wamid = format!("wamid.abench.{m}");
        let t = templates[k % templates.len()];
        let (category, ptype) = categories[(k / 5) % categories.len()];
        let at = now - span + (m as i64 * span / messages as i64 + 1);
        let failed = k % 20 == 7;
        let mut steps: Vec<(Status, i64)> = vec![
            (Status::Accepted, 0),
            (Status::Sent, 400),
            (Status::Delivered, 1_500 + (k % 50) as i64 * 100),
        ];
        steps.push(if failed {
            (Status::Failed, 2_000)
        } else {
            (Status::Read, 60_000 + (k % 600) as i64 * 1_000)
        });
        for (status, delay) in steps {
            let mut e = Event {
                event_id: status_event_id("meta", &wamid, status),
                event_type: "message.status".into(),
                bsp: "meta".into(),
                tenant_id: Some(format!("ten_abench{tenant}")),
                business_number: number.clone(),
                business_account_id: Some(format!("pnid{tenant}")),
                customer_id: customer.clone(),
                wamid: wamid.clone(),
                status: Some(status.as_str().into()),
                occurred_at_ms: at + delay,
                received_at_ms: at + delay + 200,
                request_id: format!("req{m}"),
                ..Event::default()
            };
            match status {
                Status::Accepted => {
                    e.message_type = Some("template".into());
                    e.content = Some(
                        serde_json::json!({"template": {"name": t, "language": {"code": if k.is_multiple_of(3) { "pt_BR" } else { "en" }}}})
                            .to_string(),
                    );
                    e.metadata =
                        Some(serde_json::json!({"campaign": format!("c{}", k % 12)}).to_string());
                }
                Status::Delivered => {
                    e.pricing_category = Some(category.into());
                    e.pricing_type = Some(ptype.into());
                    e.pricing_model = Some("PMP".into());
                    e.billable = Some(ptype == "regular");
                }
                Status::Failed => {
                    let (code, title) = errors[(k / 20) % errors.len()];
                    e.error_code = Some(code.into());
                    e.error_title = Some(title.into());
                }
                _ => {}
            }
            batch.push(encode(&codec, &topics, &e).await?);
        }
        if k % 4 == 1 {
            let id = format!("wamid.abench.in.{m}");
            let e = Event {
                event_id: switchboard_schemas::inbound_event_id("meta", &id),
                event_type: "message.received".into(),
                bsp: "meta".into(),
                tenant_id: Some(format!("ten_abench{tenant}")),
                business_number: number.clone(),
                customer_id: customer.clone(),
                wamid: id,
                message_type: Some("text".into()),
                content: Some(serde_json::json!({"text": {"body": "thanks"}}).to_string()),
                occurred_at_ms: at + 120_000,
                received_at_ms: at + 120_200,
                request_id: format!("req{m}in"),
                ..Event::default()
            };
            batch.push(encode(&codec, &topics, &e).await?);
        }
        if batch.len() >= 10_000 {
            produce_all(&producer, &batch).await?;
            produced += batch.len();
            batch.clear();
        }
        m += 1;
    }
    produce_all(&producer, &batch).await?;
    produced += batch.len();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "analytics events: {produced} ({m} messages, {tenants} tenants, {days} days) produced to {} in {secs:.1} s ({:.0}/s)",
        topics.events,
        produced as f64 / secs
    );
    Ok(())
}

async fn encode(codec: &Codec, topics: &Topics, e: &Event) -> anyhow::Result<OutRecord> {
    Ok(OutRecord {
        topic: topics.events.clone(),
        key: e.conversation_key(),
        payload: codec.encode(&topics.events, EVENT_SCHEMA, e).await?,
        headers: vec![],
    })
}
