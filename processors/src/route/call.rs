//! The BSP call of a claimed send: the number's BSP, or its failover BSP when the first is
//! unwell, each through its circuit breaker, with the tenant's credentials for it, paced
//! by the number's rate right before the request.
//!
//! Failover happens only from a BSP that failed in a way that sent nothing (a retryable,
//! unambiguous error), never after a definite answer or a call that may have reached it.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use switchboard_connectors::send::{self, codes, Accepted, ErrorKind, Outbound, Route, SendError};
use switchboard_connectors::Bsp;
use switchboard_schemas::config::BusinessNumber;
use switchboard_schemas::SendRequest;

use super::dispatch::{SendRouter, METRICS};

/// What the call stage came back with.
pub enum Called {
    Accepted {
        bsp: Bsp,
        account: String,
        wamid: String,
    },
    /// The last BSP tried failed so.
    Failed { bsp: Bsp, error: SendError },
    /// Every BSP the number may use has its breaker open; nothing was called.
    NoBspAvailable { primary: Bsp },
}

impl SendRouter {
    pub(super) async fn call(&self, req: &SendRequest, number: &BusinessNumber) -> Called {
        let primary: Bsp = number.bsp.parse().unwrap_or(Bsp::Meta);
        let failover: Option<(Bsp, &str)> = number
            .failover_bsp
            .as_deref()
            .and_then(|b| b.parse().ok())
            .zip(number.failover_account_id.as_deref());
        // Primary if its breaker lets calls through, else the failover BSP.
        let mut plan: Vec<(Bsp, &str)> = Vec::new();
        if self.breakers.permits(primary) {
            plan.push((primary, number.bsp_account_id.as_str()));
        }
        if let Some((fb, acc)) = failover {
            if self.breakers.permits(fb) {
                plan.push((fb, acc));
            }
        }
        let mut last: Option<(Bsp, SendError)> = None;
        for (bsp, account) in &plan {
            // The next BSP only after a failure that says the last one never took it.
            if last
                .as_ref()
                .is_some_and(|(_, e)| e.kind != ErrorKind::Retryable || e.ambiguous)
            {
                break;
            }
            if !self.breakers.acquire(*bsp) {
                // Half-open, and another send is its probe: this one goes elsewhere or
                // waits.
                continue;
            }
            match self.call_one(req, *bsp, account).await {
                Ok(acc) => {
                    self.breakers.record(*bsp, true);
                    return Called::Accepted {
                        bsp: *bsp,
                        account: account.to_string(),
                        wamid: acc.bsp_message_id,
                    };
                }
                Err(e) => {
                    self.breakers.record(*bsp, e.kind != ErrorKind::Retryable);
                    if e.kind == ErrorKind::Throttled {
                        let pause = e.retry_after.unwrap_or(Duration::from_secs(1));
                        if e.code == codes::PAIR_RATE_LIMITED {
                            // The customer has had enough for now; the number has not.
                            let pause = pause.max(self.cfg.pair_interval);
                            self.pair.back_off(&number.number, &req.to, pause);
                        } else {
                            self.limiter
                                .back_off(&number.number, number.tier_mps, pause);
                        }
                    }
                    last = Some((*bsp, e));
                }
            }
        }
        match last {
            Some((bsp, error)) => Called::Failed { bsp, error },
            None => Called::NoBspAvailable { primary },
        }
    }

    pub(crate) fn credentials(
        &self,
        tenant: &str,
        bsp: Bsp,
    ) -> Result<Map<String, Value>, SendError> {
        let missing =
            |why: String| SendError::new(ErrorKind::Permanent, codes::CREDENTIALS_MISSING, why);
        let cred = self
            .cache
            .read()
            .credentials
            .get(&(tenant.to_string(), bsp.slug().to_string()))
            .cloned()
            .ok_or_else(|| missing(format!("tenant {tenant} has no {bsp} credentials")))?;
        let ring = self
            .keyring
            .as_ref()
            .ok_or_else(|| missing("the router has no credentials keyring".into()))?;
        let plain = ring
            .open(&cred.key_id, &cred.ciphertext, &format!("{tenant}/{bsp}"))
            .map_err(|e| missing(format!("{bsp} credentials do not open: {e}")))?;
        serde_json::from_slice(&plain).map_err(|e| missing(format!("{bsp} credentials: {e}")))
    }

    /// One request to one BSP.
    async fn call_one(
        &self,
        req: &SendRequest,
        bsp: Bsp,
        account: &str,
    ) -> Result<Accepted, SendError> {
        let creds = self.credentials(&req.tenant_id, bsp)?;
        let message: Value = serde_json::from_str(&req.message).map_err(|e| {
            SendError::new(ErrorKind::Permanent, codes::INVALID_REQUEST, e.to_string())
        })?;
        let route = Route {
            bsp,
            base_url: self.cfg.base_url(bsp),
            account_id: account,
            credentials: &creds,
        };
        let out = Outbound {
            message_id: &req.message_id,
            from: &req.from_number,
            to: &req.to,
            message: &message,
        };
        let tier = self
            .cache
            .read()
            .numbers
            .get(&req.from_number)
            .map(|n| n.tier_mps);
        let pair_wait = self.pair.space(&req.from_number, &req.to);
        if !pair_wait.is_zero() {
            tokio::time::sleep(pair_wait).await;
        }
        if let Some(tier) = tier {
            self.limiter.admit(&req.from_number, tier).await;
        }
        let started = Instant::now();
        let r = send::send(&self.http, &route, &out).await;
        METRICS
            .bsp_seconds
            .with_label_values(&[bsp.slug()])
            .observe(started.elapsed().as_secs_f64());
        METRICS
            .sends
            .with_label_values(&[
                bsp.slug(),
                r.as_ref().map(|_| "accepted").unwrap_or_else(|e| e.code),
            ])
            .inc();
        r
    }
}
