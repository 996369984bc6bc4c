//! The campaign benchmark: one campaign of N recipients across K numbers (tier 1,000
//! each, their WABA's template served by the simulator) while a live client keeps
//! sending single messages through the API at a steady rate. Printed: the live send
//! API's latency before and during the campaign, the campaign's release and acceptance
//! rate against the tiers' sum, and when it was all accepted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::bsp_sim::SimSecrets;
use crate::sends::{pct, sim_credentials, Api};

pub struct Opts {
    pub admin: String,
    pub sim_url: String,
    pub database_url: String,
    pub recipients: usize,
    pub numbers: usize,
    /// Live single sends per second during the whole run.
    pub live_rate: f64,
    /// Seconds of live sends before the campaign starts (the baseline).
    pub baseline_secs: f64,
}

const WABA: &str = "900000000000001";

pub async fn run(api: &Api, secrets: &SimSecrets, o: &Opts) -> anyhow::Result<()> {
    let run = format!("cb{}", std::process::id());
    let t = api
        .ok(
            Method::POST,
            "/admin/tenants",
            &o.admin,
            Some(
                json!({"name": run, "api_rate_per_sec": 100_000, "enforce_service_window": false}),
            ),
        )
        .await?;
    let tenant = t["id"].as_str().unwrap_or_default().to_string();
    let key = api
        .ok(
            Method::POST,
            &format!("/admin/tenants/{tenant}/api-keys"),
            &o.admin,
            None,
        )
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.ok(
        Method::PUT,
        &format!("/admin/tenants/{tenant}/credentials/meta"),
        &o.admin,
        Some(sim_credentials(secrets, "meta")),
    )
    .await?;
    api.http
        .post(format!("{}/_sim/behavior", o.sim_url))
        .json(&json!({"templates": {WABA: [{"name": "bench_offer", "language": "en_US", "status": "APPROVED",
            "category": "MARKETING", "components": [{"type": "BODY", "text": "{{1}}, this week only."}]}]}}))
        .send()
        .await?
        .error_for_status()?;
    let from: Vec<String> = (0..o.numbers).map(|i| format!("+1555030{i:04}")).collect();
    for f in &from {
        api.ok(Method::PUT, &format!("/admin/tenants/{tenant}/numbers/{}", f.replace('+', "%2B")), &o.admin,
            Some(json!({"bsp": "meta", "bsp_account_id": f.trim_start_matches('+'), "tier_mps": 1000, "waba_id": WABA})))
            .await?;
    }
    // The template synced (the routers' interval is the benchmark script's).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = api
            .call(Method::GET, "/v1/templates", &key, None, &[])
            .await?;
        if v["data"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the template never synced: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Live sends at a steady rate, each latency tagged with whether the campaign ran.
    let campaign_on = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let (api, key, from, on, stop) = (
            Api {
                http: api.http.clone(),
                gateway: api.gateway.clone(),
            },
            key.clone(),
            from[0].clone(),
            campaign_on.clone(),
            stop.clone(),
        );
        let every = Duration::from_secs_f64(1.0 / o.live_rate.max(0.1));
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            let mut tick = tokio::time::interval(every);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let (api, key, from, on) = (
                    Api {
                        http: api.http.clone(),
                        gateway: api.gateway.clone(),
                    },
                    key.clone(),
                    from.clone(),
                    on.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let during = on.load(Ordering::Relaxed);
                    let body = json!({"from": from, "to": format!("+49151{:08}", 60_000_000 + i), "type": "text", "text": {"body": format!("live {i}")}});
                    let t0 = Instant::now();
                    let r = api.call(Method::POST, "/v1/messages", &key, Some(body), &[]).await;
                    let ok = matches!(r, Ok((202, _)));
                    if !ok && i <= 3 {
                        eprintln!("live send refused: {r:?}");
                    }
                    (during, t0.elapsed(), ok)
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                if let Ok(r) = t.await {
                    out.push(r);
                }
            }
            out
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(o.baseline_secs)).await;

    let mut csv = String::with_capacity(o.recipients * 32);
    for i in 0..o.recipients {
        csv.push_str(&format!("+49152{:08},Customer {i}\n", 40_000_000 + i));
    }
    campaign_on.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (s, c) = api
        .call(
            Method::POST,
            "/v1/campaigns",
            &key,
            Some(
                json!({"name": "bench", "template": {"name": "bench_offer", "language": "en_US"},
                "from": from, "recipients_csv": csv, "rate_per_sec": 1000 * o.numbers}),
            ),
            &[],
        )
        .await?;
    anyhow::ensure!(s == 201, "campaign: {s} {c}");
    let created = started.elapsed();
    let id = c["id"].as_str().unwrap_or_default().to_string();
    println!("campaign: {} recipients from {} numbers (tiers' sum {} mps); created with its pre-flight in {:.2} s",
        o.recipients, o.numbers, 1000 * o.numbers, created.as_secs_f64());

    let pool = sqlx::PgPool::connect(&o.database_url).await?;
    let accepted = |pool: sqlx::PgPool, id: String| async move {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*) FILTER (WHERE r.state = 'released'), count(o.message_id) FILTER (WHERE o.state IN ('accepted', 'failed', 'unknown')) \
             FROM campaign_recipients r LEFT JOIN outbound_messages o ON o.message_id = r.message_id WHERE r.campaign_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .map(|r| (r.0 as usize, r.1 as usize))
        .unwrap_or((0, 0))
    };
    let mut first_accept: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let done = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (released, finals) = accepted(pool.clone(), id.clone()).await;
        if finals > 0 && first_accept.is_none() {
            first_accept = Some(Instant::now());
        }
        if finals >= o.recipients {
            break started.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "campaign not done: {released} released, {finals} answered"
        );
    };
    campaign_on.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let lat = live.await?;
    let (mut before, mut during): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for (d, l, ok) in lat {
        errors += usize::from(!ok);
        if d {
            during.push(l)
        } else {
            before.push(l)
        }
    }
    before.sort();
    during.sort();
    let rate = o.recipients as f64 / done.as_secs_f64();
    println!("campaign done: every recipient answered by the BSP in {:.1} s = {:.0} sends/s ({:.1} % of the tiers' sum)",
        done.as_secs_f64(), rate, 100.0 * rate / (1000 * o.numbers) as f64);
    println!("live sends ({:.0}/s): before the campaign n={} p50 {:.2} ms p99 {:.2} ms; during n={} p50 {:.2} ms p99 {:.2} ms; errors {errors}",
        o.live_rate, before.len(), pct(&before, 0.5), pct(&before, 0.99), during.len(), pct(&during, 0.5), pct(&during, 0.99));
    Ok(())
}
