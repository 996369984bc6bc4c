//! isolation: does one tenant's trouble change another tenant's latency? Two measurements,
//! each of tenant B's load alone and then the same load beside a noisy tenant A, in a
//! fresh pipeline per run:
//!
//! - fan-out: B's status webhooks at a steady rate to B's one healthy endpoint (webhook
//!   posted → delivered), alone; then beside A's webhooks to A's 1,000 strict endpoints
//!   while they answer (the control: what A's deliveries cost the shared machine); then
//!   beside the same load while all of A's endpoints fail (the production retry schedule,
//!   so strict events hold in place);
//! - sends: B's sends at a steady rate (posted → called at the BSP), alone, then while A
//!   has a 20,000-send backlog on an 80-mps number.
//!
//! Prints p50 and p99 of each phase and the ratio of B's p99 beside A to B's p99 alone.
//! Everything shares one machine, so A's work also costs B CPU: the ratio measures that
//! too, not only the fan-out's and the router's admission; the fan-out's control phase
//! tells the two apart (failing beside answering). `loadtest/isolation-bench.sh`
//! builds and runs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_loadtest::bsp_sim::Behavior;
use switchboard_loadtest::endpoint_sim;
use switchboard_loadtest::sends::pct;
use switchboard_schemas::{status_event_id, Status};

#[derive(Parser)]
#[command(about = "Tenant isolation: another tenant's latency alone and beside a noisy tenant")]
struct Args {
    /// Runs (a fresh pipeline each); medians are printed at the end.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Length of each measured phase.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    phase: Duration,
    /// B's status webhooks per second.
    #[arg(long, default_value_t = 50)]
    webhooks_per_sec: u32,
    /// A's failing strict endpoints.
    #[arg(long, default_value_t = 1000)]
    noisy_endpoints: usize,
    /// A's webhooks per second (each goes to every one of A's endpoints).
    #[arg(long, default_value_t = 2)]
    noisy_webhooks_per_sec: u32,
    /// B's sends per second.
    #[arg(long, default_value_t = 10)]
    sends_per_sec: u32,
    /// A's backlog of sends on its 80-mps number.
    #[arg(long, default_value_t = 20_000)]
    backlog: usize,
    /// Which measurements: fanout, sends or both.
    #[arg(long, default_value = "both")]
    part: String,
}

/// The production retry schedule (the tests' is seconds long), so a failing strict
/// endpoint holds its events as it would in production.
const SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

#[derive(Clone, Copy, Default)]
struct Phase {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50/p90/p99/max {:.0}/{:.0}/{:.0}/{:.0} ms ({})",
            self.p50, self.p90, self.p99, self.max, self.n
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows: Vec<(&str, Phase, Phase)> = Vec::new();
    for run in 1..=args.runs {
        if args.part != "sends" {
            let (alone, answering, failing) = fanout_run(&args).await?;
            println!("run {run} fan-out: B alone {alone}");
            println!("run {run} fan-out: B beside A's answering endpoints {answering}");
            println!("run {run} fan-out: B beside A's failing strict endpoints {failing}");
            rows.push((
                "fan-out: beside A's answering endpoints (control)",
                alone,
                answering,
            ));
            rows.push((
                "fan-out: beside A's failing strict endpoints",
                alone,
                failing,
            ));
        }
        if args.part != "fanout" {
            let (alone, noisy) = send_run(&args).await?;
            println!("run {run} sends: B alone {alone}");
            println!("run {run} sends: B beside A's backlog {noisy}");
            rows.push(("sends: beside A's backlog", alone, noisy));
        }
    }
    println!("\n| measurement (median of {} runs) | B alone p50 / p99 ms | beside A p50 / p99 ms | p99 ratio |\n|---|---|---|---|", args.runs);
    for what in [
        "fan-out: beside A's answering endpoints (control)",
        "fan-out: beside A's failing strict endpoints",
        "sends: beside A's backlog",
    ] {
        let of: Vec<&(&str, Phase, Phase)> = rows.iter().filter(|r| r.0 == what).collect();
        if of.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&(&str, Phase, Phase)) -> f64| {
            let mut v: Vec<f64> = of.iter().map(|r| f(r)).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {what} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} |",
            med(&|r| r.1.p50),
            med(&|r| r.1.p99),
            med(&|r| r.2.p50),
            med(&|r| r.2.p99),
            med(&|r| r.2.p99 / r.1.p99.max(1.0)),
        );
    }
    Ok(())
}

fn phase(mut lat: Vec<Duration>) -> Phase {
    lat.sort();
    Phase {
        n: lat.len(),
        p50: pct(&lat, 0.50),
        p90: pct(&lat, 0.90),
        p99: pct(&lat, 0.99),
        max: pct(&lat, 1.0),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Start `make(i)` `rate` times a second for `len`, every one running while the next
/// start; returns their results in completion order.
async fn paced<'a, T, Fut>(
    rate: u32,
    len: Duration,
    mut make: impl FnMut(usize) -> Fut,
) -> anyhow::Result<Vec<T>>
where
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'a,
{
    use futures::StreamExt;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let end = Instant::now() + len;
    let mut running = futures::stream::FuturesUnordered::new();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        tokio::select! {
            _ = tick.tick(), if Instant::now() < end => {
                running.push(make(i));
                i += 1;
            }
            Some(r) = running.next() => out.push(r?),
            else => return Ok(out),
        }
    }
}

/// Post `rate` Meta status webhooks a second for `number` for `len`; returns (event id,
/// posted at ms) of each, once accepted.
async fn post_webhooks(
    p: &Pipeline,
    number: &str,
    tag: &str,
    rate: u32,
    len: Duration,
) -> anyhow::Result<Vec<(String, i64)>> {
    let ts = chrono::Utc::now().timestamp();
    paced(rate, len, |i| {
        let wamid = format!("wamid.iso.{tag}.{i}");
        let body = switchboard_e2e::bsp::meta_status(
            number,
            &format!("+9197{:08}", i % 100),
            &wamid,
            "delivered",
            ts,
        );
        async move {
            let at = now_ms();
            p.post_meta_until_accepted(&body).await?;
            anyhow::Ok((status_event_id("meta", &wamid, Status::Delivered), at))
        }
    })
    .await
}

async fn fanout_run(args: &Args) -> anyhow::Result<(Phase, Phase, Phase)> {
    let p = Pipeline::start(Options {
        send_path: true,
        fanout: true,
        gateway_env: vec![(
            "SWITCHBOARD_MAX_ENDPOINTS_PER_TENANT",
            (args.noisy_endpoints + 10).to_string(),
        )],
        fanout_env: vec![("SWITCHBOARD_RETRY_SCHEDULE", SCHEDULE.into())],
        ..Default::default()
    })
    .await?;
    let (a, b) = (p.tenant("noisy").await?, p.tenant("quiet").await?);
    p.number(&a, "+15550066001", "meta", "pnid-iso-a", 80, None)
        .await?;
    p.number(&b, "+15550066002", "meta", "pnid-iso-b", 80, None)
        .await?;
    p.endpoint(&b, "b", json!({"event_types": ["message.status.*"]}))
        .await?;
    endpoints_of_a(&p, &a, args.noisy_endpoints).await?;
    p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
        "+15550066002",
        "+919000000000",
        "wamid.iso.probe",
        "sent",
        chrono::Utc::now().timestamp(),
    ))
    .await?;
    p.wait_delivered(&["b"], 1, Duration::from_secs(60)).await?;

    // Unmeasured: the first seconds of a fresh pipeline are slower (groups settling).
    let warm = post_webhooks_paced(&p, "+15550066002", "warm-up", args).await?;
    fanout_latencies(&p, &warm).await?;
    let alone = post_webhooks_paced(&p, "+15550066002", "alone", args).await?;
    let alone = fanout_latencies(&p, &alone).await?;
    let answering = beside_a(&p, args, "answering").await?;
    set_endpoints_of_a(&p, args.noisy_endpoints, true)?;
    let failing = beside_a(&p, args, "failing").await?;
    Ok((alone, answering, failing))
}

/// B's phase beside A's load (A starts first, so its strict endpoints hold events by
/// the time B's load begins).
async fn beside_a(p: &Pipeline, args: &Args, tag: &str) -> anyhow::Result<Phase> {
    let noisy_tag = format!("noisy-{tag}");
    let noisy_load = post_webhooks(
        p,
        "+15550066001",
        &noisy_tag,
        args.noisy_webhooks_per_sec,
        args.phase + Duration::from_secs(10),
    );
    let quiet_load = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        post_webhooks_paced(p, "+15550066002", tag, args).await
    };
    let (noisy, beside) = tokio::join!(noisy_load, quiet_load);
    noisy?;
    fanout_latencies(p, &beside?).await
}

async fn post_webhooks_paced(
    p: &Pipeline,
    number: &str,
    tag: &str,
    args: &Args,
) -> anyhow::Result<Vec<(String, i64)>> {
    post_webhooks(p, number, tag, args.webhooks_per_sec, args.phase).await
}

/// A's endpoints: strict, on A's number.
async fn endpoints_of_a(p: &Pipeline, a: &TestTenant, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        p.endpoint(
            a,
            &format!("a-{i}"),
            json!({"event_types": ["message.status.*"], "ordering": "strict"}),
        )
        .await?;
    }
    Ok(())
}

/// A's endpoints answer 503 (`down`) or 200.
fn set_endpoints_of_a(p: &Pipeline, n: usize, down: bool) -> anyhow::Result<()> {
    for i in 0..n {
        p.endpoint_sim().set(
            &format!("a-{i}"),
            None,
            Some(endpoint_sim::Behavior {
                down,
                ..Default::default()
            }),
        )?;
    }
    Ok(())
}

/// Posted → first 2xx at B's endpoint, for every event in `posted`.
async fn fanout_latencies(p: &Pipeline, posted: &[(String, i64)]) -> anyhow::Result<Phase> {
    let wanted: HashMap<&str, i64> = posted.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let first = || {
        let mut first: HashMap<String, i64> = HashMap::new();
        for r in p.endpoint_sim().received("b") {
            if r.answered == 200 && wanted.contains_key(r.webhook_id.as_str()) {
                let e = first.entry(r.webhook_id).or_insert(r.received_at_ms);
                *e = (*e).min(r.received_at_ms);
            }
        }
        first
    };
    wait_until(
        "every B event at B's endpoint",
        Duration::from_secs(300),
        || async { Ok(first().len() == wanted.len()) },
    )
    .await?;
    Ok(phase(
        first()
            .into_iter()
            .map(|(id, at)| Duration::from_millis((at - wanted[id.as_str()]).max(0) as u64))
            .collect(),
    ))
}

async fn send_run(args: &Args) -> anyhow::Result<(Phase, Phase)> {
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    p.wait_send_path_ready().await?;
    let (a, b) = (p.tenant("noisy").await?, p.tenant("quiet").await?);
    p.number(&a, "+15550066011", "meta", "pnid-iso-sa", 80, None)
        .await?;
    p.number(&b, "+15550066012", "meta", "pnid-iso-sb", 80, None)
        .await?;
    p.sim().set_behavior(Behavior {
        tiers: HashMap::from([("pnid-iso-sa".into(), 80), ("pnid-iso-sb".into(), 80)]),
        no_callbacks: true,
        ..Behavior::default()
    });
    // The send API knows the numbers once a send from each is accepted.
    for (t, from) in [(&a, "+15550066011"), (&b, "+15550066012")] {
        wait_until("the number known", Duration::from_secs(30), || async {
            Ok(p.send_text(t, from, "+4915100000000", "probe").await?.0 == 202)
        })
        .await?;
    }

    // Unmeasured: the first seconds of a fresh pipeline are slower (seen: a few sends
    // 2.7 s late while groups settle).
    let warm = send_paced(&p, &b, "warm-up", args).await?;
    send_latencies(&p, &warm).await?;
    let alone = send_paced(&p, &b, "alone", args).await?;
    let alone = send_latencies(&p, &alone).await?;
    let backlog: Vec<serde_json::Value> = (0..args.backlog)
        .map(|i| json!({"from": "+15550066011", "to": format!("+4915{:09}", i % 1000), "type": "text", "text": {"body": format!("backlog-{i}")}}))
        .collect();
    for chunk in backlog.chunks(1000) {
        let (s, v) = p
            .call(
                reqwest::Method::POST,
                "/v1/messages/batch",
                &a.key,
                Some(json!({ "messages": chunk })),
                &[],
            )
            .await?;
        anyhow::ensure!(s == 200 && v["rejected"] == 0, "backlog batch: {s} {v}");
    }
    let beside = send_paced(&p, &b, "beside", args).await?;
    let beside = send_latencies(&p, &beside).await?;
    let parked = p
        .pg_count("SELECT count(*) FROM outbound_messages WHERE message->'text'->>'body' LIKE 'backlog-%' AND state NOT IN ('accepted', 'failed', 'unknown')")
        .await?;
    println!(
        "  A's backlog still waiting when B's phase ended: {parked} of {}",
        args.backlog
    );
    Ok((alone, beside))
}

/// B's sends at `sends_per_sec` for the phase; returns (text, posted at ms).
async fn send_paced(
    p: &Pipeline,
    b: &TestTenant,
    tag: &str,
    args: &Args,
) -> anyhow::Result<Vec<(String, i64)>> {
    paced(args.sends_per_sec, args.phase, |i| {
        let text = format!("iso-{tag}-{i}");
        async move {
            let at = now_ms();
            let (s, v) = p
                .send_text(b, "+15550066012", &format!("+4916{:09}", i % 100), &text)
                .await?;
            anyhow::ensure!(s == 202, "send: {s} {v}");
            anyhow::Ok((text, at))
        }
    })
    .await
}

/// Posted → called at the BSP (the simulator's arrival time), for every send in `posted`.
async fn send_latencies(p: &Pipeline, posted: &[(String, i64)]) -> anyhow::Result<Phase> {
    let wanted: HashMap<&str, i64> = posted.iter().map(|(t, at)| (t.as_str(), *at)).collect();
    let calls = || {
        let mut first: HashMap<String, i64> = HashMap::new();
        for c in p.sim().calls() {
            if wanted.contains_key(c.text.as_str()) {
                let e = first.entry(c.text).or_insert(c.at_ms);
                *e = (*e).min(c.at_ms);
            }
        }
        first
    };
    wait_until(
        "every B send at the BSP",
        Duration::from_secs(300),
        || async { Ok(calls().len() == wanted.len()) },
    )
    .await?;
    Ok(phase(
        calls()
            .into_iter()
            .map(|(t, at)| Duration::from_millis((at - wanted[t.as_str()]).max(0) as u64))
            .collect(),
    ))
}
