//! One circuit breaker per BSP (failsafe): after `breaker_failures` consecutive retryable
//! failures the BSP gets no calls until the open period ends (exponential, from
//! `breaker_open_for` to 16×); then one probe decides. Only failures that say "the BSP is
//! unwell" count (timeouts, 5xx, throttling); a rejected recipient is the BSP working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{backoff, Config, StateMachine};
use prometheus::IntGaugeVec;
use switchboard_connectors::Bsp;

type Machine = StateMachine<ConsecutiveFailures<backoff::Exponential>, ()>;

pub static BREAKER_OPEN: std::sync::LazyLock<IntGaugeVec> = std::sync::LazyLock::new(|| {
    let g = IntGaugeVec::new(
        prometheus::Opts::new(
            "switchboard_router_breaker_open",
            "1 while the BSP's circuit breaker rejects calls",
        ),
        &["bsp"],
    )
    .expect("valid metric");
    let _ = prometheus::default_registry().register(Box::new(g.clone()));
    g
});

#[derive(Clone)]
pub struct Breakers {
    failures: u32,
    open_for: Duration,
    machines: Arc<Mutex<HashMap<Bsp, Machine>>>,
}

impl Breakers {
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            failures: failures.max(1),
            // failsafe's exponential backoff works in whole seconds (it panics below 1 s).
            open_for: open_for.max(Duration::from_secs(1)),
            machines: Default::default(),
        }
    }

    fn with<T>(&self, bsp: Bsp, f: impl FnOnce(&Machine) -> T) -> T {
        let mut m = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        let machine = m.entry(bsp).or_insert_with(|| {
            let policy = consecutive_failures(
                self.failures,
                backoff::exponential(self.open_for, self.open_for * 16),
            );
            Config::new().failure_policy(policy).build()
        });
        f(machine)
    }

    /// May a call go to this BSP now? (In half-open state this lets probes through.)
    pub fn permits(&self, bsp: Bsp) -> bool {
        let ok = self.with(bsp, |m| m.is_call_permitted());
        BREAKER_OPEN
            .with_label_values(&[bsp.slug()])
            .set(i64::from(!ok));
        ok
    }

    pub fn record(&self, bsp: Bsp, healthy: bool) {
        self.with(bsp, |m| {
            if healthy {
                m.on_success()
            } else {
                m.on_error()
            }
        });
    }

    /// How long until an open breaker lets a probe through (a guess for rescheduling).
    pub fn open_for(&self) -> Duration {
        self.open_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_later() {
        let b = Breakers::new(3, Duration::from_secs(1));
        assert!(b.permits(Bsp::Meta));
        for _ in 0..3 {
            b.record(Bsp::Meta, false);
        }
        assert!(!b.permits(Bsp::Meta));
        assert!(b.permits(Bsp::Gupshup), "breakers are per BSP");
        std::thread::sleep(Duration::from_millis(1300));
        assert!(b.permits(Bsp::Meta), "half-open: a probe may go");
        b.record(Bsp::Meta, true);
        assert!(b.permits(Bsp::Meta));
    }
}
