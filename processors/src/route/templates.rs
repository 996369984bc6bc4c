//! Template sync: every `SWITCHBOARD_TEMPLATE_SYNC_INTERVAL`, the message templates of
//! each WhatsApp Business Account a Meta number names (`waba_id`) are fetched with the
//! tenant's credentials and stored (`db::templates`). Every router runs it; a WABA
//! synced by another router within the interval is skipped.

use std::collections::BTreeSet;
use std::sync::Arc;

use switchboard_connectors::meta::templates::fetch;
use switchboard_connectors::Bsp;
use switchboard_runtime::CancellationToken;

use super::dispatch::SendRouter;
use crate::db::templates::Templates;

pub async fn run(core: Arc<SendRouter>, stop: CancellationToken) {
    let store = Templates::new(core.outbox.pool.clone());
    let every = core.cfg.template_sync_interval;
    if every.is_zero() {
        return;
    }
    loop {
        let wabas: BTreeSet<(String, String)> = core
            .cache
            .read()
            .numbers
            .values()
            .filter(|n| n.bsp == Bsp::Meta.slug())
            .filter_map(|n| Some((n.tenant_id.clone(), n.waba_id.clone()?)))
            .collect();
        for (tenant, waba) in wabas {
            if stop.is_cancelled() {
                return;
            }
            match store.claim_sync(&tenant, &waba, every).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "template sync: database unavailable");
                    break;
                }
            }
            let got = match core.credentials(&tenant, Bsp::Meta) {
                Err(e) => Err(e.detail),
                Ok(creds) => match creds.get("access_token").and_then(|t| t.as_str()) {
                    None => Err("the tenant's Meta credentials have no access_token".into()),
                    Some(token) => {
                        fetch(&core.http, core.cfg.base_url(Bsp::Meta), &waba, token).await
                    }
                },
            };
            let stored = match got {
                Ok(t) => store.replace(&tenant, &waba, &t).await.map(|_| t.len()),
                Err(why) => {
                    tracing::warn!(tenant = %tenant, waba = %waba, error = %why, "template sync failed");
                    store.sync_failed(&waba, &why).await.map(|_| 0)
                }
            };
            match stored {
                Ok(n) => {
                    tracing::debug!(tenant = %tenant, waba = %waba, templates = n, "templates synced")
                }
                Err(e) => tracing::warn!(error = %e, "template sync: cannot store"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            // Often enough to pick up new numbers soon; the claim keeps each WABA to one
            // sync per interval.
            _ = tokio::time::sleep(every.min(std::time::Duration::from_secs(30))) => {}
        }
    }
}
