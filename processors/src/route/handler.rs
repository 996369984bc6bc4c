//! Routing one send request: rate limit, record the intent, call the BSP, record the
//! outcome, emit `send accepted` / `send failed` to `wa.events`.
//!
//! Exactly-once towards the customer, as far as a crash allows: the `queued → sending`
//! transition is committed before the BSP call, and the outcome after it. A request
//! found in `sending` once its lease has expired belongs to a router that crashed
//! mid-call: the router does not know whether the BSP took it, and no BSP here offers a
//! look-up by our id, so it is not re-sent blindly: it ends as `send failed` with code
//! `outcome_unknown` and goes to `wa.send.dlq` for an operator (policy in the README).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, HistogramVec,
    IntCounter, IntCounterVec,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde_json::{Map, Value};
use switchboard_connectors::send::{self, codes, Accepted, ErrorKind, Outbound, Route, SendError};
use switchboard_connectors::Bsp;
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::failure::{classify, Class};
use switchboard_runtime::kafka::{produce_all, OutRecord, Topics};
use switchboard_runtime::lanes::{Disposition, RecordHandler};
use switchboard_runtime::secrets::Keyring;
use switchboard_runtime::telemetry::LATENCY_BUCKETS;
use switchboard_runtime::{now_ms, CancellationToken};
use switchboard_schemas::config::BusinessNumber;
use switchboard_schemas::{send_event_id, Codec, Event, EventType, SendRequest, EVENT_SCHEMA};

use super::breaker::Breakers;
use super::limiter::SenderLimiter;
use super::outbox::{Claim, Final, Outbox};
use super::Config;

struct Metrics {
    sends: IntCounterVec,
    parked: IntCounter,
    bsp_seconds: HistogramVec,
    dead_letters: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    sends: register_int_counter_vec!(
        "switchboard_router_bsp_calls_total",
        "BSP send calls by outcome (accepted, or the stable error code)",
        &["bsp", "outcome"]
    )
    .expect("registers once"),
    parked: register_int_counter!(
        "switchboard_router_parked_total",
        "Sends parked until their turn because their number's queue was full"
    )
    .expect("registers once"),
    bsp_seconds: register_histogram_vec!(
        "switchboard_router_bsp_call_seconds",
        "Latency of BSP send calls",
        &["bsp"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("registers once"),
    dead_letters: register_int_counter_vec!(
        "switchboard_router_dead_letters_total",
        "Send requests sent to wa.send.dlq",
        &["reason"]
    )
    .expect("registers once"),
});

/// Why routing a record stopped short of an outcome.
#[derive(Debug)]
pub enum Stop {
    /// Shutdown interrupted the work; the record is redelivered later.
    Shutdown,
    /// A permanent failure (see `switchboard_runtime::failure`): the request goes to
    /// `wa.send.dlq`. A redrive finds its row wherever the state machine left it, so it is
    /// never sent twice.
    Poison(anyhow::Error),
}

pub struct Core {
    pub cfg: Config,
    pub outbox: Outbox,
    pub cache: ConfigCache,
    pub keyring: Option<Keyring>,
    pub http: reqwest::Client,
    pub limiter: SenderLimiter,
    pub breakers: Breakers,
    pub codec: Codec,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub in_flight: Mutex<HashSet<String>>,
    pub shutdown: CancellationToken,
    /// `wa.send.dlq`.
    pub dead: DeadLetters,
}

#[derive(Clone)]
pub struct Router(pub Arc<Core>);

impl RecordHandler for Router {
    fn handle(
        &self,
        msg: OwnedMessage,
    ) -> impl std::future::Future<Output = Disposition> + Send + 'static {
        let me = self.clone();
        async move {
            match me.route(&msg).await {
                Ok(()) => Disposition::Done,
                Err(Stop::Shutdown) => Disposition::Interrupted,
                Err(Stop::Poison(e)) => Disposition::Poison(Box::new(msg), e),
            }
        }
    }
}

impl Router {
    async fn route(&self, src: &OwnedMessage) -> Result<(), Stop> {
        let core = &self.0;
        let req = core
            .durable("decode send request", || async {
                Ok(core
                    .codec
                    .decode::<SendRequest>(src.payload().unwrap_or_default())
                    .await?)
            })
            .await?;
        core.route(&req, src).await
    }
}

impl Core {
    /// Retry `f` (infrastructure trouble: database, broker, registry) until it works or
    /// the process is told to stop.
    async fn durable<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if classify(&e) != Class::Transient => {
                    return Err(Stop::Poison(e.context(what.to_string())))
                }
                Err(e) => tracing::warn!(error = %e, "{what} failed; retrying"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn route(&self, req: &SendRequest, src: &OwnedMessage) -> Result<(), Stop> {
        if req.scheduled_at_ms.is_some_and(|t| t > now_ms() + 50) {
            // Not due: its row is `scheduled`; the scheduler publishes it again when due.
            return Ok(());
        }
        let number = {
            let ix = self.cache.read();
            ix.numbers
                .get(&req.from_number)
                .filter(|n| n.tenant_id == req.tenant_id)
                .cloned()
        };
        let Some(number) = number else {
            let detail = format!(
                "{} is not a number of tenant {}",
                req.from_number, req.tenant_id
            );
            let claim = self
                .durable("claim", || async {
                    self.outbox.claim(&req.message_id, "none").await
                })
                .await?;
            if let Claim::Send { .. } = claim {
                return self
                    .finish_failed(
                        req,
                        src,
                        None,
                        "none",
                        codes::SENDER_NOT_CONFIGURED,
                        None,
                        &detail,
                        true,
                    )
                    .await;
            }
            return self.settle(req, src, claim, None).await;
        };
        // A number with a few seconds of sends waiting already: park this one rather than
        // hold a shared slot while it waits (one tenant's backlog must not starve others).
        // Only a `queued` message parks: a redelivered one that a router (maybe a dead
        // one) claimed must go on to the claim, which settles it.
        if let Some(after) = self
            .limiter
            .park(&number.number, number.tier_mps, self.cfg.rate_queue)
        {
            let parked = self
                .durable("park", || async {
                    Ok(self.outbox.park(&req.message_id, after).await?)
                })
                .await?;
            if parked {
                METRICS.parked.inc();
                return Ok(());
            }
        }
        // A copy of a request this process is sending right now (republished): the
        // running task settles it.
        if !self.lock_in_flight().insert(req.message_id.clone()) {
            return Ok(());
        }
        let _guard = InFlight(self, req.message_id.clone());
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
            _ = self.limiter.acquire(&number.number, number.tier_mps) => {}
        }
        let claim = self
            .durable("claim", || async {
                self.outbox.claim(&req.message_id, &number.bsp).await
            })
            .await?;
        self.settle(req, src, claim, Some(&number)).await
    }

    async fn settle(
        &self,
        req: &SendRequest,
        src: &OwnedMessage,
        claim: Claim,
        number: Option<&BusinessNumber>,
    ) -> Result<(), Stop> {
        match claim {
            Claim::Send {
                attempt,
                since_first_ms,
            } => match number {
                Some(n) => self.attempt(req, src, n, attempt, since_first_ms).await,
                None => Ok(()),
            },
            Claim::Sending { age } => {
                let lease = self.cfg.send_timeout + Duration::from_secs(5);
                if age < lease {
                    // Another router may be mid-call: look again once its lease is over.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                        _ = tokio::time::sleep(lease - age) => {}
                    }
                    let claim = self
                        .durable("claim", || async {
                            self.outbox
                                .claim(
                                    &req.message_id,
                                    number.map(|n| n.bsp.as_str()).unwrap_or("none"),
                                )
                                .await
                        })
                        .await?;
                    return Box::pin(self.settle(req, src, claim, number)).await;
                }
                let bsp = number.map(|n| n.bsp.clone()).unwrap_or_default();
                tracing::warn!(message_id = %req.message_id, "outcome unknown after a crash; not re-sending");
                self.finish_failed(
                    req,
                    src,
                    number,
                    &bsp,
                    codes::OUTCOME_UNKNOWN,
                    None,
                    "a router stopped during the BSP call; the BSP may or may not have the message",
                    true,
                )
                .await
            }
            Claim::Final(f) => self.reemit(req, number, f).await,
            Claim::Idle | Claim::Missing => Ok(()),
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn credentials(&self, tenant: &str, bsp: Bsp) -> Result<Map<String, Value>, SendError> {
        let missing =
            |why: String| SendError::new(ErrorKind::Permanent, codes::CREDENTIALS_MISSING, why);
        let cred = self
            .cache
            .read()
            .credentials
            .get(&(tenant.to_string(), bsp.slug().to_string()))
            .cloned()
            .ok_or_else(|| missing(format!("tenant {tenant} has no {bsp} credentials")))?;
        let ring = self
            .keyring
            .as_ref()
            .ok_or_else(|| missing("the router has no credentials keyring".into()))?;
        let plain = ring
            .open(&cred.key_id, &cred.ciphertext, &format!("{tenant}/{bsp}"))
            .map_err(|e| missing(format!("{bsp} credentials do not open: {e}")))?;
        serde_json::from_slice(&plain).map_err(|e| missing(format!("{bsp} credentials: {e}")))
    }

    async fn call(
        &self,
        req: &SendRequest,
        bsp: Bsp,
        account: &str,
    ) -> Result<Accepted, SendError> {
        let creds = self.credentials(&req.tenant_id, bsp)?;
        let message: Value = serde_json::from_str(&req.message).map_err(|e| {
            SendError::new(ErrorKind::Permanent, codes::INVALID_REQUEST, e.to_string())
        })?;
        let route = Route {
            bsp,
            base_url: self.cfg.base_url(bsp),
            account_id: account,
            credentials: &creds,
        };
        let out = Outbound {
            message_id: &req.message_id,
            from: &req.from_number,
            to: &req.to,
            message: &message,
        };
        let tier = self
            .cache
            .read()
            .numbers
            .get(&req.from_number)
            .map(|n| n.tier_mps);
        if let Some(tier) = tier {
            self.limiter.admit(&req.from_number, tier).await;
        }
        let started = Instant::now();
        let r = send::send(&self.http, &route, &out).await;
        METRICS
            .bsp_seconds
            .with_label_values(&[bsp.slug()])
            .observe(started.elapsed().as_secs_f64());
        METRICS
            .sends
            .with_label_values(&[
                bsp.slug(),
                r.as_ref().map(|_| "accepted").unwrap_or_else(|e| e.code),
            ])
            .inc();
        r
    }

    async fn attempt(
        &self,
        req: &SendRequest,
        src: &OwnedMessage,
        number: &BusinessNumber,
        attempt: i32,
        since_first_ms: i64,
    ) -> Result<(), Stop> {
        let primary: Bsp = number.bsp.parse().unwrap_or(Bsp::Meta);
        let failover: Option<(Bsp, &str)> = number
            .failover_bsp
            .as_deref()
            .and_then(|b| b.parse().ok())
            .zip(number.failover_account_id.as_deref());
        let over_budget = since_first_ms as u128 >= self.cfg.retry_budget.as_millis()
            || attempt as u32 > self.cfg.max_attempts;

        // Primary if its breaker lets calls through, else the failover BSP.
        let mut plan: Vec<(Bsp, &str)> = Vec::new();
        if self.breakers.permits(primary) {
            plan.push((primary, number.bsp_account_id.as_str()));
        }
        if let Some((fb, acc)) = failover {
            if self.breakers.permits(fb) {
                plan.push((fb, acc));
            }
        }
        if plan.is_empty() {
            if over_budget {
                return self
                    .finish_failed(
                        req,
                        src,
                        Some(number),
                        primary.slug(),
                        codes::RETRIES_EXHAUSTED,
                        None,
                        &format!(
                            "{} attempts; last: circuit_open ({primary} circuit breaker open when the retry budget ran out)",
                            attempt - 1
                        ),
                        true,
                    )
                    .await;
            }
            let wait = self.breakers.open_for();
            return self
                .durable("defer", || async {
                    Ok(self
                        .outbox
                        .retry_later(
                            &req.message_id,
                            wait,
                            "circuit_open",
                            &format!("{primary} circuit breaker open"),
                            true,
                        )
                        .await?)
                })
                .await;
        }

        let mut last: Option<(Bsp, SendError)> = None;
        for (i, (bsp, account)) in plan.iter().enumerate() {
            // Fail over only from a BSP that is unwell, never after a definite answer.
            if i > 0
                && !last
                    .as_ref()
                    .is_some_and(|(_, e)| e.kind == ErrorKind::Retryable && !e.ambiguous)
            {
                break;
            }
            match self.call(req, *bsp, account).await {
                Ok(acc) => {
                    self.breakers.record(*bsp, true);
                    return self
                        .finish_accepted(req, number, *bsp, account, &acc.bsp_message_id)
                        .await;
                }
                Err(e) => {
                    self.breakers.record(*bsp, e.kind != ErrorKind::Retryable);
                    if e.kind == ErrorKind::Throttled {
                        let pause = e.retry_after.unwrap_or(Duration::from_secs(1));
                        self.limiter
                            .back_off(&number.number, number.tier_mps, pause);
                    }
                    last = Some((*bsp, e));
                }
            }
        }
        let Some((bsp, e)) = last else { return Ok(()) };
        if e.ambiguous {
            // The BSP may have the message (the call timed out or broke after the request
            // was written): sending it again could deliver it twice, so, as after a crash,
            // it ends `outcome_unknown` for an operator.
            tracing::warn!(message_id = %req.message_id, code = e.code, "BSP call ended ambiguously; not re-sending");
            let detail = format!(
                "{}: the BSP may or may not have the message; not re-sent ({})",
                e.code, e.detail
            );
            return self
                .finish_failed(
                    req,
                    src,
                    Some(number),
                    bsp.slug(),
                    codes::OUTCOME_UNKNOWN,
                    e.bsp_code.as_deref(),
                    &detail,
                    true,
                )
                .await;
        }
        if e.kind == ErrorKind::Permanent {
            let dlq = e.code == codes::CREDENTIALS_MISSING || e.code == codes::BAD_RESPONSE;
            return self
                .finish_failed(
                    req,
                    src,
                    Some(number),
                    bsp.slug(),
                    e.code,
                    e.bsp_code.as_deref(),
                    &e.detail,
                    dlq,
                )
                .await;
        }
        let delay = self.backoff(attempt, &e);
        if over_budget
            || attempt as u32 >= self.cfg.max_attempts
            || since_first_ms as u128 + delay.as_millis() > self.cfg.retry_budget.as_millis()
        {
            let detail = format!("{} attempts; last: {} ({})", attempt, e.code, e.detail);
            return self
                .finish_failed(
                    req,
                    src,
                    Some(number),
                    bsp.slug(),
                    codes::RETRIES_EXHAUSTED,
                    e.bsp_code.as_deref(),
                    &detail,
                    true,
                )
                .await;
        }
        // Throttled calls were not taken by the BSP: they do not use up an attempt.
        let uncount = e.kind == ErrorKind::Throttled;
        self.durable("defer", || async {
            Ok(self
                .outbox
                .retry_later(&req.message_id, delay, e.code, &e.detail, uncount)
                .await?)
        })
        .await
    }

    /// Exponential backoff with full jitter; a BSP's Retry-After is the floor.
    fn backoff(&self, attempt: i32, e: &SendError) -> Duration {
        let exp = self
            .cfg
            .retry_initial
            .saturating_mul(1u32 << (attempt.clamp(1, 20) - 1) as u32)
            .min(self.cfg.retry_max);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        jittered.max(e.retry_after.unwrap_or_default())
    }

    async fn finish_accepted(
        &self,
        req: &SendRequest,
        number: &BusinessNumber,
        bsp: Bsp,
        account: &str,
        wamid: &str,
    ) -> Result<(), Stop> {
        let at = self
            .durable("record accepted", || async {
                self.outbox
                    .accepted(&req.message_id, bsp.slug(), wamid)
                    .await
            })
            .await?;
        let Some(at) = at else {
            // Someone settled it meanwhile (cannot happen while we hold the claim, but
            // the state machine is the judge).
            return Ok(());
        };
        let ev = outcome_event(req, bsp.slug(), Some(account), Some(wamid), None, at);
        let _ = number;
        self.emit(ev).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_failed(
        &self,
        req: &SendRequest,
        src: &OwnedMessage,
        number: Option<&BusinessNumber>,
        bsp: &str,
        code: &str,
        bsp_code: Option<&str>,
        detail: &str,
        dlq: bool,
    ) -> Result<(), Stop> {
        let state = if code == codes::OUTCOME_UNKNOWN {
            "unknown"
        } else {
            "failed"
        };
        let at = self
            .durable("record failure", || async {
                Ok(self
                    .outbox
                    .failed(&req.message_id, state, code, detail)
                    .await?)
            })
            .await?;
        let Some(at) = at else { return Ok(()) };
        if dlq {
            self.dead_letter(src, code, detail).await?;
        }
        let account = number.map(|n| n.bsp_account_id.as_str());
        let ev = outcome_event(req, bsp, account, None, Some((code, bsp_code, detail)), at);
        self.emit(ev).await
    }

    /// The outcome is recorded; (re-)emit its event. Same event id as the first time.
    async fn reemit(
        &self,
        req: &SendRequest,
        number: Option<&BusinessNumber>,
        f: Final,
    ) -> Result<(), Stop> {
        let bsp = f.bsp.unwrap_or_default();
        let account = number.map(|n| n.bsp_account_id.as_str());
        let ev = if f.state == "accepted" {
            outcome_event(req, &bsp, account, f.wamid.as_deref(), None, f.at_ms)
        } else {
            let code = f
                .error_code
                .unwrap_or_else(|| codes::OUTCOME_UNKNOWN.into());
            let detail = f.error_detail.as_deref().unwrap_or("");
            outcome_event(
                req,
                &bsp,
                account,
                None,
                Some((&code, None, detail)),
                f.at_ms,
            )
        };
        self.emit(ev).await
    }

    async fn emit(&self, ev: Event) -> Result<(), Stop> {
        let topic = &self.topics.events;
        self.durable("emit outcome event", || async {
            let payload = self.codec.encode(topic, EVENT_SCHEMA, &ev).await?;
            let rec = OutRecord {
                topic: topic.clone(),
                key: ev.conversation_key(),
                payload,
                headers: vec![("request-id", ev.request_id.clone())],
            };
            produce_all(&self.producer, std::slice::from_ref(&rec)).await?;
            Ok(())
        })
        .await
    }

    async fn dead_letter(
        &self,
        src: &OwnedMessage,
        reason: &str,
        detail: &str,
    ) -> Result<(), Stop> {
        let dl = self.dead.letter(src, reason, detail);
        self.durable("dead-letter", || self.dead.write(std::slice::from_ref(&dl)))
            .await?;
        METRICS.dead_letters.with_label_values(&[reason]).inc();
        Ok(())
    }
}

struct InFlight<'a>(&'a Core, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock_in_flight().remove(&self.1);
    }
}

/// The `send accepted` / `send failed` event of a request. A failure without a BSP
/// message id uses the Switchboard message id in its place, so the message still has
/// one row in the stores.
pub fn outcome_event(
    req: &SendRequest,
    bsp: &str,
    account: Option<&str>,
    wamid: Option<&str>,
    error: Option<(&str, Option<&str>, &str)>,
    at_ms: i64,
) -> Event {
    let (outcome, event_type, status) = match error {
        None => ("accepted", EventType::SendAccepted, "accepted"),
        Some(_) => ("failed", EventType::SendFailed, "failed"),
    };
    let message: Value = serde_json::from_str(&req.message).unwrap_or(Value::Null);
    Event {
        event_id: send_event_id(&req.message_id, outcome),
        event_type: event_type.as_str().to_string(),
        bsp: bsp.to_string(),
        tenant_id: Some(req.tenant_id.clone()),
        business_number: req.from_number.clone(),
        business_account_id: account.map(str::to_string),
        customer_id: req.to.clone(),
        wamid: wamid.unwrap_or(&req.message_id).to_string(),
        status: Some(status.to_string()),
        message_type: Some(req.message_type.clone()),
        content: Some(req.message.clone()),
        context_wamid: message
            .pointer("/context/message_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        occurred_at_ms: at_ms,
        received_at_ms: req.accepted_at_ms,
        error_code: error.map(|(c, _, _)| c.to_string()),
        error_title: error.and_then(|(_, b, _)| b.map(|b| format!("BSP error {b}"))),
        error_detail: error.map(|(_, _, d)| d.to_string()),
        conversation_id: None,
        conversation_category: None,
        pricing_category: None,
        billable: None,
        request_id: req.request_id.clone(),
        message_id: Some(req.message_id.clone()),
        metadata: req.metadata.clone(),
    }
}
