//! Per-sender-number throughput: a GCRA (governor) per number at its tier minus a
//! headroom, with no burst, so that over any one-second window the router sends at most
//! the tier. Waiters queue first-come first-served on a per-number mutex, so a backlog of
//! thousands of messages costs one sleeping task, not thousands polling the limiter.
//!
//! Exact across partitions because `wa.send.requests` is keyed by tenant + sender number:
//! one number's requests are in one partition, owned by one router at a time.
//! A BSP's own throttling answer (HTTP 429, Meta 130429) pauses the number.
//!
//! The GCRA paces when a send may start; between that and the HTTP request there is a
//! database round trip whose latency varies, which can bunch requests up. So right before
//! each call, [`SenderLimiter::admit`] spaces the calls themselves with a second GCRA at
//! the tier minus half the headroom: a claim that stalled releases its sends one spacing
//! apart, never as a burst the BSP would count in one second.
//!
//! A number's queue is short: a send arriving when a few seconds of the number's rate are
//! already waiting is parked in the outbox (`scheduled` until its turn) instead of
//! holding one of the router's shared slots, so one tenant's backlog never starves the
//! others of slots ([`SenderLimiter::park`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

struct Lane {
    tier: u32,
    limiter: DefaultDirectRateLimiter,
    queue: tokio::sync::Mutex<()>,
    paused_until: Mutex<Option<Instant>>,
    /// Spaces the calls at the tier minus half the headroom.
    calls: DefaultDirectRateLimiter,
    /// Sends rate-paced, GCRA: one per `1 / rate` seconds.
    rate: f64,
    /// Sends waiting in [`SenderLimiter::acquire`] now.
    waiting: AtomicUsize,
    /// When the last parked send comes back: the next one is parked behind it.
    parked_until: Mutex<Option<Instant>>,
}

/// A send's place in its number's queue; leaving the queue (granted or cancelled) frees it.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct SenderLimiter {
    headroom: f64,
    lanes: Arc<Mutex<HashMap<String, Arc<Lane>>>>,
}

impl SenderLimiter {
    pub fn new(headroom: f64) -> Self {
        Self {
            headroom: headroom.clamp(0.0, 0.5),
            lanes: Default::default(),
        }
    }

    fn lane(&self, number: &str, tier: u32) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = lanes.get(number).filter(|l| l.tier == tier) {
            return l.clone();
        }
        let rate = (tier.max(1) as f64 * (1.0 - self.headroom)).max(0.5);
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
            .expect("a positive period")
            .allow_burst(std::num::NonZeroU32::MIN);
        let call_rate = (tier.max(1) as f64 * (1.0 - self.headroom / 2.0)).max(0.5);
        let calls = Quota::with_period(Duration::from_secs_f64(1.0 / call_rate))
            .expect("a positive period")
            .allow_burst(std::num::NonZeroU32::MIN);
        let lane = Arc::new(Lane {
            tier,
            limiter: RateLimiter::direct(quota),
            queue: tokio::sync::Mutex::new(()),
            paused_until: Mutex::new(None),
            calls: RateLimiter::direct(calls),
            rate,
            waiting: AtomicUsize::new(0),
            parked_until: Mutex::new(None),
        });
        lanes.insert(number.to_string(), lane.clone());
        lane
    }

    /// Should this send leave the number's queue for later? When `queue` of the number's
    /// rate is already waiting, yes: for how long. Parked sends come back one rate interval
    /// apart, in the order they were parked, once the sends waiting now are through; a
    /// send that comes back to a queue still full is parked again.
    pub fn park(&self, number: &str, tier: u32, queue: Duration) -> Option<Duration> {
        let lane = self.lane(number, tier);
        let cap = (lane.rate * queue.as_secs_f64()).ceil().max(2.0) as usize;
        let waiting = lane.waiting.load(Ordering::SeqCst);
        if waiting < cap {
            return None;
        }
        let now = Instant::now();
        let step = Duration::from_secs_f64(1.0 / lane.rate);
        let drained = now + step.mul_f64(waiting as f64);
        let mut parked = lane.parked_until.lock().unwrap_or_else(|p| p.into_inner());
        let at = parked.filter(|t| *t > drained).unwrap_or(drained) + step;
        *parked = Some(at);
        Some(at - now)
    }

    /// Wait for this number's next send slot.
    pub async fn acquire(&self, number: &str, tier: u32) {
        let lane = self.lane(number, tier);
        lane.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&lane.waiting);
        let _turn = lane.queue.lock().await;
        loop {
            let paused = *lane.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match paused {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        lane.limiter.until_ready().await;
    }

    /// Right before a call: wait for the number's next call spacing.
    pub async fn admit(&self, number: &str, tier: u32) {
        self.lane(number, tier).calls.until_ready().await;
    }

    /// The BSP said "too fast": hold this number's sends for `pause`.
    pub fn back_off(&self, number: &str, tier: u32, pause: Duration) {
        let lane = self.lane(number, tier);
        let pause = pause.min(switchboard_connectors::send::MAX_RETRY_AFTER);
        let Some(until) = Instant::now().checked_add(pause) else {
            return;
        };
        let mut p = lane.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time: governor keeps its own clock.
    #[tokio::test]
    async fn never_more_than_the_tier_in_any_second() {
        let l = SenderLimiter::new(0.05);
        let start = Instant::now();
        let mut times = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..160 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire("+1555", 80).await;
                Instant::now()
            }));
        }
        for t in tasks {
            times.push(t.await.unwrap().duration_since(start));
        }
        times.sort();
        // Sliding one-second windows over the grant times.
        let max_in_window = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t - times[i] < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap();
        assert!(max_in_window <= 80, "{max_in_window} grants in one second");
        assert!(max_in_window >= 70, "far below the tier: {max_in_window}");
    }

    #[tokio::test]
    async fn admit_spaces_calls_under_the_tier() {
        let l = SenderLimiter::new(0.1);
        let start = Instant::now();
        // 40 calls at once on a 20-mps number: one every 1/19 s (20 minus half the
        // headroom), never bunched.
        let mut times = Vec::new();
        for _ in 0..40 {
            l.admit("+1", 20).await;
            times.push(start.elapsed());
        }
        let spacing = Duration::from_secs_f64(1.0 / 19.0);
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= spacing.mul_f64(0.9), "{:?}", w[1] - w[0]);
        }
        let first_second = times
            .iter()
            .filter(|t| **t < Duration::from_secs(1))
            .count();
        assert!(
            first_second <= 19,
            "{first_second} calls in the first second"
        );
    }

    #[tokio::test]
    async fn a_full_queue_parks_sends_in_arrival_order() {
        let l = SenderLimiter::new(0.0);
        let queue = Duration::from_secs(1);
        assert_eq!(
            l.park("+1", 10, queue),
            None,
            "an empty queue takes the send"
        );
        let waiters: Vec<_> = (0..12)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.acquire("+1", 10).await })
            })
            .collect();
        tokio::task::yield_now().await;
        while l.lane("+1", 10).waiting.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first = l.park("+1", 10, queue).expect("a full queue parks");
        let second = l.park("+1", 10, queue).expect("parks behind the first");
        assert!(
            first >= Duration::from_millis(800),
            "{first:?}: after the queue drains"
        );
        assert!(second > first, "{second:?} after {first:?}");
        assert_eq!(
            l.park("+2", 10, queue),
            None,
            "other numbers are not affected"
        );
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(
            l.park("+1", 10, queue),
            None,
            "a drained queue takes sends again"
        );
    }

    #[test]
    fn a_huge_back_off_is_clamped() {
        let l = SenderLimiter::new(0.0);
        l.back_off("+1", 10, Duration::MAX);
        let until = l.lane("+1", 10).paused_until.lock().unwrap().unwrap();
        assert!(until <= Instant::now() + switchboard_connectors::send::MAX_RETRY_AFTER);
    }

    #[tokio::test]
    async fn back_off_pauses_the_number_only() {
        let l = SenderLimiter::new(0.0);
        l.back_off("+1", 1000, Duration::from_millis(300));
        let t0 = Instant::now();
        l.acquire("+2", 1000).await;
        assert!(t0.elapsed() < Duration::from_millis(100));
        l.acquire("+1", 1000).await;
        assert!(t0.elapsed() >= Duration::from_millis(300));
    }
}
