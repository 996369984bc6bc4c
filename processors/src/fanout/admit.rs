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
//!   `SWITCHBOARD_TENANT_MAX_IN_FLIGHT` of them has its further events deferred whole.
//!   Below half nothing is deferred: a fan-out serving one busy tenant keeps all of its
//!   capacity for it;
//! - per strict endpoint ([`StrictHolds`]): at most `SWITCHBOARD_STRICT_HOLD_MAX` failing
//!   events held in place; later failures wait on a delay topic (and lose strict order);
//! - per endpoint: deliveries waiting for a slow or rate-limited endpoint
//!   (`EndpointRt::should_defer`).
//!
//! A deferred delivery does not use up an attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use switchboard_runtime::CancellationToken;
use tokio::sync::OwnedSemaphorePermit;

use super::endpoints::EndpointRt;
use super::order::Ticket;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Events in flight per tenant.
pub struct Admission {
    max_in_flight: usize,
    tenant_max: usize,
    tenants: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

/// One admitted event's slot; dropping it (the event is done or interrupted) frees it.
pub struct Slot {
    admission: Arc<Admission>,
    tenant: String,
}

impl Admission {
    pub fn new(max_in_flight: usize, tenant_max: usize) -> Arc<Self> {
        Arc::new(Self {
            max_in_flight,
            tenant_max: tenant_max.max(1),
            tenants: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        })
    }

    /// A slot for one of `tenant`'s events, or `None`: defer the event.
    pub fn admit(self: &Arc<Self>, tenant: &str) -> Option<Slot> {
        let mut tenants = lock(&self.tenants);
        let held = tenants.get(tenant).copied().unwrap_or(0);
        let busy = self.total.load(SeqCst) * 2 >= self.max_in_flight;
        if busy && held >= self.tenant_max {
            return None;
        }
        *tenants.entry(tenant.to_string()).or_default() += 1;
        self.total.fetch_add(1, SeqCst);
        Some(Slot {
            admission: self.clone(),
            tenant: tenant.to_string(),
        })
    }

    /// Events of `tenant` in flight now.
    pub fn held_by(&self, tenant: &str) -> usize {
        lock(&self.tenants).get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut tenants = lock(&self.admission.tenants);
        if let Some(n) = tenants.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
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
    Defer,
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
        if rt.should_defer() {
            return Some(Admit::Defer);
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
    if may_defer && rt.should_defer() {
        return Some(Admit::Defer);
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
        if may_defer && rt.should_defer() {
            return Some(Admit::Defer);
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

    #[test]
    fn a_tenant_is_capped_only_once_half_the_slots_are_taken() {
        let a = Admission::new(10, 2);
        // Below half, one tenant may take more than its cap.
        let mut noisy: Vec<Slot> = (0..4).map(|_| a.admit("noisy").unwrap()).collect();
        assert_eq!(a.held_by("noisy"), 4);
        // At half: the noisy tenant is over its cap and deferred; another is not.
        noisy.push(a.admit("noisy").unwrap());
        assert!(a.admit("noisy").is_none());
        let quiet: Vec<Slot> = (0..2).map(|_| a.admit("quiet").unwrap()).collect();
        assert!(a.admit("quiet").is_none(), "quiet is at its cap too now");
        // Slots free as events finish.
        drop(noisy);
        assert_eq!(a.held_by("noisy"), 0);
        assert!(a.admit("noisy").is_some());
        drop(quiet);
        assert_eq!(a.total.load(SeqCst), 0);
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
