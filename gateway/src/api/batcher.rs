//! Single sends from concurrent requests, accepted together: the sends that arrive
//! within a millisecond (up to 500) share one insert, one produce round and one
//! published mark, instead of one of each per request. Each request still gets its own
//! answer, and idempotency works across the requests of a batch as across batches (the
//! first of two requests with one key inserts, the second replays it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_schemas::config::Tenant;
use tokio::sync::{mpsc, oneshot};

use super::messages::{accept, Outcome, Valid};
use crate::error::ApiError;
use crate::AppState;

pub struct Job {
    tenant: Tenant,
    item: Valid,
    reply: oneshot::Sender<Outcome>,
}

/// One tenant's part of a batch: its sends and where each answer goes.
type TenantBatch = (Tenant, Vec<Valid>, Vec<oneshot::Sender<Outcome>>);

const MAX_BATCH: usize = 500;
const LINGER: Duration = Duration::from_millis(1);

/// Accept one send through the batcher.
pub async fn accept_one(app: &AppState, tenant: Tenant, item: Valid) -> Outcome {
    let (reply, rx) = oneshot::channel();
    let gone = || ApiError::unavailable("shutting_down", "the gateway is stopping; retry");
    app.accepts
        .send(Job {
            tenant,
            item,
            reply,
        })
        .await
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

/// The batching loop; each batch is accepted in a task of its own, so batches overlap
/// while one waits for the database or the broker.
pub async fn run(app: Arc<AppState>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => batch.push(j),
                _ => break,
            }
        }
        let app = app.clone();
        tokio::spawn(async move {
            let mut by_tenant: HashMap<String, TenantBatch> = HashMap::new();
            for j in batch {
                let e = by_tenant
                    .entry(j.tenant.id.clone())
                    .or_insert_with(|| (j.tenant, Vec::new(), Vec::new()));
                e.1.push(j.item);
                e.2.push(j.reply);
            }
            for (_, (tenant, items, replies)) in by_tenant {
                match accept(&app, &tenant, items).await {
                    Ok(outcomes) => {
                        for (o, r) in outcomes.into_iter().zip(replies) {
                            let _ = r.send(o);
                        }
                    }
                    Err(e) => {
                        for (i, r) in replies.into_iter().enumerate() {
                            let _ = r.send(Err(e.for_item(i)));
                        }
                    }
                }
            }
        });
    }
}
