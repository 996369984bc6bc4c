//! Per-webhook work of the ingest path, per BSP: the signature check the gateway runs on
//! every request, the account look-up that picks the partition, and the parser the
//! normalizer runs, over the same fixtures the tests use; plus the checks the gateway's
//! send API runs on every send. `loadtest/micro-bench.sh` runs it with the other
//! micro-benchmarks and writes a summary.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Map, Value};
use switchboard_connectors::{
    aisensy, common, meta, parse, routing_key, send::validate, twilio, waha, webhook_auth, Bsp,
    WebhookRequest,
};
use switchboard_schemas::RawWebhook;

const DIRS: [(&str, &str, &str); 7] = [
    ("meta", "meta", "application/json"),
    ("360dialog", "meta", "application/json"),
    ("twilio", "twilio", "application/x-www-form-urlencoded"),
    ("gupshup", "gupshup", "application/json"),
    ("aisensy", "aisensy", "application/json"),
    ("karix", "karix", "application/json"),
    ("waha", "waha", "application/json"),
];

fn fixtures(dir: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<_> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).expect("a fixture"))
        .collect()
}

fn raw(bsp: &str, content_type: &str, body: &[u8]) -> RawWebhook {
    RawWebhook {
        request_id: "req-1".into(),
        bsp: bsp.into(),
        received_at_ms: 1_750_263_999_000,
        content_type: content_type.into(),
        headers: HashMap::new(),
        body: body.to_vec(),
    }
}

/// Every fixture of a BSP through its parser: per webhook.
fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (bsp, dir, ct) in DIRS {
        let raws: Vec<RawWebhook> = fixtures(dir).iter().map(|b| raw(bsp, ct, b)).collect();
        g.throughput(Throughput::Elements(raws.len() as u64));
        g.bench_function(bsp, |b| {
            b.iter(|| {
                for r in &raws {
                    let _ = black_box(parse(black_box(r)));
                }
            })
        });
    }
    let status = raw(
        "meta",
        "application/json",
        &std::fs::read(format!(
            "{}/tests/fixtures/meta/status_sent.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("the fixture"),
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("meta/status_sent", |b| b.iter(|| parse(black_box(&status))));
    g.finish();
}

/// The gateway's check of one webhook: the signature (or shared token) against the
/// tenant's secrets, then the accounts the body names and the partition key.
fn signatures(c: &mut Criterion) {
    let body = std::fs::read(format!(
        "{}/tests/fixtures/meta/status_sent.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the fixture");
    let form = std::fs::read(format!(
        "{}/tests/fixtures/twilio/status_sent.form",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the fixture");
    let url = "https://switchboard.example.com";
    let secrets: Map<String, Value> = serde_json::from_value(json!({
        "app_secret": "s3cret", "auth_token": "s3cret", "webhook_hmac_key": "s3cret",
        "webhook_secret": "s3cret", "webhook_token": "s3cret"}))
    .expect("an object");
    let cases: Vec<(Bsp, &[u8], HashMap<String, String>)> = vec![
        (
            Bsp::Meta,
            &body,
            [(
                meta::signature::HEADER.into(),
                meta::signature::sign("s3cret", &body),
            )]
            .into(),
        ),
        (
            Bsp::Twilio,
            &form,
            [(
                twilio::signature::HEADER.into(),
                twilio::signature::sign("s3cret", &format!("{url}/webhooks/twilio"), &form),
            )]
            .into(),
        ),
        (
            Bsp::Waha,
            &body,
            [
                (
                    waha::signature::HEADER.into(),
                    waha::signature::sign("s3cret", &body),
                ),
                (waha::signature::ALGORITHM_HEADER.into(), "sha512".into()),
            ]
            .into(),
        ),
        (
            Bsp::Aisensy,
            &body,
            [(
                aisensy::signature::HEADER.into(),
                aisensy::signature::sign("s3cret", &body),
            )]
            .into(),
        ),
        (
            Bsp::Gupshup,
            &body,
            [("x-switchboard-token".into(), "s3cret".into())].into(),
        ),
    ];
    let mut g = c.benchmark_group("verify");
    for (bsp, body, headers) in &cases {
        let req = WebhookRequest {
            headers,
            body,
            url: "/webhooks/twilio",
        };
        webhook_auth::verify(*bsp, &secrets, url, &req)
            .unwrap_or_else(|e| panic!("{bsp}: the fixture must verify: {e}"));
        g.bench_function(bsp.slug(), |b| {
            b.iter(|| webhook_auth::verify(*bsp, &secrets, url, black_box(&req)))
        });
    }
    g.finish();
    c.bench_function("routing_key/meta", |b| {
        b.iter(|| {
            let accounts = webhook_auth::accounts(Bsp::Meta, black_box(&body)).expect("accounts");
            routing_key(Bsp::Meta, &accounts)
        })
    });
}

/// The connector checks of one send in the gateway's `validate_one` (the rest needs its
/// `AppState`): the message object against WhatsApp's limits, the recipient against
/// libphonenumber, the sender's E.164 form.
fn send_validation(c: &mut Criterion) {
    let cases = [
        (
            "text",
            json!({"to": "+14155552671", "from": "+15550783881", "type": "text",
                "text": {"body": "Your order #1042 has shipped.", "preview_url": false}}),
        ),
        (
            "template",
            json!({"to": "+91 98765-43210", "from": "+15550783881", "type": "template",
                "template": {"name": "order_update", "language": {"code": "en_US"}, "components": [
                    {"type": "header", "parameters": [
                        {"type": "image", "image": {"link": "https://cdn.example.com/1.jpg"}}]},
                    {"type": "body", "parameters": [
                        {"type": "text", "text": "Ann"},
                        {"type": "text", "text": "#1042"},
                        {"type": "currency", "currency":
                            {"fallback_value": "$42.00", "code": "USD", "amount_1000": 42000}},
                        {"type": "date_time", "date_time": {"fallback_value": "June 19, 2025"}}]},
                    {"type": "button", "sub_type": "url", "index": "0",
                        "parameters": [{"type": "text", "text": "1042"}]}]}}),
        ),
    ];
    let mut g = c.benchmark_group("send_validate");
    g.throughput(Throughput::Elements(1));
    for (name, body) in &cases {
        let obj = body.as_object().expect("fixture object");
        let to = obj["to"].as_str().expect("fixture to");
        let from = obj["from"].as_str().expect("fixture from");
        let errors = [
            validate::message(obj).err().map(|e| e.to_string()),
            validate::recipient(to).err().map(|e| e.to_string()),
            common::e164(from).err().map(|e| e.to_string()),
        ];
        assert!(
            errors.iter().all(Option::is_none),
            "{name}: the fixture must validate: {errors:?}"
        );
        g.bench_function(*name, |b| {
            b.iter(|| {
                (
                    validate::message(black_box(obj)),
                    validate::recipient(black_box(to)),
                    common::e164(black_box(from)),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = parsers, signatures, send_validation
}
criterion_main!(benches);
