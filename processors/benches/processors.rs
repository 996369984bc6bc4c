//! Per-record work of two processors, without Kafka or PostgreSQL: the normalizer's step
//! from one decoded raw webhook to its canonical events (parse, events, event ids, the
//! time window), and the fan-out's webhook body of one event and its Standard Webhooks
//! signature. Raw webhooks are the connectors' test fixtures. `loadtest/micro-bench.sh`
//! runs it with the other micro-benchmarks.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard_processors::fanout::endpoints::Registry;
use switchboard_processors::fanout::payload::render;
use switchboard_processors::normalize::{
    default_max_age, default_max_ahead, normalize_record, TimeWindow,
};
use switchboard_runtime::secrets::Keyring;
use switchboard_schemas::config::{Endpoint, Ordering, SealedSecret};
use switchboard_schemas::{Event, RawWebhook};

const FIXTURES: [&str; 3] = ["status_sent", "message_text", "batch_statuses"];

fn raw(fixture: &str) -> RawWebhook {
    let path = format!(
        "{}/../connectors/tests/fixtures/meta/{fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    RawWebhook {
        request_id: "req-1".into(),
        bsp: "meta".into(),
        // After every fixture's event time, so the default window keeps them all.
        received_at_ms: 1_750_263_999_000,
        content_type: "application/json".into(),
        headers: HashMap::new(),
        body: std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}")),
    }
}

fn window() -> TimeWindow {
    TimeWindow::new(default_max_age(), default_max_ahead())
}

/// The first event of a fixture, stamped with a tenant as the normalizer does.
fn event(fixture: &str) -> Event {
    let mut e = normalize_record(&raw(fixture), &window())
        .events
        .into_iter()
        .next()
        .expect("fixture yields an event");
    e.tenant_id = Some("acme".into());
    e
}

/// One raw record through `normalize_record`: per webhook.
fn normalize(c: &mut Criterion) {
    let window = window();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(1));
    for name in FIXTURES {
        let r = raw(name);
        let o = normalize_record(&r, &window);
        assert!(
            o.dead_letter.is_none() && !o.events.is_empty(),
            "fixture {name} must normalize cleanly: {:?}",
            o.dead_letter
        );
        g.bench_function(format!("meta/{name}"), |b| {
            b.iter(|| normalize_record(black_box(&r), &window))
        });
    }
    g.finish();
}

/// The body is rendered once per event, then signed once per matching endpoint.
fn fanout(c: &mut Criterion) {
    let status = event("status_sent");
    let inbound = event("message_text");
    let (_, body) = render(&status);

    let ring = Keyring::parse(&Keyring::generate("k1")).expect("fixture keyring");
    let (key_id, ciphertext) = ring.seal(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "ep_1");
    let ep = Endpoint {
        id: "ep_1".into(),
        tenant_id: "acme".into(),
        url: "https://hooks.example.com/whatsapp".into(),
        description: String::new(),
        event_types: vec![],
        numbers: vec![],
        rate_per_sec: None,
        max_in_flight: 16,
        headers: Default::default(),
        sealed_headers: None,
        header_names: vec![],
        ordering: Ordering::Conversation,
        disabled: false,
        disabled_reason: None,
        secrets: vec![SealedSecret {
            key_id,
            ciphertext,
            expires_at_ms: None,
        }],
    };
    let rt = Registry::new(Some(ring), 3, Duration::from_secs(1))
        .get(&ep, 1)
        .expect("fixture endpoint");
    let now_ms = 1_750_264_000_000_i64;
    assert!(rt
        .sign(&status.event_id, now_ms / 1000, &body, now_ms)
        .starts_with("v1,"));

    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1));
    g.bench_function("render", |b| b.iter(|| render(black_box(&status))));
    g.bench_function("render/inbound_text", |b| {
        b.iter(|| render(black_box(&inbound)))
    });
    let (id, body) = (status.event_id.as_str(), body.as_str());
    g.bench_function("sign", |b| {
        b.iter(|| rt.sign(black_box(id), now_ms / 1000, black_box(body), now_ms))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = normalize, fanout
}
criterion_main!(benches);
