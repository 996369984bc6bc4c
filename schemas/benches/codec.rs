//! The Avro work every record pays on its way through the topics: the gateway encodes a
//! raw webhook, the normalizer decodes it and encodes canonical events, the sinks and the
//! fan-out decode those. After its cached schema look-up the registry's converter writes
//! with a `GenericDatumWriter` over the resolved schema (serde straight to bytes) and
//! reads with a `GenericDatumReader` into an Avro value that serde then maps: the same
//! calls are measured here without a registry; plus the event ids the normalizer derives.

use std::collections::HashMap;
use std::hint::black_box;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{from_value, Schema};
use criterion::{criterion_group, criterion_main, Criterion};
use switchboard_schemas::{
    status_event_id, Event, RawWebhook, Status, EVENT_SCHEMA, RAW_WEBHOOK_SCHEMA,
};

fn raw() -> RawWebhook {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"106540352242922","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA","status":"sent","timestamp":"1750263773","recipient_id":"16505553333","pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}]}}]}]}"#;
    RawWebhook {
        request_id: "0193a6f0-5e1c-7b2a-9d3e-1f2a3b4c5d6e".into(),
        bsp: "meta".into(),
        received_at_ms: 1_750_263_999_000,
        content_type: "application/json".into(),
        headers: HashMap::from([(
            "x-hub-signature-256".to_string(),
            "sha256=4c6f2e0b7f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877665544".to_string(),
        )]),
        body: body.to_vec(),
    }
}

fn event() -> Event {
    Event {
        event_id: status_event_id(
            "meta",
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZC",
            Status::Sent,
        ),
        event_type: "message.status".into(),
        bsp: "meta".into(),
        tenant_id: Some("acme".into()),
        business_number: "+15550783881".into(),
        business_account_id: Some("106540352242922".into()),
        customer_id: "+16505553333".into(),
        wamid: "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZC".into(),
        status: Some("sent".into()),
        occurred_at_ms: 1_750_263_773_000,
        received_at_ms: 1_750_263_999_000,
        pricing_category: Some("utility".into()),
        billable: Some(true),
        request_id: "0193a6f0-5e1c-7b2a-9d3e-1f2a3b4c5d6e".into(),
        pricing_model: Some("PMP".into()),
        pricing_type: Some("regular".into()),
        ..Default::default()
    }
}

fn encode<T: serde::Serialize>(schema: &Schema, resolved: &ResolvedSchema, item: &T) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .resolved_schemata(resolved.clone())
        .build()
        .and_then(|w| w.write_ser_to_vec(item))
        .expect("a datum")
}

fn decode<T: serde::de::DeserializeOwned>(
    schema: &Schema,
    resolved: &ResolvedSchema,
    mut bytes: &[u8],
) -> T {
    let v = GenericDatumReader::builder(schema)
        .resolved_writer_schemata(resolved.clone())
        .build()
        .and_then(|r| r.read_value(&mut bytes))
        .expect("a value");
    from_value(&v).expect("the type")
}

fn codec(c: &mut Criterion) {
    let raw_schema = Schema::parse_str(RAW_WEBHOOK_SCHEMA).expect("the raw webhook schema");
    let event_schema = Schema::parse_str(EVENT_SCHEMA).expect("the event schema");
    let raw_resolved = ResolvedSchema::try_from(&raw_schema).expect("resolves");
    let event_resolved = ResolvedSchema::try_from(&event_schema).expect("resolves");
    let (r, e) = (raw(), event());
    let raw_bytes = encode(&raw_schema, &raw_resolved, &r);
    let event_bytes = encode(&event_schema, &event_resolved, &e);
    assert_eq!(
        decode::<RawWebhook>(&raw_schema, &raw_resolved, &raw_bytes),
        r
    );
    assert_eq!(
        decode::<Event>(&event_schema, &event_resolved, &event_bytes),
        e
    );
    c.bench_function("avro/encode raw_webhook", |b| {
        b.iter(|| encode(&raw_schema, &raw_resolved, black_box(&r)))
    });
    c.bench_function("avro/decode raw_webhook", |b| {
        b.iter(|| decode::<RawWebhook>(&raw_schema, &raw_resolved, black_box(&raw_bytes)))
    });
    c.bench_function("avro/encode event", |b| {
        b.iter(|| encode(&event_schema, &event_resolved, black_box(&e)))
    });
    c.bench_function("avro/decode event", |b| {
        b.iter(|| decode::<Event>(&event_schema, &event_resolved, black_box(&event_bytes)))
    });
    c.bench_function("ids/status_event_id", |b| {
        b.iter(|| status_event_id("meta", black_box(&e.wamid), Status::Delivered))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
