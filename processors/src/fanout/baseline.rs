//! What an endpoint or a tenant is judged against: the fan-out's own scheduling lag (how
//! late a timer tick wakes) and the answer time typical of all its endpoints. A fan-out
//! starved of CPU (hundreds of thousands of deliveries in flight on two cores) reads
//! every answer and every finished event late, so the rules that judge an endpoint slow
//! or a tenant stalled allow for it: the fan-out's own busyness is never taken for
//! theirs (deferring would add work and make it busier still).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// How long an endpoint (slow answers, or none) or a tenant (no event finished) must
/// hold up before it is judged unable to keep up, the lag allowance aside.
pub const PATIENCE: Duration = Duration::from_secs(1);

/// How long a tenant over its share may finish no event (the allowance aside) before its
/// events are deferred. Longer than an endpoint's [`PATIENCE`]: an event finishes only
/// once every endpoint answered and its log was produced, and a cold fan-out starting on
/// a backlog finished its first events in more than a second (one second deferred the
/// whole overflow of a 3,000-event burst at start in `loadtest/fanout-bench.sh`).
pub const TENANT_PATIENCE: Duration = Duration::from_secs(3);

/// How many times the typical answer time an endpoint must take to be slow.
const SLOWER_THAN_TYPICAL: i64 = 4;

/// How many ticks the allowance remembers: a stall is allowed for until answers read
/// during it have been outweighed by later ones.
const WINDOW: usize = 10;

#[derive(Default)]
pub struct Baseline {
    recent: Mutex<VecDeque<i64>>,
    /// The largest lag of the last `WINDOW` ticks, ms.
    allowance_ms: AtomicI64,
    /// Every endpoint's answer time, exponentially weighted (ms): a fast endpoint answers
    /// many times for each answer of a slow one, so this is what a healthy one takes.
    typical_ms: AtomicI64,
}

impl Baseline {
    /// One tick woke `late` after it was due.
    pub fn tick(&self, late: Duration) {
        let ms = late.as_millis() as i64;
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(ms);
        self.allowance_ms
            .store(recent.iter().copied().max().unwrap_or(0), Relaxed);
    }

    /// What to add to a judgement over a span of time (ms).
    pub fn allowance_ms(&self) -> i64 {
        self.allowance_ms.load(Relaxed)
    }

    /// [`PATIENCE`] and the allowance (ms).
    pub fn patience_ms(&self) -> i64 {
        PATIENCE.as_millis() as i64 + self.allowance_ms()
    }

    /// One answer from any endpoint.
    pub fn answered(&self, latency_ms: i64) {
        let old = self.typical_ms.load(Relaxed);
        self.typical_ms
            .store((old * 31 + latency_ms.max(0)) / 32, Relaxed);
    }

    /// Is an endpoint whose answers take `ewma_ms` slow? It takes [`PATIENCE`] (and the
    /// allowance) or more, and several times what answers typically take here: when
    /// every answer is that slow the fan-out itself is the cause (or every endpoint is
    /// equally slow), and deferring would isolate nobody.
    pub fn slow_answers(&self, ewma_ms: i64) -> bool {
        ewma_ms >= self.patience_ms()
            && ewma_ms >= SLOWER_THAN_TYPICAL * self.typical_ms.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_allowed_for_over_the_window_then_forgotten() {
        let lag = Baseline::default();
        lag.tick(Duration::from_millis(3));
        lag.tick(Duration::from_millis(2500));
        assert_eq!(lag.allowance_ms(), 2500);
        for _ in 0..WINDOW - 1 {
            lag.tick(Duration::from_millis(4));
        }
        assert_eq!(lag.allowance_ms(), 2500, "still within the window");
        lag.tick(Duration::from_millis(4));
        assert_eq!(lag.allowance_ms(), 4);
    }

    #[test]
    fn an_endpoint_is_slow_only_against_what_answers_typically_take() {
        let b = Baseline::default();
        for _ in 0..200 {
            b.answered(5);
        }
        assert!(b.slow_answers(2000), "2 s against 5 ms");
        assert!(!b.slow_answers(900), "under a second");
        // Every answer takes 1.5 s: the fan-out (or everyone) is slow, not one endpoint.
        for _ in 0..200 {
            b.answered(1500);
        }
        assert!(!b.slow_answers(2000));
        assert!(b.slow_answers(7000));
    }
}
