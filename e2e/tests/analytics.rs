//! The analytics API against a brute-force count of what the test sent: Meta status
//! webhooks in a shuffled order with repeats, `read` without `delivered`, failures and
//! pricing, template sends through the API, inbound messages, two tenants; through the
//! real gateway, router, normalizer, ch-sink and ClickHouse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::{bsp, wait_until, Options, Pipeline};
use switchboard_loadtest::bsp_sim::Behavior;

const A_API: &str = "+15550401";
const A_HOOKS: &str = "+15550402";
const B_HOOKS: &str = "+15550403";

/// One status webhook the test posts.
#[derive(Clone)]
struct Post {
    msg: usize,
    status: &'static str,
    ts: i64,
}

/// A message and what the test knows of it.
struct Msg {
    tenant: usize,
    business: &'static str,
    customer: String,
    country: &'static str,
    wamid: String,
    template: Option<(&'static str, &'static str)>,
    pricing: (&'static str, &'static str),
    error: u32,
}

/// A stage a message reached first with one event, as the rollups should count it.
#[derive(Debug, Clone)]
struct Credit {
    msg: usize,
    stage: &'static str,
    ts: i64,
    latency_ms: Option<i64>,
}

fn meta_status(m: &Msg, status: &str, ts: i64) -> Vec<u8> {
    let mut s = json!({"id": m.wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": m.customer});
    if matches!(status, "delivered" | "read") {
        s["pricing"] = json!({"billable": m.pricing.1 == "regular", "pricing_model": "PMP",
                              "category": m.pricing.0, "type": m.pricing.1});
    }
    if status == "failed" {
        s["errors"] = json!([{"code": m.error, "title": format!("error {}", m.error)}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": m.business, "phone_number_id": format!("pnid-{}", m.business)},
        "statuses": [s]}}]}]})
    .to_string()
    .into_bytes()
}

/// What the pipeline should make of the posts: the first of each (message, status)
/// counts (repeats share an event id); per message, each stage is credited by the first
/// event implying it, in arrival order; latency from the earliest `sent` seen so far.
fn credits(posts: &[Post], msgs: &[Msg], api_sent_ms: &HashMap<usize, i64>) -> Vec<Credit> {
    let mut seen = HashSet::new();
    let mut reached: HashMap<usize, HashSet<&str>> = HashMap::new();
    let mut sent_at: HashMap<usize, i64> = api_sent_ms.clone();
    let mut out = Vec::new();
    for (i, _) in msgs
        .iter()
        .enumerate()
        .filter(|(i, _)| api_sent_ms.contains_key(i))
    {
        reached.entry(i).or_default().insert("sent");
        out.push(Credit {
            msg: i,
            stage: "sent",
            ts: api_sent_ms[&i] / 1000,
            latency_ms: None,
        });
    }
    for p in posts {
        if !seen.insert((p.msg, p.status)) {
            continue;
        }
        let implied: &[&str] = match p.status {
            "sent" => &["sent"],
            "delivered" => &["sent", "delivered", "priced"],
            "read" => &["sent", "delivered", "read", "priced"],
            "failed" => &["failed"],
            _ => &[],
        };
        if p.status == "sent" {
            let at = sent_at.entry(p.msg).or_insert(p.ts * 1000);
            *at = (*at).min(p.ts * 1000);
        }
        let r = reached.entry(p.msg).or_default();
        for stage in implied {
            if r.insert(stage) {
                let latency_ms = matches!(*stage, "delivered" | "read")
                    .then(|| sent_at.get(&p.msg).map(|s| (p.ts * 1000 - s).max(0)))
                    .flatten();
                out.push(Credit {
                    msg: p.msg,
                    stage,
                    ts: p.ts,
                    latency_ms,
                });
            }
        }
    }
    out
}

/// ClickHouse's `quantile` on every value (no sampling below 8,192 values):
/// linear interpolation between the sorted values around `level * (n - 1)`.
fn quantile(sorted: &[f64], level: f64) -> f64 {
    let index = (level * (sorted.len() - 1) as f64).clamp(0.0, (sorted.len() - 1) as f64);
    let i = index as usize;
    let frac = index - i as f64;
    if i + 1 >= sorted.len() {
        return sorted[i];
    }
    sorted[i] * (1.0 - frac) + sorted[i + 1] * frac
}

async fn get(p: &Pipeline, key: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    p.call(Method::GET, path, key, None, &[]).await
}

/// `data` of an answer, keyed by the given fields.
fn by(answer: &Value, keys: &[&str]) -> BTreeMap<String, Value> {
    answer["data"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|r| {
            let k = keys
                .iter()
                .map(|k| {
                    r[*k]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or(r[*k].to_string())
                })
                .collect::<Vec<_>>()
                .join("|");
            (k, r.clone())
        })
        .collect()
}

fn counts(map: &BTreeMap<String, Value>, measures: &[&str]) -> BTreeMap<String, Vec<u64>> {
    map.iter()
        .map(|(k, r)| {
            (
                k.clone(),
                measures
                    .iter()
                    .map(|m| r[*m].as_u64().unwrap_or(u64::MAX))
                    .collect(),
            )
        })
        .collect()
}

/// Brute-force funnel counts of `credits`, keyed by `key`.
fn funnel<F: Fn(&Credit) -> Option<String>>(
    credits: &[Credit],
    key: F,
) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in credits {
        let Some(k) = key(c) else { continue };
        let i = match c.stage {
            "sent" => 0,
            "delivered" => 1,
            "read" => 2,
            "failed" => 3,
            _ => continue,
        };
        out.entry(k).or_insert_with(|| vec![0; 4])[i] += 1;
    }
    out
}

/// The calendar day of `ts` at a fixed UTC offset (Kolkata +5:30 and São Paulo −3:00
/// have no daylight saving).
fn local_day(ts: i64, offset_secs: i64) -> String {
    chrono::DateTime::from_timestamp(ts + offset_secs, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_answers_equal_brute_force_counts_of_what_was_sent() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        gateway_env: vec![("SWITCHBOARD_ANALYTICS_MAX_GROUPS", "5".into())],
        ..Default::default()
    })
    .await?;
    let a = p.tenant("a").await?;
    let b = p.tenant("b").await?;
    p.number(&a, A_API, "meta", &format!("pnid-{A_API}"), 80, None)
        .await?;
    p.number(&a, A_HOOKS, "meta", &format!("pnid-{A_HOOKS}"), 80, None)
        .await?;
    p.number(&b, B_HOOKS, "meta", &format!("pnid-{B_HOOKS}"), 80, None)
        .await?;
    p.wait_send_path_ready().await?;

    // The normalizer stamps tenants once it knows the numbers: a `deleted` probe per
    // number (it reaches no funnel stage), polled until stored as the tenant's.
    for (t, n) in [(&a, A_HOOKS), (&b, B_HOOKS)] {
        let probe = format!("wamid.{}.probe{n}", p.id);
        p.post_meta_until_accepted(&bsp::meta_status(
            n,
            "+919000000000",
            &probe,
            "deleted",
            chrono::Utc::now().timestamp(),
        ))
        .await?;
        wait_until(
            "the probe stored as the tenant's",
            Duration::from_secs(60),
            || async {
                Ok(p.ch_count(&format!(
                    "SELECT count() FROM events WHERE wamid = '{probe}' AND tenant_id = '{}'",
                    t.id
                ))
                .await?
                    == 1)
            },
        )
        .await?;
    }

    // Messages. Times two days back, either side of midnight in Kolkata (18:30 UTC) and
    // in São Paulo (03:00 UTC the next day).
    let day = (chrono::Utc::now().timestamp() / 86_400 - 2) * 86_400;
    let bases = [
        day + 18 * 3600 + 10 * 60,
        day + 18 * 3600 + 25 * 60,
        day + 18 * 3600 + 35 * 60,
        day + 18 * 3600 + 50 * 60,
        day + 86_400 + 2 * 3600 + 45 * 60,
        day + 86_400 + 2 * 3600 + 55 * 60,
        day + 86_400 + 3 * 3600 + 5 * 60,
        day + 86_400 + 3 * 3600 + 20 * 60,
    ];
    let customers = [
        ("+919812345670", "IN"),
        ("+5511987654320", "BR"),
        ("+14155550120", "US"),
    ];
    let pricings = [
        ("marketing", "regular"),
        ("utility", "regular"),
        ("service", "free_customer_service"),
    ];
    // Scenarios of statuses per message, in the order the BSP would send them (the
    // posts are then shuffled across and within messages).
    let scenarios: [&[&str]; 8] = [
        &["sent", "delivered", "read"],
        &["read"],
        &["sent", "failed"],
        &["delivered", "sent"],
        &["sent", "read", "delivered"],
        &["sent"],
        &["failed"],
        &["sent", "delivered"],
    ];
    let mut msgs = Vec::new();
    let mut posts = Vec::new();
    let mut rng = fastrand::Rng::with_seed(11);
    for i in 0..48 {
        let (tenant, business) = if i % 4 == 3 {
            (1, B_HOOKS)
        } else {
            (0, A_HOOKS)
        };
        let (customer, country) = customers[i % 3];
        let customer = format!("{}{}", &customer[..customer.len() - 1], i % 10);
        msgs.push(Msg {
            tenant,
            business,
            customer,
            country,
            wamid: format!("wamid.{}.an{i}", p.id),
            template: None,
            pricing: pricings[i % 3],
            error: [131026, 131049][i % 2],
        });
        let base = bases[i % bases.len()];
        for (k, s) in scenarios[i % scenarios.len()].iter().enumerate() {
            posts.push(Post {
                msg: i,
                status: s,
                ts: base + 37 * k as i64 + rng.i64(0..20),
            });
        }
    }
    // Template sends through the API (A's other number), then their statuses: the test
    // posts them, so the simulated BSP calls nothing back.
    p.sim().set_behavior(Behavior {
        no_callbacks: true,
        ..Behavior::default()
    });
    let templates = [
        ("order_update", "en_US"),
        ("promo", "pt_BR"),
        ("order_update", "hi"),
    ];
    let mut send_ids = Vec::new();
    for (j, (name, lang)) in templates.iter().cycle().take(6).enumerate() {
        let (customer, country) = customers[j % 3];
        let (s, v) = p
            .call(
                Method::POST,
                "/v1/messages",
                &a.key,
                Some(json!({"from": A_API, "to": customer, "type": "template",
                    "template": {"name": name, "language": {"code": lang}},
                    "metadata": {"campaign": "spring"}})),
                &[],
            )
            .await?;
        anyhow::ensure!(s == 202, "send: {s} {v}");
        send_ids.push(v["id"].as_str().unwrap_or_default().to_string());
        msgs.push(Msg {
            tenant: 0,
            business: A_API,
            customer: customer.to_string(),
            country,
            wamid: String::new(),
            template: Some((name, lang)),
            pricing: pricings[0],
            error: 131026,
        });
    }
    p.wait_final(&send_ids, Duration::from_secs(60)).await?;
    // Their `send accepted` events stored first, as a BSP's statuses follow the send.
    wait_until("the sends' events in ClickHouse", Duration::from_secs(60), || async {
        Ok(p.ch_count(&format!(
            "SELECT count() FROM events WHERE event_type = 'message.send_accepted' AND tenant_id = '{}'",
            a.id
        ))
        .await?
            == 6)
    })
    .await?;
    let now = chrono::Utc::now().timestamp();
    let mut api_sent_ms = HashMap::new();
    for (j, id) in send_ids.iter().enumerate() {
        let (wamid,): (Option<String>,) =
            sqlx::query_as("SELECT wamid FROM outbound_messages WHERE message_id = $1")
                .bind(id)
                .fetch_one(&p.pg)
                .await?;
        let i = 48 + j;
        msgs[i].wamid = wamid.unwrap_or_default();
        api_sent_ms.insert(i, 0);
        for (k, s) in [&["delivered", "read"][..], &["read"], &["failed"]][j % 3]
            .iter()
            .enumerate()
        {
            posts.push(Post {
                msg: i,
                status: s,
                ts: now + k as i64,
            });
        }
    }
    rng.shuffle(&mut posts);
    let repeats: Vec<Post> = posts.iter().step_by(5).cloned().collect();
    for r in repeats {
        let at = rng.usize(0..=posts.len());
        posts.insert(at, r);
    }
    for post in &posts {
        let m = &msgs[post.msg];
        let r = p.post_meta(&meta_status(m, post.status, post.ts)).await?;
        anyhow::ensure!(r.status().is_success(), "webhook: {}", r.status());
    }
    // Inbound: texts from customers of A's number.
    let mut inbound: BTreeMap<&str, u64> = BTreeMap::new();
    for k in 0..5 {
        let (customer, country) = customers[k % 3];
        let body = bsp::meta_text(
            A_HOOKS,
            customer,
            &format!("wamid.{}.in{k}", p.id),
            "hi",
            now,
        );
        anyhow::ensure!(p.post_meta(&body).await?.status().is_success());
        *inbound.entry(country).or_default() += 1;
    }

    let distinct: HashSet<(usize, &str)> = posts.iter().map(|q| (q.msg, q.status)).collect();
    let want_rows = distinct.len() as i64 + 6 + 5;
    let tenants = [a.id.clone(), b.id.clone()];
    wait_until(
        "every event in ClickHouse",
        Duration::from_secs(90),
        || async {
            Ok(p.ch_count(&format!(
            "SELECT count() FROM events WHERE tenant_id IN ('{}', '{}') AND status != 'deleted'",
            tenants[0], tenants[1]
        ))
            .await?
                >= want_rows)
        },
    )
    .await?;
    // The router's accept times, as stored, for the API sends' latency.
    for (j, m) in msgs[48..].iter().enumerate() {
        let at = p
            .ch_count(&format!(
                "SELECT toInt64(occurred_at_ms) FROM events WHERE wamid = '{}' AND event_type = 'message.send_accepted'",
                m.wamid
            ))
            .await?;
        api_sent_ms.insert(48 + j, at);
    }
    let credits = credits(&posts, &msgs, &api_sent_ms);
    let range = format!(
        "from={}&to={}",
        chrono::DateTime::from_timestamp(day - 86_400, 0)
            .unwrap()
            .to_rfc3339(),
        chrono::DateTime::from_timestamp((now / 900 + 2) * 900, 0)
            .unwrap()
            .to_rfc3339()
    )
    .replace('+', "%2B");

    // Funnel per country, A.
    let (s, f) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/funnel?{range}&granularity=total&group_by=country"),
    )
    .await?;
    assert_eq!(s, 200, "{f}");
    let want = funnel(&credits, |c| {
        (msgs[c.msg].tenant == 0).then(|| msgs[c.msg].country.to_string())
    });
    assert_eq!(
        counts(
            &by(&f, &["country"]),
            &["sent", "delivered", "read", "failed"]
        ),
        want,
        "{f}"
    );
    // B's key sees B's alone.
    let (_, fb) = get(
        &p,
        &b.key,
        &format!("/v1/analytics/funnel?{range}&granularity=total"),
    )
    .await?;
    let want_b = funnel(&credits, |c| (msgs[c.msg].tenant == 1).then(String::new));
    assert_eq!(
        counts(&by(&fb, &[]), &["sent", "delivered", "read", "failed"]),
        want_b,
        "{fb}"
    );
    assert_eq!(fb["tenant_id"], json!(b.id));

    // Days in Kolkata and São Paulo for A's webhook number: the same events, cut at
    // different midnights.
    for (zone, offset) in [("Asia/Kolkata", 19_800), ("America/Sao_Paulo", -10_800)] {
        let (s, d) = get(
            &p,
            &a.key,
            &format!("/v1/analytics/funnel?{range}&granularity=day&time_zone={zone}&business_number=%2B15550402"),
        )
        .await?;
        assert_eq!(s, 200, "{d}");
        let want = funnel(&credits, |c| {
            (msgs[c.msg].business == A_HOOKS).then(|| local_day(c.ts, offset))
        });
        assert_eq!(
            counts(
                &by(&d, &["period"]),
                &["sent", "delivered", "read", "failed"]
            ),
            want,
            "{zone}: {d}"
        );
        assert!(
            want.len() >= 2,
            "the events straddle a midnight in {zone}: {want:?}"
        );
    }

    // Failures by code, billing by category/type/country, templates.
    let (_, fl) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/failures?{range}&granularity=total"),
    )
    .await?;
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in credits
        .iter()
        .filter(|c| c.stage == "failed" && msgs[c.msg].tenant == 0)
    {
        want.entry(msgs[c.msg].error.to_string())
            .or_insert_with(|| vec![0])[0] += 1;
    }
    assert_eq!(counts(&by(&fl, &["error_code"]), &["failed"]), want, "{fl}");

    let (_, bl) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/billing?{range}&granularity=total&group_by=category,type,country"),
    )
    .await?;
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in credits
        .iter()
        .filter(|c| c.stage == "priced" && msgs[c.msg].tenant == 0)
    {
        let m = &msgs[c.msg];
        let e = want
            .entry(format!("{}|{}|{}", m.pricing.0, m.pricing.1, m.country))
            .or_insert_with(|| vec![0, 0]);
        e[0] += 1;
        e[1] += u64::from(m.pricing.1 == "regular");
    }
    assert_eq!(
        counts(
            &by(&bl, &["category", "type", "country"]),
            &["priced", "billable"]
        ),
        want,
        "{bl}"
    );

    let (_, tp) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/templates?{range}&granularity=total"),
    )
    .await?;
    let want = funnel(&credits, |c| {
        msgs[c.msg].template.map(|(n, l)| format!("{n}|{l}"))
    });
    assert_eq!(
        counts(
            &by(&tp, &["template", "language"]),
            &["sent", "delivered", "read", "failed"]
        ),
        want,
        "{tp}"
    );

    // Latency quantiles of the API sends: their send is stored before any status. (A
    // webhook `sent` may share a sink batch with an earlier `delivered`, which then gets
    // a latency that arrival order alone would not give.)
    let (_, lt) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/latency?{range}&granularity=total&group_by=business_number"),
    )
    .await?;
    let rows = by(&lt, &["business_number"]);
    let row = &rows[A_API];
    for (stage, field, count) in [
        ("delivered", "sent_to_delivered_ms", "delivered"),
        ("read", "sent_to_read_ms", "read"),
    ] {
        let mut v: Vec<f64> = credits
            .iter()
            .filter(|c| c.stage == stage && msgs[c.msg].business == A_API)
            .filter_map(|c| c.latency_ms.map(|l| l as f64))
            .collect();
        v.sort_by(f64::total_cmp);
        assert_eq!(row[count].as_u64(), Some(v.len() as u64), "{lt}");
        assert!(!v.is_empty());
        for (q, level) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let got = row[field][q].as_f64().unwrap_or(f64::NAN);
            assert!(
                (got - quantile(&v, level)).abs() < 1e-6,
                "{field}.{q}: {got} vs {v:?}"
            );
        }
    }

    // Inbound by country (and the default grouping, by type).
    let (_, ib) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/inbound?{range}&granularity=total&group_by=country"),
    )
    .await?;
    let want: BTreeMap<String, Vec<u64>> = inbound
        .iter()
        .map(|(k, v)| (k.to_string(), vec![*v]))
        .collect();
    assert_eq!(counts(&by(&ib, &["country"]), &["received"]), want, "{ib}");

    // The operator sees both tenants, each as its own key does.
    let (s, op) = p
        .call(
            Method::GET,
            &format!("/admin/analytics/funnel?{range}&granularity=total&group_by=tenant"),
            &p.send_path().admin_key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 200, "{op}");
    let ops = counts(
        &by(&op, &["tenant"]),
        &["sent", "delivered", "read", "failed"],
    );
    let total_a: Vec<u64> = (0..4)
        .map(|i| funnel(&credits, |c| (msgs[c.msg].tenant == 0).then(String::new))[""][i])
        .collect();
    assert_eq!(ops.get(&a.id), Some(&total_a), "{op}");
    assert_eq!(ops.get(&b.id), want_b.get(""), "{op}");

    // Drill-down: the failed events behind the failures report, page by page, in both
    // orders, each once, with its code; none of them for B's key.
    let failed: HashMap<String, u32> = posts
        .iter()
        .filter(|q| q.status == "failed" && msgs[q.msg].tenant == 0)
        .map(|q| (msgs[q.msg].wamid.clone(), msgs[q.msg].error))
        .collect();
    anyhow::ensure!(
        failed.len() > 3,
        "the scenario has failures to page through"
    );
    let mut pages = HashMap::new();
    for order in ["asc", "desc"] {
        let mut rows: Vec<Value> = Vec::new();
        let mut cursor = String::new();
        loop {
            let (s, page) = get(
                &p,
                &a.key,
                &format!(
                    "/v1/analytics/messages?{range}&status=failed&limit=3&order={order}{cursor}"
                ),
            )
            .await?;
            assert_eq!(s, 200, "{page}");
            let data = page["data"].as_array().cloned().unwrap_or_default();
            assert!(data.len() <= 3);
            rows.extend(data);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        let got: HashMap<String, u32> = rows
            .iter()
            .map(|r| {
                (
                    r["wamid"].as_str().unwrap_or_default().to_string(),
                    r["error_code"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(got.len(), rows.len(), "each event once ({order})");
        assert_eq!(got, failed, "{order}");
        assert!(rows
            .iter()
            .all(|r| r["status"] == "failed" && r["occurred_at"].is_string()));
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r["event_id"].as_str().unwrap_or_default().to_string())
            .collect();
        pages.insert(order, ids);
    }
    let mut reversed = pages["desc"].clone();
    reversed.reverse();
    assert_eq!(pages["asc"], reversed, "desc is asc backwards");
    let code = *failed.values().next().expect("a failure");
    let (_, one_code) = get(
        &p,
        &a.key,
        &format!("/v1/analytics/messages?{range}&status=failed&error_code={code}&limit=500"),
    )
    .await?;
    assert_eq!(
        one_code["data"].as_array().map(Vec::len),
        Some(failed.values().filter(|c| **c == code).count()),
        "{one_code}"
    );
    let (_, of_b) = get(
        &p,
        &b.key,
        &format!("/v1/analytics/messages?{range}&status=failed&limit=500"),
    )
    .await?;
    let b_rows = of_b["data"].as_array().cloned().unwrap_or_default();
    assert!(
        b_rows.iter().all(
            |r| !failed.contains_key(r["wamid"].as_str().unwrap_or_default())
                && r["business_number"] == B_HOOKS
        ),
        "{of_b}"
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("order=sideways", "order"),
        ("cursor=m1.nope", "cursor"),
        ("colour=red", "colour"),
        ("from=yesterday", "from"),
        ("from=2020-01-01T00:00:00Z", "from"),
    ] {
        let (s, v) = get(&p, &a.key, &format!("/v1/analytics/messages?{query}")).await?;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {v}"
        );
    }

    // Bad questions: 400 naming the field, nothing else answered.
    for (query, field) in [
        ("group_by=colour", "group_by"),
        ("group_by=country,country", "group_by"),
        ("from=2026-01-01T00:07:00Z", "from"),
        ("from=2020-01-01T00:00:00Z", "from"),
        ("time_zone=Nowhere/Atlantis", "time_zone"),
        ("time_zone=UTC';DROP", "time_zone"),
        ("granularity=week", "granularity"),
        ("colour=red", "colour"),
        ("group_by=tenant", "group_by"),
        // 6 groups of (business number, country) for A when at most 5 are allowed.
        (
            "granularity=total&group_by=business_number,country",
            "group_by",
        ),
    ] {
        let (s, v) = get(&p, &a.key, &format!("/v1/analytics/funnel?{query}")).await?;
        assert_eq!(s, 400, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    let (s, _) = get(&p, &a.key, "/v1/analytics/nonsense").await?;
    assert_eq!(s, 404);
    Ok(())
}
