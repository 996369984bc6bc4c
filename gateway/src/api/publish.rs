//! Producing from the API: wait for the broker's ack (503 + Retry-After when it does not
//! come), and publishing configuration changes to `wa.config`.

use std::time::Instant;

use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_schemas::{ConfigRecord, CONFIG_RECORD_SCHEMA};

use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::AppState;

/// Produce every record and wait for all acks, within the configured produce timeout.
pub async fn produce_acked(app: &AppState, records: &[OutRecord]) -> Result<(), ApiError> {
    let Some(first) = records.first() else {
        return Ok(());
    };
    let started = Instant::now();
    let produced =
        tokio::time::timeout(app.cfg.produce_timeout, produce_all(&app.producer, records)).await;
    if produced.is_err() {
        // Timed out: produce_all had no outcome to report.
        app.producer.report(false);
    }
    METRICS
        .produce_seconds
        .with_label_values(&[first.topic.as_str()])
        .observe(started.elapsed().as_secs_f64());
    match produced {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::unavailable(
            "broker_unavailable",
            format!("broker did not acknowledge: {e}"),
        )),
        Err(_) => Err(ApiError::unavailable(
            "broker_unavailable",
            "broker did not acknowledge in time",
        )),
    }
}

/// Publish configuration records (already committed to PostgreSQL) and apply them to this
/// process's copy at once, so the caller's next request sees them.
pub async fn publish_config(app: &AppState, recs: &[ConfigRecord]) -> Result<(), ApiError> {
    let topic = &app.topics.config;
    let mut out = Vec::with_capacity(recs.len());
    for rec in recs {
        let payload = app
            .codec
            .encode(topic, CONFIG_RECORD_SCHEMA, rec)
            .await
            .map_err(|e| ApiError::unavailable("registry_unavailable", e.to_string()))?;
        out.push(OutRecord {
            topic: topic.clone(),
            key: rec.key(),
            payload,
            headers: vec![],
        });
    }
    produce_acked(app, &out).await?;
    for rec in recs {
        app.config.apply(rec);
    }
    Ok(())
}
