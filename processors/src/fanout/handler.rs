//! First attempts (from `wa.events`) and later attempts (from the retry delay topics).
//!
//! A delivery is one event to one endpoint. Its first attempt is made in conversation
//! order (see `order`); when it fails, the next attempt becomes a task on the delay
//! topic of the schedule's next delay, and the input record is done: a failing endpoint
//! never holds the partition. A `strict` endpoint instead retries in place, holding that
//! conversation for that endpoint (only) until the event is delivered or given up.
//! Every attempt, made or skipped, goes to `wa.deliveries.attempts` (the delivery log)
//! before the input is marked done; a task whose attempts are exhausted goes to
//! `wa.deliveries.dlq`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use prometheus::{HistogramVec, IntCounterVec};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::failure::{classify, Class};
use switchboard_runtime::kafka::{produce_all, OutRecord, Topics};
use switchboard_runtime::lanes::{Disposition, RecordHandler};
use switchboard_runtime::netguard::AllowList;
use switchboard_runtime::now_ms;
use switchboard_runtime::CancellationToken;
use switchboard_schemas::config::{Endpoint, Ordering};
use switchboard_schemas::{
    Codec, DeadLetter, DeliveryAttempt, DeliveryAttempts, DeliveryTask, Event,
    CONFIG_RECORD_SCHEMA, DELIVERY_ATTEMPTS_SCHEMA, DELIVERY_TASK_SCHEMA, EVENT_SCHEMA,
};

use super::admit::{Admission, Held, StrictHolds, Waiting};
use super::deliver::{self, Kind, Outcome};
use super::endpoints::{EndpointRt, Registry};
use super::order::{Ticket, Turns};
use super::payload::render;
use super::store::Store;
use super::Config;

pub struct Metrics {
    pub attempts: IntCounterVec,
    pub event_to_delivery: HistogramVec,
    pub strict_overflow: prometheus::IntCounter,
    pub tenant_overflow: prometheus::IntCounter,
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(|| {
    let attempts = IntCounterVec::new(
        prometheus::Opts::new(
            "switchboard_fanout_attempts_total",
            "Delivery attempts by trigger (first, retry, recover, resend) and outcome",
        ),
        &["trigger", "outcome"],
    )
    .expect("valid metric");
    let event_to_delivery = HistogramVec::new(
        prometheus::HistogramOpts::new(
            "switchboard_fanout_event_to_delivery_seconds",
            "From the gateway receiving the webhook (or the send) to a 2xx from the endpoint, first attempts",
        )
        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        &["ordering"],
    )
    .expect("valid metric");
    let strict_overflow = prometheus::IntCounter::new(
        "switchboard_fanout_strict_overflow_total",
        "Failing events of strict endpoints sent to a delay topic because the endpoint held SWITCHBOARD_STRICT_HOLD_MAX already",
    )
    .expect("valid metric");
    let tenant_overflow = prometheus::IntCounter::new(
        "switchboard_fanout_tenant_overflow_total",
        "Events deferred whole to a delay topic because their tenant held SWITCHBOARD_TENANT_MAX_IN_FLIGHT of a busy fan-out's slots",
    )
    .expect("valid metric");
    let r = prometheus::default_registry();
    let _ = r.register(Box::new(tenant_overflow.clone()));
    let _ = r.register(Box::new(attempts.clone()));
    let _ = r.register(Box::new(event_to_delivery.clone()));
    let _ = r.register(Box::new(strict_overflow.clone()));
    Metrics {
        attempts,
        event_to_delivery,
        strict_overflow,
        tenant_overflow,
    }
});

pub struct Core {
    pub cfg: Config,
    pub cache: ConfigCache,
    pub registry: Registry,
    pub http: reqwest::Client,
    pub allow: AllowList,
    pub codec: Codec,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub schedule: Vec<Duration>,
    pub store: Store,
    pub turns: Arc<Turns>,
    pub shutdown: CancellationToken,
    /// `wa.fanout.dlq`, also for output the broker refuses for good.
    pub dead: DeadLetters,
    /// Events each strict endpoint holds in place now.
    pub held: StrictHolds,
    /// Events each tenant has in flight now.
    pub admission: Arc<Admission>,
}

/// What settling deliveries asks to produce.
#[derive(Default)]
struct Settled {
    attempts: Vec<DeliveryAttempt>,
    records: Vec<OutRecord>,
}

impl Settled {
    fn merge(&mut self, other: Settled) {
        self.attempts.extend(other.attempts);
        self.records.extend(other.records);
    }
}

/// What a delivery carries from attempt to attempt.
struct Delivery {
    event_id: String,
    event_type: String,
    tenant_id: String,
    conversation: String,
    body: String,
    /// The same bytes, shared by every request.
    payload: bytes::Bytes,
    first_attempt_ms: i64,
    trigger: String,
    /// When the event entered Switchboard (first attempts), for the latency metric.
    received_at_ms: Option<i64>,
}

/// The first-attempt consumer of `wa.events`.
#[derive(Clone)]
pub struct FirstAttempts(pub Arc<Core>);

impl RecordHandler for FirstAttempts {
    fn handle(
        &self,
        msg: OwnedMessage,
    ) -> impl std::future::Future<Output = Disposition> + Send + 'static {
        // Taken here, in arrival order, before any task runs.
        let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
        let ticket = self.0.turns.ticket(&format!("{}/{key}", msg.partition()));
        let core = self.0.clone();
        async move { core.first(msg, ticket).await }
    }
}

/// A consumer of one retry delay topic (and of recover/resend tasks).
#[derive(Clone)]
pub struct Retries(pub Arc<Core>);

impl RecordHandler for Retries {
    fn handle(
        &self,
        msg: OwnedMessage,
    ) -> impl std::future::Future<Output = Disposition> + Send + 'static {
        let core = self.0.clone();
        async move { core.retry(msg).await }
    }
}

impl Core {
    /// Decode, waiting out a registry outage; a record that never will decode is handed
    /// back to the loop for the dead-letter topic.
    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        msg: &OwnedMessage,
    ) -> Result<T, Disposition> {
        loop {
            match self
                .codec
                .decode::<T>(msg.payload().unwrap_or_default())
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "schema registry unavailable; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Disposition::Interrupted),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => return Err(Disposition::Poison(Box::new(msg.clone()), e.into())),
            }
        }
    }

    async fn first(self: Arc<Self>, msg: OwnedMessage, mut ticket: Ticket) -> Disposition {
        let ev: Event = match self.decode(&msg).await {
            Err(d) => return d,
            Ok(e) => e,
        };
        let Some(tenant) = ev.tenant_id.clone() else {
            return Disposition::Done; // a number no tenant owns: nobody to tell
        };
        let (ty, body) = render(&ev);
        let number = if ev.event_type.starts_with("message.") {
            ev.business_number.as_str()
        } else {
            ""
        };
        let targets: Vec<Endpoint> = self
            .cache
            .read()
            .endpoints_of(&tenant)
            .filter(|e| e.wants(&ty, number))
            .cloned()
            .collect();
        // A tenant over its share of a busy fan-out has the whole event deferred; it then
        // takes no turn in its conversations (deferred deliveries lose their order).
        let slot = self.admission.admit(&tenant);
        if slot.is_none() && !targets.is_empty() {
            METRICS.tenant_overflow.inc();
        }
        let ids: Vec<String> = match slot {
            Some(_) => targets.iter().map(|e| e.id.clone()).collect(),
            None => Vec::new(),
        };
        ticket.register(&ids).await;
        let d = Delivery {
            event_id: ev.event_id.clone(),
            event_type: ty,
            tenant_id: tenant,
            conversation: if number.is_empty() {
                String::new()
            } else {
                ev.conversation_key()
            },
            payload: bytes::Bytes::from(body.clone()),
            body,
            first_attempt_ms: now_ms(),
            trigger: "first".into(),
            received_at_ms: Some(ev.received_at_ms),
        };
        let (ticket, d, me, admitted) = (&ticket, &d, &self, slot.is_some());
        let done = join_all(targets.iter().enumerate().map(|(i, ep)| async move {
            let strict = ep.ordering == Ordering::Strict;
            if !admitted {
                return me.deliver(&ep.id, d, 1, false, i == 0, true).await;
            }
            let defer = if strict {
                ticket.turn(&ep.id).await;
                false
            } else {
                me.await_turn(ticket, ep).await?
            };
            let settled = me.deliver(&ep.id, d, 1, strict, i == 0, defer).await;
            ticket.pass(&ep.id);
            settled
        }))
        .await;
        drop(slot);
        // One produce for the whole event: its attempts in one log record, plus any retry
        // tasks, before the event counts as done.
        let mut all = Settled::default();
        let mut complete = true;
        for s in done {
            match s {
                Some(s) => all.merge(s),
                None => complete = false,
            }
        }
        (self.flush(all).await && complete).into()
    }

    async fn retry(self: Arc<Self>, msg: OwnedMessage) -> Disposition {
        let task: DeliveryTask = match self.decode(&msg).await {
            Err(d) => return d,
            Ok(t) => t,
        };
        // Tasks in one delay topic come due in offset order, so waiting here is the
        // topic's natural pace; other delay topics have their own consumers.
        let wait = task.not_before_ms - now_ms();
        if wait > 0 {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Disposition::Interrupted,
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
        let d = Delivery {
            event_id: task.event_id,
            event_type: task.event_type,
            tenant_id: task.tenant_id,
            conversation: task.conversation,
            payload: bytes::Bytes::from(task.body.clone()),
            body: task.body,
            first_attempt_ms: task.first_attempt_ms,
            trigger: task.trigger,
            received_at_ms: None,
        };
        match self
            .deliver(
                &task.endpoint_id,
                &d,
                task.attempt.max(1),
                false,
                false,
                false,
            )
            .await
        {
            Some(settled) => self.flush(settled).await.into(),
            None => Disposition::Interrupted,
        }
    }

    /// Attempt `attempt` of a delivery and settle its outcome: logged, and then done,
    /// scheduled again, retried in place (`inline`, strict ordering) or dead-lettered.
    /// Returns what to produce (the caller produces it before the input counts as
    /// done), or `None` when shutdown interrupted it before it was settled. `log_body`: this
    /// attempt's log record carries the body (one per event is enough for recover and
    /// resend to find it: the first attempt to the event's first endpoint).
    async fn deliver(
        &self,
        endpoint_id: &str,
        d: &Delivery,
        mut attempt: i32,
        mut inline: bool,
        mut log_body: bool,
        defer: bool,
    ) -> Option<Settled> {
        let mut settled = Settled::default();
        let mut holding: Option<Held<'_>> = None;
        loop {
            let current = {
                let ix = self.cache.read();
                ix.endpoints.get(endpoint_id).map(|e| {
                    (
                        e.clone(),
                        ix.version_of(switchboard_schemas::config::ENDPOINT, endpoint_id)
                            .unwrap_or(0),
                    )
                })
            };
            let outcome = match &current {
                None => {
                    tracing::info!(endpoint = endpoint_id, event = %d.event_id, "endpoint deleted; delivery dropped");
                    return Some(settled);
                }
                Some((ep, _)) if ep.disabled => skipped(Kind::Disabled, "the endpoint is disabled"),
                Some((ep, version)) => match self.registry.get(ep, *version) {
                    Ok(_) if defer => skipped(Kind::Deferred, "the endpoint cannot keep up"),
                    Ok(rt) => self.attempt(&rt, d, attempt, !inline).await?,
                    Err(e) => skipped(Kind::Failed, &e),
                },
            };
            // A skipped attempt (breaker open) does not use up the delivery's attempts: the
            // endpoint's health is not the event's fault. It waits as long as this attempt
            // would have before the next, so a dead endpoint's backlog does not churn.
            // A deferred one (the endpoint is slow and has enough waiting) comes back after
            // the shortest delay.
            let skipped_open = matches!(outcome.kind, Kind::CircuitOpen | Kind::Deferred);
            let exhausted =
                outcome.kind.retryable() && !skipped_open && attempt as usize > self.schedule.len();
            let is_final = !outcome.kind.retryable() || exhausted;
            METRICS
                .attempts
                .with_label_values(&[d.trigger.as_str(), outcome.kind.as_str()])
                .inc();
            if outcome.kind == Kind::Delivered && d.trigger == "first" {
                if let Some(at) = d.received_at_ms {
                    let label = if inline { "strict" } else { "conversation" };
                    METRICS
                        .event_to_delivery
                        .with_label_values(&[label])
                        .observe((now_ms() - at).max(0) as f64 / 1000.0);
                }
            }
            let log = DeliveryAttempt {
                attempt_id: uuid::Uuid::now_v7().simple().to_string(),
                endpoint_id: endpoint_id.to_string(),
                tenant_id: d.tenant_id.clone(),
                event_id: d.event_id.clone(),
                event_type: d.event_type.clone(),
                attempt,
                trigger: d.trigger.clone(),
                outcome: outcome.kind.as_str().into(),
                status_code: outcome.status.map(i32::from),
                latency_ms: outcome.latency_ms,
                error: outcome.error.clone(),
                response_snippet: outcome.snippet.clone(),
                attempted_at_ms: now_ms(),
                is_final,
                body: if std::mem::take(&mut log_body) {
                    d.body.clone()
                } else {
                    String::new()
                },
            };
            settled.attempts.push(log);
            if let Some((ep, _)) = &current {
                if let Some(rt) = self.track_health(ep, &outcome).await {
                    settled.records.extend(rt.into_iter().flatten());
                }
            }
            // A strict endpoint holds at most `strict_hold_max` events in place; beyond
            // that an event waits on a delay topic like a conversation-ordered one, so one
            // failing endpoint cannot take every slot of the fan-out.
            if !is_final && inline && holding.is_none() {
                holding = self.held.hold(endpoint_id, self.cfg.strict_hold_max);
                if holding.is_none() {
                    inline = false;
                    METRICS.strict_overflow.inc();
                }
            }
            if !is_final && inline {
                if !self.flush(std::mem::take(&mut settled)).await {
                    return None;
                }
                let delay = self.schedule[(attempt as usize - 1).min(self.schedule.len() - 1)];
                if skipped_open {
                    attempt -= 1;
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                attempt += 1;
                continue;
            }
            if outcome.kind.retryable() {
                let mut task = DeliveryTask {
                    event_id: d.event_id.clone(),
                    event_type: d.event_type.clone(),
                    tenant_id: d.tenant_id.clone(),
                    endpoint_id: endpoint_id.to_string(),
                    conversation: d.conversation.clone(),
                    attempt: if skipped_open { attempt } else { attempt + 1 },
                    not_before_ms: 0,
                    first_attempt_ms: d.first_attempt_ms,
                    trigger: d.trigger.clone(),
                    body: d.body.clone(),
                    last_error: outcome.error.clone(),
                    last_status: outcome.status.map(i32::from),
                };
                let topic = if exhausted {
                    task.attempt = attempt;
                    self.topics.deliveries_dlq.clone()
                } else {
                    let delay = if outcome.kind == Kind::Deferred {
                        self.schedule
                            .iter()
                            .min()
                            .copied()
                            .unwrap_or(Duration::from_secs(5))
                    } else {
                        self.schedule[(attempt as usize - 1).min(self.schedule.len() - 1)]
                    };
                    task.not_before_ms = now_ms() + delay.as_millis() as i64;
                    self.topics.retry_topic(delay)
                };
                settled.records.extend(
                    self.record(&topic, endpoint_id, DELIVERY_TASK_SCHEMA, &task)
                        .await,
                );
            }
            return Some(settled);
        }
    }

    /// Produce what deliveries settled: their attempts as log records, and the rest.
    /// Attempts go in as few records as fit the message limit (an event with hundreds of
    /// endpoints, or attempts that carry its body, makes more than one).
    async fn flush(&self, mut s: Settled) -> bool {
        let limit = self.cfg.kafka.kafka_message_max_bytes * 3 / 4;
        for chunk in by_size(std::mem::take(&mut s.attempts), limit, attempt_size) {
            let key = chunk[0].event_id.clone();
            let batch = DeliveryAttempts { attempts: chunk };
            s.records.extend(
                self.record(
                    &self.topics.deliveries_attempts,
                    &key,
                    DELIVERY_ATTEMPTS_SCHEMA,
                    &batch,
                )
                .await,
            );
        }
        self.produce(s.records).await
    }

    /// Wait for this event's turn at `ep` (conversation order). Waiting counts as waiting
    /// for the endpoint: when it cannot keep up, the event stops waiting and its delivery
    /// is deferred (`Some(true)`), like a failed first attempt it is then delivered on
    /// its own; otherwise the delivery may be attempted. `None` on shutdown.
    async fn await_turn(&self, ticket: &Ticket, ep: &Endpoint) -> Option<bool> {
        let version = self
            .cache
            .read()
            .version_of(switchboard_schemas::config::ENDPOINT, &ep.id);
        let Some(rt) = version.and_then(|v| self.registry.get(ep, v).ok()) else {
            ticket.turn(&ep.id).await;
            return Some(false);
        };
        let turn = ticket.turn(&ep.id);
        tokio::pin!(turn);
        // Most turns are immediate: only count and look when there is a wait.
        if futures::poll!(turn.as_mut()).is_ready() {
            return Some(false);
        }
        let _counted = Waiting::new(&rt.waiting);
        loop {
            let recheck = rt.recheck.notified();
            tokio::pin!(recheck);
            recheck.as_mut().enable();
            if rt.should_defer() {
                return Some(true);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = &mut turn => return Some(false),
                _ = recheck => {}
            }
        }
    }

    /// One HTTP attempt within the endpoint's limits; `None` if shutdown came first.
    /// `may_defer`: when the endpoint cannot keep up (see `EndpointRt::should_defer`),
    /// answer `Deferred` rather than hold the event.
    async fn attempt(
        &self,
        rt: &EndpointRt,
        d: &Delivery,
        attempt: i32,
        may_defer: bool,
    ) -> Option<Outcome> {
        let permit = match rt.in_flight.clone().try_acquire_owned() {
            Ok(p) if rt.limiter.as_ref().is_none_or(|l| l.check().is_ok()) => Some(p),
            Ok(p) => {
                drop(p);
                None
            }
            Err(_) => None,
        };
        let _permit = match permit {
            Some(p) => p,
            None => {
                let _counted = Waiting::new(&rt.waiting);
                if may_defer && rt.should_defer() {
                    return Some(skipped(Kind::Deferred, "the endpoint cannot keep up"));
                }
                let waited = async {
                    let p = rt.in_flight.clone().acquire_owned().await.ok()?;
                    if let Some(l) = &rt.limiter {
                        l.until_ready().await;
                    }
                    Some(p)
                };
                tokio::pin!(waited);
                // An endpoint can turn slow while this one waits (a hanging endpoint is
                // only known after a second): the registry's watch wakes us to look again.
                loop {
                    let recheck = rt.recheck.notified();
                    tokio::pin!(recheck);
                    recheck.as_mut().enable();
                    if may_defer && rt.should_defer() {
                        return Some(skipped(Kind::Deferred, "the endpoint cannot keep up"));
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        p = &mut waited => break p?,
                        _ = recheck => {}
                    }
                }
            }
        };
        if !rt.health.permits() {
            return Some(skipped(
                Kind::CircuitOpen,
                "the endpoint's circuit breaker is open",
            ));
        }
        let o = deliver::attempt(
            &self.http,
            &self.allow,
            rt,
            &d.event_id,
            attempt,
            &d.payload,
            self.cfg.max_response_bytes,
        )
        .await;
        if o.status.is_some() || o.kind == Kind::Failed {
            rt.health.observe(o.latency_ms);
        }
        match o.kind {
            Kind::Delivered | Kind::Aborted => rt.health.record(true),
            Kind::Failed => rt.health.record(false),
            _ => {}
        }
        Some(o)
    }

    /// Keep failing-since in step with outcomes and disable an endpoint that has failed
    /// for `disable_after`. Returns records to produce with the attempt (the
    /// `endpoint.disabled` event and the endpoint's new configuration).
    async fn track_health(&self, ep: &Endpoint, o: &Outcome) -> Option<Vec<Option<OutRecord>>> {
        let health = self.registry.health(&ep.id);
        let now = now_ms();
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
                None
            }
            Kind::Failed | Kind::CircuitOpen => {
                let known = *health
                    .failing_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let since = match known {
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
                    return None;
                }
                self.disable(ep, since).await
            }
            _ => None,
        }
    }

    async fn disable(&self, ep: &Endpoint, since: i64) -> Option<Vec<Option<OutRecord>>> {
        let reason = format!(
            "failing without a success since {} (longer than {})",
            chrono::DateTime::from_timestamp_millis(since)
                .unwrap_or_default()
                .to_rfc3339(),
            humantime::format_duration(self.cfg.disable_after)
        );
        let rec = match self.store.disable(&ep.id, &reason).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %ep.id, "cannot disable the endpoint yet");
                return None;
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
        Some(vec![
            self.record(&self.topics.config, &rec.key(), CONFIG_RECORD_SCHEMA, &rec)
                .await,
            self.record(
                &self.topics.events,
                &format!("endpoint:{}", ep.id),
                EVENT_SCHEMA,
                &ev,
            )
            .await,
        ])
    }

    async fn record<T: Serialize>(
        &self,
        topic: &str,
        key: &str,
        schema: &str,
        v: &T,
    ) -> Option<OutRecord> {
        loop {
            match self.codec.encode(topic, schema, v).await {
                Ok(payload) => {
                    return Some(OutRecord {
                        topic: topic.to_string(),
                        key: key.to_string(),
                        payload,
                        headers: vec![],
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, topic, "cannot encode (registry?); retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Produce until the broker acks; `false` if shutdown came first (the input record
    /// stays unfinished and is delivered again).
    async fn produce(&self, records: Vec<OutRecord>) -> bool {
        if records.is_empty() {
            return !self.shutdown.is_cancelled();
        }
        loop {
            match produce_all(&self.producer, &records).await {
                Ok(()) => return true,
                Err(e) if classify(&anyhow::Error::from(e.clone())) != Class::Transient => {
                    return self.produce_each(records).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot produce delivery records; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
}

impl Core {
    /// The broker refused a batch for good (a record over its limit): produce the records
    /// one by one, and dead-letter each one it refuses, with its destination and size, so
    /// that the stream goes on and an operator sees what did not go out.
    async fn produce_each(&self, records: Vec<OutRecord>) -> bool {
        for r in records {
            let one = std::slice::from_ref(&r);
            loop {
                match produce_all(&self.producer, one).await {
                    Ok(()) => break,
                    Err(e) if classify(&anyhow::Error::from(e.clone())) != Class::Transient => {
                        let size = r.payload.len();
                        let keep = size.min(self.dead.max_payload());
                        let dl = DeadLetter {
                            source_topic: r.topic.clone(),
                            source_partition: -1,
                            source_offset: -1,
                            reason: "unproducible".into(),
                            detail: format!(
                                "the broker refused a {size}-byte record for {}: {e}",
                                r.topic
                            ),
                            failed_at_ms: now_ms(),
                            key: Some(r.key.clone()),
                            payload: r.payload[..keep].to_vec(),
                            stage: self.dead.stage.to_string(),
                            source_timestamp_ms: Some(now_ms()),
                            payload_truncated: keep < size,
                            payload_size: size as i64,
                            headers: r
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.clone()))
                                .collect(),
                        };
                        tracing::error!(topic = %r.topic, size, error = %e, "record refused by the broker; dead-lettered");
                        loop {
                            match self.dead.write(std::slice::from_ref(&dl)).await {
                                Ok(()) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot dead-letter; retrying")
                                }
                            }
                            tokio::select! {
                                _ = self.shutdown.cancelled() => return false,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot produce a delivery record; retrying")
                    }
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
        true
    }
}

/// About the bytes `a` takes in a record (Avro: its strings plus a little framing).
fn attempt_size(a: &DeliveryAttempt) -> usize {
    64 + a.attempt_id.len()
        + a.endpoint_id.len()
        + a.tenant_id.len()
        + a.event_id.len()
        + a.event_type.len()
        + a.trigger.len()
        + a.outcome.len()
        + a.error.as_ref().map_or(0, String::len)
        + a.response_snippet.as_ref().map_or(0, String::len)
        + a.body.len()
}

/// `items` in order, cut into runs whose sizes add up to at most `limit` (an item larger
/// than `limit` alone makes a run).
fn by_size<T>(items: Vec<T>, limit: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut used = 0;
    for item in items {
        let n = size(&item);
        match out.last_mut() {
            Some(run) if used + n <= limit => run.push(item),
            _ => {
                out.push(vec![item]);
                used = 0;
            }
        }
        used += n;
    }
    out
}

fn skipped(kind: Kind, why: &str) -> Outcome {
    Outcome {
        kind,
        status: None,
        latency_ms: 0,
        error: Some(why.to_string()),
        snippet: None,
    }
}

#[cfg(test)]
mod tests {
    use super::by_size;

    #[test]
    fn runs_stay_under_the_limit_in_order() {
        let runs = by_size(vec![40, 40, 40, 10, 120, 5], 100, |n| *n);
        assert_eq!(runs, vec![vec![40, 40], vec![40, 10], vec![120], vec![5]]);
        assert!(by_size(Vec::<usize>::new(), 100, |n| *n).is_empty());
    }
}
