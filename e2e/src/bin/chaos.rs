//! chaos: the whole pipeline under steady webhook, send and fan-out load while its parts
//! are killed (`kill -9`), frozen (SIGSTOP) and restarted at random, PostgreSQL and
//! ClickHouse among them, and the broker on durable storage (Nisshi's `postgres`
//! storage: memory storage would forget every acknowledged record on restart). Then an
//! audit holds what the load generator was told against every store, the BSP simulator
//! and the receiver:
//!
//! - every webhook answered `200` is in PostgreSQL and ClickHouse exactly once;
//! - every send answered `202` reached a final state and the BSP at most once (exactly
//!   once if `accepted`);
//! - every event of the tenant reached the endpoint at least once (repeats counted).
//!
//! Exit code 0 when nothing was lost or doubled, 1 otherwise. `loadtest/chaos.sh` builds
//! and runs it; the services it restarts are its own (a private PostgreSQL cluster, a
//! private ClickHouse and a private broker whose storage lives in the shared PostgreSQL
//! that `deploy/infra.sh up` runs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};
use switchboard_e2e::services::{PrivateBroker, PrivateClickHouse, PrivatePostgres};
use switchboard_e2e::{wait_until, Options, Pipeline, Proc, Services};
use switchboard_loadtest::bsp_sim::Behavior;
use switchboard_schemas::{send_event_id, status_event_id, Status};

#[derive(Parser)]
#[command(
    about = "Chaos run: steady load while every part is killed, frozen and restarted; then an audit"
)]
struct Args {
    /// How long the chaos lasts (the load runs as long; the audit waits after it).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time between two chaos actions.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Status webhooks per second.
    #[arg(long, default_value_t = 100)]
    webhooks_per_sec: u32,
    /// Sends per second through the API.
    #[arg(long, default_value_t = 20)]
    sends_per_sec: u32,
    /// Seed of the order of actions (printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the audit waits for everything to land once the load stops.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

const NUMBER: &str = "+15550077001";
const PNID: &str = "pnid-chaos";
const TIER: u32 = 80;
const CUSTOMERS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Gateway,
    Normalizer,
    PgSink,
    ChSink,
    Router,
    Fanout,
}

const PARTS: [Part; 6] = [
    Part::Gateway,
    Part::Normalizer,
    Part::PgSink,
    Part::ChSink,
    Part::Router,
    Part::Fanout,
];

#[derive(Debug, Clone, Copy)]
enum Action {
    Kill(Part),
    Freeze(Part),
    RestartPostgres,
    RestartClickHouse,
    RestartBroker,
}

/// The private services the run restarts.
struct World {
    pg: PrivatePostgres,
    ch: PrivateClickHouse,
    broker: PrivateBroker,
}

fn proc_of(p: &mut Pipeline, part: Part) -> &mut Proc {
    match part {
        Part::Gateway => &mut p.gateway,
        Part::Normalizer => &mut p.normalizer,
        Part::PgSink => &mut p.pg_sink,
        Part::ChSink => &mut p.ch_sink,
        Part::Router => &mut p.send.as_mut().expect("send path").router,
        Part::Fanout => &mut p.fanout_path.as_mut().expect("fan-out").proc,
    }
}

/// What the load generator was told, and what it went through to be told it.
#[derive(Default)]
struct Ledger {
    webhooks_sent: AtomicUsize,
    /// Requests that had to be repeated (a 5xx, a timeout or a broken connection).
    webhook_retries: AtomicUsize,
    sends_sent: AtomicUsize,
    send_retries: AtomicUsize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    println!(
        "chaos: {:?} of chaos, an action every {:?}, {} webhooks/s, {} sends/s, seed {seed}",
        args.duration, args.interval, args.webhooks_per_sec, args.sends_per_sec
    );

    let services = Services::from_env();
    let storage_db = format!(
        "chaos_broker_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = sqlx::PgPool::connect(&services.pg_admin_url)
        .await
        .context("the shared PostgreSQL (is deploy/infra.sh up?)")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {storage_db}")))
        .execute(&admin)
        .await?;
    let storage = format!(
        "{}?sslmode=disable",
        switchboard_e2e::replace_db(&services.pg_admin_url, &storage_db)
    );
    let mut world = World {
        pg: PrivatePostgres::start().await?,
        ch: PrivateClickHouse::start().await?,
        broker: PrivateBroker::start_durable(&storage).await?,
    };
    let mut p = Pipeline::start(Options {
        pg_url: Some(world.pg.url()),
        clickhouse_url: Some(world.ch.url()),
        brokers: Some(world.broker.addr()),
        send_path: true,
        fanout: true,
        ..Default::default()
    })
    .await?;
    p.services.brokers = world.broker.addr();
    p.services.clickhouse_url = world.ch.url();
    println!("logs in {}", p.log_dir.0.display());
    p.wait_send_path_ready().await?;
    let t = p.tenant("chaos").await?;
    p.number(&t, NUMBER, "meta", PNID, TIER, None).await?;
    p.sim().set_behavior(Behavior {
        tiers: HashMap::from([(PNID.into(), TIER)]),
        no_callbacks: true,
        ..Behavior::default()
    });
    p.endpoint(
        &t,
        "chaos",
        json!({"event_types": ["message.status.*", "message.send_accepted", "message.send_failed"]}),
    )
    .await?;
    // Warm up: one webhook all the way to the receiver, so groups are joined and caches full.
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        NUMBER,
        "+919000000000",
        "wamid.chaos.warmup",
        "delivered",
        chrono::Utc::now().timestamp(),
    ))
    .await?;
    p.wait_delivered(&["chaos"], 1, Duration::from_secs(60))
        .await?;

    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let stop_load = Instant::now() + args.duration;

    // The load: every request is repeated until it gets its answer, as a BSP and a
    // careful client would; what counts is what they were finally told.
    let webhooks = tokio::spawn(webhook_load(
        p.gateway_url.clone(),
        p.meta_secret.clone(),
        ledger.clone(),
        args.webhooks_per_sec,
        stop_load,
    ));
    let sends = tokio::spawn(send_load(
        p.gateway_url.clone(),
        ledger.clone(),
        t.key.clone(),
        args.sends_per_sec,
        stop_load,
    ));

    // The chaos: every kind of action in a shuffled cycle, so a run of N actions covers
    // every kind about N / 15 times.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut deck: Vec<Action> = Vec::new();
    let mut done: Vec<(f64, String)> = Vec::new();
    while Instant::now() + args.interval < stop_load {
        tokio::time::sleep(args.interval.mul_f64(0.5 + rng.f64())).await;
        if deck.is_empty() {
            deck = PARTS
                .iter()
                .flat_map(|p| [Action::Kill(*p), Action::Freeze(*p)])
                .chain([
                    Action::RestartPostgres,
                    Action::RestartClickHouse,
                    Action::RestartBroker,
                ])
                .collect();
            rng.shuffle(&mut deck);
        }
        let action = deck.pop().expect("refilled");
        let at = started.elapsed().as_secs_f64();
        let what = act(&mut p, &mut world, action, &mut rng).await?;
        println!("{at:7.1}s  {what}");
        done.push((at, what));
    }
    let (sent_hooks, sent_ids) = (webhooks.await??, sends.await??);
    println!(
        "load done after {:.0}s: {} webhooks and {} sends accepted; auditing",
        started.elapsed().as_secs_f64(),
        sent_hooks.len(),
        sent_ids.len()
    );
    let report = audit(&p, &sent_hooks, &sent_ids, args.settle).await?;
    println!("\n{}", report.table(&ledger, &done, seed));
    drop(world);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {storage_db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    if report.ok() {
        Ok(())
    } else {
        eprintln!(
            "chaos: lost or doubled work (logs in {})",
            p.log_dir.0.display()
        );
        std::process::exit(1)
    }
}

async fn act(
    p: &mut Pipeline,
    world: &mut World,
    action: Action,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<String> {
    let pause = Duration::from_millis(rng.u64(500..3000));
    Ok(match action {
        Action::Kill(part) => {
            let proc = proc_of(p, part);
            proc.kill9().await;
            tokio::time::sleep(pause).await;
            proc.start()?;
            format!("kill -9 {:?}, restarted after {pause:?}", part)
        }
        Action::Freeze(part) => {
            let frozen = Duration::from_millis(rng.u64(2000..12000));
            let proc = proc_of(p, part);
            proc.freeze(true);
            tokio::time::sleep(frozen).await;
            proc.freeze(false);
            format!("SIGSTOP {:?} for {frozen:?}", part)
        }
        Action::RestartPostgres => {
            world.pg.crash()?;
            tokio::time::sleep(pause).await;
            world.pg.resume().await?;
            format!("PostgreSQL crashed (immediate stop), back after {pause:?}")
        }
        Action::RestartClickHouse => {
            world.ch.crash().await;
            tokio::time::sleep(pause).await;
            world.ch.resume().await?;
            format!("ClickHouse killed, back after {pause:?}")
        }
        Action::RestartBroker => {
            world.broker.crash().await;
            tokio::time::sleep(pause).await;
            world.broker.resume().await?;
            format!("broker kill -9 (postgres storage), back after {pause:?}")
        }
    })
}

/// Status webhooks at `rate` per second until `until`; returns the wamids accepted.
async fn webhook_load(
    gateway: String,
    secret: String,
    ledger: Arc<Ledger>,
    rate: u32,
    until: Instant,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{gateway}/webhooks/meta");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    let ts = chrono::Utc::now().timestamp();
    let mut i = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let wamid = format!("wamid.chaos.{i}");
        let body = switchboard_e2e::bsp::meta_status(
            NUMBER,
            &format!("+9198{:08}", i % CUSTOMERS),
            &wamid,
            "delivered",
            ts,
        );
        let sig = switchboard_connectors::meta::signature::sign(&secret, &body);
        let (http, url, ledger) = (http.clone(), url.clone(), ledger.clone());
        ledger.webhooks_sent.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    ledger.webhook_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                first = false;
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", &sig)
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => return Ok(wamid),
                    Ok(r) if r.status().is_server_error() => continue,
                    Ok(r) => anyhow::bail!("webhook {wamid}: {}", r.status()),
                    Err(_) => continue,
                }
            }
        });
        i += 1;
    }
    let mut accepted = Vec::new();
    while let Some(r) = tasks.join_next().await {
        accepted.push(r??);
    }
    Ok(accepted)
}

/// Sends at `rate` per second until `until`, each with its own idempotency key and
/// repeated with it until answered; returns the message ids accepted.
async fn send_load(
    gateway: String,
    ledger: Arc<Ledger>,
    key: String,
    rate: u32,
    until: Instant,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{gateway}/v1/messages");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    let run = uuid::Uuid::new_v4().simple().to_string();
    while Instant::now() < until {
        tick.tick().await;
        let body = json!({"from": NUMBER, "to": format!("+4915{:09}", i % CUSTOMERS), "type": "text",
            "text": {"body": format!("chaos-{run}-{i}")}});
        let idem = format!("chaos-{run}-{i}");
        let (http, url, key, ledger) = (http.clone(), url.clone(), key.clone(), ledger.clone());
        ledger.sends_sent.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    ledger.send_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                first = false;
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("idempotency-key", &idem)
                    .json(&body)
                    .send()
                    .await;
                let r = match r {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                let status = r.status();
                if status.is_server_error() || status == 429 {
                    continue;
                }
                let v: Value = r.json().await.unwrap_or_default();
                anyhow::ensure!(status.is_success(), "send {idem}: {status} {v}");
                let id = v["id"]
                    .as_str()
                    .or_else(|| v["message"]["id"].as_str())
                    .with_context(|| format!("send {idem}: no id in {v}"))?;
                return Ok(id.to_string());
            }
        });
        i += 1;
    }
    let mut accepted = Vec::new();
    while let Some(r) = tasks.join_next().await {
        accepted.push(r??);
    }
    Ok(accepted)
}

#[derive(Debug, Default)]
struct Report {
    webhooks: usize,
    pg_missing: usize,
    pg_doubled: i64,
    ch_missing: usize,
    ch_doubled: i64,
    sends: usize,
    sends_not_final: usize,
    sends_twice_at_bsp: usize,
    accepted_without_call: usize,
    states: HashMap<String, usize>,
    events: usize,
    events_not_delivered: usize,
    deliveries: usize,
    dead_lettered_deliveries: i64,
}

impl Report {
    fn ok(&self) -> bool {
        self.pg_missing == 0
            && self.pg_doubled == 0
            && self.ch_missing == 0
            && self.ch_doubled == 0
            && self.sends_not_final == 0
            && self.sends_twice_at_bsp == 0
            && self.accepted_without_call == 0
            && self.events_not_delivered == 0
    }

    fn table(&self, ledger: &Ledger, actions: &[(f64, String)], seed: u64) -> String {
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for (_, a) in actions {
            let k = a.split(',').next().unwrap_or(a);
            let k = k.split(" for ").next().unwrap_or(k).to_string();
            *kinds.entry(k).or_default() += 1;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort();
        let mut states: Vec<_> = self.states.iter().collect();
        states.sort();
        format!(
            "| audit (seed {seed}) | count |\n|---|---|\n\
             | chaos actions | {} ({}) |\n\
             | webhooks sent / acknowledged (200) | {} / {} (requests repeated: {}) |\n\
             | … missing in PostgreSQL / doubled | {} / {} |\n\
             | … missing in ClickHouse / doubled | {} / {} |\n\
             | sends sent / accepted (202) | {} / {} (requests repeated: {}) |\n\
             | … final states | {} |\n\
             | … not final | {} |\n\
             | … at the BSP twice / accepted without a BSP call | {} / {} |\n\
             | events of the tenant | {} |\n\
             | … never delivered to the endpoint | {} |\n\
             | … deliveries (repeats: {}) | {} |\n\
             | … deliveries dead-lettered | {} |\n\
             | verdict | {} |",
            actions.len(),
            kinds
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join("; "),
            ledger.webhooks_sent.load(Ordering::Relaxed),
            self.webhooks,
            ledger.webhook_retries.load(Ordering::Relaxed),
            self.pg_missing,
            self.pg_doubled,
            self.ch_missing,
            self.ch_doubled,
            ledger.sends_sent.load(Ordering::Relaxed),
            self.sends,
            ledger.send_retries.load(Ordering::Relaxed),
            states
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.sends_not_final,
            self.sends_twice_at_bsp,
            self.accepted_without_call,
            self.events,
            self.events_not_delivered,
            self.deliveries
                .saturating_sub(self.events - self.events_not_delivered),
            self.deliveries,
            self.dead_lettered_deliveries,
            if self.ok() {
                "nothing lost, nothing doubled"
            } else {
                "FAILED"
            },
        )
    }
}

async fn audit(
    p: &Pipeline,
    wamids: &[String],
    ids: &[String],
    settle: Duration,
) -> anyhow::Result<Report> {
    let mut r = Report {
        webhooks: wamids.len(),
        sends: ids.len(),
        ..Default::default()
    };
    let like = "wamid LIKE 'wamid.chaos.%' AND wamid <> 'wamid.chaos.warmup'";
    // Wait for the stores to hold everything (or the settle time to pass: then the
    // counts below say what is missing).
    let all = wamids.len() as i64;
    let _ = wait_until("every webhook in both stores", settle, || async {
        Ok(p.pg_count(&format!(
            "SELECT count(DISTINCT wamid) FROM message_status_history WHERE {like}"
        ))
        .await
        .unwrap_or(0)
            >= all
            && p.ch_count(&format!("SELECT uniqExact(wamid) FROM events WHERE {like}"))
                .await
                .unwrap_or(0)
                >= all)
    })
    .await;
    let _ = p.wait_final(ids, settle).await;
    // A little longer for in-flight duplicates, if any, to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let pg: HashSet<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT wamid FROM message_status_history WHERE {like}"
    )))
    .fetch_all(&p.pg)
    .await?
    .into_iter()
    .collect();
    r.pg_missing = wamids.iter().filter(|w| !pg.contains(*w)).count();
    r.pg_doubled = p
        .pg_count(&format!(
            "SELECT count(*) - count(DISTINCT event_id) FROM message_status_history WHERE {like}"
        ))
        .await?;
    let ch: HashSet<String> = p
        .ch(&format!("SELECT DISTINCT wamid FROM events WHERE {like}"))
        .await?
        .lines()
        .map(str::to_string)
        .collect();
    r.ch_missing = wamids.iter().filter(|w| !ch.contains(*w)).count();
    r.ch_doubled = p
        .ch_count(&format!(
            "SELECT count() - uniqExact(event_id) FROM events WHERE {like}"
        ))
        .await?;

    // Sends: a final state each, the BSP called at most once (once if accepted).
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT message_id, state, message->'text'->>'body', wamid FROM outbound_messages WHERE message_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&p.pg)
    .await?;
    let calls = p.calls_by_text();
    let mut expected_events: Vec<String> = wamids
        .iter()
        .map(|w| status_event_id("meta", w, Status::Delivered))
        .collect();
    let found: HashSet<&str> = rows.iter().map(|(id, _, _, _)| id.as_str()).collect();
    r.sends_not_final = ids.iter().filter(|id| !found.contains(id.as_str())).count();
    for (id, state, text, wamid) in &rows {
        *r.states.entry(state.clone()).or_default() += 1;
        let n = calls
            .get(text)
            .map_or(0, |c| c.iter().filter(|c| c.status == 200).count());
        if n > 1 {
            r.sends_twice_at_bsp += 1;
        }
        match state.as_str() {
            "accepted" => {
                if n == 0 {
                    r.accepted_without_call += 1;
                }
                let outcome = format!("accepted:{}", wamid.as_deref().unwrap_or_default());
                expected_events.push(send_event_id(id, &outcome));
            }
            "failed" | "unknown" => expected_events.push(send_event_id(id, "failed")),
            _ => r.sends_not_final += 1,
        }
    }

    // Fan-out: every event at the endpoint at least once.
    r.events = expected_events.len();
    let delivered = || -> HashSet<String> {
        p.endpoint_sim()
            .received("chaos")
            .into_iter()
            .filter(|x| x.answered == 200)
            .map(|x| x.webhook_id)
            .collect()
    };
    let _ = wait_until("every event at the endpoint", settle, || async {
        let got = delivered();
        Ok(expected_events.iter().all(|e| got.contains(e)))
    })
    .await;
    let got = delivered();
    r.events_not_delivered = expected_events.iter().filter(|e| !got.contains(*e)).count();
    let wanted: HashSet<&String> = expected_events.iter().collect();
    r.deliveries = p
        .endpoint_sim()
        .received("chaos")
        .iter()
        .filter(|x| x.answered == 200 && wanted.contains(&x.webhook_id))
        .count();
    r.dead_lettered_deliveries = p.topic_records("wa.deliveries.dlq").await.unwrap_or(-1);
    Ok(r)
}
