//! What the fan-out keeps per endpoint: its opened signing secrets, its concurrency and
//! rate limits (rebuilt when its configuration changes), and its health (breaker and
//! failing-since, kept across configuration changes).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{backoff, StateMachine};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchboard_runtime::secrets::Keyring;
use switchboard_schemas::config::Endpoint;
use tokio::sync::Semaphore;

use super::baseline::Baseline;

type Machine = StateMachine<ConsecutiveFailures<backoff::Exponential>, ()>;

/// Why a delivery waits on a delay topic instead of holding its event's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// The endpoint's answers take a second or more.
    Slow,
    /// Every slot taken and nothing back for a second.
    Hung,
    /// More than a second of its rate limit is waiting.
    RateLimited,
    /// The tenant has its share of a busy fan-out in flight.
    TenantShare,
}

impl Defer {
    /// The delivery log's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Defer::Slow => "the endpoint cannot keep up: its answers take a second or more",
            Defer::Hung => {
                "the endpoint cannot keep up: nothing came back for a second with every slot taken"
            }
            Defer::RateLimited => {
                "the endpoint cannot keep up: more than a second of its rate limit is waiting"
            }
            Defer::TenantShare => "the tenant has its share of the fan-out in flight",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Defer::Slow => "slow",
            Defer::Hung => "hung",
            Defer::RateLimited => "rate_limited",
            Defer::TenantShare => "tenant_share",
        }
    }
}

/// Health outlives configuration changes: a PATCH must not reset a failing endpoint.
pub struct Health {
    breaker: Mutex<Machine>,
    /// Unix ms of the first failure since the last success (mirrors PostgreSQL).
    pub failing_since: Mutex<Option<i64>>,
    /// Response time, exponentially weighted (ms; timeouts count as the timeout).
    ewma_ms: AtomicU64,
    /// When the last request to it finished, or a slot was last found free (Unix ms):
    /// the start of the current stretch with every slot taken and nothing back.
    last_done_ms: AtomicI64,
    /// What `slow` judges against.
    baseline: Arc<Baseline>,
}

impl Health {
    /// Record one request's duration.
    pub fn observe(&self, latency_ms: i64) {
        let l = latency_ms.max(0) as u64;
        let old = self.ewma_ms.load(Relaxed);
        self.ewma_ms.store((old * 4 + l) / 5, Relaxed);
        self.baseline.answered(latency_ms);
        self.last_done_ms
            .store(switchboard_runtime::now_ms(), Relaxed);
    }

    /// A request took a slot that was free: whatever came before, the endpoint was not
    /// holding every slot. Without this, an endpoint idle for a while looked hung the
    /// moment a burst filled its slots (its last answer was long ago), and the burst was
    /// deferred.
    pub fn slot_was_free(&self) {
        self.last_done_ms
            .fetch_max(switchboard_runtime::now_ms(), Relaxed);
    }

    /// Slow: it answers in a second or more (and several times slower than endpoints
    /// typically answer here), or, with every slot taken, nothing came back for a second
    /// (a hanging endpoint, before its first timeout says so). A merely busy fan-out (the
    /// CPU is the limit) is not an endpoint being slow: the second is stretched by the
    /// fan-out's own recent lag, which delays reading every answer (see `baseline`).
    pub fn slow(&self, all_slots_taken: bool) -> Option<Defer> {
        let second = self.baseline.patience_ms();
        if self
            .baseline
            .slow_answers(self.ewma_ms.load(Relaxed) as i64)
        {
            Some(Defer::Slow)
        } else if all_slots_taken
            && switchboard_runtime::now_ms() - self.last_done_ms.load(Relaxed) >= second
        {
            Some(Defer::Hung)
        } else {
            None
        }
    }

    pub fn permits(&self) -> bool {
        lock(&self.breaker).is_call_permitted()
    }

    pub fn record(&self, healthy: bool) {
        let m = lock(&self.breaker);
        if healthy {
            m.on_success()
        } else {
            m.on_error()
        }
    }
}

pub struct EndpointRt {
    pub ep: Endpoint,
    pub version: i64,
    signers: Vec<(Signer, Option<i64>)>,
    /// The custom headers, opened.
    pub headers: Vec<(String, String)>,
    pub in_flight: Arc<Semaphore>,
    pub limiter: Option<DefaultDirectRateLimiter>,
    pub health: Arc<Health>,
    /// Deliveries waiting for a slot, a rate token or their turn now.
    pub waiting: std::sync::atomic::AtomicUsize,
    /// Woken (by [`Registry::watch`]) when waiters should look at `should_defer` again:
    /// one signal per endpoint instead of a timer per waiting delivery.
    pub recheck: tokio::sync::Notify,
}

impl EndpointRt {
    /// Should a delivery waiting for this endpoint (one of `waiting`) go to a delay
    /// topic instead? Yes when the endpoint cannot keep up and already has enough
    /// waiting to stay busy: slow (answers take a second or more, or nothing came back
    /// for a second with every slot taken) with more than its `max_in_flight` waiting,
    /// or rate-limited with more than a second of its rate waiting. A fan-out that is
    /// merely busy (the CPU is the limit) defers nothing: that would only add work.
    pub fn should_defer(&self) -> Option<Defer> {
        use std::sync::atomic::Ordering::SeqCst;
        let waiting = self.waiting.load(SeqCst);
        let slow_cap = (self.ep.max_in_flight as usize).clamp(8, 1000);
        if waiting > slow_cap {
            if let Some(why) = self.health.slow(self.in_flight.available_permits() == 0) {
                return Some(why);
            }
        }
        self.ep
            .rate_per_sec
            .is_some_and(|r| waiting > (r as usize).max(8))
            .then_some(Defer::RateLimited)
    }
}

impl EndpointRt {
    /// The `webhook-signature` header: one `v1,<sig>` per secret still signing at `now_ms`
    /// (a rotated-out secret signs alongside the new one until it expires).
    pub fn sign(&self, msg_id: &str, ts: i64, body: &str, now_ms: i64) -> String {
        self.signers
            .iter()
            .filter(|(_, exp)| exp.is_none_or(|e| e > now_ms))
            .map(|(w, _)| w.sign(msg_id, ts, body.as_bytes()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Standard Webhooks' `v1` signature: HMAC-SHA256 of `{id}.{timestamp}.{body}` under the
/// secret's key, keyed once per secret. The `standardwebhooks` crate signs with a
/// portable SHA-256 and copies the body first: 5.6 µs a delivery of a status event here,
/// against about 1 µs with `sha2` on the CPU's SHA instructions (`fanout/sign` in
/// `loadtest/micro-bench.sh`). Its test vector checks this one below.
struct Signer(Hmac<Sha256>);

impl Signer {
    /// `whsec_<base64 key>` (the prefix is optional, as in the reference libraries).
    fn new(secret: &str) -> Result<Self, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .map_err(|e| format!("bad signing secret: {e}"))?;
        Hmac::new_from_slice(&key)
            .map(Self)
            .map_err(|e| format!("bad signing secret: {e}"))
    }

    fn sign(&self, msg_id: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(ts.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{sig}")
    }
}

pub struct Registry {
    keyring: Option<Keyring>,
    breaker_failures: u32,
    breaker_open_for: Duration,
    live: Mutex<HashMap<String, Arc<EndpointRt>>>,
    health: Mutex<HashMap<String, Arc<Health>>>,
    /// Measured by `watch`; shared with admission.
    pub baseline: Arc<Baseline>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Every 200 ms, wake the waiters of endpoints that cannot keep up, so they defer
    /// (an endpoint turns slow while deliveries wait: a hanging one is known after 1 s).
    /// How late each tick wakes is the fan-out's own scheduling lag
    /// (`switchboard_fanout_scheduler_lag_seconds`).
    pub async fn watch(&self, shutdown: switchboard_runtime::CancellationToken) {
        use std::sync::atomic::Ordering::SeqCst;
        const TICK: Duration = Duration::from_millis(200);
        loop {
            let slept = std::time::Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let late = slept.elapsed().saturating_sub(TICK);
            self.baseline.tick(late);
            super::dispatch::METRICS
                .scheduler_lag
                .observe(late.as_secs_f64());
            let live: Vec<Arc<EndpointRt>> = lock(&self.live).values().cloned().collect();
            for rt in live {
                if rt.waiting.load(SeqCst) > 0 && rt.should_defer().is_some() {
                    rt.recheck.notify_waiters();
                }
            }
        }
    }

    pub fn new(
        keyring: Option<Keyring>,
        breaker_failures: u32,
        breaker_open_for: Duration,
    ) -> Self {
        Self {
            keyring,
            breaker_failures: breaker_failures.max(1),
            // failsafe's exponential backoff works in whole seconds.
            breaker_open_for: breaker_open_for.max(Duration::from_secs(1)),
            live: Default::default(),
            health: Default::default(),
            baseline: Default::default(),
        }
    }

    pub fn health(&self, id: &str) -> Arc<Health> {
        lock(&self.health)
            .entry(id.to_string())
            .or_insert_with(|| {
                let policy = consecutive_failures(
                    self.breaker_failures,
                    backoff::exponential(self.breaker_open_for, self.breaker_open_for * 16),
                );
                Arc::new(Health {
                    breaker: Mutex::new(failsafe::Config::new().failure_policy(policy).build()),
                    failing_since: Mutex::new(None),
                    ewma_ms: AtomicU64::new(0),
                    last_done_ms: AtomicI64::new(switchboard_runtime::now_ms()),
                    baseline: self.baseline.clone(),
                })
            })
            .clone()
    }

    /// The runtime state of `ep` at `version`, rebuilt when the version changed.
    pub fn get(&self, ep: &Endpoint, version: i64) -> Result<Arc<EndpointRt>, String> {
        if let Some(rt) = lock(&self.live).get(&ep.id) {
            if rt.version == version {
                return Ok(rt.clone());
            }
        }
        let ring = self
            .keyring
            .as_ref()
            .ok_or("SWITCHBOARD_CREDENTIALS_KEYS is empty: endpoint secrets cannot be opened")?;
        let mut signers = Vec::with_capacity(ep.secrets.len());
        for s in &ep.secrets {
            let plain = ring
                .open(&s.key_id, &s.ciphertext, &ep.id)
                .map_err(|e| format!("cannot open a signing secret of {}: {e}", ep.id))?;
            let secret = String::from_utf8(plain).map_err(|_| "a signing secret is not UTF-8")?;
            let w = Signer::new(&secret)?;
            signers.push((w, s.expires_at_ms));
        }
        let mut headers: Vec<(String, String)> = ep
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(h) = &ep.sealed_headers {
            let plain = ring
                .open(&h.key_id, &h.ciphertext, &format!("{}/headers", ep.id))
                .map_err(|e| format!("cannot open the headers of {}: {e}", ep.id))?;
            let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&plain)
                .map_err(|e| format!("the headers of {} do not parse: {e}", ep.id))?;
            headers.extend(map);
        }
        let limiter = ep
            .rate_per_sec
            .and_then(NonZeroU32::new)
            .map(|r| RateLimiter::direct(Quota::per_second(r)));
        let rt = Arc::new(EndpointRt {
            ep: ep.clone(),
            version,
            signers,
            headers,
            in_flight: Arc::new(Semaphore::new(ep.max_in_flight.max(1) as usize)),
            limiter,
            health: self.health(&ep.id),
            waiting: Default::default(),
            recheck: tokio::sync::Notify::new(),
        });
        lock(&self.live).insert(ep.id.clone(), rt.clone());
        Ok(rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_schemas::config::{Ordering, SealedSecret};

    #[test]
    fn a_burst_after_a_quiet_spell_is_not_a_hung_endpoint() {
        let reg = Registry::new(None, 3, Duration::from_secs(1));
        let h = reg.health("ep_quiet");
        // Its last answer was a minute ago; every slot is taken now.
        h.last_done_ms
            .store(switchboard_runtime::now_ms() - 60_000, Relaxed);
        assert_eq!(
            h.slow(true),
            Some(Defer::Hung),
            "nothing back for a minute with every slot taken"
        );
        // But the burst found slots free a moment ago: not a second of nothing yet.
        h.slot_was_free();
        assert_eq!(h.slow(true), None);
        assert_eq!(h.slow(false), None);
    }

    #[test]
    fn signs_with_every_unexpired_secret() {
        let ring = Keyring::parse(&Keyring::generate("k1")).unwrap();
        let seal = |s: &str, exp| {
            let (key_id, ciphertext) = ring.seal(s.as_bytes(), "ep_1");
            SealedSecret {
                key_id,
                ciphertext,
                expires_at_ms: exp,
            }
        };
        let ep = Endpoint {
            id: "ep_1".into(),
            tenant_id: "ten".into(),
            url: "https://example.com".into(),
            description: String::new(),
            event_types: vec![],
            numbers: vec![],
            rate_per_sec: None,
            max_in_flight: 4,
            headers: Default::default(),
            ordering: Ordering::Conversation,
            disabled: false,
            sealed_headers: None,
            header_names: vec![],
            disabled_reason: None,
            secrets: vec![
                seal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None),
                seal("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", Some(1_000)),
            ],
        };
        let reg = Registry::new(Some(ring.clone()), 3, Duration::from_secs(1));
        let rt = reg.get(&ep, 1).unwrap();
        let both = rt.sign("msg_1", 1_614_265_330, "{}", 999);
        assert_eq!(both.split(' ').count(), 2);
        let one = rt.sign("msg_1", 1_614_265_330, "{}", 1_000);
        assert_eq!(one.split(' ').count(), 1);
        // The Standard Webhooks reference vector (standard-webhooks/libraries tests).
        let w = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            w.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // And the reference library agrees on a body of our own.
        let reference = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap()
            .sign("msg_1", 1_614_265_330, "{\"a\":\"é\"}".as_bytes())
            .unwrap();
        assert_eq!(
            w.sign("msg_1", 1_614_265_330, "{\"a\":\"é\"}".as_bytes()),
            reference
        );
        assert!(
            Arc::ptr_eq(&rt.health, &reg.get(&ep, 2).unwrap().health),
            "health survives a change"
        );
    }
}
