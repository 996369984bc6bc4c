//! Per-pair pacing: one business number to one customer. Meta allows about one message
//! per 6 seconds to the same user, with bursts (up to about 45) borrowed from later
//! quota; past it the Cloud API refuses with 131056. A GCRA per (number, customer), with
//! the interval and burst configured (`SWITCHBOARD_PAIR_INTERVAL`,
//! `SWITCHBOARD_PAIR_BURST`), beside the number's own limiter: a bulk send to one person
//! is paced while the number's other customers flow at its tier.
//!
//! A send that must wait more than a moment is parked (like a number's overflow) until
//! its slot, which it reserves: when it comes back it goes, and sends parked after it
//! take later slots, so n sends to one customer are parked once each, not n² times.
//! The state is this router's memory: exact because one router owns a number's
//! partition; lost on a restart, when a pair may get one more burst (the BSP's 131056
//! then pauses that pair only).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Pairs are forgotten once fully recovered; the map is swept every this many inserts.
const SWEEP_EVERY: usize = 4096;
const STALE_RESERVATION: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct State {
    /// GCRA theoretical arrival time per pair, of admissions ...
    tat: HashMap<(String, String), Instant>,
    /// ... and of the calls themselves.
    calls: HashMap<(String, String), Instant>,
    /// Slots reserved by parked sends, by message id.
    reserved: HashMap<String, Instant>,
    inserts: usize,
}

pub struct PairLimiter {
    interval: Duration,
    /// How far ahead of its pace a pair may be: (burst - 1) intervals.
    tolerance: Duration,
    state: Mutex<State>,
}

/// What a send to a pair may do now.
#[derive(Debug, PartialEq)]
pub enum Pace {
    Go,
    /// Wait this long (short: in place).
    Wait(Duration),
    /// Come back after this long: the slot is reserved for it.
    Park(Duration),
}

impl PairLimiter {
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            state: Default::default(),
        }
    }

    /// Take the pair's next slot for `message_id`. Waits shorter than `park_after` are
    /// waited in place.
    pub fn take(
        &self,
        number: &str,
        customer: &str,
        message_id: &str,
        park_after: Duration,
    ) -> Pace {
        self.take_at(Instant::now(), number, customer, message_id, park_after)
    }

    fn take_at(
        &self,
        now: Instant,
        number: &str,
        customer: &str,
        message_id: &str,
        park_after: Duration,
    ) -> Pace {
        if self.interval.is_zero() {
            return Pace::Go;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = s.reserved.remove(message_id) {
            // Its reserved slot (the pair's pace already counts it).
            return match at.checked_duration_since(now) {
                Some(d) if !d.is_zero() => {
                    s.reserved.insert(message_id.to_string(), at);
                    if d > park_after {
                        Pace::Park(d)
                    } else {
                        Pace::Wait(d)
                    }
                }
                _ => Pace::Go,
            };
        }
        let at = self.conform(&mut s.tat, number, customer, now);
        s.inserts += 1;
        if s.inserts.is_multiple_of(SWEEP_EVERY) {
            s.tat.retain(|_, t| *t > now);
            s.calls.retain(|_, t| *t > now);
            // A parked send settled otherwise (cancelled, or failed elsewhere) never
            // comes back for its slot.
            s.reserved.retain(|_, t| *t + STALE_RESERVATION > now);
        }
        let wait = at - now;
        if wait.is_zero() {
            Pace::Go
        } else if wait <= park_after {
            Pace::Wait(wait)
        } else {
            s.reserved.insert(message_id.to_string(), at);
            Pace::Park(wait)
        }
    }

    /// Right before the call: how long to wait so that the calls themselves keep the
    /// pace. Admission paced the send, but the database round trips between admission
    /// and call vary, which can bunch calls up; this takes up that slack.
    pub fn space(&self, number: &str, customer: &str) -> Duration {
        self.space_at(Instant::now(), number, customer)
    }

    fn space_at(&self, now: Instant, number: &str, customer: &str) -> Duration {
        if self.interval.is_zero() {
            return Duration::ZERO;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.conform(&mut s.calls, number, customer, now) - now
    }

    /// GCRA: the earliest a send to the pair conforms (its theoretical arrival time less
    /// the tolerance, not before now), taking that slot.
    fn conform(
        &self,
        tats: &mut HashMap<(String, String), Instant>,
        number: &str,
        customer: &str,
        now: Instant,
    ) -> Instant {
        let key = (number.to_string(), customer.to_string());
        let tat = tats.get(&key).copied().filter(|t| *t > now).unwrap_or(now);
        let at = tat
            .checked_sub(self.tolerance)
            .filter(|t| *t > now)
            .unwrap_or(now);
        tats.insert(key, tat + self.interval);
        at
    }

    /// The BSP said the pair is over its limit (131056): nothing more to it for `pause`.
    pub fn back_off(&self, number: &str, customer: &str, pause: Duration) {
        self.back_off_at(Instant::now(), number, customer, pause)
    }

    fn back_off_at(&self, now: Instant, number: &str, customer: &str, pause: Duration) {
        let until = now + pause.min(switchboard_connectors::send::MAX_RETRY_AFTER);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Past the tolerance too, so that no burst follows the pause.
        let tat = until + self.tolerance;
        let e = s
            .tat
            .entry((number.to_string(), customer.to_string()))
            .or_insert(tat);
        if *e < tat {
            *e = tat;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_and_other_pairs_untouched() {
        let l = PairLimiter::new(Duration::from_secs(6), 3);
        let mut now = Instant::now();
        let long = Duration::from_secs(3600);
        let secs = Duration::from_secs;
        for i in 0..3 {
            let m = format!("m{i}");
            assert_eq!(l.take_at(now, "+1", "+49", &m, long), Pace::Go, "burst {i}");
        }
        assert_eq!(l.take_at(now, "+1", "+49", "m3", long), Pace::Wait(secs(6)));
        assert_eq!(
            l.take_at(now, "+1", "+49", "m4", long),
            Pace::Wait(secs(12))
        );
        // Another customer of the number, and another number to the customer: free.
        assert_eq!(l.take_at(now, "+1", "+48", "x", long), Pace::Go);
        assert_eq!(l.take_at(now, "+2", "+49", "y", long), Pace::Go);
        now += secs(30);
        for i in 0..3 {
            let m = format!("n{i}");
            assert_eq!(
                l.take_at(now, "+1", "+49", &m, long),
                Pace::Go,
                "recovered {i}"
            );
        }
    }

    #[test]
    fn parked_sends_keep_their_slots() {
        let l = PairLimiter::new(Duration::from_secs(6), 1);
        let mut now = Instant::now();
        let short = Duration::from_millis(100);
        let secs = Duration::from_secs;
        assert_eq!(l.take_at(now, "+1", "+49", "a", short), Pace::Go);
        assert_eq!(l.take_at(now, "+1", "+49", "b", short), Pace::Park(secs(6)));
        assert_eq!(
            l.take_at(now, "+1", "+49", "c", short),
            Pace::Park(secs(12))
        );
        // Back early (a republication): parked again for the rest of its wait.
        now += secs(2);
        assert_eq!(l.take_at(now, "+1", "+49", "b", short), Pace::Park(secs(4)));
        now += secs(4);
        assert_eq!(l.take_at(now, "+1", "+49", "b", short), Pace::Go);
        // A newcomer queues behind c, not beside b.
        assert_eq!(
            l.take_at(now, "+1", "+49", "d", short),
            Pace::Park(secs(12))
        );
        now += secs(6);
        assert_eq!(l.take_at(now, "+1", "+49", "c", short), Pace::Go);
    }

    #[test]
    fn a_refusal_pauses_the_pair_past_its_burst() {
        let l = PairLimiter::new(Duration::from_secs(1), 5);
        let now = Instant::now();
        let long = Duration::from_secs(3600);
        l.back_off_at(now, "+1", "+49", Duration::from_secs(10));
        let paused = l.take_at(now, "+1", "+49", "a", long);
        assert_eq!(paused, Pace::Wait(Duration::from_secs(10)));
        assert_eq!(l.take_at(now, "+1", "+48", "b", long), Pace::Go);
    }

    #[test]
    fn calls_are_spaced_even_when_admissions_bunch_up() {
        let l = PairLimiter::new(Duration::from_secs(1), 2);
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(l.space_at(now, "+1", "+49"), Duration::ZERO);
        assert_eq!(l.space_at(now, "+1", "+49"), Duration::ZERO);
        assert_eq!(l.space_at(now + ms(300), "+1", "+49"), ms(700));
        assert_eq!(l.space_at(now + ms(300), "+1", "+48"), Duration::ZERO);
    }

    #[test]
    fn a_zero_interval_turns_it_off() {
        let l = PairLimiter::new(Duration::ZERO, 1);
        for i in 0..100 {
            let pace = l.take("+1", "+49", &i.to_string(), Duration::ZERO);
            assert_eq!(pace, Pace::Go);
        }
    }
}
