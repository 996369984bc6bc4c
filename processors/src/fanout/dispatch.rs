//! The fan-out's two consumers, and one delivery's way through the stages:
//!
//! decode (a record into a [`Delivery`] and its endpoints) → admit ([`super::admit`]: the
//! tenant's share, the conversation's turn, the endpoint's slot) → attempt
//! ([`super::deliver`]: one request through the endpoint's breaker) → record
//! ([`super::record`]: the delivery log line and the next step, produced before the input
//! counts as done; [`super::health`]: failing-since and auto-disable).
//!
//! A delivery is one event to one endpoint. Its first attempt is made in conversation
//! order (see `order`); when it fails, the next attempt becomes a task on the delay topic
//! of the schedule's next delay, and the input record is done: a failing endpoint never
//! holds the partition. A `strict` endpoint instead retries in place, holding that
//! conversation for that endpoint (only) until the event is delivered or given up.
//! Every attempt, made or skipped, goes to `wa.deliveries.attempts` (the delivery log)
//! before the input is marked done; a task whose attempts are exhausted goes to
//! `wa.deliveries.dlq`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::join_all;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use rdkafka::message::{Message, OwnedMessage};
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::lanes::{Disposition, RecordHandler};
use switchboard_runtime::netguard::AllowList;
use switchboard_runtime::{now_ms, CancellationToken};
use switchboard_schemas::config::{Endpoint, Ordering, ENDPOINT};
use switchboard_schemas::{DeliveryAttempt, DeliveryTask, Event, DELIVERY_TASK_SCHEMA};

use super::admit::{self, Admission, Admit, Held, Share, StrictHolds};
use super::deliver::{self, Kind, Outcome};
use super::endpoints::{Defer, EndpointRt, Registry};
use super::order::{Ticket, Turns};
use super::payload::render;
use super::record::{next_step, Next, Recorder, Settled};
use super::Config;
use crate::db::endpoints::EndpointBook;

pub struct Metrics {
    pub attempts: IntCounterVec,
    pub event_to_delivery: HistogramVec,
    pub strict_overflow: IntCounter,
    pub tenant_overflow: IntCounter,
    pub deferred: IntCounterVec,
    pub scheduler_lag: Histogram,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
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
    let strict_overflow = IntCounter::new(
        "switchboard_fanout_strict_overflow_total",
        "Failing events of strict endpoints sent to a delay topic because the endpoint held SWITCHBOARD_STRICT_HOLD_MAX already",
    )
    .expect("valid metric");
    let tenant_overflow = IntCounter::new(
        "switchboard_fanout_tenant_overflow_total",
        "Events deferred whole to a delay topic because their tenant held SWITCHBOARD_TENANT_MAX_IN_FLIGHT of a busy fan-out's slots",
    )
    .expect("valid metric");
    let deferred = IntCounterVec::new(
        prometheus::Opts::new(
            "switchboard_fanout_deferred_total",
            "Deliveries sent to a delay topic without an attempt, by reason (slow, hung, rate_limited, tenant_share)",
        ),
        &["reason"],
    )
    .expect("valid metric");
    let scheduler_lag = Histogram::with_opts(
        prometheus::HistogramOpts::new(
            "switchboard_fanout_scheduler_lag_seconds",
            "How late the fan-out's 200 ms health tick wakes: its own CPU starvation, which inflates every answer time it measures",
        )
        .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
    )
    .expect("valid metric");
    let r = prometheus::default_registry();
    let _ = r.register(Box::new(deferred.clone()));
    let _ = r.register(Box::new(scheduler_lag.clone()));
    let _ = r.register(Box::new(attempts.clone()));
    let _ = r.register(Box::new(event_to_delivery.clone()));
    let _ = r.register(Box::new(strict_overflow.clone()));
    let _ = r.register(Box::new(tenant_overflow.clone()));
    Metrics {
        attempts,
        event_to_delivery,
        strict_overflow,
        tenant_overflow,
        deferred,
        scheduler_lag,
    }
});

pub struct Dispatcher {
    pub cfg: Config,
    pub cache: ConfigCache,
    pub registry: Registry,
    pub http: reqwest::Client,
    pub allow: AllowList,
    pub schedule: Vec<Duration>,
    pub store: EndpointBook,
    pub turns: Arc<Turns>,
    pub shutdown: CancellationToken,
    /// Events each strict endpoint holds in place now.
    pub held: StrictHolds,
    /// Events each tenant has in flight now.
    pub admission: Arc<Admission>,
    /// Encoding and producing what deliveries leave behind.
    pub out: Recorder,
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
    /// The endpoint whose first log line carries the body (one line per event is enough
    /// for recover and resend to find it).
    body_logged_with: Option<String>,
}

/// How a delivery's attempt is made and what its failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A first attempt to a `conversation` endpoint, in its turn: a failure goes to a
    /// delay topic; an endpoint that cannot keep up defers it.
    InTurn,
    /// A first attempt to a `strict` endpoint, in its turn: a failure is retried in place
    /// (within the endpoint's hold cap); it never defers.
    Strict,
    /// An attempt from a delay topic (a retry, a recover or a resend).
    Retry,
    /// Deferred by admission before any attempt, for this reason: logged, and sent to the
    /// shortest delay topic.
    Deferred(Defer),
}

/// The first-attempt consumer of `wa.events`.
#[derive(Clone)]
pub struct FirstAttempts(pub Arc<Dispatcher>);

impl RecordHandler for FirstAttempts {
    fn handle(
        &self,
        msg: OwnedMessage,
    ) -> impl std::future::Future<Output = Disposition> + Send + 'static {
        // Taken here, in arrival order, before any task runs.
        let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
        let ticket = self.0.turns.ticket(&format!("{}/{key}", msg.partition()));
        let me = self.0.clone();
        async move { me.first(msg, ticket).await }
    }
}

/// A consumer of one retry delay topic (and of recover/resend tasks).
#[derive(Clone)]
pub struct Retries(pub Arc<Dispatcher>);

impl RecordHandler for Retries {
    fn handle(
        &self,
        msg: OwnedMessage,
    ) -> impl std::future::Future<Output = Disposition> + Send + 'static {
        let me = self.0.clone();
        async move { me.retry(msg).await }
    }
}

impl Dispatcher {
    /// Decode, waiting out a registry outage; a record that never will decode is handed
    /// back to the loop for the dead-letter topic.
    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        msg: &OwnedMessage,
    ) -> Result<T, Disposition> {
        let payload = msg.payload().unwrap_or_default();
        let decoded = switchboard_runtime::retry::until(
            "decoding (schema registry?)",
            &self.shutdown,
            Duration::from_millis(500),
            |e: &switchboard_schemas::CodecError| e.is_retryable(),
            || self.out.codec.decode::<T>(payload),
        )
        .await;
        match decoded {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Disposition::Interrupted),
            Err(e) => Err(Disposition::Poison(Box::new(msg.clone()), e.into())),
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
        // A tenant stuck over its share of a busy fan-out has the whole event deferred; it
        // then takes no turn in its conversations (deferred deliveries lose their order).
        let slot = if targets.is_empty() {
            None
        } else {
            match self.admission.admit(&tenant, &self.shutdown).await {
                None => return Disposition::Interrupted,
                Some(Share::Taken(slot)) => Some(slot),
                Some(Share::Over) => {
                    METRICS.tenant_overflow.inc();
                    None
                }
            }
        };
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
            body_logged_with: targets.first().map(|e| e.id.clone()),
        };
        let (ticket, d, me, admitted) = (&ticket, &d, &self, slot.is_some());
        let done = join_all(targets.iter().map(|ep| async move {
            if !admitted {
                return me
                    .deliver(&ep.id, d, 1, Mode::Deferred(Defer::TenantShare))
                    .await;
            }
            let mode = if ep.ordering == Ordering::Strict {
                // Strict endpoints wait their turn however long: deferring would break
                // their order.
                ticket.turn(&ep.id).await;
                Mode::Strict
            } else {
                let rt = me.runtime(ep);
                match admit::turn(ticket, &ep.id, rt.as_deref(), &me.shutdown).await? {
                    Admit::Go(_) => Mode::InTurn,
                    Admit::Defer(why) => Mode::Deferred(why),
                }
            };
            let settled = me.deliver(&ep.id, d, 1, mode).await;
            ticket.pass(&ep.id);
            settled
        }))
        .await;
        drop(slot);
        // One produce for the whole event: its attempts in as few log records as fit,
        // plus any retry tasks, before the event counts as done.
        let mut all = Settled::default();
        let mut complete = true;
        for s in done {
            match s {
                Some(s) => all.merge(s),
                None => complete = false,
            }
        }
        (self.out.flush(all).await && complete).into()
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
            body_logged_with: None,
        };
        match self
            .deliver(&task.endpoint_id, &d, task.attempt.max(1), Mode::Retry)
            .await
        {
            Some(settled) => self.out.flush(settled).await.into(),
            None => Disposition::Interrupted,
        }
    }

    /// The endpoint's runtime (secrets, limits, health), if it is known and can sign.
    fn runtime(&self, ep: &Endpoint) -> Option<Arc<EndpointRt>> {
        let version = self.cache.read().version_of(ENDPOINT, &ep.id)?;
        self.registry.get(ep, version).ok()
    }

    /// Make attempt `attempt` of a delivery and record what it leaves behind, again and
    /// again while a strict endpoint holds it in place. Returns what to produce (the
    /// caller produces it before the input counts as done), or `None` when shutdown
    /// interrupted it before it was recorded.
    async fn deliver(
        &self,
        endpoint_id: &str,
        d: &Delivery,
        mut attempt: i32,
        mut mode: Mode,
    ) -> Option<Settled> {
        let mut settled = Settled::default();
        let mut log_body = d.body_logged_with.as_deref() == Some(endpoint_id);
        let mut holding: Option<Held<'_>> = None;
        loop {
            let current = {
                let ix = self.cache.read();
                ix.endpoints.get(endpoint_id).map(|e| {
                    let version = ix.version_of(ENDPOINT, endpoint_id).unwrap_or(0);
                    (e.clone(), version)
                })
            };
            let Some((ep, version)) = current else {
                tracing::info!(endpoint = endpoint_id, event = %d.event_id, "endpoint deleted; delivery dropped");
                return Some(settled);
            };
            let outcome = if ep.disabled {
                Outcome::skipped(Kind::Disabled, "the endpoint is disabled")
            } else {
                match (self.registry.get(&ep, version), mode) {
                    (Err(e), _) => Outcome::skipped(Kind::Failed, &e),
                    (Ok(_), Mode::Deferred(why)) => Outcome::deferred(why),
                    (Ok(rt), _) => self.attempt(&rt, d, attempt, mode).await?,
                }
            };
            let mut next = next_step(outcome.kind, attempt, &self.schedule, mode == Mode::Strict);
            // A strict endpoint holds at most `strict_hold_max` events in place; beyond
            // that an event waits on a delay topic like a conversation-ordered one, so one
            // failing endpoint cannot take every slot of the fan-out.
            if matches!(next, Next::InPlace { .. }) && holding.is_none() {
                holding = self.held.hold(endpoint_id, self.cfg.strict_hold_max);
                if holding.is_none() {
                    METRICS.strict_overflow.inc();
                    mode = Mode::InTurn;
                    next = next_step(outcome.kind, attempt, &self.schedule, false);
                }
            }
            self.observe(d, &outcome, mode);
            settled.attempts.push(log_line(
                endpoint_id,
                d,
                attempt,
                &outcome,
                next.is_final(),
                std::mem::take(&mut log_body),
            ));
            settled
                .records
                .extend(self.track_health(&ep, &outcome).await);
            let (topic, task) = match next {
                Next::Done => return Some(settled),
                Next::InPlace {
                    delay,
                    attempt: again,
                } => {
                    if !self.out.flush(std::mem::take(&mut settled)).await {
                        return None;
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt = again;
                    continue;
                }
                Next::Later {
                    delay,
                    attempt: again,
                } => (
                    self.out.topics.retry_topic(delay),
                    task(
                        endpoint_id,
                        d,
                        again,
                        &outcome,
                        now_ms() + delay.as_millis() as i64,
                    ),
                ),
                Next::Exhausted => (
                    self.out.topics.deliveries_dlq.clone(),
                    task(endpoint_id, d, attempt, &outcome, 0),
                ),
            };
            settled.records.extend(
                self.out
                    .record(&topic, endpoint_id, DELIVERY_TASK_SCHEMA, &task)
                    .await,
            );
            return Some(settled);
        }
    }

    /// One HTTP attempt within the endpoint's limits; `None` if shutdown came first.
    async fn attempt(
        &self,
        rt: &EndpointRt,
        d: &Delivery,
        attempt: i32,
        mode: Mode,
    ) -> Option<Outcome> {
        let _slot = match admit::endpoint_slot(rt, mode != Mode::Strict, &self.shutdown).await? {
            Admit::Go(slot) => slot,
            Admit::Defer(why) => return Some(Outcome::deferred(why)),
        };
        let o = deliver::attempt_guarded(
            &self.http,
            &self.allow,
            rt,
            &d.event_id,
            attempt,
            &d.payload,
            self.cfg.max_response_bytes,
        )
        .await;
        Some(o)
    }

    fn observe(&self, d: &Delivery, outcome: &Outcome, mode: Mode) {
        METRICS
            .attempts
            .with_label_values(&[d.trigger.as_str(), outcome.kind.as_str()])
            .inc();
        if outcome.kind == Kind::Delivered && d.trigger == "first" {
            if let Some(at) = d.received_at_ms {
                let label = if mode == Mode::Strict {
                    "strict"
                } else {
                    "conversation"
                };
                METRICS
                    .event_to_delivery
                    .with_label_values(&[label])
                    .observe((now_ms() - at).max(0) as f64 / 1000.0);
            }
        }
    }
}

/// The delivery log's line for one attempt.
fn log_line(
    endpoint_id: &str,
    d: &Delivery,
    attempt: i32,
    outcome: &Outcome,
    is_final: bool,
    with_body: bool,
) -> DeliveryAttempt {
    DeliveryAttempt {
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
        body: if with_body {
            d.body.clone()
        } else {
            String::new()
        },
    }
}

/// The task that carries a delivery to its next attempt (or to the dead-letter topic).
fn task(
    endpoint_id: &str,
    d: &Delivery,
    attempt: i32,
    last: &Outcome,
    not_before_ms: i64,
) -> DeliveryTask {
    DeliveryTask {
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        tenant_id: d.tenant_id.clone(),
        endpoint_id: endpoint_id.to_string(),
        conversation: d.conversation.clone(),
        attempt,
        not_before_ms,
        first_attempt_ms: d.first_attempt_ms,
        trigger: d.trigger.clone(),
        body: d.body.clone(),
        last_error: last.error.clone(),
        last_status: last.status.map(i32::from),
    }
}
