//! loadgen: drive realistic, signed BSP webhooks at the gateway.
//!
//!   loadgen sample  [--gateway URL] [--meta-secret S] [--dialog360-token T] [--messages N]
//!       every connector fixture, then N conversations (sent → delivered → read, some
//!       failures, inbound replies) with BSP-style repeats and out-of-order arrivals.
//!   loadgen sends   [--gateway URL] [--admin-key K] [--sim-secrets JSON]
//!       a demo tenant with a number on every BSP (the BSP simulator playing them), sends
//!       of several types through the send API, and their statuses as the API reports them.
//!   loadgen send-bench [--gateway URL] [--admin-key K] [--sim-url URL] [--database-url URL]
//!                   [--messages N] [--concurrency C] [--numbers K] [--statuses on|off]
//!       N sends through the API from K numbers (tier 1,000 each): accept rate and
//!       latency, then end to end until every send has its BSP answer and its statuses.
//!   loadgen fanout-bench [--gateway URL] [--meta-secret S] [--admin-key K] [--endpoints E]
//!                   [--hang H] [--events N] [--rate R] [--concurrency C] [--sim-addr A]
//!                   [--fanout-ops URL]
//!       E endpoints in this process (H of them never answer), N status webhooks: fan-out
//!       deliveries/s, per-endpoint rates and event-to-delivery latency; --rate R paces the
//!       webhooks at R events/s (latency at a sustained rate instead of draining a backlog).
//!   loadgen campaign-bench [--gateway URL] [--admin-key K] [--sim-url URL] [--database-url URL]
//!                   [--recipients N] [--numbers K] [--live-rate R] [--baseline S]
//!       one campaign of N recipients over K numbers (tier 1,000 each) while single sends
//!       go through the API at R/s: the campaign's sends/s against the tiers' sum, and the
//!       live sends' latency before (S seconds) and during it.
//!   loadgen stream-bench [--gateway URL] [--meta-secret S] [--admin-key K] [--tenants T]
//!                   [--clients C] [--rate R] [--seconds S] [--concurrency N]
//!       C Server-Sent Events clients over T tenants, status webhooks at R/s for S
//!       seconds: deliveries, post → client latency, and whether any client fell short.
//!   loadgen events  [--events N]
//!       N synthetic canonical events (statuses over the last day) straight onto
//!       wa.events (SWITCHBOARD_KAFKA_BROKERS, _TOPIC_PREFIX, _SCHEMA_REGISTRY_URL): the
//!       input of the replay benchmark.
//!   loadgen analytics-events [--events N] [--tenants T] [--days D]
//!       N events of T tenants over the last D days (template sends with campaigns,
//!       Meta pricing, failures, inbound, five countries) onto wa.events: the input of
//!       the analytics benchmark (`analytics-bench.sh`).
//!   loadgen presign [--meta-secret S] [--messages N] [--out FILE]
//!       N conversations' webhooks (as `bench` sends them), signed, one per line as
//!       "<x-hub-signature-256>\t<body>": the input of `ingest-bench.sh`'s wrk script.
//!   loadgen topic-records --topic T
//!       the records a topic holds (the sum of its partitions' high watermarks).
//!   loadgen bench   [--gateway URL] [--meta-secret S] [--messages N] [--concurrency C]
//!                   [--database-url URL] [--clickhouse-url URL] [--clickhouse-database DB]
//!       send N messages' webhooks (3 statuses + 1 inbound each) as fast as C concurrent
//!       connections allow; report accepted/s and latency percentiles, then (with the
//!       store URLs) wait for every event in PostgreSQL and ClickHouse and report end-to-end
//!       throughput and accept → stored latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_connectors::meta::signature::sign;
use switchboard_loadtest::sends::pct;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> anyhow::Result<Self> {
        let mut m = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| anyhow::anyhow!("unexpected argument {k:?}"))?;
            let v = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("--{key} needs a value"))?;
            m.insert(key.to_string(), v.clone());
        }
        Ok(Args(m))
    }
    fn get(&self, k: &str, env: &str, d: &str) -> String {
        self.0
            .get(k)
            .cloned()
            .or_else(|| std::env::var(env).ok())
            .unwrap_or_else(|| d.to_string())
    }
    fn num(&self, k: &str, d: usize) -> anyhow::Result<usize> {
        match self.0.get(k) {
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{k} must be a number")),
            None => Ok(d),
        }
    }
}

fn status(business: &str, customer: &str, wamid: &str, st: &str, ts: i64) -> Vec<u8> {
    let mut s = json!({"id": wamid, "status": st, "timestamp": ts.to_string(), "recipient_id": customer,
        "conversation": {"id": format!("conv-{customer}"), "origin": {"type": "utility"}},
        "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}});
    if st == "failed" {
        s["errors"] = json!([{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable", "error_data": {"details": "Receiver is incapable of receiving this message"}}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": business, "phone_number_id": format!("pn{business}")}, "statuses": [s]}}]}]})
    .to_string()
    .into_bytes()
}

fn inbound(business: &str, customer: &str, wamid: &str, ts: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": business, "phone_number_id": format!("pn{business}")},
        "contacts": [{"profile": {"name": "Customer"}, "wa_id": customer}],
        "messages": [{"from": customer, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": "Thanks, got it!"}}]}}]}]})
    .to_string()
    .into_bytes()
}

const BUSINESSES: [&str; 4] = [
    "15550783881",
    "442071838750",
    "919876543210",
    "5511987654321",
];

/// One conversation: the statuses of one outbound message and a reply.
fn conversation(run: &str, i: usize, base_ts: i64) -> Vec<Vec<u8>> {
    let b = BUSINESSES[i % BUSINESSES.len()];
    let c = format!("1650{:07}", i % 10_000_000);
    let w = format!("wamid.{run}.{i}");
    let t = base_ts + (i as i64 % 3600);
    if i.is_multiple_of(20) {
        return vec![status(b, &c, &w, "failed", t + 1)];
    }
    vec![
        status(b, &c, &w, "sent", t),
        status(b, &c, &w, "delivered", t + 1 + (i as i64 % 4)),
        status(b, &c, &w, "read", t + 30),
        inbound(b, &c, &format!("wamid.{run}.in.{i}"), t + 40),
    ]
}

struct Client {
    http: reqwest::Client,
    gateway: String,
    meta_secret: String,
}

impl Client {
    async fn post(&self, path: &str, body: Vec<u8>, sig: Option<String>) -> anyhow::Result<u16> {
        let mut r = self
            .http
            .post(format!("{}{path}", self.gateway))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = sig {
            r = r.header("x-hub-signature-256", s);
        }
        Ok(r.send().await?.status().as_u16())
    }
    async fn meta(&self, body: Vec<u8>) -> anyhow::Result<u16> {
        let sig = sign(&self.meta_secret, &body);
        self.post("/webhooks/meta", body, Some(sig)).await
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn sample(a: &Args, c: &Client) -> anyhow::Result<()> {
    let fixtures = a.get(
        "fixtures",
        "SWITCHBOARD_FIXTURES",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../connectors/tests/fixtures"),
    );
    let token = a.get("dialog360-token", "SWITCHBOARD_DIALOG360_TOKEN", "");
    let mut ok = 0;
    let mut paths: Vec<_> = std::fs::read_dir(format!("{fixtures}/meta"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for p in &paths {
        let body = std::fs::read(p)?;
        ok += (c.meta(body.clone()).await? == 200) as usize;
        if !token.is_empty() {
            ok += (c
                .post(&format!("/webhooks/360dialog?token={token}"), body, None)
                .await?
                == 200) as usize;
        }
    }
    println!(
        "fixtures: {ok} webhooks accepted from {} Meta/360dialog fixture files",
        paths.len()
    );
    let twilio = a.get("twilio-auth-token", "SWITCHBOARD_TWILIO_AUTH_TOKEN", "");
    if !twilio.is_empty() {
        let url = format!("{}/webhooks/twilio", c.gateway);
        let (n, ok) = post_dir(&c.http, &format!("{fixtures}/twilio"), &url, |body| {
            let sig = switchboard_connectors::twilio::signature::sign(&twilio, &url, body);
            vec![
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_string(),
                ),
                ("x-twilio-signature", sig),
            ]
        })
        .await?;
        println!("fixtures: {ok}/{n} Twilio webhooks accepted");
    }
    let gupshup = a.get("gupshup-token", "SWITCHBOARD_GUPSHUP_TOKEN", "");
    if !gupshup.is_empty() {
        let url = format!("{}/webhooks/gupshup", c.gateway);
        let (n, ok) = post_dir(&c.http, &format!("{fixtures}/gupshup"), &url, |_| {
            vec![
                ("content-type", "application/json".to_string()),
                ("x-switchboard-token", gupshup.clone()),
            ]
        })
        .await?;
        println!("fixtures: {ok}/{n} Gupshup webhooks accepted");
    }
    let aisensy = a.get(
        "aisensy-webhook-secret",
        "SWITCHBOARD_AISENSY_WEBHOOK_SECRET",
        "",
    );
    if !aisensy.is_empty() {
        let url = format!("{}/webhooks/aisensy", c.gateway);
        let (n, ok) = post_dir(&c.http, &format!("{fixtures}/aisensy"), &url, |body| {
            vec![
                ("content-type", "application/json".to_string()),
                (
                    "x-aisensy-signature",
                    switchboard_connectors::aisensy::signature::sign(&aisensy, body),
                ),
            ]
        })
        .await?;
        println!("fixtures: {ok}/{n} AiSensy webhooks accepted");
    }
    let karix = a.get("karix-token", "SWITCHBOARD_KARIX_TOKEN", "");
    if !karix.is_empty() {
        let url = format!("{}/webhooks/karix", c.gateway);
        let (n, ok) = post_dir(&c.http, &format!("{fixtures}/karix"), &url, |_| {
            vec![
                ("content-type", "application/json".to_string()),
                ("x-switchboard-token", karix.clone()),
            ]
        })
        .await?;
        println!("fixtures: {ok}/{n} Karix webhooks accepted");
    }
    let waha = a.get("waha-hmac-key", "SWITCHBOARD_WAHA_HMAC_KEY", "");
    if !waha.is_empty() {
        let url = format!("{}/webhooks/waha", c.gateway);
        let (n, ok) = post_dir(&c.http, &format!("{fixtures}/waha"), &url, |body| {
            vec![
                ("content-type", "application/json".to_string()),
                (
                    "x-webhook-hmac",
                    switchboard_connectors::waha::signature::sign(&waha, body),
                ),
                ("x-webhook-hmac-algorithm", "sha512".to_string()),
            ]
        })
        .await?;
        println!("fixtures: {ok}/{n} WAHA webhooks accepted");
    }

    // One webhook of the right envelope but an unknown status word: accepted (200), then
    // dead-lettered by the normalizer with reason `unknown_status`.
    let odd = status(
        "15550783881",
        "16505550000",
        &format!("wamid.odd.{}", now_s()),
        "teleported",
        now_s(),
    );
    println!(
        "dead-letter example: a status the BSP vocabulary lacks, answered {}",
        c.meta(odd).await?
    );

    let n = a.num("messages", 200)?;
    let run = format!("s{}", now_s());
    let mut all: Vec<Vec<u8>> = (0..n)
        .flat_map(|i| conversation(&run, i, now_s() - 3600))
        .collect();
    // BSPs repeat webhooks and deliver them out of order: repeat every 7th, swap pairs.
    let repeats: Vec<Vec<u8>> = all.iter().step_by(7).cloned().collect();
    all.extend(repeats);
    for i in (0..all.len().saturating_sub(1)).step_by(5) {
        all.swap(i, i + 1);
    }
    let mut accepted = 0;
    for chunk in all.chunks(64) {
        for r in futures::future::join_all(chunk.iter().map(|b| c.meta(b.clone()))).await {
            accepted += (r? == 200) as usize;
        }
    }
    println!("conversations: {accepted}/{} webhooks accepted ({n} messages, with repeats and out-of-order arrivals)", all.len());
    Ok(())
}

/// POST every file of `dir` to `url` with the headers `headers(body)` gives; returns
/// (sent, accepted).
async fn post_dir(
    http: &reqwest::Client,
    dir: &str,
    url: &str,
    headers: impl Fn(&[u8]) -> Vec<(&'static str, String)>,
) -> anyhow::Result<(usize, usize)> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let mut ok = 0;
    for p in &paths {
        let body = std::fs::read(p)?;
        let mut req = http.post(url);
        for (k, v) in headers(&body) {
            req = req.header(k, v);
        }
        ok += req.body(body).send().await?.status().is_success() as usize;
    }
    Ok((paths.len(), ok))
}

/// Send a few conversations and, given a database, wait until they are stored, so the
/// measured run does not include consumer-group joins and first connections.
async fn warm_up(a: &Args, c: &Client, run: &str) -> anyhow::Result<()> {
    let n = a.num("warmup", 100)?;
    if n == 0 {
        return Ok(());
    }
    let warm = format!("{run}w");
    for b in (0..n).flat_map(|i| conversation(&warm, i, now_s() - 3600)) {
        c.meta(b).await?;
    }
    let db = a.get("database-url", "SWITCHBOARD_DATABASE_URL", "");
    if db.is_empty() {
        return Ok(());
    }
    let pool = sqlx::PgPool::connect(&db).await?;
    let like = format!("wamid.{warm}.%");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (got,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages WHERE wamid LIKE $1")
            .bind(&like)
            .fetch_one(&pool)
            .await?;
        if got >= n as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    Ok(())
}

fn presign(a: &Args, c: &Client) -> anyhow::Result<()> {
    use std::io::Write;
    let n = a.num("messages", 10_000)?;
    let out = a.get("out", "PRESIGN_OUT", "bodies.txt");
    let run = format!("p{}", now_s());
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let mut count = 0;
    for b in (0..n).flat_map(|i| conversation(&run, i, now_s() - 3600)) {
        // One line per request: the bodies are single-line JSON.
        anyhow::ensure!(!b.contains(&b'\n'), "a body spans lines");
        writeln!(w, "{}\t{}", sign(&c.meta_secret, &b), String::from_utf8(b)?)?;
        count += 1;
    }
    w.flush()?;
    eprintln!("{count} signed webhooks in {out}");
    Ok(())
}

fn topic_records(topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let brokers =
        std::env::var("SWITCHBOARD_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut sum = 0;
    for t in md.topics() {
        for p in t.partitions() {
            sum += c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?.1;
        }
    }
    Ok(sum)
}

async fn bench(a: &Args, c: Arc<Client>) -> anyhow::Result<()> {
    let n = a.num("messages", 25_000)?;
    let conc = a.num("concurrency", 64)?;
    let run = format!("b{}", now_s());
    let bodies: Vec<(Vec<u8>, String)> = (0..n)
        .flat_map(|i| conversation(&run, i, now_s() - 3600))
        .map(|b| {
            let s = sign(&c.meta_secret, &b);
            (b, s)
        })
        .collect();
    let total = bodies.len();
    let bodies = Arc::new(bodies);
    warm_up(a, &c, &run).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // Lag over time: every second, webhooks handed out vs status events stored.
    let sampler = {
        let db = a.get("database-url", "SWITCHBOARD_DATABASE_URL", "");
        let next = next.clone();
        let like = format!("wamid.{run}.%");
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let Ok(pool) = sqlx::PgPool::connect(&db).await else {
                return samples;
            };
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let sent = next.load(Ordering::Relaxed).min(total);
                let stored: i64 = sqlx::query_as::<_, (i64,)>(
                    "SELECT count(*) FROM message_status_history WHERE wamid LIKE $1",
                )
                .bind(&like)
                .fetch_one(&pool)
                .await
                .map(|(n,)| n)
                .unwrap_or(-1);
                samples.push((started.elapsed().as_secs_f64(), sent, stored));
                if sent >= total {
                    return samples;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, bodies, next) = (c.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let (b, s) = &bodies[i];
                let t = Instant::now();
                let ok = matches!(
                    c.post("/webhooks/meta", b.clone(), Some(s.clone())).await,
                    Ok(200)
                );
                lat.push(t.elapsed());
                errors += (!ok) as usize;
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    println!("ingest: {total} webhooks in {secs:.2} s = {:.0} accepted/s, errors {errors}, latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} (concurrency {conc})",
        (total - errors) as f64 / secs, pct(&lat, 0.5), pct(&lat, 0.9), pct(&lat, 0.99), pct(&lat, 1.0));

    let db = a.get("database-url", "SWITCHBOARD_DATABASE_URL", "");
    if db.is_empty() {
        return Ok(());
    }
    let pool = sqlx::PgPool::connect(&db).await?;
    let like = format!("wamid.{run}.%");
    let want_status = (0..n)
        .map(|i| if i.is_multiple_of(20) { 1 } else { 3 })
        .sum::<usize>() as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = -1;
    let mut lag_samples = Vec::new();
    loop {
        let (got,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM message_status_history WHERE wamid LIKE $1")
                .bind(&like)
                .fetch_one(&pool)
                .await?;
        if got != last {
            lag_samples.push((started.elapsed().as_secs_f64(), got));
            last = got;
        }
        if got >= want_status || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let e2e = started.elapsed().as_secs_f64();
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)::float8 \
         FROM (SELECT (extract(epoch FROM stored_at - received_at) * 1000)::float8 AS ms FROM message_status_history WHERE wamid LIKE $1) t",
    )
    .bind(&like)
    .fetch_one(&pool)
    .await?;
    println!("postgres: {last}/{want_status} status events stored; first send → last stored {e2e:.2} s = {:.0} events/s; accept → stored ms p50 {p50:.0} p99 {p99:.0} max {max:.0}",
        last as f64 / e2e);
    let ch = a.get("clickhouse-url", "SWITCHBOARD_CLICKHOUSE_URL", "");
    if !ch.is_empty() {
        let dbname = a.get(
            "clickhouse-database",
            "SWITCHBOARD_CLICKHOUSE_DATABASE",
            "switchboard",
        );
        let http = reqwest::Client::new();
        let q = |sql: String| {
            let http = http.clone();
            let url = format!("{ch}/?database={dbname}");
            async move { anyhow::Ok(http.post(url).body(sql).send().await?.text().await?) }
        };
        let want_all = want_status + (0..n).filter(|i| !i.is_multiple_of(20)).count() as i64;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let got: i64 = q(format!(
                "SELECT count() FROM events WHERE wamid LIKE '{like}'"
            ))
            .await?
            .trim()
            .parse()
            .unwrap_or(0);
            if got >= want_all || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let e2e = started.elapsed().as_secs_f64();
        let r = q(format!("SELECT count(), quantiles(0.5, 0.99)(toFloat64(stored_at_ms) - toFloat64(received_at_ms)) FROM events WHERE wamid LIKE '{like}'")).await?;
        println!("clickhouse: {} events (want {want_all}) by {e2e:.2} s; accept → stored ms [p50, p99] {}", r.split('\t').next().unwrap_or("?"), r.split('\t').nth(1).unwrap_or("?").trim());
    }
    let samples = sampler.await.unwrap_or_default();
    println!(
        "lag over time (s: webhooks sent / status events stored): {}",
        samples
            .iter()
            .map(|(t, s, n)| format!("{t:.0}s:{s}/{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "postgres progress (s, status events): {}",
        lag_samples
            .iter()
            .map(|(t, n)| format!("({t:.1},{n})"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = argv
        .split_first()
        .map(|(c, r)| (c.as_str(), r))
        .unwrap_or(("", &[]));
    let a = Args::parse(rest)?;
    let c = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?,
        gateway: a.get(
            "gateway",
            "SWITCHBOARD_GATEWAY_URL",
            "http://127.0.0.1:8080",
        ),
        meta_secret: a.get("meta-secret", "SWITCHBOARD_META_APP_SECRET", ""),
    });
    if cmd == "events" {
        let kafka: switchboard_runtime::config::KafkaConfig = switchboard_runtime::config::load()?;
        return switchboard_loadtest::events::produce(&kafka, a.num("events", 1_000_000)?).await;
    }
    if cmd == "analytics-events" {
        let kafka: switchboard_runtime::config::KafkaConfig = switchboard_runtime::config::load()?;
        return switchboard_loadtest::events::produce_analytics(
            &kafka,
            a.num("events", 10_000_000)?,
            a.num("tenants", 100)?,
            a.num("days", 30)? as i64,
        )
        .await;
    }
    if cmd == "sends" {
        // Sample sends through the send API, the simulator playing every BSP.
        let secrets: switchboard_loadtest::bsp_sim::SimSecrets =
            serde_json::from_str(&a.get("sim-secrets", "SIM_SECRETS", "{}"))?;
        let api = switchboard_loadtest::sends::Api {
            http: c.http.clone(),
            gateway: c.gateway.clone(),
        };
        let admin = a.get("admin-key", "SWITCHBOARD_ADMIN_API_KEY", "");
        return switchboard_loadtest::sends::demo(&api, &admin, &secrets).await;
    }
    if cmd == "send-bench" {
        let secrets: switchboard_loadtest::bsp_sim::SimSecrets =
            serde_json::from_str(&a.get("sim-secrets", "SIM_SECRETS", "{}"))?;
        let api = switchboard_loadtest::sends::Api {
            http: c.http.clone(),
            gateway: c.gateway.clone(),
        };
        return switchboard_loadtest::sends::bench(
            &api,
            &a.get("admin-key", "SWITCHBOARD_ADMIN_API_KEY", ""),
            &secrets,
            &a.get("sim-url", "SIM_URL", "http://127.0.0.1:18090"),
            &a.get("database-url", "SWITCHBOARD_DATABASE_URL", ""),
            a.num("messages", 20_000)?,
            a.num("concurrency", 64)?,
            a.num("numbers", 12)?,
            a.get("statuses", "SEND_BENCH_STATUSES", "on") != "off",
        )
        .await;
    }
    if cmd == "campaign-bench" {
        let secrets: switchboard_loadtest::bsp_sim::SimSecrets =
            serde_json::from_str(&a.get("sim-secrets", "SIM_SECRETS", "{}"))?;
        let api = switchboard_loadtest::sends::Api {
            http: c.http.clone(),
            gateway: c.gateway.clone(),
        };
        let o = switchboard_loadtest::campaign_bench::Opts {
            admin: a.get("admin-key", "SWITCHBOARD_ADMIN_API_KEY", ""),
            sim_url: a.get("sim-url", "SIM_URL", "http://127.0.0.1:18090"),
            database_url: a.get("database-url", "SWITCHBOARD_DATABASE_URL", ""),
            recipients: a.num("recipients", 100_000)?,
            numbers: a.num("numbers", 10)?,
            live_rate: a.num("live-rate", 20)? as f64,
            baseline_secs: a.num("baseline", 10)? as f64,
        };
        return switchboard_loadtest::campaign_bench::run(&api, &secrets, &o).await;
    }
    if cmd == "stream-bench" {
        let api = switchboard_loadtest::sends::Api {
            http: c.http.clone(),
            gateway: c.gateway.clone(),
        };
        let o = switchboard_loadtest::stream_bench::Opts {
            admin: a.get("admin-key", "SWITCHBOARD_ADMIN_API_KEY", ""),
            meta_secret: c.meta_secret.clone(),
            tenants: a.num("tenants", 10)?,
            clients: a.num("clients", 1000)?,
            rate: a.num("rate", 2000)? as f64,
            seconds: a.num("seconds", 30)? as f64,
            concurrency: a.num("concurrency", 64)?,
        };
        return switchboard_loadtest::stream_bench::run(&api, &o).await;
    }
    if cmd == "fanout-bench" {
        let api = switchboard_loadtest::sends::Api {
            http: c.http.clone(),
            gateway: c.gateway.clone(),
        };
        let o = switchboard_loadtest::fanout_bench::Opts {
            admin: a.get("admin-key", "SWITCHBOARD_ADMIN_API_KEY", ""),
            meta_secret: c.meta_secret.clone(),
            sim_addr: a.get("sim-addr", "ENDPOINT_SIM_ADDR", "127.0.0.1:18092"),
            fanout_metrics: a.get("fanout-ops", "FANOUT_OPS_URL", "http://127.0.0.1:9105"),
            endpoints: a.num("endpoints", 100)?,
            hang: a.num("hang", 0)?,
            events: a.num("events", 5000)?,
            concurrency: a.num("concurrency", 64)?,
            rate: a.num("rate", 0)? as f64,
        };
        return switchboard_loadtest::fanout_bench::run(&api, &o).await;
    }
    if cmd == "topic-records" {
        let topic = a.get("topic", "TOPIC", "");
        anyhow::ensure!(!topic.is_empty(), "--topic is required");
        println!("{}", topic_records(&topic)?);
        return Ok(());
    }
    anyhow::ensure!(
        !c.meta_secret.is_empty(),
        "--meta-secret (or SWITCHBOARD_META_APP_SECRET) is required to sign Meta webhooks"
    );
    match cmd {
        "presign" => presign(&a, &c),
        "sample" => sample(&a, &c).await,
        "bench" => bench(&a, c).await,
        _ => {
            eprintln!("usage: loadgen sample|bench|presign|topic-records [--gateway URL] [--meta-secret S] ... (see the module doc)");
            std::process::exit(2)
        }
    }
}
