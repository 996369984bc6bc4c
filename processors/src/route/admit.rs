//! Admission of a send request: is it due, whose number is it, may it take a router slot
//! now (a rate token within `SWITCHBOARD_RATE_QUEUE`, else a place parked in the outbox),
//! and the message's claim in the state machine.
//!
//! Parking is what keeps one tenant's backlog from holding the router's shared slots: a
//! number with a few seconds of sends already waiting parks further ones as `scheduled`
//! rows, released in turn by the scheduler, instead of letting them wait in slots.

use std::time::Duration;

use switchboard_runtime::now_ms;
use switchboard_schemas::config::BusinessNumber;
use switchboard_schemas::SendRequest;

use super::dispatch::{SendRouter, Stop, METRICS};
use super::pair::Pace;
use crate::db::outbox::Claim;

/// A send to a customer paced for less than this waits in its slot; longer, it is parked.
const PAIR_WAIT_IN_PLACE: Duration = Duration::from_millis(250);

/// What admission decided.
pub enum Admission<'a> {
    /// Nothing to do now: not due yet (the scheduler brings it back), parked, or a copy
    /// of a message this process is sending right now (that task settles it).
    Skip,
    /// The state machine's answer for this message, its number (`None`: no tenant's),
    /// and, while it lives, this process's mark that it is handling the message.
    Claimed {
        claim: Claim,
        number: Option<Box<BusinessNumber>>,
        in_flight: Option<InFlight<'a>>,
    },
}

/// This process handles the message until dropped.
pub struct InFlight<'a>(&'a SendRouter, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock_in_flight().remove(&self.1);
    }
}

impl SendRouter {
    pub(super) fn lock_in_flight(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn admit(&self, req: &SendRequest) -> Result<Admission<'_>, Stop> {
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
        // A copy of a request this process is sending right now (republished): the
        // running task settles it.
        if !self.lock_in_flight().insert(req.message_id.clone()) {
            return Ok(Admission::Skip);
        }
        let in_flight = InFlight(self, req.message_id.clone());
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
