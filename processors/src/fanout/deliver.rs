//! One HTTP attempt to one endpoint, and what it means.
//!
//! A 2xx is delivered. Anything else is a failure: other statuses (redirects included:
//! an endpoint that moved must be updated, not followed), timeouts, refused connections,
//! and addresses the allow-list forbids. A receiver that answers a non-2xx with the
//! header `webhook-delivery: abort-message` asks for no more retries of this event
//! (`aborted`). Response bodies are read up to a limit; the first KiB is kept.

use std::time::{Duration, Instant};

use switchboard_runtime::netguard::{self, AllowList, Url};

use super::endpoints::EndpointRt;

/// The response header a receiver sets to stop retries of the event it refused.
pub const ABORT_HEADER: &str = "webhook-delivery";
pub const ABORT_VALUE: &str = "abort-message";
const SNIPPET: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delivered,
    Failed,
    Aborted,
    /// The endpoint's address is not allowed (policy, not the endpoint's health).
    Blocked,
    /// Not attempted: the endpoint's circuit breaker is open.
    CircuitOpen,
    /// Not attempted: the endpoint is disabled or gone.
    Disabled,
    /// Not attempted yet: the endpoint is slow and already has as many deliveries waiting
    /// for its in-flight slots or rate tokens as it may; this one waits on a delay topic
    /// instead of holding the event (and the consumer's capacity). Does not use up an
    /// attempt.
    Deferred,
}

impl Kind {
    /// The `outcome` of the delivery log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Delivered => "delivered",
            Kind::Failed => "failed",
            Kind::Aborted => "aborted",
            Kind::Blocked => "blocked_address",
            Kind::CircuitOpen => "circuit_open",
            Kind::Disabled => "endpoint_disabled",
            Kind::Deferred => "deferred",
        }
    }

    /// Worth another attempt later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Kind::Failed | Kind::Blocked | Kind::CircuitOpen | Kind::Deferred
        )
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: Kind,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub snippet: Option<String>,
}

impl Outcome {
    /// An outcome without an HTTP request.
    pub fn skipped(kind: Kind, why: &str) -> Self {
        Outcome {
            kind,
            status: None,
            latency_ms: 0,
            error: Some(why.to_string()),
            snippet: None,
        }
    }

    /// No attempt: the delivery waits on a delay topic (counted by reason).
    pub fn deferred(why: super::endpoints::Defer) -> Self {
        super::dispatch::METRICS
            .deferred
            .with_label_values(&[why.label()])
            .inc();
        Self::skipped(Kind::Deferred, why.reason())
    }
}

/// One attempt through the endpoint's circuit breaker, its answer fed back to the
/// endpoint's health (latency for `slow`, success or failure for the breaker). The
/// caller holds the endpoint's slot.
#[allow(clippy::too_many_arguments)]
pub async fn attempt_guarded(
    http: &reqwest::Client,
    allow: &AllowList,
    rt: &EndpointRt,
    event_id: &str,
    attempt_no: i32,
    body: &bytes::Bytes,
    max_bytes: usize,
) -> Outcome {
    if !rt.health.permits() {
        return Outcome::skipped(Kind::CircuitOpen, "the endpoint's circuit breaker is open");
    }
    let o = attempt(http, allow, rt, event_id, attempt_no, body, max_bytes).await;
    if o.status.is_some() || o.kind == Kind::Failed {
        rt.health.observe(o.latency_ms);
    }
    match o.kind {
        Kind::Delivered | Kind::Aborted => rt.health.record(true),
        Kind::Failed => rt.health.record(false),
        _ => {}
    }
    o
}

/// The delivery client: no redirects, no proxy, guarded DNS.
pub fn client(allow: &AllowList, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(crate::guarded::builder(allow)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        // No cap on idle connections per host (reqwest's default): several endpoints
        // often share a host, and a cap below their concurrency closes connections that
        // the next delivery then opens again (1,024 cost about 6 % of the fan-out's CPU
        // with 100 endpoints on one host). Each endpoint's in-flight limit bounds them,
        // and the idle timeout closes what a burst left.
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("Switchboard-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Make one attempt. `attempt` is 1-based; the signature covers `event_id`, the
/// timestamp and `body`.
pub async fn attempt(
    http: &reqwest::Client,
    allow: &AllowList,
    ep: &EndpointRt,
    event_id: &str,
    attempt: i32,
    body: &bytes::Bytes,
    max_bytes: usize,
) -> Outcome {
    let started = Instant::now();
    let done = |kind, status, error: Option<String>, snippet| Outcome {
        kind,
        status,
        latency_ms: started.elapsed().as_millis() as i64,
        error,
        snippet,
    };
    // reqwest connects to a literal address without asking the resolver, so the URL's
    // own host is judged here, parsed exactly as reqwest will parse it.
    let checked = Url::parse(&ep.ep.url)
        .map_err(|e| format!("blocked_address: the URL does not parse: {e}"))
        .and_then(|u| {
            netguard::check_host(&u, allow).map_err(|e| format!("blocked_address: {e}"))?;
            Ok(u)
        });
    let url = match checked {
        Ok(u) => u,
        Err(e) => return done(Kind::Blocked, None, Some(e), None),
    };
    let now = switchboard_runtime::now_ms();
    let ts = now / 1000;
    let signature = ep.sign(
        event_id,
        ts,
        std::str::from_utf8(body).unwrap_or_default(),
        now,
    );
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .header("webhook-attempt", attempt.to_string());
    for (k, v) in &ep.headers {
        req = req.header(k, v);
    }
    // The body is shared by every endpoint of the event: no copy per request.
    let resp = match req.body(body.clone()).send().await {
        Ok(r) => r,
        Err(e) => {
            let kind = if format!("{e:?}").contains("blocked_address") {
                Kind::Blocked
            } else {
                Kind::Failed
            };
            return done(kind, None, Some(describe(&e)), None);
        }
    };
    let status = resp.status().as_u16();
    let abort = resp
        .headers()
        .get(ABORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(ABORT_VALUE));
    let (snippet, read_error) = read_limited(resp, max_bytes).await;
    let kind = if (200..300).contains(&status) {
        Kind::Delivered
    } else if abort {
        Kind::Aborted
    } else {
        Kind::Failed
    };
    let error = match kind {
        Kind::Delivered => None,
        Kind::Aborted => Some(format!(
            "HTTP {status}; the receiver asked for no more retries"
        )),
        _ if (300..400).contains(&status) => {
            Some(format!("HTTP {status}: redirects are not followed"))
        }
        _ => Some(format!("HTTP {status}")),
    };
    // A 2xx whose body broke off mid-read was still received: the status decides.
    let error = error.or(read_error.filter(|_| kind != Kind::Delivered));
    done(kind, Some(status), error, snippet)
}

/// Read at most `max` bytes of the body; keep the first KiB as text.
async fn read_limited(mut resp: reqwest::Response, max: usize) -> (Option<String>, Option<String>) {
    let mut kept = Vec::new();
    let mut read = 0usize;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if kept.len() < SNIPPET {
                    kept.extend_from_slice(&c[..c.len().min(SNIPPET - kept.len())]);
                }
                read += c.len();
                if read >= max {
                    break; // dropping the response closes the connection
                }
            }
            Ok(None) => break,
            Err(e) => return (snippet(&kept), Some(describe(&e))),
        }
    }
    (snippet(&kept), None)
}

fn snippet(b: &[u8]) -> Option<String> {
    (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned())
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name resolving to a private address is never connected to, even with a
    /// listener there: the resolver drops what the allow-list forbids.
    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = client(&AllowList::default(), Duration::from_secs(2)).unwrap();
        let e = http
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .expect_err("blocked");
        assert!(format!("{e:?}").contains("blocked_address"), "{e:?}");
        let allowed = client(
            &AllowList::parse("127.0.0.0/8").unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let _ = allowed
            .post(format!("http://localhost:{port}/hook"))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(
            accept.await.unwrap().is_ok(),
            "an allow-listed address is connected to"
        );
    }
}
