//! Admission of a send request: is it due, whose number is it, may it take a router slot
//! now (a rate token within `SWITCHBOARD_RATE_QUEUE`, else a place parked in the outbox),
//! and the message's claim in the state machine.
//!
//! Parking is what keeps one tenant's backlog from holding the router's shared slots: a
//! number with a few seconds of sends already waiting parks further ones as `scheduled`
//! rows, released in turn by the scheduler, instead of letting them wait in slots.
//!
//! Two copies of one request in this process (a record read again after a restart, and
//! the scheduler's republication of the same send) go one after the other: the second
//! waits for the first to finish, then is admitted itself. It must not be dropped: the
//! first may have found the message `scheduled` and left it, and the copy is then the
//! only record that brings it to a BSP (a send left `queued` and published, with no
//! record left to carry it, is never swept again).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_runtime::now_ms;
use switchboard_schemas::config::BusinessNumber;
use switchboard_schemas::SendRequest;
use tokio::sync::Notify;

use super::dispatch::{SendRouter, Stop, METRICS};
use super::pair::Pace;
use crate::db::outbox::Claim;

/// A send to a customer paced for less than this waits in its slot; longer, it is parked.
const PAIR_WAIT_IN_PLACE: Duration = Duration::from_millis(250);

/// What admission decided.
pub enum Admission {
    /// Nothing to do now: not due yet (the scheduler brings it back), or parked.
    Skip,
    /// The state machine's answer for this message, its number (`None`: no tenant's),
    /// and, while it lives, this process's hold on the message.
    Claimed {
        claim: Claim,
        number: Option<Box<BusinessNumber>>,
        in_flight: Option<Held>,
    },
}

/// The messages this process is between admission and outcome for, one holder each.
#[derive(Default)]
pub struct InFlight {
    held: Mutex<HashMap<String, Arc<Notify>>>,
}

/// This process handles the message until dropped.
pub struct Held {
    set: Arc<InFlight>,
    id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(done) = self.set.lock().remove(&self.id) {
            done.notify_waiters();
        }
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `id`, waiting first for whoever holds it now.
    pub async fn hold(self: &Arc<Self>, id: &str) -> Held {
        loop {
            // Registered under the lock, so the holder's drop cannot slip between the
            // look-up and the wait.
            let released = match self.lock().entry(id.to_string()) {
                Entry::Vacant(v) => {
                    v.insert(Arc::new(Notify::new()));
                    return Held {
                        set: self.clone(),
                        id: id.to_string(),
                    };
                }
                Entry::Occupied(o) => o.get().clone().notified_owned(),
            };
            released.await;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SendRouter {
    pub(super) async fn admit(&self, req: &SendRequest) -> Result<Admission, Stop> {
        if req.scheduled_at_ms.is_some_and(|t| t > now_ms() + 50) {
            // Not due: its row is `scheduled`; the scheduler publishes it again when due.
            return Ok(Admission::Skip);
        }
        let number = {
            let ix = self.cache.read();
            ix.numbers
                .get(&req.from_number)
                .filter(|n| n.tenant_id == req.tenant_id)
                .cloned()
        };
        let Some(number) = number else {
            let claim = self.claim(req, "none").await?;
            return Ok(Admission::Claimed {
                claim,
                number: None,
                in_flight: None,
            });
        };
        // A number with a few seconds of sends waiting already: park this one rather than
        // hold a shared slot while it waits (one tenant's backlog must not starve others).
        // Only a `queued` message parks: a redelivered one that a router (maybe a dead
        // one) claimed must go on to the claim, which settles it.
        if let Some(after) = self
            .limiter
            .park(&number.number, number.tier_mps, self.cfg.rate_queue)
        {
            let parked = self
                .durable("park", || async {
                    self.outbox.park(&req.message_id, after).await
                })
                .await?;
            if parked {
                METRICS.parked.inc();
                return Ok(Admission::Skip);
            }
        }
        // A copy of a request this process is handling right now waits for it (see the
        // module's doc).
        let in_flight = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
            held = self.in_flight.hold(&req.message_id) => held,
        };
        match self
            .pair
            .take(&number.number, &req.to, &req.message_id, PAIR_WAIT_IN_PLACE)
        {
            Pace::Go => {}
            Pace::Wait(d) => tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep(d) => {}
            },
            Pace::Park(after) => {
                let parked = self
                    .durable("park", || async {
                        self.outbox.park(&req.message_id, after).await
                    })
                    .await?;
                if parked {
                    METRICS.pair_parked.inc();
                    return Ok(Admission::Skip);
                }
            }
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
            _ = self.limiter.acquire(&number.number, number.tier_mps) => {}
        }
        let claim = self.claim(req, &number.bsp).await?;
        Ok(Admission::Claimed {
            claim,
            number: Some(Box::new(number)),
            in_flight: Some(in_flight),
        })
    }

    /// The state machine's answer for the message. A message another router is sending
    /// (`sending`, lease not over) is looked at again once the lease is over; what comes
    /// back as `sending` then belongs to a router that died mid-call.
    async fn claim(&self, req: &SendRequest, bsp: &str) -> Result<Claim, Stop> {
        let lease = self.cfg.send_timeout + Duration::from_secs(5);
        loop {
            let claim = self
                .durable("claim", || async {
                    self.outbox.claim(&req.message_id, bsp).await
                })
                .await?;
            match claim {
                Claim::Sending { age } if age < lease => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                        _ = tokio::time::sleep(lease - age) => {}
                    }
                }
                other => return Ok(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_waits_for_the_holder_then_holds() {
        let set = Arc::new(InFlight::default());
        let first = set.hold("msg_1").await;
        let other = set.hold("msg_2").await;
        let copy = tokio::spawn({
            let set = set.clone();
            async move {
                let held = set.hold("msg_1").await;
                held.id.clone()
            }
        });
        tokio::task::yield_now().await;
        assert!(!copy.is_finished(), "the copy went ahead of the holder");
        assert_eq!(set.len(), 2);
        drop(first);
        assert_eq!(copy.await.unwrap(), "msg_1");
        drop(other);
        assert!(set.is_empty(), "a finished hold stayed in the set");
    }

    #[tokio::test]
    async fn copies_go_one_at_a_time() {
        let set = Arc::new(InFlight::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (set, inside) = (set.clone(), inside.clone());
                tokio::spawn(async move {
                    let _held = set.hold("msg_1").await;
                    let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    now
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 0, "two holders at once");
        }
        assert!(set.is_empty());
    }
}
