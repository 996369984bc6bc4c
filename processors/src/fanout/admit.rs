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
