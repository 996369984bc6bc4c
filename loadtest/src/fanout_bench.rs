//! The fan-out benchmark: one tenant, `endpoints` receivers in this process (the
//! client-endpoint simulator, counting only), `events` Meta status webhooks posted to
//! the gateway, every endpoint subscribed to every event. Measures deliveries per second
//! from the first post until every healthy endpoint has every event, per-endpoint rates,
//! and event-to-delivery latency from the fan-out's own histogram (gateway receipt →
//! the endpoint's 2xx). `hang` endpoints never answer (the dead neighbour).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::json;

use crate::endpoint_sim::{Behavior, EndpointSim, EndpointUpdate};
use crate::sends::Api;

pub struct Opts {
    pub admin: String,
    pub meta_secret: String,
    pub sim_addr: String,
    pub fanout_metrics: String,
    pub endpoints: usize,
    pub hang: usize,
    pub events: usize,
    pub concurrency: usize,
    /// Events per second to post at (0 = as fast as the gateway takes them).
    pub rate: f64,
}

fn meta_status(number: &str, customer: &str, wamid: &str, ts: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": number, "phone_number_id": format!("pnid-{number}")},
        "statuses": [{"id": wamid, "status": "sent", "timestamp": ts.to_string(), "recipient_id": customer}]}}]}]})
    .to_string()
    .into_bytes()
}

/// Cumulative histogram buckets (le → count) of one labelled series.
async fn histogram(http: &reqwest::Client, url: &str) -> BTreeMap<String, f64> {
    let text = match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return BTreeMap::new(),
    };
    text.lines()
        .filter(|l| {
            l.starts_with("switchboard_fanout_event_to_delivery_seconds_bucket")
                && l.contains("ordering=\"conversation\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, v))
        })
        .collect()
}

/// The fan-out's attempt and overflow counters, by series (`attempts{trigger,outcome}`,
/// `tenant_overflow`, `strict_overflow`), so a run says how its deliveries went.
async fn counters(http: &reqwest::Client, url: &str) -> BTreeMap<String, f64> {
    let text = match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return BTreeMap::new(),
    };
    text.lines()
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let name = series.strip_prefix("switchboard_fanout_")?;
            let name = name.strip_suffix("_total").unwrap_or(name);
            let short = if let Some(labels) = name.strip_prefix("attempts_total{") {
                let get = |k: &str| {
                    labels
                        .split(&format!("{k}=\""))
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .unwrap_or("?")
                        .to_string()
                };
                format!("{}/{}", get("trigger"), get("outcome"))
            } else if let Some(labels) = name.strip_prefix("deferred_total{") {
                let why = labels.split('"').nth(1).unwrap_or("?");
                format!("deferred/{why}")
            } else if name.starts_with("scheduler_lag_seconds_bucket{") {
                let le = name.split('"').nth(1).unwrap_or("?");
                format!("lag_le_{le}")
            } else if name == "tenant_overflow" || name == "strict_overflow" {
                name.to_string()
            } else {
                return None;
            };
            Some((short, v.parse().ok()?))
        })
        .collect()
}

/// The q-quantile from cumulative buckets, interpolated linearly inside its bucket.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = (c - prev.1).max(1e-9);
            return Some(prev.0 + (le - prev.0) * (target - prev.1) / span);
        }
        prev = (le, c);
    }
    None
}

pub async fn run(api: &Api, o: &Opts) -> anyhow::Result<()> {
    use reqwest::Method;
    let sim = EndpointSim::new();
    sim.set_defaults(EndpointUpdate {
        record: Some(false),
        ..Default::default()
    })?;
    let (addr, _task) = sim.serve(&o.sim_addr).await?;
    let run = chrono::Utc::now().timestamp_millis();
    let number = format!("+1{}", 5_000_000_000i64 + run % 1_000_000_000);
    let t = api
        .ok(
            Method::POST,
            "/admin/tenants",
            &o.admin,
            Some(json!({"name": format!("fanout-bench-{run}")})),
        )
        .await?;
    let tenant = t["id"].as_str().unwrap_or_default().to_string();
    let k = api
        .ok(
            Method::POST,
            &format!("/admin/tenants/{tenant}/api-keys"),
            &o.admin,
            Some(json!({"name": "bench"})),
        )
        .await?;
    let key = k["key"].as_str().unwrap_or_default().to_string();
    api.ok(
        Method::PUT,
        &format!(
            "/admin/tenants/{tenant}/numbers/{}",
            number.replace('+', "%2B")
        ),
        &o.admin,
        Some(json!({"bsp": "meta", "bsp_account_id": format!("pnid-{number}"), "tier_mps": 1000})),
    )
    .await?;
    let mut healthy = Vec::new();
    for i in 0..o.endpoints {
        let name = format!("ep{i}");
        let (s, v) = api
            .call(
                Method::POST,
                "/v1/endpoints",
                &key,
                Some(json!({"url": format!("http://{addr}/e/{name}")})),
                &[],
            )
            .await?;
        anyhow::ensure!(s == 201, "create endpoint: {s} {v}");
        let behavior = (i < o.hang).then(|| Behavior {
            timeout: true,
            ..Default::default()
        });
        sim.set(
            &name,
            Some(vec![v["secret"].as_str().unwrap_or_default().to_string()]),
            behavior,
        )?;
        if i >= o.hang {
            healthy.push(name);
        }
    }
    let post = |body: Vec<u8>| api.post_meta(&o.meta_secret, body);
    // The fan-out learns endpoints from wa.config: probe until every healthy one answers.
    let probe_start = Instant::now();
    loop {
        post(meta_status(
            &number,
            "+919000000000",
            &format!("wamid.probe.{run}.{}", probe_start.elapsed().as_millis()),
            run / 1000,
        ))
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if healthy.iter().all(|n| sim.stats_of(n).unique_ok > 0) {
            break;
        }
        anyhow::ensure!(
            probe_start.elapsed() < Duration::from_secs(60),
            "endpoints never got the probe"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.clear_all();
    let metrics_url = format!("{}/metrics", o.fanout_metrics.trim_end_matches('/'));
    let before = histogram(&api.http, &metrics_url).await;
    let counted_before = counters(&api.http, &metrics_url).await;

    let started = Instant::now();
    let ts = run / 1000;
    let start = tokio::time::Instant::now();
    let paced = (0..o.events).map(|i| {
        let body = meta_status(
            &number,
            &format!("+9198{:08}", i % 500),
            &format!("wamid.b.{run}.{i}"),
            ts,
        );
        let send = post(body);
        let at = (o.rate > 0.0).then(|| start + Duration::from_secs_f64(i as f64 / o.rate));
        async move {
            if let Some(at) = at {
                tokio::time::sleep_until(at).await;
            }
            send.await
        }
    });
    let results: Vec<anyhow::Result<()>> = stream::iter(paced)
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let posted = started.elapsed();
    let mut done_at: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Duration::from_secs(600);
    while done_at.len() < healthy.len() && started.elapsed() < deadline {
        for n in &healthy {
            if !done_at.contains_key(n) && sim.stats_of(n).unique_ok >= o.events as u64 {
                done_at.insert(n.clone(), started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = done_at.values().max().copied().unwrap_or(deadline);
    let delivered: u64 = healthy.iter().map(|n| sim.stats_of(n).unique_ok).sum();
    let dups: u64 = healthy.iter().map(|n| sim.stats_of(n).duplicates_ok).sum();
    let bad: u64 = healthy.iter().map(|n| sim.stats_of(n).bad_signatures).sum();
    let mut per_endpoint: Vec<f64> = healthy
        .iter()
        .map(|n| o.events as f64 / done_at.get(n).copied().unwrap_or(deadline).as_secs_f64())
        .collect();
    per_endpoint.sort_by(|a, b| a.total_cmp(b));
    let after = histogram(&api.http, &metrics_url).await;
    let counted: Vec<String> = counters(&api.http, &metrics_url)
        .await
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - counted_before.get(&k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{k}={d:.0}"))
        })
        .collect();
    let mut diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| {
            let le_f = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            (le_f, v - before.get(le).copied().unwrap_or(0.0))
        })
        .collect();
    diff.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ms = |q| quantile(&diff, q).map_or("?".to_string(), |s| format!("{:.0}", s * 1000.0));
    let within_500 = diff
        .iter()
        .find(|(le, _)| *le == 0.5)
        .map(|(_, c)| *c)
        .unwrap_or(0.0)
        / diff.last().map(|(_, c)| *c).unwrap_or(1.0).max(1.0);
    println!(
        "fanout_bench endpoints={} hang={} events={} rate={} posted_in={:.1}s deliveries={delivered} seconds={:.1} deliveries_per_s={:.0} \
         per_endpoint_events_per_s(min/median/max)={:.0}/{:.0}/{:.0} event_to_delivery_ms(p50/p99)={}/{} within_500ms={:.4} duplicates={dups} bad_signatures={bad} complete={}",
        o.endpoints,
        o.hang,
        o.events,
        if o.rate > 0.0 { format!("{}/s", o.rate) } else { "max".into() },
        posted.as_secs_f64(),
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        per_endpoint.first().unwrap_or(&0.0),
        per_endpoint.get(per_endpoint.len() / 2).unwrap_or(&0.0),
        per_endpoint.last().unwrap_or(&0.0),
        ms(0.5),
        ms(0.99),
        within_500,
        done_at.len() == healthy.len(),
    );
    println!("fanout_counters {}", counted.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.7).unwrap() - 0.3).abs() < 1e-9);
        assert!((quantile(&b, 0.99).unwrap() - 0.95).abs() < 1e-9);
        assert_eq!(quantile(&[], 0.5), None);
    }
}
