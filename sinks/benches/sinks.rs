//! The sinks' pure work per batch of `wa.events`, without the databases: the pg-sink's
//! storable events folded into one row per message, and the ch-sink's `events` rows
//! with their funnel credits. `loadtest/micro-bench.sh` runs it with the other
//! micro-benchmarks.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard_schemas::{inbound_event_id, status_event_id, Event, Status};
use switchboard_sinks::ch::rows;
use switchboard_sinks::pg::merge_batch;
use switchboard_sinks::pg::text::storable;

// As in both sink binaries: row building allocates per event.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1_000;

/// A batch as a busy partition delivers it: for each of 250 outbound messages its sent,
/// delivered and read statuses, and one inbound text per customer.
fn batch() -> Vec<Event> {
    let mut out = Vec::with_capacity(BATCH);
    for i in 0..BATCH / 4 {
        let customer = format!("+1650555{i:04}");
        let at = 1_750_263_773_000 + i as i64 * 1_000;
        let common = Event {
            bsp: "meta".into(),
            tenant_id: Some("acme".into()),
            business_number: "+15550783881".into(),
            business_account_id: Some("102290129340398".into()),
            customer_id: customer.clone(),
            request_id: format!("req-{i}"),
            ..Event::default()
        };
        let wamid = format!("wamid.OUT{i:06}");
        for (n, s) in [Status::Sent, Status::Delivered, Status::Read]
            .into_iter()
            .enumerate()
        {
            out.push(Event {
                event_id: status_event_id("meta", &wamid, s),
                event_type: "message.status".into(),
                wamid: wamid.clone(),
                status: Some(s.as_str().into()),
                occurred_at_ms: at + n as i64 * 2_000,
                received_at_ms: at + n as i64 * 2_000 + 150,
                conversation_id: Some(format!("conv-{i}")),
                conversation_category: Some("marketing".into()),
                pricing_category: Some("marketing".into()),
                pricing_model: Some("PMP".into()),
                pricing_type: Some("regular".into()),
                billable: Some(true),
                ..common.clone()
            });
        }
        let wamid = format!("wamid.IN{i:06}");
        out.push(Event {
            event_id: inbound_event_id("meta", &wamid),
            event_type: "message.received".into(),
            wamid,
            message_type: Some("text".into()),
            content: Some(r#"{"text":{"body":"Does it come in another color?"}}"#.into()),
            occurred_at_ms: at + 60_000,
            received_at_ms: at + 60_150,
            ..common
        });
    }
    out
}

fn sink_rows(c: &mut Criterion) {
    let events = batch();
    let mut g = c.benchmark_group("sink_rows");
    g.throughput(Throughput::Elements(events.len() as u64));
    // `PgWriter::write` before its statements: NULs made storable, then one row per
    // message. (The UNNEST column arrays are built inline there and not measured.)
    g.bench_function("pg", |b| {
        b.iter(|| {
            let cleaned: Vec<_> = black_box(&events).iter().map(storable).collect();
            merge_batch(cleaned.iter().map(|e| &**e))
        })
    });
    // `ChWriter::write_rows` after its look-ups (every message new to the store here).
    // Customers' countries are cached after the first iteration, as in a running sink.
    let todo: Vec<&Event> = events.iter().collect();
    g.bench_function("ch", |b| {
        b.iter(|| rows(black_box(&todo), &mut HashMap::new()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = sink_rows
}
criterion_main!(benches);
