//! The live-events benchmark: `tenants` tenants (a business number each), `clients`
//! Server-Sent Events connections spread evenly over them, and Meta status webhooks
//! posted at `rate` per second for `seconds`, round-robin over the tenants. Every client
//! must get every event of its tenant: counted per client (a starved client shows as
//! the minimum), with the delay from the post's start (the gateway's receipt follows it
//! by the accept latency) to the client reading the event, read off the wamid, which
//! carries the post's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::sends::Api;

pub struct Opts {
    pub admin: String,
    pub meta_secret: String,
    pub tenants: usize,
    pub clients: usize,
    pub rate: f64,
    pub seconds: f64,
    pub concurrency: usize,
}

fn micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn meta_status(number: &str, wamid: &str) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": number, "phone_number_id": format!("pnid-{number}")},
        "statuses": [{"id": wamid, "status": "sent", "timestamp": (micros() / 1_000_000).to_string(), "recipient_id": "+919800000001"}]}}]}]})
    .to_string()
    .into_bytes()
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    /// Post → read delays of the measured events, in microseconds.
    delays: Mutex<Vec<u32>>,
}

/// The post time in a measured event's wamid (`wamid.sb.<run>.<seq>.<micros>`).
fn posted_at(data: &str, tag: &str) -> Option<u64> {
    let at = data.find(tag)? + tag.len();
    let rest = data[at..].strip_prefix('.')?;
    let rest = &rest[rest.find('.')? + 1..];
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

/// Read one SSE connection until `stop`, counting the events whose wamid has `tag`.
async fn client(
    http: reqwest::Client,
    url: String,
    key: String,
    tag: String,
    seen: Arc<Seen>,
    ready: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let r = http.get(&url).bearer_auth(&key).send().await?;
    anyhow::ensure!(r.status() == 200, "stream: {}", r.status());
    ready.fetch_add(1, Ordering::Relaxed);
    let mut body = r.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            if let Some(t) = posted_at(&text, &tag) {
                let now = micros();
                seen.events.fetch_add(1, Ordering::Relaxed);
                let d = now.saturating_sub(t).min(u32::MAX as u64) as u32;
                seen.delays
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(d);
            }
        }
    }
    Ok(())
}

pub async fn run(api: &Api, o: &Opts) -> anyhow::Result<()> {
    use reqwest::Method;
    let run = chrono::Utc::now().timestamp_millis() % 1_000_000_000;
    let mut tenants = Vec::new();
    for t in 0..o.tenants {
        let number = format!("+1{}", 6_000_000_000i64 + run * 10 + t as i64);
        let v = api
            .ok(
                Method::POST,
                "/admin/tenants",
                &o.admin,
                Some(json!({"name": format!("stream-bench-{run}-{t}")})),
            )
            .await?;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let k = api
            .ok(
                Method::POST,
                &format!("/admin/tenants/{id}/api-keys"),
                &o.admin,
                Some(json!({"name": "bench"})),
            )
            .await?;
        api.ok(
            Method::PUT,
            &format!("/admin/tenants/{id}/numbers/{}", number.replace('+', "%2B")),
            &o.admin,
            Some(json!({"bsp": "meta", "bsp_account_id": format!("pnid-{number}"), "tier_mps": 1000})),
        )
        .await?;
        tenants.push((number, k["key"].as_str().unwrap_or_default().to_string()));
    }
    let post = |body: Vec<u8>| api.post_meta(&o.meta_secret, body);

    // One probe client per tenant: live once each tenant's probe comes through (the
    // normalizer knows the numbers, the gateway's feed reads).
    let stream_url = format!("{}/v1/events/stream", api.gateway);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let ready = Arc::new(AtomicU64::new(0));
    let probe_tag = format!("wamid.sp.{run}");
    let mut probes = Vec::new();
    for (_, key) in &tenants {
        let seen = Arc::new(Seen::default());
        tokio::spawn(client(
            http.clone(),
            stream_url.clone(),
            key.clone(),
            probe_tag.clone(),
            seen.clone(),
            ready.clone(),
        ));
        probes.push(seen);
    }
    let started = Instant::now();
    let mut i = 0u64;
    while probes.iter().any(|s| s.events.load(Ordering::Relaxed) == 0) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(90),
            "the probes never came through"
        );
        for (number, _) in &tenants {
            post(meta_status(
                number,
                &format!("{probe_tag}.{i}.{}", micros()),
            ))
            .await?;
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The measured clients.
    let tag = format!("wamid.sb.{run}");
    let ready = Arc::new(AtomicU64::new(0));
    let mut seen = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let t = c % o.tenants;
        let s = Arc::new(Seen::default());
        tasks.push(tokio::spawn(client(
            http.clone(),
            stream_url.clone(),
            tenants[t].1.clone(),
            tag.clone(),
            s.clone(),
            ready.clone(),
        )));
        seen.push((t, s));
    }
    let opened = Instant::now();
    while ready.load(Ordering::Relaxed) < o.clients as u64 {
        if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
            anyhow::bail!("a client ended before the run: {:?}", t);
        }
        anyhow::ensure!(
            opened.elapsed() < Duration::from_secs(60),
            "only {} of {} streams opened",
            ready.load(Ordering::Relaxed),
            o.clients
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "stream_bench: {} streams open in {:.1} s",
        o.clients,
        opened.elapsed().as_secs_f64()
    );

    // Post at `rate` for `seconds`, round-robin over the tenants.
    let n = (o.rate * o.seconds) as usize;
    let start = tokio::time::Instant::now();
    let paced = (0..n).map(|i| {
        let at = start + Duration::from_secs_f64(i as f64 / o.rate);
        let number = tenants[i % o.tenants].0.clone();
        let tag = tag.clone();
        let post = &post;
        async move {
            tokio::time::sleep_until(at).await;
            post(meta_status(&number, &format!("{tag}.{i}.{}", micros()))).await
        }
    });
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(paced)
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let posted = start.elapsed().as_secs_f64();
    let per_tenant: Vec<u64> = (0..o.tenants)
        .map(|t| (0..n).filter(|i| i % o.tenants == t).count() as u64)
        .collect();
    let want: u64 = seen.iter().map(|(t, _)| per_tenant[*t]).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = || {
        seen.iter()
            .map(|(_, s)| s.events.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while got() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = start.elapsed().as_secs_f64();
    let mut all: Vec<u32> = Vec::new();
    let mut short = 0;
    let mut least = f64::MAX;
    for (t, s) in &seen {
        let e = s.events.load(Ordering::Relaxed);
        if e < per_tenant[*t] {
            short += 1;
        }
        least = least.min(e as f64 / per_tenant[*t].max(1) as f64);
        all.extend(s.delays.lock().unwrap_or_else(|p| p.into_inner()).iter());
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| *d as f64 / 1000.0)
    };
    println!(
        "stream_bench tenants={} clients={} rate={}/s posted={n} in {posted:.1}s deliveries={} of {want} by {drained:.1}s \
         ({:.0}/s) post_to_client_ms(p50/p90/p99/max)={:.1}/{:.1}/{:.1}/{:.1} clients_short={short} least_fraction={least:.4}",
        o.tenants,
        o.clients,
        o.rate,
        got(),
        got() as f64 / drained,
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_post_time_is_read_off_the_wamid() {
        let data = r#"data: {"type":"message.status.sent","data":{"wamid":"wamid.sb.42.17.1764000000123456","x":1}}"#;
        assert_eq!(
            super::posted_at(data, "wamid.sb.42"),
            Some(1_764_000_000_123_456)
        );
        assert_eq!(super::posted_at(data, "wamid.sp.42"), None);
    }
}
