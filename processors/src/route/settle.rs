//! Settling a send: what the call came back with becomes the message's outcome in the
//! outbox (`accepted`, `failed`, `unknown`, or `retrying` until a backoff is over), its
//! event on `wa.events` (`send accepted` / `send failed`, ids derived from the message id
//! so a re-emission after a crash is the same event), and a dead letter on `wa.send.dlq`
//! where an operator must look.

use std::time::Duration;

use rdkafka::message::OwnedMessage;
use serde_json::Value;
use switchboard_connectors::send::{codes, ErrorKind, SendError};
use switchboard_connectors::Bsp;
use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_schemas::config::BusinessNumber;
use switchboard_schemas::{send_event_id, Event, EventType, SendRequest, EVENT_SCHEMA};

use super::call::Called;
use super::dispatch::{SendRouter, Stop, METRICS};
use crate::db::outbox::Final;

/// How a send failed, for its row, its event and (maybe) its dead letter.
pub struct Failure<'a> {
    bsp: &'a str,
    code: &'a str,
    /// The BSP's own error code, where it gave one.
    bsp_code: Option<&'a str>,
    detail: &'a str,
    /// Also to `wa.send.dlq`: failures an operator must look at (unknown outcomes,
    /// retries used up, missing credentials, answers that make no sense).
    dead_letter: bool,
}

impl<'a> Failure<'a> {
    pub fn new(bsp: &'a str, code: &'a str, detail: &'a str) -> Self {
        Failure {
            bsp,
            code,
            bsp_code: None,
            detail,
            dead_letter: false,
        }
    }

    pub fn dead_letter(mut self) -> Self {
        self.dead_letter = true;
        self
    }

    fn bsp_code(mut self, code: Option<&'a str>) -> Self {
        self.bsp_code = code;
        self
    }
}

impl SendRouter {
    /// The call's result, as attempt `attempt` of a message first tried
    /// `since_first_ms` ago.
    pub(super) async fn settle(
        &self,
        req: &SendRequest,
        src: &OwnedMessage,
        number: &BusinessNumber,
        attempt: i32,
        since_first_ms: i64,
        called: Called,
    ) -> Result<(), Stop> {
        let over_budget = since_first_ms as u128 >= self.cfg.retry_budget.as_millis()
            || attempt as u32 > self.cfg.max_attempts;
        let (bsp, e) = match called {
            Called::Accepted {
                bsp,
                account,
                wamid,
            } => return self.accepted(req, bsp, &account, &wamid).await,
            Called::NoBspAvailable { primary } if over_budget => {
                let detail = format!(
                    "{} attempts; last: circuit_open ({primary} circuit breaker open when the retry budget ran out)",
                    attempt - 1
                );
                let f = Failure::new(primary.slug(), codes::RETRIES_EXHAUSTED, &detail);
                return self.fail(req, src, Some(number), f.dead_letter()).await;
            }
            Called::NoBspAvailable { primary } => {
                let wait = self.breakers.open_for();
                let why = format!("{primary} circuit breaker open");
                return self
                    .retry_later(req, wait, "circuit_open", &why, true)
                    .await;
            }
            Called::Failed { bsp, error } => (bsp, error),
        };
        if e.ambiguous {
            // The BSP may have the message (the call timed out or broke after the request
            // was written): sending it again could deliver it twice, so, as after a crash,
            // it ends `outcome_unknown` for an operator.
            tracing::warn!(message_id = %req.message_id, code = e.code, "BSP call ended ambiguously; not re-sending");
            let detail = format!(
                "{}: the BSP may or may not have the message; not re-sent ({})",
                e.code, e.detail
            );
            let f = Failure::new(bsp.slug(), codes::OUTCOME_UNKNOWN, &detail)
                .bsp_code(e.bsp_code.as_deref())
                .dead_letter();
            return self.fail(req, src, Some(number), f).await;
        }
        if e.kind == ErrorKind::Permanent {
            let mut f = Failure::new(bsp.slug(), e.code, &e.detail).bsp_code(e.bsp_code.as_deref());
            if e.code == codes::CREDENTIALS_MISSING || e.code == codes::BAD_RESPONSE {
                f = f.dead_letter();
            }
            return self.fail(req, src, Some(number), f).await;
        }
        let delay = self.backoff(attempt, &e);
        if over_budget
            || attempt as u32 >= self.cfg.max_attempts
            || since_first_ms as u128 + delay.as_millis() > self.cfg.retry_budget.as_millis()
        {
            let detail = format!("{} attempts; last: {} ({})", attempt, e.code, e.detail);
            let f = Failure::new(bsp.slug(), codes::RETRIES_EXHAUSTED, &detail)
                .bsp_code(e.bsp_code.as_deref())
                .dead_letter();
            return self.fail(req, src, Some(number), f).await;
        }
        // Throttled calls were not taken by the BSP: they do not use up an attempt.
        let uncount = e.kind == ErrorKind::Throttled;
        self.retry_later(req, delay, e.code, &e.detail, uncount)
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

    async fn retry_later(
        &self,
        req: &SendRequest,
        after: Duration,
        code: &str,
        detail: &str,
        uncount: bool,
    ) -> Result<(), Stop> {
        self.durable("defer", || async {
            Ok(self
                .outbox
                .retry_later(&req.message_id, after, code, detail, uncount)
                .await?)
        })
        .await
    }

    async fn accepted(
        &self,
        req: &SendRequest,
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
        // `None`: settled meanwhile (cannot happen while we hold the claim, but the state
        // machine is the judge).
        let Some(at) = at else { return Ok(()) };
        let ev = outcome_event(req, bsp.slug(), Some(account), Some(wamid), None, at);
        self.emit(ev).await
    }

    pub(super) async fn fail(
        &self,
        req: &SendRequest,
        src: &OwnedMessage,
        number: Option<&BusinessNumber>,
        f: Failure<'_>,
    ) -> Result<(), Stop> {
        let state = if f.code == codes::OUTCOME_UNKNOWN {
            "unknown"
        } else {
            "failed"
        };
        let at = self
            .durable("record failure", || async {
                Ok(self
                    .outbox
                    .failed(&req.message_id, state, f.code, f.detail)
                    .await?)
            })
            .await?;
        let Some(at) = at else { return Ok(()) };
        if f.dead_letter {
            self.dead_letter(src, f.code, f.detail).await?;
        }
        let account = number.map(|n| n.bsp_account_id.as_str());
        let error = Some((f.code, f.bsp_code, f.detail));
        let ev = outcome_event(req, f.bsp, account, None, error, at);
        self.emit(ev).await
    }

    /// The outcome is recorded; (re-)emit its event. Same event id as the first time.
    pub(super) async fn reemit(
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
    // An acceptance is named by the BSP's message id too: a send deferred for the
    // customer's marketing limit is accepted again, under another one, and clients must
    // not drop that event as a repeat.
    let (outcome, event_type, status) = match error {
        None => (
            format!("accepted:{}", wamid.unwrap_or_default()),
            EventType::SendAccepted,
            "accepted",
        ),
        Some(_) => ("failed".to_string(), EventType::SendFailed, "failed"),
    };
    let message: Value = serde_json::from_str(&req.message).unwrap_or(Value::Null);
    Event {
        event_id: send_event_id(&req.message_id, &outcome),
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
        pricing_model: None,
        pricing_type: None,
    }
}
