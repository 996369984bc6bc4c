//! An endpoint's failing-since, kept in step with outcomes, and its auto-disable once it
//! has failed without a success for `SWITCHBOARD_DISABLE_AFTER`. Both touch PostgreSQL on
//! health transitions only, never per delivery.

use switchboard_runtime::kafka::OutRecord;
use switchboard_runtime::now_ms;
use switchboard_schemas::config::Endpoint;
use switchboard_schemas::{Event, CONFIG_RECORD_SCHEMA, EVENT_SCHEMA};

use super::deliver::{Kind, Outcome};
use super::dispatch::Dispatcher;

impl Dispatcher {
    /// Keep failing-since in step with `o` and disable an endpoint that has failed for
    /// `disable_after`. Returns records to produce with the attempt (the
    /// `endpoint.disabled` event and the endpoint's new configuration).
    pub(super) async fn track_health(&self, ep: &Endpoint, o: &Outcome) -> Vec<OutRecord> {
        let health = self.registry.health(&ep.id);
        let now = now_ms();
        let lock = |m: &std::sync::Mutex<Option<i64>>| *m.lock().unwrap_or_else(|p| p.into_inner());
        match o.kind {
            Kind::Delivered | Kind::Aborted => {
                let was = health
                    .failing_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if was.is_some() {
                    if let Err(e) = self.store.mark_healthy(&ep.id).await {
                        tracing::warn!(error = %e, endpoint = %ep.id, "cannot clear failing_since");
                    }
                }
                Vec::new()
            }
            Kind::Failed | Kind::CircuitOpen => {
                let since = match lock(&health.failing_since) {
                    Some(s) => s,
                    None => {
                        let s = self.store.mark_failing(&ep.id, now).await.unwrap_or(now);
                        *health
                            .failing_since
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(s);
                        s
                    }
                };
                if now - since < self.cfg.disable_after.as_millis() as i64 {
                    return Vec::new();
                }
                self.disable(ep, since).await
            }
            _ => Vec::new(),
        }
    }

    async fn disable(&self, ep: &Endpoint, since: i64) -> Vec<OutRecord> {
        let reason = format!(
            "failing without a success since {} (longer than {})",
            chrono::DateTime::from_timestamp_millis(since)
                .unwrap_or_default()
                .to_rfc3339(),
            humantime::format_duration(self.cfg.disable_after)
        );
        let rec = match self.store.disable(&ep.id, &reason).await {
            Ok(Some(r)) => r,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %ep.id, "cannot disable the endpoint yet");
                return Vec::new();
            }
        };
        tracing::warn!(endpoint = %ep.id, tenant = %ep.tenant_id, %reason, "endpoint disabled");
        self.cache.apply(&rec);
        let now = now_ms();
        let ev = Event {
            event_id: format!("evt_disabled_{}_{}", ep.id, rec.version),
            event_type: "endpoint.disabled".into(),
            tenant_id: Some(ep.tenant_id.clone()),
            content: Some(
                serde_json::json!({"endpoint_id": ep.id, "url": ep.url, "reason": reason,
                    "failing_since": chrono::DateTime::from_timestamp_millis(since)})
                .to_string(),
            ),
            occurred_at_ms: now,
            received_at_ms: now,
            ..Event::default()
        };
        let out = &self.out;
        [
            out.record(&out.topics.config, &rec.key(), CONFIG_RECORD_SCHEMA, &rec)
                .await,
            out.record(
                &out.topics.events,
                &format!("endpoint:{}", ep.id),
                EVENT_SCHEMA,
                &ev,
            )
            .await,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
