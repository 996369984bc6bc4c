//! A BSP simulator: one HTTP server that speaks the send APIs of Meta's Cloud API,
//! 360dialog, AiSensy, Gupshup, Twilio, WAHA and Karix (auth checked, documented request
//! shapes validated, BSP-shaped errors), returns message ids, and calls the gateway back
//! with correctly signed status webhooks in each BSP's own format.
//!
//! Behaviour is adjustable while running (`POST /_sim/behavior`): latency, a failure
//! rate, a full outage, per-sender throughput tiers enforced the way the BSPs do (429 /
//! Meta 130429 beyond the tier in any one-second window), status sequences with delays,
//! duplicates and out-of-order delivery. Every request is recorded (`GET /_sim/requests`)
//! so tests can count BSP calls per message and per one-second window.
//!
//! It is written from the BSPs' documentation, not from Switchboard's connectors, so the
//! two check each other.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Secrets the simulator shares with the gateway (to sign webhooks) and with the
/// router's stored credentials (to check send calls).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SimSecrets {
    pub meta_app_secret: String,
    pub meta_access_token: String,
    pub dialog360_api_key: String,
    pub dialog360_webhook_token: String,
    pub aisensy_api_pwd: String,
    pub aisensy_webhook_secret: String,
    pub gupshup_api_key: String,
    pub gupshup_webhook_token: String,
    pub twilio_auth_token: String,
    pub waha_api_key: String,
    pub waha_hmac_key: String,
    pub karix_api_key: String,
    pub karix_webhook_token: String,
}

/// What the simulated BSPs do; changeable at run time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Behavior {
    /// Answer every send with a 5xx (an outage of every BSP).
    pub down: bool,
    /// BSPs (slugs) answering every send with a 5xx.
    pub down_bsps: Vec<String>,
    /// Fraction of sends answered with a retryable 5xx.
    pub fail_rate: f64,
    /// Extra latency of every send answer.
    pub latency_ms: u64,
    /// Messages per second per sender beyond which the BSP throttles; by sender key
    /// (Meta phone_number_id, Twilio From, Gupshup source, ...), else `default_tier`.
    pub tiers: HashMap<String, u32>,
    pub default_tier: u32,
    /// Statuses called back after a send, in order.
    pub statuses: Vec<String>,
    /// Delay before the first status and between statuses.
    pub status_delay_ms: u64,
    /// Fraction of status webhooks sent twice.
    pub duplicate_rate: f64,
    /// Send each message's statuses in reverse order.
    pub out_of_order: bool,
    /// Fraction of accepted messages that then fail (a `failed` status webhook).
    pub async_fail_rate: f64,
    /// Do not call the gateway back at all.
    pub no_callbacks: bool,
    /// Cloud API error codes to answer for given recipients (as sent, e.g. `4915...`):
    /// 131047 (24-hour window closed), 131026 (undeliverable), 132001 (no template), ...
    pub errors: HashMap<String, i64>,
    /// Cloud API error codes a recipient's first accepted message then fails with (a
    /// `failed` status webhook), e.g. 131049 (the customer's marketing limit); later
    /// messages to them go normally.
    pub async_errors: HashMap<String, i64>,
    /// Media by id, as `GET /{version}/{media_id}` describes it and its URL serves it,
    /// and as Twilio's media URLs, WAHA's files and the CDN URLs Gupshup and Aisensy put
    /// in webhooks (`/_cdn/{id}`) serve it: `{"mime_type", "body"}` (the bytes, as text).
    pub media: HashMap<String, Value>,
    /// How long a media URL works (Meta: about five minutes); 0: already expired.
    pub media_url_ttl_ms: i64,
    /// Message templates per WABA id, as `GET /{version}/{waba}/message_templates`
    /// answers them (Graph API objects: name, language, status, category, components).
    pub templates: HashMap<String, Vec<Value>>,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            down: false,
            down_bsps: Vec::new(),
            fail_rate: 0.0,
            latency_ms: 0,
            tiers: HashMap::new(),
            default_tier: 1000,
            statuses: vec!["sent".into(), "delivered".into(), "read".into()],
            status_delay_ms: 50,
            duplicate_rate: 0.0,
            out_of_order: false,
            async_fail_rate: 0.0,
            no_callbacks: false,
            errors: HashMap::new(),
            templates: HashMap::new(),
            async_errors: HashMap::new(),
            media: HashMap::new(),
            media_url_ttl_ms: 300_000,
        }
    }
}

/// One send call as the simulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub bsp: String,
    /// Who sent, in the BSP's terms (see [`Behavior::tiers`]).
    pub sender: String,
    pub to: String,
    /// The text, caption or template name: tests make it unique per message.
    pub text: String,
    pub at_ms: i64,
    pub status: u16,
    pub message_id: Option<String>,
}

#[derive(Default)]
struct Inner {
    behavior: Behavior,
    calls: Vec<Call>,
    windows: HashMap<String, VecDeque<i64>>,
    counter: u64,
    webhooks_sent: u64,
    webhooks_failed: u64,
    /// Recipients whose first message already failed with their `async_errors` code.
    async_errors_used: std::collections::HashSet<String>,
}

#[derive(Clone)]
pub struct Sim {
    secrets: Arc<SimSecrets>,
    gateway_url: Arc<String>,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn digits(n: &str) -> String {
    n.trim_start_matches('+')
        .trim_start_matches("whatsapp:")
        .trim_start_matches('+')
        .to_string()
}

impl Sim {
    pub fn new(secrets: SimSecrets, gateway_url: &str, behavior: Behavior) -> Self {
        Sim {
            secrets: Arc::new(secrets),
            gateway_url: Arc::new(gateway_url.trim_end_matches('/').to_string()),
            inner: Arc::new(Mutex::new(Inner {
                behavior,
                ..Default::default()
            })),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_behavior(&self, b: Behavior) {
        self.lock().behavior = b;
    }

    pub fn behavior(&self) -> Behavior {
        self.lock().behavior.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// (webhooks delivered to the gateway with 2xx, webhooks that failed)
    pub fn webhook_counts(&self) -> (u64, u64) {
        let i = self.lock();
        (i.webhooks_sent, i.webhooks_failed)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{pnid}/messages", post(meta_send))
            .route("/{version}/{waba}/message_templates", get(meta_templates))
            .route("/{version}/{media_id}", get(meta_media))
            .route("/_media/{id}", get(media_download))
            .route(
                "/2010-04-01/Accounts/{sid}/Messages/{msg}/Media/{id}",
                get(twilio_media),
            )
            .route("/api/files/{session}/{file}", get(waha_file))
            .route("/_cdn/{id}", get(cdn_download))
            .route("/messages", post(dialog360_send))
            .route(
                "/project-apis/v1/project/{project}/messages",
                post(aisensy_send),
            )
            .route("/wa/api/v1/msg", post(gupshup_send))
            .route("/wa/api/v1/template/msg", post(gupshup_send))
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(twilio_send),
            )
            .route("/api/{action}", post(waha_send))
            .route("/api/reaction", put(waha_reaction))
            .route("/services/rcm/sendMessage", post(karix_send))
            .route("/_sim/behavior", get(get_behavior).post(post_behavior))
            .route("/_sim/calls", get(get_calls))
            .route("/_sim/stats", get(get_stats))
            .with_state(self.clone())
    }

    /// Serve on `addr` until the task is dropped; returns the bound address.
    pub async fn serve(
        &self,
        addr: &str,
    ) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        crate::serve(self.router(), addr).await
    }

    /// The common part of every send: latency, outage, failure rate, throttling.
    /// `Err` carries the BSP-shaped refusal; `Ok` the new message id.
    async fn gate(
        &self,
        bsp: &str,
        sender: &str,
        to: &str,
        text: &str,
        refuse: impl Fn(Refusal) -> Response,
    ) -> Result<String, Response> {
        // Like a real BSP, the simulator goes on with a request whose caller has hung up
        // (timed out): the message is taken and counted all the same.
        // Rates are counted by arrival, as a BSP counts them.
        let arrived = now_ms();
        let sim = self.clone();
        let (bsp, sender, to, text) = (
            bsp.to_string(),
            sender.to_string(),
            to.to_string(),
            text.to_string(),
        );
        let decided = tokio::spawn(async move {
            let latency = sim.lock().behavior.latency_ms;
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            sim.decide(arrived, &bsp, &sender, &to, &text)
        })
        .await
        .unwrap_or(Err(Refusal::Unavailable));
        decided.map_err(refuse)
    }

    fn decide(
        &self,
        at: i64,
        bsp: &str,
        sender: &str,
        to: &str,
        text: &str,
    ) -> Result<String, Refusal> {
        let mut i = self.lock();
        let b = i.behavior.clone();
        let outcome = if b.down
            || b.down_bsps.iter().any(|d| d == bsp)
            || (b.fail_rate > 0.0 && fastrand::f64() < b.fail_rate)
        {
            Err(Refusal::Unavailable)
        } else {
            let tier = b.tiers.get(sender).copied().unwrap_or(b.default_tier) as usize;
            let w = i.windows.entry(sender.to_string()).or_default();
            while w.front().is_some_and(|t| *t <= at - 1000) {
                w.pop_front();
            }
            if bsp != "waha" && w.len() >= tier {
                Err(Refusal::Throttled)
            } else {
                w.push_back(at);
                i.counter += 1;
                Ok(i.counter)
            }
        };
        let (status, id) = match &outcome {
            Ok(n) => (200, Some(message_id(bsp, to, *n))),
            Err(Refusal::Unavailable) => (503, None),
            Err(Refusal::Throttled) => (429, None),
            Err(Refusal::Invalid(_)) | Err(Refusal::Auth) => (400, None),
        };
        i.calls.push(Call {
            bsp: bsp.into(),
            sender: sender.into(),
            to: to.into(),
            text: text.into(),
            at_ms: at,
            status,
            message_id: id.clone(),
        });
        drop(i);
        outcome.map(|_| id.unwrap_or_default())
    }

    /// Call the gateway back with this message's statuses, the way `bsp` does.
    fn callback(&self, hook: Hook) {
        let b = self.lock().behavior.clone();
        if b.no_callbacks {
            return;
        }
        let mut statuses = b.statuses.clone();
        if b.async_fail_rate > 0.0 && fastrand::f64() < b.async_fail_rate {
            statuses = vec!["sent".into(), "failed".into()];
        }
        let mut error_code = None;
        if let Some(code) = b.async_errors.get(&digits(&hook.to)) {
            let mut inner = self.lock();
            if inner.async_errors_used.insert(digits(&hook.to)) {
                statuses = vec!["failed".into()];
                error_code = Some(*code);
            }
        }
        let hook = Hook { error_code, ..hook };
        if b.out_of_order {
            statuses.reverse();
        }
        let sim = self.clone();
        tokio::spawn(async move {
            for s in statuses {
                tokio::time::sleep(Duration::from_millis(b.status_delay_ms)).await;
                let times = if b.duplicate_rate > 0.0 && fastrand::f64() < b.duplicate_rate {
                    2
                } else {
                    1
                };
                for _ in 0..times {
                    sim.post_webhook(&hook, &s).await;
                }
            }
        });
    }

    async fn post_webhook(&self, h: &Hook, status: &str) {
        let (path, content_type, body, headers) =
            webhook(&self.secrets, &self.gateway_url, h, status);
        let mut req = self
            .http
            .post(format!("{}{path}", self.gateway_url))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        // A BSP retries webhooks the gateway did not take; so does the simulator.
        for attempt in 0..20 {
            match req.try_clone().expect("cloneable body").send().await {
                Ok(r) if r.status().is_success() => {
                    self.lock().webhooks_sent += 1;
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
            }
        }
        self.lock().webhooks_failed += 1;
    }
}

enum Refusal {
    Unavailable,
    Throttled,
    Invalid(String),
    Auth,
}

fn message_id(bsp: &str, to: &str, n: u64) -> String {
    let hex = format!("{:016X}{:016X}", fastrand::u64(..), n);
    match bsp {
        "gupshup" => {
            let h = hex.to_ascii_lowercase();
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        "twilio" => format!("SM{}", hex.to_ascii_lowercase()),
        "waha" => format!("true_{}@c.us_{}", digits(to), &hex[..20]),
        "karix" => format!("{}{n:08}", now_ms()),
        _ => format!("wamid.SIM{hex}"),
    }
}

/// What a status webhook needs to know about the message.
#[derive(Debug, Clone)]
struct Hook {
    bsp: &'static str,
    id: String,
    /// Business number (E.164 digits) or the BSP's account for it.
    business: String,
    account: String,
    to: String,
    /// Meta's pricing category of the message (Cloud API statuses carry it).
    pricing: Option<&'static str>,
    /// The error a `failed` status carries (default 131026, undeliverable).
    error_code: Option<i64>,
}

/// (path, content type, body, headers) of one status webhook, signed.
fn webhook(
    s: &SimSecrets,
    gateway: &str,
    h: &Hook,
    status: &str,
) -> (String, &'static str, Vec<u8>, Vec<(&'static str, String)>) {
    use switchboard_connectors::{aisensy, meta, twilio, waha};
    let ms = now_ms();
    let to = digits(&h.to);
    match h.bsp {
        "meta" | "360dialog" => {
            let mut st =
                json!({"id": h.id, "status": status, "timestamp": (ms / 1000).to_string()});
            // A business-scoped user has no number to show: Meta names it by user id.
            let who = if switchboard_connectors::send::validate::is_bsuid(&to) {
                "recipient_user_id"
            } else {
                "recipient_id"
            };
            st[who] = json!(to);
            if status == "failed" {
                let (code, title) = match h.error_code {
                    Some(131049) => (
                        131049,
                        "This message was not delivered to maintain healthy ecosystem engagement.",
                    ),
                    Some(c) => (c, "Message failed"),
                    None => (131026, "Message undeliverable"),
                };
                st["errors"] = json!([{"code": code, "title": title, "message": title,
                    "error_data": {"details": title}}]);
            } else if let Some(c) = h.pricing {
                // Per-message pricing (July 2025): a free-form reply in the window is free.
                let free = c == "service";
                st["pricing"] = json!({"billable": !free, "pricing_model": "PMP", "category": c,
                    "type": if free { "free_customer_service" } else { "regular" }});
            }
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "sim-waba", "changes": [{
                "value": {"messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": digits(&h.business), "phone_number_id": h.account},
                    "statuses": [st]},
                "field": "messages"}]}]})
            .to_string()
            .into_bytes();
            if h.bsp == "meta" {
                let sig = meta::signature::sign(&s.meta_app_secret, &body);
                (
                    "/webhooks/meta".into(),
                    "application/json",
                    body,
                    vec![(meta::signature::HEADER, sig)],
                )
            } else {
                (
                    "/webhooks/360dialog".into(),
                    "application/json",
                    body,
                    vec![("x-switchboard-token", s.dialog360_webhook_token.clone())],
                )
            }
        }
        "aisensy" => {
            let word = status.to_ascii_uppercase();
            let mut m = json!({"id": format!("ais{ms}"), "messageId": h.id, "phone_number": to, "status": word, "failureResponse": {}});
            m[format!("{status}_at")] = json!(ms);
            if status == "failed" {
                m["failureResponse"] = json!({"code": 131026, "reason": "Message undeliverable"});
            }
            let body = json!({"id": format!("sim{ms}{}", fastrand::u32(..)), "created_at": chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()),
                "topic": "message.status.updated", "delivery_attempt": "1", "project_id": h.account,
                "data": {"message": m}})
            .to_string()
            .into_bytes();
            let sig = aisensy::signature::sign(&s.aisensy_webhook_secret, &body);
            (
                "/webhooks/aisensy".into(),
                "application/json",
                body,
                vec![(aisensy::signature::HEADER, sig)],
            )
        }
        "gupshup" => {
            let mut inner = json!({"ts": ms / 1000});
            if status == "failed" {
                inner = json!({"code": 1002, "reason": "Number Does Not Exists On WhatsApp"});
            }
            let body = json!({"app": h.account, "timestamp": ms, "version": 2, "type": "message-event",
                "payload": {"id": format!("gBE{ms}"), "gsId": h.id, "type": status, "destination": to, "payload": inner}})
            .to_string()
            .into_bytes();
            (
                "/webhooks/gupshup".into(),
                "application/json",
                body,
                vec![("x-switchboard-token", s.gupshup_webhook_token.clone())],
            )
        }
        "twilio" => {
            let tw_status = if status == "failed" {
                "undelivered"
            } else {
                status
            };
            let mut form = vec![
                ("MessageSid", h.id.clone()),
                ("SmsSid", h.id.clone()),
                ("MessageStatus", tw_status.to_string()),
                ("SmsStatus", tw_status.to_string()),
                ("To", format!("whatsapp:+{to}")),
                ("From", format!("whatsapp:+{}", digits(&h.business))),
                ("AccountSid", h.account.clone()),
                ("ChannelPrefix", "whatsapp".into()),
                ("ApiVersion", "2010-04-01".into()),
            ];
            if status == "failed" {
                form.push(("ErrorCode", "63024".into()));
            }
            let body = serde_urlencoded::to_string(&form)
                .unwrap_or_default()
                .into_bytes();
            let path = "/webhooks/twilio";
            let sig =
                twilio::signature::sign(&s.twilio_auth_token, &format!("{gateway}{path}"), &body);
            (
                path.into(),
                "application/x-www-form-urlencoded",
                body,
                vec![(twilio::signature::HEADER, sig)],
            )
        }
        "waha" => {
            let (ack, name) = match status {
                "sent" => (1, "SERVER"),
                "delivered" => (2, "DEVICE"),
                "read" => (3, "READ"),
                "played" => (4, "PLAYED"),
                _ => (-1, "ERROR"),
            };
            let me = format!("{}@c.us", digits(&h.business));
            let body = json!({"id": format!("evt_{ms}_{}", fastrand::u32(..)), "timestamp": ms, "event": "message.ack",
                "session": h.account, "me": {"id": me},
                "payload": {"id": h.id, "from": me, "fromMe": true, "to": format!("{to}@c.us"), "ack": ack, "ackName": name},
                "engine": "WEBJS"})
            .to_string()
            .into_bytes();
            let sig = waha::signature::sign(&s.waha_hmac_key, &body);
            (
                "/webhooks/waha".into(),
                "application/json",
                body,
                vec![
                    (waha::signature::HEADER, sig),
                    (waha::signature::ALGORITHM_HEADER, "sha512".into()),
                ],
            )
        }
        _ => {
            let (code, reason) = if status == "failed" {
                ("131026", "Message undeliverable")
            } else {
                ("000", "")
            };
            let body = json!({"channel": "whatsapp", "appDetails": {"type": "LIVE"},
                "events": {"eventType": "DELIVERY EVENTS", "timestamp": ms.to_string(), "date": "", "mid": h.id},
                "notificationAttributes": {"status": status, "reason": reason, "code": code},
                "recipient": {"to": to, "recipient_type": "individual", "reference": {"cust_ref": "", "messageTag1": "", "conversationId": ""}},
                "sender": {"from": digits(&h.business)}})
            .to_string()
            .into_bytes();
            (
                "/webhooks/karix".into(),
                "application/json",
                body,
                vec![("x-switchboard-token", s.karix_webhook_token.clone())],
            )
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

// ---- Cloud API family (Meta, 360dialog, AiSensy) ----

fn meta_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        Json(
            json!({"error": {"message": msg, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": msg}, "fbtrace_id": "SIM"}}),
        ),
    )
        .into_response()
}

fn meta_refusal(r: Refusal) -> Response {
    match r {
        Refusal::Unavailable => meta_error(
            StatusCode::SERVICE_UNAVAILABLE,
            131016,
            "Service unavailable",
        ),
        Refusal::Throttled => meta_error(
            StatusCode::TOO_MANY_REQUESTS,
            130429,
            "(#130429) Rate limit hit",
        ),
        Refusal::Auth => meta_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token"),
        Refusal::Invalid(m) => meta_error(StatusCode::BAD_REQUEST, 100, &m),
    }
}

/// Check a Cloud API message body; return (to, text, dropped). A business-scoped user id
/// belongs in `recipient`; in `to` the Cloud API answers 200 and silently drops the
/// message (`dropped`), which the simulator reproduces.
fn cloud_body(body: &[u8]) -> Result<(String, String, bool), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if v["messaging_product"] != "whatsapp" {
        return Err("messaging_product must be \"whatsapp\"".into());
    }
    let (to, dropped) = match (v["to"].as_str(), v["recipient"].as_str()) {
        (Some(_), Some(_)) => return Err("to and recipient are exclusive".into()),
        (Some(t), None) => (t.to_string(), !t.bytes().all(|b| b.is_ascii_digit())),
        (None, Some(r)) if switchboard_connectors::send::validate::is_bsuid(r) => {
            (r.to_string(), false)
        }
        (None, Some(_)) => return Err("recipient must be a business-scoped user id".into()),
        (None, None) => return Err("to or recipient is required".into()),
    };
    let t = v["type"].as_str().ok_or("type is required")?;
    let obj = v
        .get(t)
        .filter(|o| o.is_object())
        .ok_or_else(|| format!("{t} object is required"))?;
    let text = match t {
        "text" => {
            let b = obj["body"].as_str().ok_or("text.body is required")?;
            if b.chars().count() > 4096 {
                return Err("text.body is longer than 4096".into());
            }
            b.to_string()
        }
        "template" => obj["name"]
            .as_str()
            .ok_or("template.name is required")?
            .to_string(),
        "image" | "video" | "document" | "audio" | "sticker" => {
            if obj.get("id").is_none() && obj.get("link").is_none() {
                return Err(format!("{t}.id or {t}.link is required"));
            }
            obj.get("caption")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        }
        "interactive" => obj
            .pointer("/body/text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        "reaction" => obj["message_id"]
            .as_str()
            .ok_or("reaction.message_id is required")?
            .to_string(),
        "location" | "contacts" => String::new(),
        other => return Err(format!("unknown type {other}")),
    };
    Ok((to, text, dropped))
}

async fn cloud_send(
    sim: Sim,
    bsp: &'static str,
    sender: String,
    account: String,
    authorized: bool,
    body: Bytes,
) -> Response {
    if !authorized {
        sim.lock().calls.push(Call {
            bsp: bsp.into(),
            sender,
            to: String::new(),
            text: String::new(),
            at_ms: now_ms(),
            status: 401,
            message_id: None,
        });
        return meta_refusal(Refusal::Auth);
    }
    let (to, text, dropped) = match cloud_body(&body) {
        Ok(x) => x,
        Err(m) => return meta_refusal(Refusal::Invalid(m)),
    };
    let forced = sim.lock().behavior.errors.get(&to).copied();
    if let Some(code) = forced {
        sim.lock().calls.push(Call {
            bsp: bsp.into(),
            sender,
            to,
            text,
            at_ms: now_ms(),
            status: 400,
            message_id: None,
        });
        return meta_error(
            StatusCode::BAD_REQUEST,
            code,
            &format!("(#{code}) refused by the simulator"),
        );
    }
    match sim.gate(bsp, &sender, &to, &text, meta_refusal).await {
        Err(r) => r,
        Ok(id) => {
            // Meta's phone_number_id is not the number; where it is not digits (360dialog's
            // key-bound number) a placeholder stands in: the account is what routes.
            let business = if account.bytes().all(|b| b.is_ascii_digit()) {
                account.clone()
            } else {
                "15550000000".into()
            };
            if !dropped {
                let template =
                    serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["type"] == "template");
                sim.callback(Hook {
                    bsp,
                    id: id.clone(),
                    business,
                    account,
                    to: to.clone(),
                    pricing: Some(if template { "marketing" } else { "service" }),
                    error_code: None,
                });
            }
            Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": digits(&to)}],
                "messages": [{"id": id, "message_status": "accepted"}]}))
            .into_response()
        }
    }
}

async fn meta_send(
    State(sim): State<Sim>,
    Path((_v, pnid)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let ok = header(&h, "authorization") == format!("Bearer {}", sim.secrets.meta_access_token);
    cloud_send(sim, "meta", pnid.clone(), pnid, ok, body).await
}

/// A media object's description, with a download URL that works for
/// `media_url_ttl_ms`, like the Graph API's `GET /{media-id}`.
async fn meta_media(
    State(sim): State<Sim>,
    Path((_v, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if header(&h, "authorization") != format!("Bearer {}", sim.secrets.meta_access_token) {
        return meta_refusal(Refusal::Auth);
    }
    let (m, ttl) = {
        let b = &sim.lock().behavior;
        (b.media.get(&id).cloned(), b.media_url_ttl_ms)
    };
    let Some(m) = m else {
        return meta_error(
            StatusCode::BAD_REQUEST,
            100,
            &format!("Unsupported get request. Object with ID '{id}' does not exist"),
        );
    };
    let body = m["body"].as_str().unwrap_or_default().as_bytes().to_vec();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    let host = header(&h, "host");
    let url = format!("http://{host}/_media/{id}?exp={}", now_ms() + ttl);
    Json(json!({"messaging_product": "whatsapp", "url": url, "mime_type": m["mime_type"], "sha256": sha,
        "file_size": body.len().to_string(), "id": id}))
    .into_response()
}

/// The bytes behind a media URL, to the same token, until the URL expires.
async fn media_download(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if header(&h, "authorization") != format!("Bearer {}", sim.secrets.meta_access_token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let exp: i64 = q.get("exp").and_then(|e| e.parse().ok()).unwrap_or(0);
    // A URL dies at its expiry: one given out with no lifetime is dead already.
    if now_ms() >= exp {
        return (StatusCode::NOT_FOUND, "URL expired").into_response();
    }
    match sim.lock().behavior.media.get(&id).cloned() {
        Some(m) => media_body(&m),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn media_body(m: &Value) -> Response {
    let ct = m["mime_type"]
        .as_str()
        .unwrap_or("application/octet-stream")
        .to_string();
    (
        [(axum::http::header::CONTENT_TYPE, ct)],
        m["body"].as_str().unwrap_or_default().to_string(),
    )
        .into_response()
}

/// Twilio's media URL: to the account's credentials, a redirect to a short-lived signed
/// CDN URL (as Twilio does), which refuses the credentials.
async fn twilio_media(
    State(sim): State<Sim>,
    Path((sid, _msg, id)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{sid}:{}", sim.secrets.twilio_auth_token))
    );
    if header(&h, "authorization") != expected {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        )
            .into_response();
    }
    let (known, ttl) = {
        let b = &sim.lock().behavior;
        (b.media.contains_key(&id), b.media_url_ttl_ms)
    };
    if !known {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 20404, "message": "The requested resource was not found", "status": 404})),
        )
            .into_response();
    }
    // The CDN is another host (the credentials must not follow): here, the simulator's
    // own port under the name `localhost`.
    let host = header(&h, "host").replacen("127.0.0.1", "localhost", 1);
    let to = format!("http://{host}/_cdn/{id}?exp={}", now_ms() + ttl);
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::LOCATION, to)],
    )
        .into_response()
}

/// WAHA's `GET /api/files/{session}/{id}.{ext}`, to its API key.
async fn waha_file(
    State(sim): State<Sim>,
    Path((_session, file)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if header(&h, "x-api-key") != sim.secrets.waha_api_key {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let id = file.split('.').next().unwrap_or_default();
    match sim.lock().behavior.media.get(id).cloned() {
        Some(m) => media_body(&m),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A signed CDN URL (Twilio's redirect target; Gupshup's and Aisensy's webhook URLs):
/// anyone may read it until `exp` (none: forever), and like S3 it refuses a request that
/// also carries credentials.
async fn cdn_download(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if h.contains_key("authorization") || h.contains_key("x-api-key") {
        return (
            StatusCode::BAD_REQUEST,
            "Only one auth mechanism allowed; the URL is already signed",
        )
            .into_response();
    }
    if q.get("exp")
        .and_then(|e| e.parse::<i64>().ok())
        .is_some_and(|exp| now_ms() >= exp)
    {
        return (StatusCode::FORBIDDEN, "Request has expired").into_response();
    }
    match sim.lock().behavior.media.get(&id).cloned() {
        Some(m) => media_body(&m),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A WABA's templates, paged like the Graph API (`limit`, `after`; `paging.next` while
/// more follow).
async fn meta_templates(
    State(sim): State<Sim>,
    Path((_v, waba)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if header(&h, "authorization") != format!("Bearer {}", sim.secrets.meta_access_token) {
        return meta_refusal(Refusal::Auth);
    }
    let Some(all) = sim.lock().behavior.templates.get(&waba).cloned() else {
        return meta_error(
            StatusCode::BAD_REQUEST,
            100,
            &format!("Unsupported get request. Object with ID '{waba}' does not exist"),
        );
    };
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25)
        .clamp(1, 100);
    let start: usize = q
        .get("after")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
        .min(all.len());
    let end = (start + limit).min(all.len());
    let mut paging = json!({"cursors": {"before": start.to_string(), "after": end.to_string()}});
    if end < all.len() {
        paging["next"] = json!(format!(
            "https://graph.facebook.com/v21.0/{waba}/message_templates?after={end}"
        ));
    }
    Json(json!({"data": &all[start..end], "paging": paging})).into_response()
}

async fn dialog360_send(State(sim): State<Sim>, h: HeaderMap, body: Bytes) -> Response {
    let key = header(&h, "d360-api-key").to_string();
    let ok = key == sim.secrets.dialog360_api_key;
    // 360dialog binds the key to one number, which the request does not name.
    cloud_send(sim, "360dialog", key, "360dialog-number".into(), ok, body).await
}

async fn aisensy_send(
    State(sim): State<Sim>,
    Path(project): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let ok = header(&h, "x-aisensy-project-api-pwd") == sim.secrets.aisensy_api_pwd;
    cloud_send(sim, "aisensy", project.clone(), project, ok, body).await
}

// ---- Gupshup ----

fn gupshup_refusal(r: Refusal) -> Response {
    let (status, msg) = match r {
        Refusal::Unavailable => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error".to_string(),
        ),
        Refusal::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests".to_string(),
        ),
        Refusal::Auth => (
            StatusCode::UNAUTHORIZED,
            "Authentication Failed".to_string(),
        ),
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, m),
    };
    (status, Json(json!({"status": "error", "message": msg}))).into_response()
}

async fn gupshup_send(
    State(sim): State<Sim>,
    uri: axum::http::Uri,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if header(&h, "apikey") != sim.secrets.gupshup_api_key {
        return gupshup_refusal(Refusal::Auth);
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("channel") != "whatsapp" || get("source").is_empty() || get("src.name").is_empty() {
        return gupshup_refusal(Refusal::Invalid(
            "channel, source and src.name are required".into(),
        ));
    }
    let to = get("destination");
    if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
        return gupshup_refusal(Refusal::Invalid("Invalid Destination".into()));
    }
    let text = if uri.path().ends_with("/template/msg") {
        let t: Value = serde_json::from_str(&get("template")).unwrap_or(Value::Null);
        match t["id"].as_str() {
            Some(id) => id.to_string(),
            None => return gupshup_refusal(Refusal::Invalid("template.id is required".into())),
        }
    } else {
        let m: Value = serde_json::from_str(&get("message")).unwrap_or(Value::Null);
        match m["type"].as_str() {
            Some("text") => m["text"].as_str().unwrap_or_default().to_string(),
            Some(_) => m
                .get("caption")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            None => return gupshup_refusal(Refusal::Invalid("message.type is required".into())),
        }
    };
    let source = get("source");
    match sim
        .gate("gupshup", &source, &to, &text, gupshup_refusal)
        .await
    {
        Err(r) => r,
        Ok(id) => {
            sim.callback(Hook {
                bsp: "gupshup",
                id: id.clone(),
                business: source,
                account: get("src.name"),
                to,
                pricing: None,
                error_code: None,
            });
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "submitted", "messageId": id})),
            )
                .into_response()
        }
    }
}

// ---- Twilio ----

fn twilio_refusal(r: Refusal) -> Response {
    let (status, code, msg) = match r {
        Refusal::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            20500,
            "Internal Server Error".to_string(),
        ),
        Refusal::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            "Too Many Requests".to_string(),
        ),
        Refusal::Auth => (StatusCode::UNAUTHORIZED, 20003, "Authenticate".to_string()),
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, 21211, m),
    };
    (status, Json(json!({"code": code, "message": msg, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()}))).into_response()
}

async fn twilio_send(
    State(sim): State<Sim>,
    Path(sid): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{sid}:{}", sim.secrets.twilio_auth_token))
    );
    if header(&h, "authorization") != expected {
        return twilio_refusal(Refusal::Auth);
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (from, to) = (get("From"), get("To"));
    if !from.starts_with("whatsapp:+") || !to.starts_with("whatsapp:+") {
        return twilio_refusal(Refusal::Invalid(format!(
            "The 'To' number {to} is not a valid phone number."
        )));
    }
    let text = [get("Body"), get("ContentSid"), get("MediaUrl")]
        .into_iter()
        .find(|s| !s.is_empty());
    let Some(text) = text else {
        return twilio_refusal(Refusal::Invalid(
            "A 'Body', 'MediaUrl' or 'ContentSid' is required".into(),
        ));
    };
    let to_n = to.trim_start_matches("whatsapp:").to_string();
    match sim
        .gate("twilio", &from, &to_n, &text, twilio_refusal)
        .await
    {
        Err(r) => r,
        Ok(id) => {
            sim.callback(Hook {
                bsp: "twilio",
                id: id.clone(),
                business: from.trim_start_matches("whatsapp:").into(),
                account: sid,
                to: to_n,
                pricing: None,
                error_code: None,
            });
            (StatusCode::CREATED, Json(json!({"sid": id, "status": "queued", "to": to, "from": from, "direction": "outbound-api"}))).into_response()
        }
    }
}

// ---- WAHA ----

fn waha_refusal(r: Refusal) -> Response {
    let (status, msg) = match r {
        Refusal::Unavailable => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error".to_string(),
        ),
        Refusal::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests".to_string(),
        ),
        Refusal::Auth => (StatusCode::UNAUTHORIZED, "Unauthorized".to_string()),
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, m),
    };
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "message": msg})),
    )
        .into_response()
}

async fn waha_send(
    State(sim): State<Sim>,
    Path(action): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if header(&h, "x-api-key") != sim.secrets.waha_api_key {
        return waha_refusal(Refusal::Auth);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let session = v["session"].as_str().unwrap_or_default().to_string();
    let chat = v["chatId"].as_str().unwrap_or_default();
    if session.is_empty() || !chat.ends_with("@c.us") {
        return waha_refusal(Refusal::Invalid(
            "session and chatId (<digits>@c.us) are required".into(),
        ));
    }
    let text = match action.as_str() {
        "sendText" => match v["text"].as_str() {
            Some(t) => t.to_string(),
            None => return waha_refusal(Refusal::Invalid("text is required".into())),
        },
        "sendImage" | "sendFile" | "sendVideo" | "sendVoice" => {
            if v.pointer("/file/url").is_none() {
                return waha_refusal(Refusal::Invalid("file.url is required".into()));
            }
            v["caption"].as_str().unwrap_or_default().to_string()
        }
        "sendLocation" => String::new(),
        _ => return waha_refusal(Refusal::Invalid(format!("unknown action {action}"))),
    };
    let to = format!("+{}", chat.trim_end_matches("@c.us"));
    match sim.gate("waha", &session, &to, &text, waha_refusal).await {
        Err(r) => r,
        Ok(id) => {
            // The business number is not in the request: the session stands in.
            sim.callback(Hook {
                bsp: "waha",
                id: id.clone(),
                business: "15550000000".into(),
                account: session,
                to,
                pricing: None,
                error_code: None,
            });
            (
                StatusCode::CREATED,
                Json(json!({"id": id, "ack": 0, "fromMe": true})),
            )
                .into_response()
        }
    }
}

async fn waha_reaction(State(sim): State<Sim>, h: HeaderMap, body: Bytes) -> Response {
    if header(&h, "x-api-key") != sim.secrets.waha_api_key {
        return waha_refusal(Refusal::Auth);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (v["session"].as_str(), v["messageId"].as_str()) {
        (Some(s), Some(m)) => match sim.gate("waha", s, "", m, waha_refusal).await {
            Err(r) => r,
            Ok(id) => (StatusCode::CREATED, Json(json!({"id": id}))).into_response(),
        },
        _ => waha_refusal(Refusal::Invalid(
            "session and messageId are required".into(),
        )),
    }
}

// ---- Karix ----

fn karix_refusal(r: Refusal) -> Response {
    let (status, code, msg) = match r {
        Refusal::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "503",
            "Service unavailable".to_string(),
        ),
        Refusal::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            "429",
            "Too many requests".to_string(),
        ),
        Refusal::Auth => (
            StatusCode::UNAUTHORIZED,
            "401",
            "Authentication failed".to_string(),
        ),
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, "400", m),
    };
    (status, Json(json!({"statusCode": code, "statusDesc": msg}))).into_response()
}

async fn karix_send(State(sim): State<Sim>, h: HeaderMap, body: Bytes) -> Response {
    if header(&h, "authentication") != format!("Bearer {}", sim.secrets.karix_api_key) {
        return karix_refusal(Refusal::Auth);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let m = &v["message"];
    let (to, from) = (
        m.pointer("/recipient/to").and_then(Value::as_str),
        m.pointer("/sender/from").and_then(Value::as_str),
    );
    let ctype = m.pointer("/content/type").and_then(Value::as_str);
    let (Some(to), Some(from), Some(ctype)) = (to, from, ctype) else {
        return karix_refusal(Refusal::Invalid(
            "recipient.to, sender.from and content.type are required".into(),
        ));
    };
    if m["channel"] != "WABA" {
        return karix_refusal(Refusal::Invalid("channel must be WABA".into()));
    }
    let text = match ctype {
        "TEXT" => m
            .pointer("/content/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        "TEMPLATE" => m
            .pointer("/content/template/templateId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        "ATTACHMENT" => m
            .pointer("/content/attachment/caption")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        "INTERACTIVE" => m
            .pointer("/content/interactive/body/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        other => return karix_refusal(Refusal::Invalid(format!("unknown content type {other}"))),
    };
    let to = format!("+{to}");
    match sim.gate("karix", from, &to, &text, karix_refusal).await {
        Err(r) => r,
        Ok(id) => {
            sim.callback(Hook {
                bsp: "karix",
                id: id.clone(),
                business: from.into(),
                account: from.into(),
                to,
                pricing: None,
                error_code: None,
            });
            Json(json!({"statusCode": "200", "statusDesc": "Successfully Accepted", "mid": id}))
                .into_response()
        }
    }
}

// ---- control ----

async fn get_behavior(State(sim): State<Sim>) -> Json<Behavior> {
    Json(sim.behavior())
}

async fn post_behavior(State(sim): State<Sim>, Json(b): Json<Behavior>) -> Json<Behavior> {
    sim.set_behavior(b.clone());
    Json(b)
}

async fn get_calls(State(sim): State<Sim>) -> Json<Vec<Call>> {
    Json(sim.calls())
}

async fn get_stats(State(sim): State<Sim>) -> Json<Value> {
    let calls = sim.calls();
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for c in &calls {
        *by_status.entry(c.status).or_default() += 1;
    }
    let (hooks_ok, hooks_failed) = sim.webhook_counts();
    Json(json!({"calls": calls.len(), "by_status": by_status,
        "max_per_second": max_per_second(&calls), "webhooks_delivered": hooks_ok, "webhooks_failed": hooks_failed}))
}

/// Per sender: the most accepted calls in any one-second window.
pub fn max_per_second(calls: &[Call]) -> HashMap<String, usize> {
    let mut by_sender: HashMap<&str, Vec<i64>> = HashMap::new();
    for c in calls.iter().filter(|c| c.status == 200) {
        by_sender.entry(&c.sender).or_default().push(c.at_ms);
    }
    by_sender
        .into_iter()
        .map(|(s, mut ts)| {
            ts.sort_unstable();
            let mut best = 0;
            let mut lo = 0;
            for hi in 0..ts.len() {
                while ts[hi] - ts[lo] >= 1000 {
                    lo += 1;
                }
                best = best.max(hi - lo + 1);
            }
            (s.to_string(), best)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap as Map;

    use switchboard_connectors::parse;
    use switchboard_schemas::RawWebhook;

    use super::*;

    /// Every status webhook the simulator makes parses, with Switchboard's own parsers,
    /// into the status it means, for the message id the send call returned.
    #[test]
    fn status_webhooks_parse_as_what_they_mean() {
        let s = SimSecrets::default();
        for bsp in [
            "meta",
            "360dialog",
            "aisensy",
            "gupshup",
            "twilio",
            "waha",
            "karix",
        ] {
            for status in ["sent", "delivered", "read", "failed"] {
                let h = Hook {
                    bsp,
                    id: message_id(bsp, "+4915112345678", 7),
                    business: "+15550001111".into(),
                    account: "acct1".into(),
                    to: "+4915112345678".into(),
                    pricing: Some("utility"),
                    error_code: None,
                };
                let (_, ct, body, _) = webhook(&s, "http://gw", &h, status);
                let raw = RawWebhook {
                    request_id: "r".into(),
                    bsp: bsp.into(),
                    received_at_ms: 1,
                    content_type: ct.into(),
                    headers: Map::new(),
                    body,
                };
                let parsed = parse(&raw).unwrap_or_else(|e| panic!("{bsp}/{status}: {e:?}"));
                assert_eq!(parsed.events.len(), 1, "{bsp}/{status}");
                let ev = &parsed.events[0];
                assert_eq!(ev.wamid, h.id, "{bsp}/{status}");
                assert_eq!(ev.status.as_deref(), Some(status), "{bsp}/{status}");
                assert_eq!(ev.customer_id, "+4915112345678", "{bsp}/{status}");
            }
        }
    }

    #[test]
    fn windows_count_per_sender() {
        let call = |sender: &str, at_ms| Call {
            bsp: "meta".into(),
            sender: sender.into(),
            to: String::new(),
            text: String::new(),
            at_ms,
            status: 200,
            message_id: None,
        };
        let calls = vec![
            call("a", 0),
            call("a", 500),
            call("a", 999),
            call("a", 1000),
            call("b", 10),
        ];
        let m = max_per_second(&calls);
        assert_eq!(m["a"], 3);
        assert_eq!(m["b"], 1);
    }
}
