//! One send request's way through the router, in stages:
//!
//! decode → admit ([`super::admit`]: is it due, whose number is it, a rate token (or a
//! place parked in the outbox), the message's claim in the state machine) → call
//! ([`super::call`]: the number's BSP, or its failover, through their breakers) → settle
//! ([`super::settle`]: the outcome in the outbox, its event on `wa.events`, a dead letter
//! where an operator must look, or a retry later).
//!
//! Exactly-once towards the customer, as far as a crash allows: the `queued → sending`
//! transition is committed before the BSP call, and the outcome after it. A request
//! found in `sending` once its lease has expired belongs to a router that crashed
//! mid-call: the router does not know whether the BSP took it, and no BSP here offers a
//! look-up by our id, so it is not re-sent blindly: it ends as `send failed` with code
//! `outcome_unknown` and goes to `wa.send.dlq` for an operator (policy in the README).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, HistogramVec,
    IntCounter, IntCounterVec,
};
use rdkafka::message::{Message, OwnedMessage};
use switchboard_connectors::send::codes;
use switchboard_runtime::config_cache::ConfigCache;
use switchboard_runtime::deadletter::DeadLetters;
use switchboard_runtime::failure::{classify, Class};
use switchboard_runtime::kafka::Topics;
use switchboard_runtime::lanes::{Disposition, RecordHandler};
use switchboard_runtime::producer::ProducerSlot;
use switchboard_runtime::secrets::Keyring;
use switchboard_runtime::telemetry::LATENCY_BUCKETS;
use switchboard_runtime::CancellationToken;
use switchboard_schemas::{Codec, SendRequest};

use super::admit::{Admission, InFlight};
use super::breaker::Breakers;
use super::limiter::SenderLimiter;
use super::pair::PairLimiter;
use super::settle::Failure;
use super::Config;
use crate::db::conversations::Conversations;
use crate::db::outbox::{Claim, Outbox};
use crate::db::suppressions::Suppressions;
use crate::db::templates::Templates;

pub(super) struct Metrics {
    pub sends: IntCounterVec,
    pub parked: IntCounter,
    pub pair_parked: IntCounter,
    pub bsp_seconds: HistogramVec,
    pub dead_letters: IntCounterVec,
}

pub(super) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
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
    pair_parked: register_int_counter!(
        "switchboard_router_pair_parked_total",
        "Sends parked until their customer's pair pacing allowed them"
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

pub struct SendRouter {
    pub cfg: Config,
    pub outbox: Outbox,
    /// The send rules re-checked right before the call (see [`super::policy`]).
    pub conversations: Conversations,
    pub templates: Templates,
    pub suppressions: Suppressions,
    pub cache: ConfigCache,
    pub keyring: Option<Keyring>,
    pub http: reqwest::Client,
    pub limiter: SenderLimiter,
    pub pair: PairLimiter,
    pub breakers: Breakers,
    pub codec: Codec,
    pub producer: ProducerSlot,
    pub topics: Topics,
    /// Messages this process is between admission and outcome for.
    pub in_flight: Arc<InFlight>,
    pub shutdown: CancellationToken,
    /// `wa.send.dlq`.
    pub dead: DeadLetters,
}

/// The consumer of `wa.send.requests`.
#[derive(Clone)]
pub struct Router(pub Arc<SendRouter>);

impl RecordHandler for Router {
    fn handle(
        &self,
        msg: OwnedMessage,
    ) -> impl std::future::Future<Output = Disposition> + Send + 'static {
        let me = self.0.clone();
        async move {
            match me.route(&msg).await {
                Ok(()) => Disposition::Done,
                Err(Stop::Shutdown) => Disposition::Interrupted,
                Err(Stop::Poison(e)) => Disposition::Poison(Box::new(msg), e),
            }
        }
    }
}

impl SendRouter {
    /// Retry `f` (infrastructure trouble: database, broker, registry) until it works or
    /// the process is told to stop; a permanent failure poisons the record.
    pub(super) async fn durable<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let done = switchboard_runtime::retry::until(
            what,
            &self.shutdown,
            Duration::from_millis(100),
            |e: &anyhow::Error| classify(e) == Class::Transient,
            f,
        )
        .await;
        match done {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Stop::Shutdown),
            Err(e) => Err(Stop::Poison(e.context(what.to_string()))),
        }
    }

    async fn route(&self, src: &OwnedMessage) -> Result<(), Stop> {
        let req: SendRequest = self
            .durable("decode send request", || async {
                Ok(self
                    .codec
                    .decode::<SendRequest>(src.payload().unwrap_or_default())
                    .await?)
            })
            .await?;
        let (claim, number, _in_flight) = match self.admit(&req).await? {
            Admission::Skip => return Ok(()),
            Admission::Claimed {
                claim,
                number,
                in_flight,
            } => (claim, number, in_flight),
        };
        match claim {
            Claim::Send {
                attempt,
                since_first_ms,
            } => match &number {
                Some(n) => {
                    if let Some((code, why)) = self.refusal(&req, n).await? {
                        let f = Failure::new(&n.bsp, code, &why);
                        return self.fail(&req, src, Some(n), f).await;
                    }
                    let called = self.call(&req, n).await;
                    self.settle(&req, src, n, attempt, since_first_ms, called)
                        .await
                }
                None => {
                    let detail = format!(
                        "{} is not a number of tenant {}",
                        req.from_number, req.tenant_id
                    );
                    self.fail(
                        &req,
                        src,
                        None,
                        Failure::new("none", codes::SENDER_NOT_CONFIGURED, &detail).dead_letter(),
                    )
                    .await
                }
            },
            // Its lease is over (admission waited it out): the router holding it died
            // mid-call.
            Claim::Sending { .. } => {
                let bsp = number.as_ref().map(|n| n.bsp.clone()).unwrap_or_default();
                tracing::warn!(message_id = %req.message_id, "outcome unknown after a crash; not re-sending");
                let detail =
                    "a router stopped during the BSP call; the BSP may or may not have the message";
                self.fail(
                    &req,
                    src,
                    number.as_deref(),
                    Failure::new(&bsp, codes::OUTCOME_UNKNOWN, detail).dead_letter(),
                )
                .await
            }
            Claim::Final(f) => self.reemit(&req, number.as_deref(), f).await,
            Claim::Idle | Claim::Missing => Ok(()),
        }
    }
}
