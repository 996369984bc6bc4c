//! Campaign release: every `SWITCHBOARD_SCHEDULER_INTERVAL`, each running campaign's
//! next recipients become sends: rows in the outbox under `campaign:<id>:<recipient>`,
//! published to `wa.send.requests`, from where they go like any send (the numbers'
//! limiters, the send rules again, the BSP). A campaign releases at its `rate_per_sec`
//! (a token bucket per router; the number's limiter keeps the tier either way) and, for
//! a tenant with a `daily_unique_limit`, only as many distinct customers as the last 24
//! hours leave, waiting for the rest.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use switchboard_runtime::CancellationToken;
use switchboard_schemas::SendRequest;
use tokio::time::Instant;

use super::dispatch::SendRouter;
use crate::db::campaigns::{idempotency_key, template_message, Campaign, Campaigns, Claimed};
use crate::db::outbox::{NewSend, Requests};

/// A released recipient whose send does not exist after this long was orphaned.
const ORPHAN_GRACE_SECS: f64 = 30.0;

pub async fn run(core: Arc<SendRouter>, stop: CancellationToken) {
    let store = Campaigns::new(core.outbox.pool.clone());
    let requests = Requests::new(core.outbox.pool.clone());
    let mut buckets: HashMap<String, (Instant, f64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(core.cfg.scheduler_interval) => {}
        }
        if let Err(e) = tick(&core, &store, &requests, &mut buckets).await {
            tracing::warn!(error = %e, "campaign release failed; retrying next tick");
        }
    }
}

async fn tick(
    core: &SendRouter,
    store: &Campaigns,
    requests: &Requests,
    buckets: &mut HashMap<String, (Instant, f64)>,
) -> anyhow::Result<()> {
    store.start_due().await?;
    let running = store.running().await?;
    buckets.retain(|id, _| running.iter().any(|c| &c.id == id));
    for c in running {
        let orphans = store.orphans(&c.id, ORPHAN_GRACE_SECS).await?;
        if !orphans.is_empty() {
            tracing::warn!(campaign = %c.id, n = orphans.len(), "releasing recipients a stopped router had claimed");
            release(core, requests, &c, &orphans).await?;
        }
        let now = Instant::now();
        let rate = c.rate_per_sec.max(1) as f64;
        let (last, tokens) = buckets.entry(c.id.clone()).or_insert((now, 0.0));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        let mut n = tokens.floor() as i64;
        let limit = core
            .cache
            .read()
            .tenants
            .get(&c.tenant_id)
            .and_then(|t| t.daily_unique_limit);
        if let Some(limit) = limit {
            let left = limit as i64 - store.released_last_day(&c.tenant_id).await?;
            if left <= 0 {
                store.set_waiting(&c.id, Some("daily_unique_limit")).await?;
                continue;
            }
            n = n.min(left);
        }
        store.set_waiting(&c.id, None).await?;
        let claimed = store.claim(&c.id, n).await?;
        *tokens -= claimed.len() as f64;
        if claimed.is_empty() {
            if store.complete_if_done(&c.id).await? {
                tracing::info!(campaign = %c.id, "campaign released completely");
            }
            continue;
        }
        release(core, requests, &c, &claimed).await?;
    }
    Ok(())
}

/// The recipients' sends: into the outbox, then onto `wa.send.requests`. A send whose
/// row already exists (same message id or key) is left to the sweeper's republication.
async fn release(
    core: &SendRouter,
    requests: &Requests,
    c: &Campaign,
    claimed: &[Claimed],
) -> anyhow::Result<()> {
    let now = switchboard_runtime::now_ms();
    let mut metadata = c
        .metadata
        .clone()
        .filter(|m| m.is_object())
        .unwrap_or_else(|| json!({}));
    metadata["campaign"] = json!(c.id);
    let sends: Vec<NewSend> = claimed
        .iter()
        .map(|r| {
            let from = c.from_numbers[r.position as usize % c.from_numbers.len()].clone();
            let message = template_message(&c.template_name, &c.template_language, r.parameters.as_ref());
            let key = idempotency_key(&c.id, &r.recipient);
            NewSend {
                message_id: r.message_id.clone(),
                request_hash: hex::encode(Sha256::digest(key.as_bytes())),
                idempotency_key: Some(key),
                response: json!({"id": r.message_id, "status": "queued", "to": r.recipient, "from": from,
                    "type": "template", "campaign": c.id}),
                from,
                to: r.recipient.clone(),
                message_type: "template".into(),
                message,
                metadata: Some(metadata.clone()),
                scheduled_at_ms: None,
                request_id: format!("campaign:{}", c.id),
            }
        })
        .collect();
    let inserted = requests.insert(&c.tenant_id, &sends).await?;
    let to_publish: Vec<SendRequest> = sends
        .iter()
        .filter(|s| inserted.contains(&s.message_id))
        .map(|s| SendRequest {
            message_id: s.message_id.clone(),
            tenant_id: c.tenant_id.clone(),
            from_number: s.from.clone(),
            to: s.to.clone(),
            message_type: s.message_type.clone(),
            message: s.message.to_string(),
            idempotency_key: s.idempotency_key.clone(),
            metadata: s.metadata.as_ref().map(|m| m.to_string()),
            scheduled_at_ms: None,
            accepted_at_ms: now,
            request_id: s.request_id.clone(),
        })
        .collect();
    if !to_publish.is_empty() {
        super::scheduler::publish(core, &to_publish).await?;
    }
    Ok(())
}
