//! Gateway metrics.

use std::sync::LazyLock;

use prometheus::{register_histogram_vec, register_int_counter_vec, HistogramVec, IntCounterVec};
use switchboard_runtime::telemetry::LATENCY_BUCKETS;

pub struct Metrics {
    pub webhooks: IntCounterVec,
    pub produce_seconds: HistogramVec,
    pub request_seconds: HistogramVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    webhooks: register_int_counter_vec!(
        "switchboard_gateway_webhooks_total",
        "Webhook requests by BSP and outcome code",
        &["bsp", "outcome"]
    )
    .expect("metric registers once"),
    produce_seconds: register_histogram_vec!(
        "switchboard_gateway_produce_seconds",
        "Time from produce to broker ack",
        &["topic"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once"),
    request_seconds: register_histogram_vec!(
        "switchboard_gateway_request_seconds",
        "Webhook request latency",
        &["bsp"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once"),
});
