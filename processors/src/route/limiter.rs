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
//! each call, [`SenderLimiter::admit`] also checks a log of the number's actual call times:
//! never more than the tier minus half the headroom in any one-second window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

struct Lane {
    tier: u32,
    limiter: DefaultDirectRateLimiter,
    queue: tokio::sync::Mutex<()>,
    paused_until: Mutex<Option<Instant>>,
    /// Start times of the calls of the last second, oldest first.
    calls: Mutex<std::collections::VecDeque<Instant>>,
    /// Calls allowed in any one-second window.
    cap: usize,
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
        let cap = ((tier.max(1) as f64) * (1.0 - self.headroom / 2.0))
            .floor()
            .max(1.0) as usize;
        let lane = Arc::new(Lane {
            tier,
            limiter: RateLimiter::direct(quota),
            queue: tokio::sync::Mutex::new(()),
            paused_until: Mutex::new(None),
            calls: Mutex::new(std::collections::VecDeque::with_capacity(cap)),
            cap,
        });
        lanes.insert(number.to_string(), lane.clone());
        lane
    }

    /// Wait for this number's next send slot.
    pub async fn acquire(&self, number: &str, tier: u32) {
        let lane = self.lane(number, tier);
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

    /// Right before a call: wait until the number has had fewer than its cap of calls in
    /// the last second, and record this one.
    pub async fn admit(&self, number: &str, tier: u32) {
        let lane = self.lane(number, tier);
        loop {
            let wait = {
                let mut calls = lane.calls.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while calls
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    calls.pop_front();
                }
                if calls.len() < lane.cap {
                    calls.push_back(now);
                    return;
                }
                calls[0] + Duration::from_secs(1)
            };
            tokio::time::sleep_until(wait).await;
        }
    }

    /// The BSP said "too fast": hold this number's sends for `pause`.
    pub fn back_off(&self, number: &str, tier: u32, pause: Duration) {
        let lane = self.lane(number, tier);
        let until = Instant::now() + pause;
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
    async fn admit_caps_any_one_second_window() {
        let l = SenderLimiter::new(0.1);
        let start = Instant::now();
        // 40 calls at once on a 20-mps number: 19 now (20 minus half the headroom), the
        // rest a second later.
        let mut times = Vec::new();
        for _ in 0..40 {
            l.admit("+1", 20).await;
            times.push(start.elapsed());
        }
        let first_second = times
            .iter()
            .filter(|t| **t < Duration::from_millis(900))
            .count();
        assert_eq!(first_second, 19);
        assert!(times[19] >= Duration::from_secs(1));
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
