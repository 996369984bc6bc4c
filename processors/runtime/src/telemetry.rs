//! Logs and metrics. Logs are JSON lines by default (`SWITCHBOARD_LOG_FORMAT=text` for
//! humans), filtered by `RUST_LOG` (default `info`). Metrics live in the process-wide
//! Prometheus registry and are served by [`crate::ops`].

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
};
use tracing_subscriber::EnvFilter;

pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,sqlx=warn,hyper=warn"));
    let text = std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|v| v == "text");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = if text {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
    if res.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}

/// Buckets in seconds from 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Metrics of the shared stream loop, labelled by consumer group.
pub struct StreamMetrics {
    pub records: IntCounterVec,
    pub batch_size: HistogramVec,
    pub batch_seconds: HistogramVec,
    pub batch_failures: IntCounterVec,
    pub lag: IntGaugeVec,
}

pub static STREAM: LazyLock<StreamMetrics> = LazyLock::new(|| StreamMetrics {
    records: register_int_counter_vec!(
        "switchboard_stream_records_total",
        "Records consumed and fully processed",
        &["group", "topic"]
    )
    .expect("metric registers once"),
    batch_size: register_histogram_vec!(
        "switchboard_stream_batch_size",
        "Records per processed batch",
        &["group"],
        vec![1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0]
    )
    .expect("metric registers once"),
    batch_seconds: register_histogram_vec!(
        "switchboard_stream_batch_seconds",
        "Time to process one batch including output acks",
        &["group"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once"),
    batch_failures: register_int_counter_vec!(
        "switchboard_stream_batch_failures_total",
        "Batches that failed and were retried",
        &["group"]
    )
    .expect("metric registers once"),
    lag: register_int_gauge_vec!(
        "switchboard_consumer_lag",
        "High watermark minus committed position, per partition",
        &["group", "topic", "partition"]
    )
    .expect("metric registers once"),
});

static PRODUCERS_REPLACED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "switchboard_kafka_producer_replaced_total",
        "Kafka producers replaced after a fatal error or failing deliveries"
    )
    .expect("metric registers once")
});

/// A [`crate::producer::ProducerSlot`] replaced its producer.
pub fn producer_replaced() {
    PRODUCERS_REPLACED.inc();
}
