//! A client-endpoint simulator: one HTTP server playing many tenants' webhook receivers
//! (`POST /e/{name}`), so tests and benchmarks can watch Switchboard's fan-out from the
//! receiving side without standing up real customer services.
//!
//! Switchboard delivers events per the Standard Webhooks spec (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`, plus its own `webhook-attempt`). Each endpoint
//! here verifies signatures with the independent `standardwebhooks` crate (passing if any
//! of its configured secrets verifies, which is what a receiver does during a secret
//! rotation), and answers the way its [`Behavior`] says: slow, flaky, down, failing the
//! first attempts of every event, redirecting, asking to abort, never answering, or
//! answering with a huge body. That is how retry, back-off, circuit breaking, endpoint
//! disabling and the sender's safety caps get exercised.
//!
//! Every request is counted ([`Stats`]): duplicates of events already accepted (the
//! at-least-once cost), bad signatures, and order violations within a conversation (an
//! accepted event that happened before one already accepted). With recording on (the
//! default) each request is also kept as a [`Received`], the accepted ids are kept in
//! arrival order per conversation, and the last [`RAW_KEEP`] requests are kept verbatim
//! ([`RawRequest`]) so a test can check signatures with a third implementation. A
//! benchmark turns recording off and keeps only the counts.
//!
//! A request is recorded when it arrives, with the answer it is going to get: one whose
//! sender gives up during `latency_ms` still counts as answered (a real receiver would
//! have processed it too), and one held by `timeout` is recorded as answered `0`.
//!
//! Control routes live under `/_sim/...`; the same operations are methods of
//! [`EndpointSim`] for in-process use.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use standardwebhooks::Webhook;

/// Raw requests kept per endpoint (the most recent ones).
pub const RAW_KEEP: usize = 1000;

/// Largest request body read; larger ones are answered 413 and not recorded.
const MAX_BODY: usize = 16 << 20;

/// How long `timeout` holds a request: long enough for any sender to give up.
const NEVER: Duration = Duration::from_secs(3600);

/// How an endpoint answers; changeable at run time. Checked in this order: `timeout`,
/// `down` / `down_until_ms`, `reject_bad_signatures`, `redirect_to`, `abort`,
/// `fail_first`, `fail_rate`; otherwise 200 (with `huge_body_bytes` of body if set).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Behavior {
    /// Sleep this long before answering.
    pub latency_ms: u64,
    /// Fraction of requests answered with `fail_status`.
    pub fail_rate: f64,
    /// Status of failures from `fail_rate` and `fail_first` (default 500).
    pub fail_status: u16,
    /// Fail the first N requests of every webhook id, then succeed (retry tests).
    pub fail_first: u32,
    /// Apply `fail_first` only to every k-th distinct webhook id (by first arrival; the
    /// 1st, (k+1)th, ...); 0 = to every id. Some events fail while their neighbours go
    /// straight through, which is what puts retries out of order.
    pub fail_every: u32,
    /// Never answer (hold the request for an hour).
    pub timeout: bool,
    /// Answer 503 until this unix time in milliseconds.
    pub down_until_ms: Option<i64>,
    /// Answer 503.
    pub down: bool,
    /// Answer 200 with a body of this many bytes (the sender must cap what it reads).
    pub huge_body_bytes: usize,
    /// Answer 307 with this `Location`.
    pub redirect_to: Option<String>,
    /// Answer 400 with `webhook-delivery: abort-message` (give up on this message).
    pub abort: bool,
    /// Answer 401 to requests that fail verification while secrets are configured
    /// (by default they are answered normally and only counted).
    pub reject_bad_signatures: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            fail_rate: 0.0,
            fail_status: 500,
            fail_first: 0,
            fail_every: 0,
            timeout: false,
            down_until_ms: None,
            down: false,
            huge_body_bytes: 0,
            redirect_to: None,
            abort: false,
            reject_bad_signatures: false,
        }
    }
}

/// A change of an endpoint's settings (`PUT /_sim/endpoints/{name}`); absent fields are
/// kept as they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EndpointUpdate {
    /// `whsec_...` secrets; a request is verified if any of them verifies it.
    pub secrets: Option<Vec<String>>,
    pub behavior: Option<Behavior>,
    /// Keep [`Received`] records, raw requests and per-conversation order (default
    /// true); off, only [`Stats`] are kept (for benchmarks).
    pub record: Option<bool>,
}

/// An endpoint's current settings (`GET /_sim/endpoints/{name}`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EndpointSettings {
    pub secrets: Vec<String>,
    pub behavior: Behavior,
    pub record: bool,
}

/// One request as an endpoint saw it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Received {
    /// `webhook-id` (the event id, stable across retries); empty if absent.
    pub webhook_id: String,
    /// `webhook-attempt` (1-based), if sent.
    pub attempt: Option<u32>,
    /// `webhook-timestamp` (unix seconds); 0 if absent or not a number.
    pub timestamp: i64,
    /// The body's `type`; empty if the body is not an event envelope.
    pub event_type: String,
    /// `data.conversation`, absent for non-message events.
    pub conversation: Option<String>,
    /// `data.occurred_at_ms`, if present.
    pub occurred_at_ms: Option<i64>,
    pub received_at_ms: i64,
    /// The status answered; 0 for a request held by `timeout`.
    pub answered: u16,
    /// Some configured secret verified the signature (false when none is configured).
    pub verified: bool,
}

/// The signature headers of a raw request, as sent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct RawHeaders {
    #[serde(rename = "webhook-id")]
    pub webhook_id: String,
    #[serde(rename = "webhook-timestamp")]
    pub webhook_timestamp: String,
    #[serde(rename = "webhook-signature")]
    pub webhook_signature: String,
    /// An endpoint's custom `authorization` header, if it has one.
    #[serde(default)]
    pub authorization: String,
}

/// A request verbatim (body as UTF-8, lossily), to verify independently.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RawRequest {
    pub headers: RawHeaders,
    pub body: String,
}

/// Counts of one endpoint, kept incrementally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Distinct webhook ids answered 2xx.
    pub unique_ok: u64,
    /// 2xx answers to webhook ids already answered 2xx before.
    pub duplicates_ok: u64,
    /// Requests not verified by any secret while secrets are configured.
    pub bad_signatures: u64,
    /// Ids accepted for the first time whose `data.occurred_at_ms` is lower than the
    /// highest already accepted in the same conversation.
    pub order_violations: u64,
    /// Bodies that are not a JSON event envelope with a string `type`.
    pub malformed: u64,
}

/// The settings requests are handled with; replaced whole, never mutated.
struct Settings {
    secrets: Vec<String>,
    verifiers: Vec<Webhook>,
    behavior: Behavior,
    record: bool,
}

impl Settings {
    fn new(secrets: Vec<String>, behavior: Behavior, record: bool) -> anyhow::Result<Self> {
        let verifiers = secrets
            .iter()
            .map(|s| Webhook::new(s).map_err(|e| anyhow::anyhow!("secret {s:?}: {e}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Settings {
            secrets,
            verifiers,
            behavior,
            record,
        })
    }

    fn updated(&self, u: EndpointUpdate) -> anyhow::Result<Self> {
        Settings::new(
            u.secrets.unwrap_or_else(|| self.secrets.clone()),
            u.behavior.unwrap_or_else(|| self.behavior.clone()),
            u.record.unwrap_or(self.record),
        )
    }

    fn view(&self) -> EndpointSettings {
        EndpointSettings {
            secrets: self.secrets.clone(),
            behavior: self.behavior.clone(),
            record: self.record,
        }
    }
}

struct IdState {
    /// Requests seen with this id.
    seen: u32,
    /// Distinct ids seen before this one.
    index: u64,
    /// Answered 2xx at least once.
    ok: bool,
}

#[derive(Default)]
struct Conversation {
    max_occurred_at_ms: Option<i64>,
    /// Ids accepted for the first time, in arrival order (only while recording).
    accepted: Vec<String>,
}

#[derive(Default)]
struct Records {
    stats: Stats,
    ids: HashMap<String, IdState>,
    conversations: HashMap<String, Conversation>,
    received: Vec<Received>,
    raw: VecDeque<RawRequest>,
}

struct Endpoint {
    settings: Mutex<Arc<Settings>>,
    records: Mutex<Records>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Never,
    Down,
    Unauthorized,
    Redirect,
    Abort,
    Fail(u16),
    Ok,
}

impl Answer {
    fn status(self) -> u16 {
        match self {
            Answer::Never => 0,
            Answer::Down => 503,
            Answer::Unauthorized => 401,
            Answer::Redirect => 307,
            Answer::Abort => 400,
            Answer::Fail(s) => s,
            Answer::Ok => 200,
        }
    }
}

/// `seen`: requests with this webhook id so far, this one included (`u32::MAX` for ids
/// `fail_first` does not apply to).
fn decide(b: &Behavior, seen: u32, signature_ok: bool, now_ms: i64) -> Answer {
    let fail_status = StatusCode::from_u16(b.fail_status)
        .map(|s| s.as_u16())
        .unwrap_or(500);
    if b.timeout {
        Answer::Never
    } else if b.down || b.down_until_ms.is_some_and(|t| now_ms < t) {
        Answer::Down
    } else if b.reject_bad_signatures && !signature_ok {
        Answer::Unauthorized
    } else if b.redirect_to.is_some() {
        Answer::Redirect
    } else if b.abort {
        Answer::Abort
    } else if seen <= b.fail_first || (b.fail_rate > 0.0 && fastrand::f64() < b.fail_rate) {
        Answer::Fail(fail_status)
    } else {
        Answer::Ok
    }
}

/// The parts of the event envelope the simulator looks at.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(default, borrow)]
    conversation: Option<Cow<'a, str>>,
    #[serde(default)]
    occurred_at_ms: Option<Value>,
}

/// One request, borrowed from the handler.
struct Incoming<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
    webhook_id: &'a str,
    envelope: Option<Envelope<'a>>,
    verified: bool,
    received_at_ms: i64,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Endpoint {
    fn new(settings: Arc<Settings>) -> Self {
        Endpoint {
            settings: Mutex::new(settings),
            records: Mutex::new(Records::default()),
        }
    }

    fn settings(&self) -> Arc<Settings> {
        lock(&self.settings).clone()
    }

    /// Count and record one request; returns its answer.
    fn take(&self, s: &Settings, req: Incoming<'_>) -> Answer {
        let has_secrets = !s.verifiers.is_empty();
        let (conversation, occurred_at_ms) =
            match req.envelope.as_ref().and_then(|e| e.data.as_ref()) {
                Some(d) => (
                    d.conversation.as_deref(),
                    d.occurred_at_ms.as_ref().and_then(Value::as_i64),
                ),
                None => (None, None),
            };
        let mut guard = lock(&self.records);
        let r = &mut *guard;
        r.stats.requests += 1;
        if has_secrets && !req.verified {
            r.stats.bad_signatures += 1;
        }
        if req.envelope.is_none() {
            r.stats.malformed += 1;
        }
        let known = r.ids.len() as u64;
        let id = match r.ids.get_mut(req.webhook_id) {
            Some(id) => id,
            None => r.ids.entry(req.webhook_id.to_owned()).or_insert(IdState {
                seen: 0,
                index: known,
                ok: false,
            }),
        };
        id.seen = id.seen.saturating_add(1);
        let answer = decide(
            &s.behavior,
            if s.behavior.fail_every == 0 || id.index % s.behavior.fail_every as u64 == 0 {
                id.seen
            } else {
                u32::MAX
            },
            req.verified || !has_secrets,
            req.received_at_ms,
        );
        if (200..300).contains(&answer.status()) {
            r.stats.ok += 1;
            if id.ok {
                r.stats.duplicates_ok += 1;
            } else {
                id.ok = true;
                r.stats.unique_ok += 1;
                if let Some(c) = conversation {
                    let conv = match r.conversations.get_mut(c) {
                        Some(conv) => conv,
                        None => r.conversations.entry(c.to_owned()).or_default(),
                    };
                    if let Some(at) = occurred_at_ms {
                        match conv.max_occurred_at_ms {
                            Some(max) if at < max => r.stats.order_violations += 1,
                            _ => conv.max_occurred_at_ms = Some(at),
                        }
                    }
                    if s.record {
                        conv.accepted.push(req.webhook_id.to_owned());
                    }
                }
            }
        }
        if s.record {
            let h = req.headers;
            r.received.push(Received {
                webhook_id: req.webhook_id.to_owned(),
                attempt: header_str(h, "webhook-attempt").and_then(|a| a.trim().parse().ok()),
                timestamp: header_str(h, "webhook-timestamp")
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0),
                event_type: req
                    .envelope
                    .as_ref()
                    .map(|e| e.kind.to_string())
                    .unwrap_or_default(),
                conversation: conversation.map(str::to_owned),
                occurred_at_ms,
                received_at_ms: req.received_at_ms,
                answered: answer.status(),
                verified: req.verified,
            });
            if r.raw.len() >= RAW_KEEP {
                r.raw.pop_front();
            }
            let hv = |n| header_str(h, n).unwrap_or_default().to_owned();
            r.raw.push_back(RawRequest {
                headers: RawHeaders {
                    webhook_id: hv("webhook-id"),
                    webhook_timestamp: hv("webhook-timestamp"),
                    webhook_signature: hv("webhook-signature"),
                    authorization: hv("authorization"),
                },
                body: String::from_utf8_lossy(req.body).into_owned(),
            });
        }
        answer
    }
}

struct Inner {
    endpoints: RwLock<HashMap<String, Arc<Endpoint>>>,
    /// Settings of endpoints created on first use.
    defaults: Mutex<Arc<Settings>>,
}

/// The simulator: cheap to clone, all clones share the endpoints.
#[derive(Clone)]
pub struct EndpointSim {
    inner: Arc<Inner>,
}

impl Default for EndpointSim {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointSim {
    /// No endpoints yet; unknown names are created on first use with the defaults
    /// (answer 200 at once, no secrets, recording on).
    pub fn new() -> Self {
        let defaults =
            Settings::new(Vec::new(), Behavior::default(), true).expect("no secrets to decode");
        EndpointSim {
            inner: Arc::new(Inner {
                endpoints: RwLock::new(HashMap::new()),
                defaults: Mutex::new(Arc::new(defaults)),
            }),
        }
    }

    fn endpoint(&self, name: &str) -> Arc<Endpoint> {
        if let Some(e) = self.existing(name) {
            return e;
        }
        let defaults = lock(&self.inner.defaults).clone();
        let mut map = self
            .inner
            .endpoints
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(Endpoint::new(defaults)))
            .clone()
    }

    fn existing(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.inner
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn all(&self) -> Vec<(String, Arc<Endpoint>)> {
        self.inner
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    }

    /// Change an endpoint's settings (creating it if new); fails on a secret that is not
    /// base64 (after an optional `whsec_` prefix), changing nothing.
    pub fn update(&self, name: &str, u: EndpointUpdate) -> anyhow::Result<()> {
        let e = self.endpoint(name);
        let mut s = lock(&e.settings);
        *s = Arc::new(s.updated(u)?);
        Ok(())
    }

    /// Set an endpoint's secrets and/or behaviour (`None` keeps the current one).
    pub fn set(
        &self,
        name: &str,
        secrets: Option<Vec<String>>,
        behavior: Option<Behavior>,
    ) -> anyhow::Result<()> {
        self.update(
            name,
            EndpointUpdate {
                secrets,
                behavior,
                record: None,
            },
        )
    }

    /// Keep records for this endpoint or only count (see [`EndpointUpdate::record`]).
    pub fn set_record(&self, name: &str, record: bool) {
        let u = EndpointUpdate {
            record: Some(record),
            ..Default::default()
        };
        self.update(name, u).expect("secrets were valid when set");
    }

    /// Settings for endpoints created from now on (existing ones keep theirs).
    pub fn set_defaults(&self, u: EndpointUpdate) -> anyhow::Result<()> {
        let mut d = lock(&self.inner.defaults);
        *d = Arc::new(d.updated(u)?);
        Ok(())
    }

    /// An endpoint's settings, if it exists.
    pub fn settings(&self, name: &str) -> Option<EndpointSettings> {
        self.existing(name).map(|e| e.settings().view())
    }

    /// Every request to `name`, in arrival order (while recording).
    pub fn received(&self, name: &str) -> Vec<Received> {
        self.existing(name)
            .map(|e| lock(&e.records).received.clone())
            .unwrap_or_default()
    }

    /// The last [`RAW_KEEP`] requests to `name`, verbatim (while recording).
    pub fn raw(&self, name: &str) -> Vec<RawRequest> {
        self.existing(name)
            .map(|e| lock(&e.records).raw.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Per conversation, the ids `name` accepted (first 2xx), in arrival order (while
    /// recording).
    pub fn order(&self, name: &str) -> HashMap<String, Vec<String>> {
        self.existing(name)
            .map(|e| {
                lock(&e.records)
                    .conversations
                    .iter()
                    .filter(|(_, c)| !c.accepted.is_empty())
                    .map(|(k, c)| (k.clone(), c.accepted.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Counts of every endpoint.
    pub fn stats(&self) -> HashMap<String, Stats> {
        self.all()
            .into_iter()
            .map(|(n, e)| {
                let s = lock(&e.records).stats;
                (n, s)
            })
            .collect()
    }

    /// Counts of one endpoint (zero if it does not exist).
    pub fn stats_of(&self, name: &str) -> Stats {
        self.existing(name)
            .map(|e| lock(&e.records).stats)
            .unwrap_or_default()
    }

    /// Forget everything `name` received (records, raw requests, order, counts, seen
    /// ids); its settings stay.
    pub fn clear(&self, name: &str) {
        if let Some(e) = self.existing(name) {
            *lock(&e.records) = Records::default();
        }
    }

    /// [`Self::clear`] for every endpoint.
    pub fn clear_all(&self) {
        for (_, e) in self.all() {
            *lock(&e.records) = Records::default();
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/e/{name}", post(receive))
            .route("/_sim/defaults", put(put_defaults))
            .route(
                "/_sim/endpoints/{name}",
                put(put_endpoint).get(get_endpoint),
            )
            .route(
                "/_sim/endpoints/{name}/received",
                get(get_received).delete(delete_received),
            )
            .route("/_sim/endpoints/{name}/raw", get(get_raw))
            .route("/_sim/endpoints/{name}/order", get(get_order))
            .route("/_sim/stats", get(get_stats))
            .route("/_sim/received", axum::routing::delete(delete_all))
            .with_state(self.clone())
    }

    /// Serve on `addr` until the task is dropped; returns the bound address.
    pub async fn serve(
        &self,
        addr: &str,
    ) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        crate::serve(self.router(), addr).await
    }
}

/// A body of `n` bytes, streamed from one static chunk (no allocation of `n`).
fn huge_body(n: usize) -> Body {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let chunks = (0..n.div_ceil(CHUNK.len())).map(move |i| {
        let len = (n - i * CHUNK.len()).min(CHUNK.len());
        Ok::<_, Infallible>(Bytes::from_static(&CHUNK[..len]))
    });
    Body::from_stream(futures::stream::iter(chunks))
}

async fn receive(
    State(sim): State<EndpointSim>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let received_at_ms = now_ms();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let endpoint = sim.endpoint(&name);
    let settings = endpoint.settings();
    let headers = &parts.headers;
    let verified = settings
        .verifiers
        .iter()
        .any(|w| w.verify(&body, headers).is_ok());
    let answer = endpoint.take(
        &settings,
        Incoming {
            headers,
            body: &body,
            webhook_id: header_str(headers, "webhook-id").unwrap_or_default(),
            envelope: serde_json::from_slice(&body).ok(),
            verified,
            received_at_ms,
        },
    );
    let b = &settings.behavior;
    if answer == Answer::Never {
        tokio::time::sleep(NEVER).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    if b.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.latency_ms)).await;
    }
    match answer {
        Answer::Ok if b.huge_body_bytes > 0 => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (header::CONTENT_LENGTH, HeaderValue::from(b.huge_body_bytes)),
            ],
            huge_body(b.huge_body_bytes),
        )
            .into_response(),
        Answer::Ok => StatusCode::OK.into_response(),
        Answer::Redirect => {
            let to = b.redirect_to.as_deref().unwrap_or_default();
            match HeaderValue::from_str(to) {
                Ok(loc) => {
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, loc)]).into_response()
                }
                Err(_) => StatusCode::TEMPORARY_REDIRECT.into_response(),
            }
        }
        Answer::Abort => (
            StatusCode::BAD_REQUEST,
            [("webhook-delivery", "abort-message")],
            "abort",
        )
            .into_response(),
        other => {
            let status =
                StatusCode::from_u16(other.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, status.canonical_reason().unwrap_or_default()).into_response()
        }
    }
}

// ---- control ----

fn bad_request(e: anyhow::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": e.to_string()})),
    )
        .into_response()
}

async fn put_endpoint(
    State(sim): State<EndpointSim>,
    Path(name): Path<String>,
    Json(u): Json<EndpointUpdate>,
) -> Response {
    match sim.update(&name, u) {
        Ok(()) => Json(sim.settings(&name)).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn get_endpoint(State(sim): State<EndpointSim>, Path(name): Path<String>) -> Response {
    match sim.settings(&name) {
        Some(s) => Json(s).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn put_defaults(State(sim): State<EndpointSim>, Json(u): Json<EndpointUpdate>) -> Response {
    match sim.set_defaults(u) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad_request(e),
    }
}

async fn get_received(
    State(sim): State<EndpointSim>,
    Path(name): Path<String>,
) -> Json<Vec<Received>> {
    Json(sim.received(&name))
}

async fn delete_received(State(sim): State<EndpointSim>, Path(name): Path<String>) -> StatusCode {
    sim.clear(&name);
    StatusCode::NO_CONTENT
}

async fn delete_all(State(sim): State<EndpointSim>) -> StatusCode {
    sim.clear_all();
    StatusCode::NO_CONTENT
}

async fn get_raw(
    State(sim): State<EndpointSim>,
    Path(name): Path<String>,
) -> Json<Vec<RawRequest>> {
    Json(sim.raw(&name))
}

async fn get_order(
    State(sim): State<EndpointSim>,
    Path(name): Path<String>,
) -> Json<HashMap<String, Vec<String>>> {
    Json(sim.order(&name))
}

async fn get_stats(State(sim): State<EndpointSim>) -> Json<HashMap<String, Stats>> {
    Json(sim.stats())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const OTHER: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    async fn start() -> (EndpointSim, String, reqwest::Client) {
        let sim = EndpointSim::new();
        let (addr, _task) = sim.serve("127.0.0.1:0").await.unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        (sim, format!("http://{addr}"), http)
    }

    fn now_s() -> i64 {
        now_ms() / 1000
    }

    fn event(
        id: &str,
        kind: &str,
        conversation: Option<&str>,
        occurred_at_ms: Option<i64>,
    ) -> String {
        let mut data = json!({"schema_version": 1, "event_id": id});
        if let Some(c) = conversation {
            data["conversation"] = json!(c);
        }
        if let Some(at) = occurred_at_ms {
            data["occurred_at_ms"] = json!(at);
        }
        json!({"type": kind, "timestamp": "2025-01-01T00:00:00Z", "data": data}).to_string()
    }

    /// POST `body` to endpoint `name` as Switchboard would, signed with `secrets` (several
    /// signatures, space-separated, as during a rotation).
    async fn deliver(
        http: &reqwest::Client,
        base: &str,
        name: &str,
        id: &str,
        attempt: Option<u32>,
        body: &str,
        secrets: &[&str],
    ) -> reqwest::Response {
        let ts = now_s();
        let sigs: Vec<String> = secrets
            .iter()
            .map(|s| {
                Webhook::new(s)
                    .unwrap()
                    .sign(id, ts, body.as_bytes())
                    .unwrap()
            })
            .collect();
        let mut req = http
            .post(format!("{base}/e/{name}"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sigs.join(" "))
            .body(body.to_string());
        if let Some(a) = attempt {
            req = req.header("webhook-attempt", a.to_string());
        }
        req.send().await.unwrap()
    }

    #[tokio::test]
    async fn signed_request_is_recorded_verified() {
        let (sim, base, http) = start().await;
        sim.set("acme", Some(vec![SECRET.into()]), None).unwrap();
        let body = event(
            "ev1",
            "message.status.delivered",
            Some("15550001111:+4915112345678"),
            Some(42),
        );
        let r = deliver(&http, &base, "acme", "ev1", Some(1), &body, &[SECRET]).await;
        assert_eq!(r.status(), 200);

        let got = sim.received("acme");
        assert_eq!(got.len(), 1);
        let g = &got[0];
        assert_eq!(g.webhook_id, "ev1");
        assert_eq!(g.attempt, Some(1));
        assert!((g.timestamp - now_s()).abs() <= 2, "{}", g.timestamp);
        assert_eq!(g.event_type, "message.status.delivered");
        assert_eq!(
            g.conversation.as_deref(),
            Some("15550001111:+4915112345678")
        );
        assert_eq!(g.occurred_at_ms, Some(42));
        assert_eq!(g.answered, 200);
        assert!(g.verified);
        assert!((g.received_at_ms - now_ms()).abs() < 5000);

        // The raw copy verifies with the secret on its own.
        let raw = sim.raw("acme");
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].body, body);
        assert_eq!(raw[0].headers.webhook_id, "ev1");
        let mut h = HeaderMap::new();
        h.insert("webhook-id", raw[0].headers.webhook_id.parse().unwrap());
        h.insert(
            "webhook-timestamp",
            raw[0].headers.webhook_timestamp.parse().unwrap(),
        );
        h.insert(
            "webhook-signature",
            raw[0].headers.webhook_signature.parse().unwrap(),
        );
        Webhook::new(SECRET)
            .unwrap()
            .verify(raw[0].body.as_bytes(), &h)
            .unwrap();

        // A non-message event has no conversation and no attempt header here.
        let body = event("ev2", "endpoint.disabled", None, None);
        deliver(&http, &base, "acme", "ev2", None, &body, &[SECRET]).await;
        let g = &sim.received("acme")[1];
        assert_eq!(g.event_type, "endpoint.disabled");
        assert_eq!(g.conversation, None);
        assert_eq!(g.attempt, None);
        assert!(g.verified);

        let s = sim.stats_of("acme");
        assert_eq!(
            s,
            Stats {
                requests: 2,
                ok: 2,
                unique_ok: 2,
                ..Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn signatures_are_checked_against_any_secret() {
        let (sim, base, http) = start().await;
        sim.set("acme", Some(vec![SECRET.into()]), None).unwrap();
        let body = event("w1", "message.received", Some("c:1"), None);

        // Signed with a secret the endpoint does not have: answered, but unverified.
        let r = deliver(&http, &base, "acme", "w1", Some(1), &body, &[OTHER]).await;
        assert_eq!(r.status(), 200);
        assert!(!sim.received("acme")[0].verified);
        assert_eq!(sim.stats_of("acme").bad_signatures, 1);

        // A tampered body fails even with the right secret's signature.
        let ts = now_s();
        let sig = Webhook::new(SECRET)
            .unwrap()
            .sign("w2", ts, body.as_bytes())
            .unwrap();
        http.post(format!("{base}/e/acme"))
            .header("webhook-id", "w2")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.replace("c:1", "c:2"))
            .send()
            .await
            .unwrap();
        assert!(!sim.received("acme")[1].verified);
        assert_eq!(sim.stats_of("acme").bad_signatures, 2);

        // Rotation on the sender's side: two signatures, one of them good.
        deliver(&http, &base, "acme", "w3", None, &body, &[OTHER, SECRET]).await;
        assert!(sim.received("acme")[2].verified);
        // Rotation on the receiver's side: two secrets, signed with the second.
        sim.set("acme", Some(vec![SECRET.into(), OTHER.into()]), None)
            .unwrap();
        deliver(&http, &base, "acme", "w4", None, &body, &[OTHER]).await;
        assert!(sim.received("acme")[3].verified);
        assert_eq!(sim.stats_of("acme").bad_signatures, 2);

        // Rejecting bad signatures answers 401.
        let b = Behavior {
            reject_bad_signatures: true,
            ..Behavior::default()
        };
        sim.set("acme", Some(vec![SECRET.into()]), Some(b)).unwrap();
        let r = deliver(&http, &base, "acme", "w5", None, &body, &[OTHER]).await;
        assert_eq!(r.status(), 401);
        let r = deliver(&http, &base, "acme", "w6", None, &body, &[SECRET]).await;
        assert_eq!(r.status(), 200);

        // Without secrets nothing verifies, and nothing is a bad signature.
        deliver(&http, &base, "open", "w1", None, &body, &[SECRET]).await;
        assert!(!sim.received("open")[0].verified);
        assert_eq!(sim.stats_of("open").bad_signatures, 0);
        assert_eq!(sim.stats_of("open").requests, 1);
    }

    #[tokio::test]
    async fn fail_first_then_succeed_and_duplicates_count() {
        let (sim, base, http) = start().await;
        let b = Behavior {
            fail_first: 2,
            ..Behavior::default()
        };
        sim.set("flaky", None, Some(b)).unwrap();
        let body = event("m1", "message.status.sent", Some("c:1"), Some(1));
        let mut codes = Vec::new();
        for attempt in 1..=4 {
            let r = deliver(&http, &base, "flaky", "m1", Some(attempt), &body, &[]).await;
            codes.push(r.status().as_u16());
        }
        assert_eq!(codes, [500, 500, 200, 200]);
        // Every id fails its own first two.
        let other = event("m2", "message.status.sent", Some("c:1"), Some(2));
        let r = deliver(&http, &base, "flaky", "m2", Some(1), &other, &[]).await;
        assert_eq!(r.status(), 500);

        let got = sim.received("flaky");
        let answered: Vec<_> = got.iter().map(|g| (g.attempt, g.answered)).collect();
        assert_eq!(
            answered,
            [
                (Some(1), 500),
                (Some(2), 500),
                (Some(3), 200),
                (Some(4), 200),
                (Some(1), 500)
            ]
        );
        assert_eq!(
            sim.stats_of("flaky"),
            Stats {
                requests: 5,
                ok: 2,
                unique_ok: 1,
                duplicates_ok: 1,
                ..Stats::default()
            }
        );
        // A duplicate is not listed again in the conversation's order.
        assert_eq!(sim.order("flaky")["c:1"], ["m1"]);

        // Another failure status.
        let b = Behavior {
            fail_rate: 1.0,
            fail_status: 429,
            ..Behavior::default()
        };
        sim.set("flaky", None, Some(b)).unwrap();
        let r = deliver(&http, &base, "flaky", "m3", None, &other, &[]).await;
        assert_eq!(r.status(), 429);

        // Clearing forgets records, counts and seen ids; settings stay.
        let r = http
            .delete(format!("{base}/_sim/endpoints/flaky/received"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(sim.received("flaky").is_empty());
        assert_eq!(sim.stats_of("flaky"), Stats::default());
        assert_eq!(sim.settings("flaky").unwrap().behavior.fail_status, 429);
    }

    #[tokio::test]
    async fn order_violations_per_conversation() {
        let (sim, base, http) = start().await;
        let kind = "message.status.delivered";
        let send = |id: &'static str, conv: &'static str, at: Option<i64>| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let body = event(id, kind, Some(conv), at);
                deliver(&http, &base, "ord", id, None, &body, &[])
                    .await
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(send("a1", "A", Some(10)).await, 200);
        assert_eq!(send("a2", "A", Some(30)).await, 200);
        assert_eq!(send("b1", "B", Some(5)).await, 200); // other conversation: fine
        assert_eq!(send("a3", "A", Some(20)).await, 200); // 20 < 30: violation
        assert_eq!(send("a4", "A", None).await, 200); // no time: not judged
        assert_eq!(send("a2", "A", Some(30)).await, 200); // duplicate: not judged
        assert_eq!(send("a5", "A", Some(30)).await, 200); // equal: fine
        assert_eq!(send("a6", "A", Some(31)).await, 200);
        let s = sim.stats_of("ord");
        assert_eq!(s.order_violations, 1);
        assert_eq!(s.unique_ok, 7);
        assert_eq!(s.duplicates_ok, 1);

        // A refused request is not accepted, so neither judged nor listed.
        let down = Behavior {
            down: true,
            ..Behavior::default()
        };
        sim.set("ord", None, Some(down)).unwrap();
        assert_eq!(send("a7", "A", Some(1)).await, 503);
        assert_eq!(sim.stats_of("ord").order_violations, 1);

        let order: HashMap<String, Vec<String>> = http
            .get(format!("{base}/_sim/endpoints/ord/order"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(order["A"], ["a1", "a2", "a3", "a4", "a5", "a6"]);
        assert_eq!(order["B"], ["b1"]);
        assert_eq!(order, sim.order("ord"));
    }

    #[tokio::test]
    async fn special_answers() {
        let (sim, base, http) = start().await;
        let body = event("x1", "message.send_failed", Some("c:1"), None);
        let set = |b: Behavior| sim.set("special", None, Some(b)).unwrap();

        set(Behavior {
            redirect_to: Some("http://elsewhere.invalid/hook".into()),
            ..Behavior::default()
        });
        let r = deliver(&http, &base, "special", "x1", None, &body, &[]).await;
        assert_eq!(r.status(), 307);
        assert_eq!(r.headers()["location"], "http://elsewhere.invalid/hook");

        set(Behavior {
            abort: true,
            ..Behavior::default()
        });
        let r = deliver(&http, &base, "special", "x1", None, &body, &[]).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["webhook-delivery"], "abort-message");

        let n = 3 * 64 * 1024 + 123;
        set(Behavior {
            huge_body_bytes: n,
            ..Behavior::default()
        });
        let r = deliver(&http, &base, "special", "x1", None, &body, &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.content_length(), Some(n as u64));
        let bytes = r.bytes().await.unwrap();
        assert_eq!(bytes.len(), n);
        assert!(bytes.iter().all(|b| *b == b'x'));

        set(Behavior {
            down: true,
            ..Behavior::default()
        });
        let r = deliver(&http, &base, "special", "x2", None, &body, &[]).await;
        assert_eq!(r.status(), 503);

        set(Behavior {
            down_until_ms: Some(now_ms() + 60_000),
            ..Behavior::default()
        });
        let r = deliver(&http, &base, "special", "x2", None, &body, &[]).await;
        assert_eq!(r.status(), 503);
        set(Behavior {
            down_until_ms: Some(now_ms() - 1),
            ..Behavior::default()
        });
        let r = deliver(&http, &base, "special", "x2", None, &body, &[]).await;
        assert_eq!(r.status(), 200);

        set(Behavior {
            latency_ms: 200,
            ..Behavior::default()
        });
        let t = Instant::now();
        let r = deliver(&http, &base, "special", "x3", None, &body, &[]).await;
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() >= Duration::from_millis(200));

        set(Behavior {
            timeout: true,
            ..Behavior::default()
        });
        let t = Instant::now();
        let err = http
            .post(format!("{base}/e/special"))
            .header("webhook-id", "x4")
            .body(body.clone())
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));

        let answered: Vec<u16> = sim.received("special").iter().map(|g| g.answered).collect();
        assert_eq!(answered, [307, 400, 200, 503, 503, 200, 200, 0]);
        let s = sim.stats_of("special");
        assert_eq!(
            (s.requests, s.ok, s.unique_ok, s.duplicates_ok),
            (8, 3, 3, 0)
        );
    }

    #[tokio::test]
    async fn control_api_over_http() {
        let (sim, base, http) = start().await;
        // Unknown names are created on first use, answering 200.
        let body = event("k1", "message.received", Some("c:9"), Some(7));
        let r = deliver(&http, &base, "fresh", "k1", Some(1), &body, &[SECRET]).await;
        assert_eq!(r.status(), 200);
        let s: EndpointSettings = http
            .get(format!("{base}/_sim/endpoints/fresh"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            s,
            EndpointSettings {
                secrets: vec![],
                behavior: Behavior::default(),
                record: true
            }
        );

        // Secrets only, then behaviour only: the other part is kept.
        let r = http
            .put(format!("{base}/_sim/endpoints/fresh"))
            .json(&json!({"secrets": [SECRET]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .put(format!("{base}/_sim/endpoints/fresh"))
            .json(&json!({"behavior": {"fail_first": 1}}))
            .send()
            .await
            .unwrap();
        let s: EndpointSettings = r.json().await.unwrap();
        assert_eq!(s.secrets, [SECRET]);
        assert_eq!(s.behavior.fail_first, 1);
        assert_eq!(s.behavior.fail_status, 500);

        // A secret that is not base64 is refused and changes nothing.
        let r = http
            .put(format!("{base}/_sim/endpoints/fresh"))
            .json(&json!({"secrets": ["whsec_not base64!"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(sim.settings("fresh").unwrap().secrets, [SECRET]);

        let r = deliver(&http, &base, "fresh", "k2", Some(1), &body, &[SECRET]).await;
        assert_eq!(r.status(), 500);

        let got: Vec<Received> = http
            .get(format!("{base}/_sim/endpoints/fresh/received"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got, sim.received("fresh"));
        assert_eq!(got.len(), 2);
        assert!(!got[0].verified && got[1].verified);

        let raw: Value = http
            .get(format!("{base}/_sim/endpoints/fresh/raw"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(raw[1]["headers"]["webhook-id"], "k2");
        assert!(raw[1]["headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,"));
        assert_eq!(raw[1]["body"], body.as_str());

        let stats: HashMap<String, Stats> = http
            .get(format!("{base}/_sim/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats, sim.stats());
        assert_eq!(
            stats["fresh"],
            Stats {
                requests: 2,
                ok: 1,
                unique_ok: 1,
                bad_signatures: 0,
                ..Stats::default()
            }
        );
        assert_eq!(sim.stats_of("nobody"), Stats::default());
    }

    #[tokio::test]
    async fn counting_without_recording() {
        let (sim, base, http) = start().await;
        sim.set_defaults(EndpointUpdate {
            secrets: Some(vec![SECRET.into()]),
            record: Some(false),
            ..Default::default()
        })
        .unwrap();
        for (id, at) in [("q1", 2), ("q2", 1), ("q1", 2)] {
            let body = event(id, "message.status.read", Some("c"), Some(at));
            deliver(&http, &base, "bench", id, None, &body, &[SECRET]).await;
        }
        deliver(&http, &base, "bench", "q3", None, "not json", &[OTHER]).await;
        assert!(sim.received("bench").is_empty());
        assert!(sim.raw("bench").is_empty());
        assert!(sim.order("bench").is_empty());
        assert_eq!(
            sim.stats_of("bench"),
            Stats {
                requests: 4,
                ok: 4,
                unique_ok: 3,
                duplicates_ok: 1,
                bad_signatures: 1,
                order_violations: 1,
                malformed: 1,
            }
        );
        sim.set_record("bench", true);
        deliver(&http, &base, "bench", "q4", None, "{}", &[SECRET]).await;
        assert_eq!(sim.received("bench").len(), 1);
        assert_eq!(sim.raw("bench").len(), 1);
    }

    #[tokio::test]
    async fn raw_keeps_only_the_last() {
        let (sim, base, http) = start().await;
        for i in 0..RAW_KEEP + 5 {
            let id = format!("r{i}");
            http.post(format!("{base}/e/ring"))
                .header("webhook-id", &id)
                .body("{}")
                .send()
                .await
                .unwrap();
        }
        let raw = sim.raw("ring");
        assert_eq!(raw.len(), RAW_KEEP);
        assert_eq!(raw[0].headers.webhook_id, "r5");
        assert_eq!(
            raw[RAW_KEEP - 1].headers.webhook_id,
            format!("r{}", RAW_KEEP + 4)
        );
        assert_eq!(sim.received("ring").len(), RAW_KEEP + 5);
    }

    #[test]
    fn decisions_follow_the_documented_order() {
        let b = Behavior {
            fail_first: 1,
            abort: true,
            ..Behavior::default()
        };
        assert_eq!(decide(&b, 1, true, 0), Answer::Abort);
        let b = Behavior {
            fail_first: 1,
            fail_status: 42, // not a status: 500
            ..Behavior::default()
        };
        assert_eq!(decide(&b, 1, true, 0), Answer::Fail(500));
        assert_eq!(decide(&b, 2, true, 0), Answer::Ok);
        let b = Behavior {
            timeout: true,
            down: true,
            ..Behavior::default()
        };
        assert_eq!(decide(&b, 1, true, 0), Answer::Never);
    }
}
