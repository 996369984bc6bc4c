//! Sample sends for the README's first command: a demo tenant with a number on every
//! BSP (the simulator playing each BSP), a handful of messages of several types through
//! the send API, then their statuses as `GET /v1/messages` reports them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bsp_sim::SimSecrets;

pub struct Api {
    pub http: reqwest::Client,
    pub gateway: String,
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.gateway))
            .bearer_auth(key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((
            status,
            serde_json::from_str(&r.text().await?).unwrap_or(Value::Null),
        ))
    }

    /// Post a signed Meta webhook until the gateway takes it (a benchmark's load must
    /// not stop at one 503 while the broker catches up).
    pub async fn post_meta(&self, secret: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let sig = switchboard_connectors::meta::signature::sign(secret, &body);
        let url = format!("{}/webhooks/meta", self.gateway);
        for _ in 0..50 {
            match self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", &sig)
                .body(body.clone())
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        anyhow::bail!("the gateway kept refusing a webhook")
    }

    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (s, v) = self.call(method.clone(), path, key, body, &[]).await?;
        anyhow::ensure!((200..300).contains(&s), "{method} {path}: {s} {v}");
        Ok(v)
    }
}

/// The credentials the simulator accepts for `bsp`.
pub fn sim_credentials(s: &SimSecrets, bsp: &str) -> Value {
    match bsp {
        "meta" => json!({"access_token": s.meta_access_token}),
        "360dialog" => json!({"api_key": s.dialog360_api_key}),
        "aisensy" => json!({"api_pwd": s.aisensy_api_pwd}),
        "gupshup" => json!({"api_key": s.gupshup_api_key}),
        "twilio" => json!({"auth_token": s.twilio_auth_token}),
        "waha" => json!({"api_key": s.waha_api_key}),
        _ => json!({"api_key": s.karix_api_key}),
    }
}

/// (bsp, number, BSP account) of the demo tenant.
pub const NUMBERS: [(&str, &str, &str); 7] = [
    ("meta", "+15550100001", "15550100001"),
    ("360dialog", "+15550100002", "360dialog-number"),
    ("aisensy", "+15550100003", "demo-project"),
    ("gupshup", "+15550100004", "DemoApp"),
    (
        "twilio",
        "+15550100005",
        "AC000000000000000000000000000demo",
    ),
    ("waha", "+15550100006", "default"),
    ("karix", "+15550100007", "15550100007"),
];

/// A tenant, its API key, and a number per BSP; returns (tenant id, key).
pub async fn setup_tenant(
    api: &Api,
    admin: &str,
    secrets: &SimSecrets,
    name: &str,
    tier: u32,
) -> anyhow::Result<(String, String)> {
    use reqwest::Method;
    // Reuse the tenant of an earlier run: it owns the demo numbers.
    let all = api.ok(Method::GET, "/admin/tenants", admin, None).await?;
    let existing = all["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == name)
        .and_then(|t| t["id"].as_str())
        .map(str::to_string);
    let id = match existing {
        Some(id) => id,
        None => {
            let t = api
                .ok(
                    Method::POST,
                    "/admin/tenants",
                    admin,
                    // Its customers never wrote: free-form sends must not wait for a window.
                    Some(json!({"name": name, "api_rate_per_sec": 100000, "enforce_service_window": false})),
                )
                .await?;
            t["id"].as_str().unwrap_or_default().to_string()
        }
    };
    let k = api
        .ok(
            Method::POST,
            &format!("/admin/tenants/{id}/api-keys"),
            admin,
            Some(json!({"name": "demo"})),
        )
        .await?;
    for (bsp, number, account) in NUMBERS {
        api.ok(
            Method::PUT,
            &format!("/admin/tenants/{id}/credentials/{bsp}"),
            admin,
            Some(sim_credentials(secrets, bsp)),
        )
        .await?;
        let mut body = json!({"bsp": bsp, "bsp_account_id": account, "tier_mps": tier, "default": bsp == "meta"});
        if bsp == "meta" {
            body["failover_bsp"] = json!("360dialog");
            body["failover_account_id"] = json!("360dialog-number");
        }
        api.ok(
            Method::PUT,
            &format!("/admin/tenants/{id}/numbers/{}", number.replace('+', "%2B")),
            admin,
            Some(body),
        )
        .await?;
    }
    Ok((id, k["key"].as_str().unwrap_or_default().to_string()))
}

pub async fn demo(api: &Api, admin: &str, secrets: &SimSecrets) -> anyhow::Result<()> {
    use reqwest::Method;
    let (tenant, key) = setup_tenant(api, admin, secrets, "demo", 80).await?;
    println!(
        "   tenant {tenant}, API key {}… (shown once by the admin API)",
        &key[..12]
    );
    let receiver = match std::env::var("DEMO_ENDPOINT_URL") {
        Ok(url) => Some(demo_endpoint(api, &key, &url).await?),
        Err(_) => None,
    };
    let to = "+4915112345678";
    let mut bodies: Vec<Value> = NUMBERS
        .iter()
        .map(|(bsp, number, _)| json!({"from": number, "to": to, "type": "text", "text": {"body": format!("Hello from {bsp}")},
            "metadata": {"order": "A-1001"}}))
        .collect();
    bodies.push(json!({"to": to, "type": "template", "template": {"name": "order_update", "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-1001"}]}]}}));
    bodies.push(json!({"to": to, "type": "image", "image": {"link": "https://example.com/receipt.jpg", "caption": "Your receipt"}}));
    bodies.push(json!({"to": to, "type": "interactive", "interactive": {"type": "button", "body": {"text": "Rate us"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "good", "title": "Good"}}, {"type": "reply", "reply": {"id": "bad", "title": "Bad"}}]}}}));
    let scheduled_at = (chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339();
    bodies.push(json!({"to": to, "type": "text", "text": {"body": "Scheduled 5 s ahead"}, "scheduled_at": scheduled_at}));
    let mut ids = Vec::new();
    for b in &bodies {
        let (s, v) = api
            .call(Method::POST, "/v1/messages", &key, Some(b.clone()), &[])
            .await?;
        anyhow::ensure!(s == 202, "send: {s} {v}");
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    // The same idempotency key twice is one message.
    let once = json!({"to": to, "type": "text", "text": {"body": "Sent once, asked twice"}});
    let (_, a) = api
        .call(
            Method::POST,
            "/v1/messages",
            &key,
            Some(once.clone()),
            &[("idempotency-key", "demo-1")],
        )
        .await?;
    let (_, b) = api
        .call(
            Method::POST,
            "/v1/messages",
            &key,
            Some(once),
            &[("idempotency-key", "demo-1")],
        )
        .await?;
    println!(
        "   idempotency: two POSTs with one key → {} and {}",
        a["id"], b["id"]
    );
    ids.push(a["id"].as_str().unwrap_or_default().to_string());
    // A rejected send names its field.
    let (s, v) = api
        .call(
            Method::POST,
            "/v1/messages",
            &key,
            Some(json!({"to": "+12", "type": "text", "text": {"body": "x"}})),
            &[],
        )
        .await?;
    println!("   a bad number: {s} {}", v["error"]);

    println!("   waiting for the simulated BSPs' status webhooks ...");
    let started = Instant::now();
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(60) {
        last.clear();
        for id in &ids {
            let (_, m) = api
                .call(Method::GET, &format!("/v1/messages/{id}"), &key, None, &[])
                .await?;
            last.insert(id.clone(), m);
        }
        if last.values().all(|m| m["status"] == "read") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "   {:<36} {:<10} {:<12} {:<8} {:<32} history",
        "message", "bsp", "type", "status", "wamid"
    );
    for id in &ids {
        let m = &last[id];
        let history: Vec<&str> = m["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["status"].as_str())
            .collect();
        let wamid: String = m["wamid"]
            .as_str()
            .unwrap_or("-")
            .chars()
            .take(30)
            .collect();
        println!(
            "   {:<36} {:<10} {:<12} {:<8} {:<32} {}",
            id,
            m["bsp"].as_str().unwrap_or("-"),
            m["type"].as_str().unwrap_or("-"),
            m["status"].as_str().unwrap_or("-"),
            wamid,
            history.join(" → ")
        );
    }
    if let Some((sim, name)) = receiver {
        show_deliveries(api, &sim, &name, ids.len()).await?;
    }
    Ok(())
}

/// Point an endpoint of the demo tenant at the client-endpoint simulator (`url` is
/// `<sim>/e/<name>`), and give the simulator its signing secret so it verifies.
async fn demo_endpoint(api: &Api, key: &str, url: &str) -> anyhow::Result<(String, String)> {
    use reqwest::Method;
    let (sim, name) = url
        .rsplit_once("/e/")
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .ok_or_else(|| anyhow::anyhow!("DEMO_ENDPOINT_URL must be <endpoint-sim>/e/<name>"))?;
    let (_, list) = api
        .call(Method::GET, "/v1/endpoints", key, None, &[])
        .await?;
    let existing = list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == url)
        .and_then(|e| e["id"].as_str().map(str::to_string));
    let (id, secret) = match existing {
        // The secret was shown once, on an earlier run: rotate to learn a new one.
        Some(id) => {
            let (s, v) = api
                .call(
                    Method::POST,
                    &format!("/v1/endpoints/{id}/secret/rotate"),
                    key,
                    Some(json!({"grace_period": "0s"})),
                    &[],
                )
                .await?;
            anyhow::ensure!(s == 200, "rotate: {s} {v}");
            (id, v["secret"].as_str().unwrap_or_default().to_string())
        }
        None => {
            let body = json!({"url": url, "description": "demo receiver",
                "event_types": ["message.status.*", "message.received", "message.send_failed"]});
            let (s, v) = api
                .call(Method::POST, "/v1/endpoints", key, Some(body), &[])
                .await?;
            anyhow::ensure!(s == 201, "create endpoint: {s} {v}");
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["secret"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    api.http
        .put(format!("{sim}/_sim/endpoints/{name}"))
        .json(&json!({"secrets": [secret]}))
        .send()
        .await?
        .error_for_status()?;
    api.http
        .delete(format!("{sim}/_sim/endpoints/{name}/received"))
        .send()
        .await?;
    println!("   endpoint {id} → {url} (signed with its whsec_ secret, verified by the receiver)");
    // The fan-out learns new endpoints from wa.config within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((sim, name))
}

/// What the simulated receiver got: per event type, and whether every signature verified.
async fn show_deliveries(api: &Api, sim: &str, name: &str, messages: usize) -> anyhow::Result<()> {
    // sent, delivered, read per message; the idempotent replay may be a message of an
    // earlier run whose statuses came before this endpoint existed.
    let expected = messages * 3;
    let started = Instant::now();
    let mut got: Vec<Value> = Vec::new();
    let mut still_since = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let now: Vec<Value> = api
            .http
            .get(format!("{sim}/_sim/endpoints/{name}/received"))
            .send()
            .await?
            .json()
            .await?;
        if now.len() != got.len() {
            still_since = Instant::now();
        }
        got = now;
        let settled = got.len() + 3 >= expected && still_since.elapsed() > Duration::from_secs(2);
        if got.len() >= expected || settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        *by_type
            .entry(r["event_type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let verified = got.iter().filter(|r| r["verified"] == true).count();
    println!("== webhooks delivered to the client endpoint {sim}/e/{name}");
    for (t, n) in &by_type {
        println!("   {t:<28} {n}");
    }
    println!(
        "   {} requests, {verified} with a valid Standard Webhooks signature",
        got.len()
    );
    Ok(())
}

/// Percentile of sorted durations, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The send benchmark: `n` single sends from `numbers` numbers (tier 1,000 each) at
/// `conc` concurrent connections, then end to end: until the router has a BSP answer
/// for every one, and until every one is `read` (statuses back through the gateway).
#[allow(clippy::too_many_arguments)]
pub async fn bench(
    api: &Api,
    admin: &str,
    secrets: &SimSecrets,
    sim_url: &str,
    db: &str,
    n: usize,
    conc: usize,
    numbers: usize,
    statuses: bool,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use reqwest::Method;
    let run = format!("sb{}", std::process::id());
    let t = api
        .ok(
            Method::POST,
            "/admin/tenants",
            admin,
            Some(
                json!({"name": run, "api_rate_per_sec": 100_000, "enforce_service_window": false}),
            ),
        )
        .await?;
    let tenant = t["id"].as_str().unwrap_or_default().to_string();
    let k = api
        .ok(
            Method::POST,
            &format!("/admin/tenants/{tenant}/api-keys"),
            admin,
            None,
        )
        .await?;
    let key = k["key"].as_str().unwrap_or_default().to_string();
    api.ok(
        Method::PUT,
        &format!("/admin/tenants/{tenant}/credentials/meta"),
        admin,
        Some(sim_credentials(secrets, "meta")),
    )
    .await?;
    let from: Vec<String> = (0..numbers).map(|i| format!("+1555020{i:04}")).collect();
    for f in &from {
        api.ok(Method::PUT, &format!("/admin/tenants/{tenant}/numbers/{}", f.replace('+', "%2B")), admin,
            Some(json!({"bsp": "meta", "bsp_account_id": f.trim_start_matches('+'), "tier_mps": 1000}))).await?;
    }
    if !statuses {
        // The send path alone: the simulator answers sends but calls nothing back.
        api.http
            .post(format!("{sim_url}/_sim/behavior"))
            .json(&json!({"no_callbacks": true}))
            .send()
            .await?
            .error_for_status()?;
    }
    let pool = sqlx::PgPool::connect(db).await?;
    let count_final = |pool: sqlx::PgPool, prefix: String| async move {
        sqlx::query_as::<_, (i64,)>(
            "SELECT count(*) FROM outbound_messages WHERE tenant_id = $1 AND state IN ('accepted', 'failed', 'unknown')",
        )
        .bind(prefix)
        .fetch_one(&pool)
        .await
        .map(|r| r.0)
        .unwrap_or(0)
    };
    // Warm-up: connections, the registry's schema ids, the router's caches.
    let warm = 200usize;
    for i in 0..warm {
        // A customer each, as in the run: one customer gets about a message per 6 s.
        let body = json!({"from": from[i % from.len()], "to": format!("+49152{:08}", i), "type": "text", "text": {"body": format!("{run}-warm-{i}")}});
        let (s, v) = api
            .call(Method::POST, "/v1/messages", &key, Some(body), &[])
            .await?;
        anyhow::ensure!(s == 202, "warm-up send: {s} {v}");
    }
    while count_final(pool.clone(), tenant.clone()).await < warm as i64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (next, key, from, run) = (next.clone(), key.clone(), from.clone(), run.clone());
        let http = api.http.clone();
        let url = format!("{}/v1/messages", api.gateway);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = json!({"from": from[i % from.len()], "to": format!("+49151{:08}", i % 100_000_000), "type": "text",
                    "text": {"body": format!("{run}-{i}")}});
                let t = Instant::now();
                let ok = matches!(http.post(&url).bearer_auth(&key).json(&body).send().await, Ok(r) if r.status() == 202);
                lat.push(t.elapsed());
                errors += usize::from(!ok);
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let accept_secs = started.elapsed().as_secs_f64();
    lat.sort();
    println!("accept: {n} sends in {accept_secs:.2} s = {:.0} accepted/s, errors {errors}, latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} (concurrency {conc}, {numbers} numbers)",
        (n - errors) as f64 / accept_secs, pct(&lat, 0.5), pct(&lat, 0.9), pct(&lat, 0.99), pct(&lat, 1.0));

    let total = (n - errors + warm) as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while count_final(pool.clone(), tenant.clone()).await < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let routed_secs = started.elapsed().as_secs_f64();
    println!("routed: every send answered by the BSP after {routed_secs:.2} s = {:.0} sends/s end to end",
        (n - errors) as f64 / routed_secs);
    let read = |pool: sqlx::PgPool, t: String| async move {
        sqlx::query_as::<_, (i64,)>(
            "SELECT count(*) FROM messages WHERE tenant_id = $1 AND status = 'read'",
        )
        .bind(t)
        .fetch_one(&pool)
        .await
        .map(|r| r.0)
        .unwrap_or(0)
    };
    if statuses {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut got = 0;
        while Instant::now() < deadline {
            got = read(pool.clone(), tenant.clone()).await;
            if got >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::ensure!(
            got >= total,
            "INCOMPLETE: {got} of {total} sends read after 120 s more"
        );
        let read_secs = started.elapsed().as_secs_f64();
        println!("statuses: every send read (sent, delivered, read webhooks back through the gateway) after {read_secs:.2} s = {:.0} sends/s with their statuses",
            (n - errors) as f64 / read_secs);
    } else {
        println!("statuses: off (the simulator sent no status webhooks)");
    }
    let calls: Vec<crate::bsp_sim::Call> = api
        .http
        .get(format!("{sim_url}/_sim/calls"))
        .send()
        .await?
        .json()
        .await?;
    let peaks = crate::bsp_sim::max_per_second(&calls);
    let peak = peaks.values().max().copied().unwrap_or(0);
    let throttled = calls.iter().filter(|c| c.status == 429).count();
    println!("limits: busiest number peaked at {peak} sends in a one-second window (tier 1000); BSP throttled {throttled} calls");
    Ok(())
}
