//! Admission: may a delivery take the fan-out's capacity now, or does it wait on a delay
//! topic instead?
//!
//! The capacity is the first-attempt consumer's events in flight
//! (`SWITCHBOARD_MAX_IN_FLIGHT`). An event keeps its slot while any of its deliveries
//! waits for its turn in its conversation, for an endpoint's slot or rate token, or is
//! retried in place for a strict endpoint, so three bounds keep one tenant from taking
//! every slot, each deferring the overflow to the shortest delay topic:
//!
//! - per tenant ([`Admission`]): once half the slots are taken, a tenant holding
//!   `SWITCHBOARD_TENANT_MAX_IN_FLIGHT` of them takes a new slot only as one of its own
//!   events finishes, and has its further events deferred whole once it finishes
//!   nothing for a second (its events are stuck on its own endpoints). A busy tenant
//!   whose events flow keeps its pace and defers nothing;
//! - per strict endpoint ([`StrictHolds`]): at most `SWITCHBOARD_STRICT_HOLD_MAX` failing
//!   events held in place; later failures wait on a delay topic (and lose strict order);
//! - per endpoint: deliveries waiting for a slow or rate-limited endpoint
//!   (`EndpointRt::should_defer`).
//!
//! A deferred delivery does not use up an attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use switchboard_runtime::{now_ms, CancellationToken};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::baseline::Baseline;
use super::endpoints::{Defer, EndpointRt};
use super::order::Ticket;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Events in flight per tenant.
pub struct Admission {
    max_in_flight: usize,
    tenant_max: usize,
    /// How long a tenant over its share may go without finishing an event (plus the
    /// fan-out's own lag) before its further events are deferred.
    stall: Duration,
    baseline: Arc<Baseline>,
    tenants: Mutex<HashMap<String, Tenant>>,
    total: AtomicUsize,
}

struct Tenant {
    held: usize,
    /// When one of its events last finished, or it last went from none in flight to one
    /// (Unix ms).
    progress_ms: i64,
    /// Signalled once per finished event: one event waiting for its share takes the
    /// freed place.
    released: Arc<Notify>,
}

/// One admitted event's slot; dropping it (the event is done or interrupted) frees it.
pub struct Slot {
    admission: Arc<Admission>,
    tenant: String,
}

/// What admission decided for an event.
pub enum Share {
    Taken(Slot),
    /// Over its share and not finishing events: defer the event whole.
    Over,
}

impl Admission {
    pub fn new(
        max_in_flight: usize,
        tenant_max: usize,
        stall: Duration,
        baseline: Arc<Baseline>,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_in_flight,
            tenant_max: tenant_max.max(1),
            stall,
            baseline,
            tenants: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        })
    }

    /// A slot for one of `tenant`'s events. Below half of the fan-out's slots, or below
    /// its cap, a tenant takes one at once. Over both, the event waits for one of the
    /// tenant's own events to finish and takes its place, so a busy tenant keeps its
    /// pace without deferring anything (the consumer's own limit is the backpressure).
    /// A tenant that finishes nothing for `stall` is stuck on its own endpoints: its
    /// events are deferred ([`Share::Over`]) so they cannot take every slot while another
    /// tenant's events wait behind them. `None` on shutdown.
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &str,
        shutdown: &CancellationToken,
    ) -> Option<Share> {
        loop {
            let (released, stalled_in) = {
                let mut tenants = lock(&self.tenants);
                let now = now_ms();
                let t = tenants.entry(tenant.to_string()).or_insert_with(|| Tenant {
                    held: 0,
                    progress_ms: now,
                    released: Arc::new(Notify::new()),
                });
                let busy = self.total.load(SeqCst) * 2 >= self.max_in_flight;
                if !busy || t.held < self.tenant_max {
                    return Some(Share::Taken(self.take(t, tenant, now)));
                }
                let stalled_in =
                    t.progress_ms + self.stall.as_millis() as i64 + self.baseline.allowance_ms()
                        - now;
                if stalled_in <= 0 {
                    return Some(Share::Over);
                }
                (t.released.clone(), stalled_in)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = released.notified() => {
                    let mut tenants = lock(&self.tenants);
                    let now = now_ms();
                    if let Some(t) = tenants.get_mut(tenant) {
                        return Some(Share::Taken(self.take(t, tenant, now)));
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(stalled_in as u64)) => {}
            }
        }
    }

    fn take(self: &Arc<Self>, t: &mut Tenant, tenant: &str, now: i64) -> Slot {
        if t.held == 0 {
            t.progress_ms = now;
        }
        t.held += 1;
        self.total.fetch_add(1, SeqCst);
        Slot {
            admission: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    /// Events of `tenant` in flight now.
    pub fn held_by(&self, tenant: &str) -> usize {
        lock(&self.tenants).get(tenant).map_or(0, |t| t.held)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut tenants = lock(&self.admission.tenants);
        if let Some(t) = tenants.get_mut(&self.tenant) {
            t.held = t.held.saturating_sub(1);
            t.progress_ms = now_ms();
            t.released.notify_one();
            // Kept while events wait on its signal.
            if t.held == 0 && Arc::strong_count(&t.released) == 1 {
                tenants.remove(&self.tenant);
            }
        }
        self.admission.total.fetch_sub(1, SeqCst);
    }
}

/// Events held in place per strict endpoint.
#[derive(Default)]
pub struct StrictHolds(Mutex<HashMap<String, usize>>);

/// One held event; dropping it (delivered, given up, interrupted) frees its place.
pub struct Held<'a>(&'a StrictHolds, String);

impl StrictHolds {
    /// A place for one more failing event at `endpoint`, or `None` when it holds `max`.
    pub fn hold(&self, endpoint: &str, max: usize) -> Option<Held<'_>> {
        let mut m = lock(&self.0);
        let n = m.entry(endpoint.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held(self, endpoint.to_string()))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut m = lock(&self.0 .0);
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Counts a delivery as waiting for an endpoint (`EndpointRt::waiting`) for as long as
/// it lives.
pub struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// What admission decided for one delivery at one endpoint.
pub enum Admit {
    /// Go ahead (with the endpoint's slot, when one was taken).
    Go(Option<OwnedSemaphorePermit>),
    /// The endpoint cannot keep up: the delivery waits on a delay topic.
    Defer(Defer),
}

/// Wait for this event's turn at the endpoint (conversation order). Waiting counts as
/// waiting for the endpoint: when it cannot keep up (`EndpointRt::should_defer`), the
/// event stops waiting and its delivery is deferred; like a failed first attempt, it is
/// then delivered on its own. `None` on shutdown.
pub async fn turn(
    ticket: &Ticket,
    endpoint_id: &str,
    rt: Option<&EndpointRt>,
    shutdown: &CancellationToken,
) -> Option<Admit> {
    let turn = ticket.turn(endpoint_id);
    tokio::pin!(turn);
    let Some(rt) = rt else {
        turn.await;
        return Some(Admit::Go(None));
    };
    // Most turns are immediate: only count and look when there is a wait.
    if futures::poll!(turn.as_mut()).is_ready() {
        return Some(Admit::Go(None));
    }
    let _counted = Waiting::new(&rt.waiting);
    loop {
        let recheck = rt.recheck.notified();
        tokio::pin!(recheck);
        recheck.as_mut().enable();
        if let Some(why) = rt.should_defer() {
            return Some(Admit::Defer(why));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = &mut turn => return Some(Admit::Go(None)),
            _ = recheck => {}
        }
    }
}

/// One of the endpoint's `max_in_flight` slots and, if it is rate-limited, a token.
/// `may_defer`: when the endpoint cannot keep up, answer [`Admit::Defer`] rather than
/// hold the event (strict endpoints wait). `None` on shutdown.
pub async fn endpoint_slot(
    rt: &EndpointRt,
    may_defer: bool,
    shutdown: &CancellationToken,
) -> Option<Admit> {
    let quick = match rt.in_flight.clone().try_acquire_owned() {
        Ok(p) if rt.limiter.as_ref().is_none_or(|l| l.check().is_ok()) => Some(p),
        _ => None,
    };
    if let Some(p) = quick {
        rt.health.slot_was_free();
        return Some(Admit::Go(Some(p)));
    }
    let _counted = Waiting::new(&rt.waiting);
    if let Some(why) = rt.should_defer().filter(|_| may_defer) {
        return Some(Admit::Defer(why));
    }
    let waited = async {
        let p = rt.in_flight.clone().acquire_owned().await.ok()?;
        if let Some(l) = &rt.limiter {
            l.until_ready().await;
        }
        Some(p)
    };
    tokio::pin!(waited);
    // An endpoint can turn slow while this one waits (a hanging endpoint is only known
    // after a second): the registry's watch wakes waiters to look again.
    loop {
        let recheck = rt.recheck.notified();
        tokio::pin!(recheck);
        recheck.as_mut().enable();
        if let Some(why) = rt.should_defer().filter(|_| may_defer) {
            return Some(Admit::Defer(why));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            p = &mut waited => return Some(Admit::Go(Some(p?))),
            _ = recheck => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(s: Option<Share>) -> Slot {
        match s {
            Some(Share::Taken(slot)) => slot,
            Some(Share::Over) => panic!("deferred"),
            None => panic!("shut down"),
        }
    }

    #[tokio::test]
    async fn a_tenant_over_its_share_takes_the_place_of_its_own_finished_events() {
        let stop = CancellationToken::new();
        let a = Admission::new(10, 2, Duration::from_secs(30), Arc::default());
        // Below half, one tenant may take more than its cap.
        let mut noisy = Vec::new();
        for _ in 0..5 {
            noisy.push(taken(a.admit("noisy", &stop).await));
        }
        assert_eq!(a.held_by("noisy"), 5);
        // At half and over its cap, the next one waits; another tenant does not.
        let waiter = {
            let (a, stop) = (a.clone(), stop.clone());
            tokio::spawn(async move { taken(a.admit("noisy", &stop).await) })
        };
        let quiet = taken(a.admit("quiet", &stop).await);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // One of its events finishes: the waiter takes its place.
        noisy.pop();
        let slot = waiter.await.unwrap();
        assert_eq!(a.held_by("noisy"), 5);
        drop((noisy, slot, quiet));
        assert_eq!(a.total.load(SeqCst), 0);
        assert!(lock(&a.tenants).is_empty());
    }

    #[tokio::test]
    async fn a_tenant_that_finishes_nothing_over_its_share_is_deferred() {
        let stop = CancellationToken::new();
        let a = Admission::new(4, 1, Duration::from_millis(100), Arc::default());
        let stuck = [
            taken(a.admit("stuck", &stop).await),
            taken(a.admit("stuck", &stop).await),
        ];
        let started = std::time::Instant::now();
        assert!(matches!(a.admit("stuck", &stop).await, Some(Share::Over)));
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "waited for progress first"
        );
        // And at once while it stays stuck.
        let again = std::time::Instant::now();
        assert!(matches!(a.admit("stuck", &stop).await, Some(Share::Over)));
        assert!(again.elapsed() < Duration::from_millis(50));
        // Another tenant is admitted; shutdown ends a wait.
        let _other = taken(a.admit("other", &stop).await);
        drop(stuck);
        stop.cancel();
        assert_eq!(a.held_by("stuck"), 0);
    }

    #[test]
    fn a_strict_endpoint_holds_at_most_max() {
        let h = StrictHolds::default();
        let first = h.hold("ep", 2).unwrap();
        let _second = h.hold("ep", 2).unwrap();
        assert!(h.hold("ep", 2).is_none());
        assert!(h.hold("other", 2).is_some());
        drop(first);
        assert!(h.hold("ep", 2).is_some());
    }
}
