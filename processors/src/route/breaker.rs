//! One circuit breaker per BSP (failsafe): after `breaker_failures` consecutive retryable
//! failures the BSP gets no calls until the open period ends (exponential, from
//! `breaker_open_for` to 16×); then one probe decides. Only failures that say "the BSP is
//! unwell" count (timeouts, 5xx, throttling); a rejected recipient is the BSP working.
//!
//! failsafe's half-open state permits every call until a result comes in, so the sends
//! waiting for a down BSP would all go at once as "probes". Here a half-open BSP takes one
//! call at a time: [`Breakers::acquire`] reserves it, [`Breakers::record`] releases it (a
//! probe never recorded, e.g. cancelled by a shutdown, lapses after `PROBE_LAPSE`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{backoff, Config, StateMachine};
use prometheus::IntGaugeVec;
use switchboard_connectors::Bsp;

type Machine = StateMachine<ConsecutiveFailures<backoff::Exponential>, ()>;

/// How long a probe may stay unrecorded before another may go.
const PROBE_LAPSE: Duration = Duration::from_secs(60);

struct Entry {
    machine: Machine,
    /// The breaker has been open since the BSP was last healthy: calls it permits now
    /// are probes.
    tripped: bool,
    /// A probe is out since then.
    probe: Option<Instant>,
}

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
    machines: Arc<Mutex<HashMap<Bsp, Entry>>>,
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

    fn with<T>(&self, bsp: Bsp, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut m = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        let entry = m.entry(bsp).or_insert_with(|| {
            let policy = consecutive_failures(
                self.failures,
                backoff::exponential(self.open_for, self.open_for * 16),
            );
            Entry {
                machine: Config::new().failure_policy(policy).build(),
                tripped: false,
                probe: None,
            }
        });
        f(entry)
    }

    /// May a call go to this BSP now? Nothing is reserved: [`Breakers::acquire`] does
    /// that right before the call.
    pub fn permits(&self, bsp: Bsp) -> bool {
        let ok = self.with(bsp, |e| {
            let permitted = e.machine.is_call_permitted();
            if !permitted {
                e.tripped = true;
            }
            permitted && !(e.tripped && probe_out(e))
        });
        BREAKER_OPEN
            .with_label_values(&[bsp.slug()])
            .set(i64::from(!ok));
        ok
    }

    /// Take the right to call this BSP now: always while it is healthy; while it is
    /// half-open, only if no other probe is out.
    pub fn acquire(&self, bsp: Bsp) -> bool {
        self.with(bsp, |e| {
            if !e.machine.is_call_permitted() {
                e.tripped = true;
                return false;
            }
            if e.tripped {
                if probe_out(e) {
                    return false;
                }
                e.probe = Some(Instant::now());
            }
            true
        })
    }

    /// The outcome of a call that [`Breakers::acquire`] allowed.
    pub fn record(&self, bsp: Bsp, healthy: bool) {
        self.with(bsp, |e| {
            e.probe = None;
            if healthy {
                e.machine.on_success();
                e.tripped = false;
            } else {
                e.machine.on_error();
            }
        });
    }

    /// How long until an open breaker lets a probe through (a guess for rescheduling).
    pub fn open_for(&self) -> Duration {
        self.open_for
    }
}

fn probe_out(e: &Entry) -> bool {
    e.probe.is_some_and(|at| at.elapsed() < PROBE_LAPSE)
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
        // One probe at a time: the sends waiting for Meta do not all go at once.
        assert!(b.acquire(Bsp::Meta));
        assert!(!b.acquire(Bsp::Meta) && !b.permits(Bsp::Meta));
        b.record(Bsp::Meta, true);
        assert!(b.permits(Bsp::Meta));
        assert!(
            b.acquire(Bsp::Meta) && b.acquire(Bsp::Meta),
            "closed: no limit"
        );
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = Breakers::new(1, Duration::from_secs(1));
        b.record(Bsp::Meta, false);
        assert!(!b.acquire(Bsp::Meta));
        std::thread::sleep(Duration::from_millis(1300));
        assert!(b.acquire(Bsp::Meta));
        b.record(Bsp::Meta, false);
        assert!(!b.permits(Bsp::Meta) && !b.acquire(Bsp::Meta), "open again");
    }
}
