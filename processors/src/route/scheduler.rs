//! Brings waiting sends back into the stream: scheduled sends and retries when due, and
//! accepted sends whose publication to `wa.send.requests` was never confirmed. Every
//! router runs it; `FOR UPDATE SKIP LOCKED` splits the work, and a request published
//! twice is harmless (the state machine lets one copy send).

use std::time::Duration;

use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_runtime::CancellationToken;
use switchboard_schemas::{SendRequest, SEND_REQUEST_SCHEMA};

use super::dispatch::SendRouter;

const BATCH: i64 = 1000;

pub async fn run(core: std::sync::Arc<SendRouter>, stop: CancellationToken) {
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(core.cfg.scheduler_interval) => {}
        }
        // Drain everything due, a batch at a time.
        loop {
            match core.outbox.release_due(BATCH).await {
                Ok(reqs) if reqs.is_empty() => break,
                Ok(reqs) => {
                    let n = reqs.len() as i64;
                    if let Err(e) = publish(&core, &reqs).await {
                        // Left queued and unpublished: the sweep below retries.
                        tracing::warn!(error = %e, "cannot publish due sends");
                        break;
                    }
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release due sends");
                    break;
                }
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = tokio::time::Instant::now();
            match core
                .outbox
                .unpublished(core.cfg.republish_after, BATCH)
                .await
            {
                Ok(reqs) if !reqs.is_empty() => {
                    tracing::info!(
                        count = reqs.len(),
                        "republishing sends never confirmed on the topic"
                    );
                    if let Err(e) = publish(&core, &reqs).await {
                        tracing::warn!(error = %e, "cannot republish");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot look for unpublished sends"),
            }
        }
    }
}

pub(super) async fn publish(core: &SendRouter, reqs: &[SendRequest]) -> anyhow::Result<()> {
    let topic = &core.topics.send_requests;
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(OutRecord {
            topic: topic.clone(),
            key: r.sender_key(),
            payload: core.codec.encode(topic, SEND_REQUEST_SCHEMA, r).await?,
            headers: vec![("request-id", r.request_id.clone())],
        });
    }
    produce_all(&core.producer, &out).await?;
    let ids: Vec<String> = reqs.iter().map(|r| r.message_id.clone()).collect();
    core.outbox.mark_published(&ids).await?;
    Ok(())
}
