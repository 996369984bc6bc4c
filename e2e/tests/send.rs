//! The send path end to end: send API → wa.send.requests → router → the BSP simulator
//! (speaking each BSP's API) → status webhooks back through the gateway → normalizer →
//! the stores, and `GET /v1/messages/{id}` showing it all. Every binary is a real process.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_e2e::{wait_until, Options, Pipeline};

fn send_opts() -> Options {
    Options {
        send_path: true,
        ..Default::default()
    }
}

const BSPS: [(&str, &str); 7] = [
    ("meta", "15550000001"),
    ("360dialog", "360dialog-number"),
    ("aisensy", "project-1"),
    ("gupshup", "AcmeApp"),
    ("twilio", "AC00000000000000000000000000000001"),
    ("waha", "default"),
    ("karix", "15550000007"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_through_every_bsp_comes_back_read_with_its_history() -> anyhow::Result<()> {
    let p = Pipeline::start(send_opts()).await?;
    let t = p.tenant("acme").await?;
    // BSPs repeat webhooks and deliver them out of order: the status still converges.
    p.sim()
        .set_behavior(switchboard_loadtest::bsp_sim::Behavior {
            duplicate_rate: 0.5,
            out_of_order: true,
            ..Default::default()
        });
    let mut sent = Vec::new();
    for (i, (bsp, account)) in BSPS.iter().enumerate() {
        let from = format!("+1555000000{}", i + 1);
        p.number(&t, &from, bsp, account, 80, None).await?;
        let text = format!("hello via {bsp}");
        let (status, body) = p.send_text(&t, &from, "+4915112345678", &text).await?;
        assert_eq!(status, 202, "{bsp}: {body}");
        assert_eq!(body["status"], "queued");
        sent.push((
            bsp.to_string(),
            text,
            body["id"].as_str().unwrap().to_string(),
        ));
    }
    // A business-scoped user id goes to Meta in `recipient`: the simulator, like the Cloud
    // API, answers 200 and drops a message that names one in `to`, so this send would
    // never be read.
    let text = "hello, business-scoped user";
    let (status, body) = p
        .send_text(&t, "+15550000001", "US.13491208655302741918", text)
        .await?;
    assert_eq!(status, 202, "{body}");
    sent.push((
        "meta".into(),
        text.into(),
        body["id"].as_str().unwrap().to_string(),
    ));
    for (bsp, text, id) in &sent {
        wait_until(
            &format!("{bsp} message read, its whole history in"),
            Duration::from_secs(60),
            || async {
                let m = p.message(&t, id).await?.1;
                Ok(m["status"] == "read" && m["history"].as_array().map(Vec::len) == Some(4))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
        let last = p.message(&t, id).await?.1;
        let calls = p.calls_by_text().remove(text).unwrap_or_default();
        assert_eq!(calls.len(), 1, "{bsp}: exactly one BSP request");
        assert_eq!(calls[0].bsp, *bsp);
        assert_eq!(last["bsp"], bsp.as_str());
        assert_eq!(
            last["wamid"].as_str(),
            calls[0].message_id.as_deref(),
            "{bsp}: wamid joins"
        );
        assert_eq!(last["send_state"], "accepted");
        let history: HashSet<String> = last["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap().to_string())
            .collect();
        let want: HashSet<String> = ["accepted", "sent", "delivered", "read"]
            .map(String::from)
            .into();
        assert_eq!(history, want, "{bsp}: {last}");
    }
    // Both stores: one message row per send (a BSP each, and the user id's), joined to
    // its webhooks; the outcome events in ClickHouse too.
    assert_eq!(
        p.pg_count(
            "SELECT count(*) FROM messages WHERE message_id IS NOT NULL AND status = 'read'"
        )
        .await?,
        8
    );
    wait_until(
        "send events in ClickHouse",
        Duration::from_secs(30),
        || async {
            Ok(
                p.ch_count("SELECT count() FROM events WHERE event_type = 'message.send_accepted'")
                    .await
                    .unwrap_or(0)
                    == 8,
            )
        },
    )
    .await?;
    // Webhooks of a known number carry its tenant: a customer's reply, too.
    let ts = chrono::Utc::now().timestamp();
    let reply = switchboard_e2e::bsp::meta_text(
        "15550000001",
        "4915112345678",
        "wamid.reply.1",
        "thanks",
        ts,
    );
    assert_eq!(p.post_meta(&reply).await?.status(), 200);
    wait_until("the reply stamped with its tenant", Duration::from_secs(30), || async {
        Ok(p
            .pg_count(&format!(
                "SELECT count(*) FROM messages WHERE wamid = 'wamid.reply.1' AND direction = 'inbound' AND tenant_id = '{}'",
                t.id
            ))
            .await?
            == 1)
    })
    .await?;
    // Status webhooks of known numbers carry their tenant.
    let untagged = p
        .pg_count(&format!(
            "SELECT count(*) FROM messages WHERE message_id IS NOT NULL AND tenant_id IS DISTINCT FROM '{}'",
            t.id
        ))
        .await?;
    assert_eq!(untagged, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_the_field_at_fault_and_writes_nothing() -> anyhow::Result<()> {
    let p = Pipeline::start(send_opts()).await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    p.number(
        &t,
        "+15550000002",
        "twilio",
        "AC00000000000000000000000000000002",
        80,
        None,
    )
    .await?;
    let other = p.tenant("other").await?;
    p.number(&other, "+15550000009", "meta", "15550000009", 80, None)
        .await?;

    let ok = json!({"from": "+15550000001", "to": "+4915112345678", "type": "text", "text": {"body": "hi"}});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (with("to", json!("+12")), 422, "invalid_phone_number", "to"),
        (
            with("to", json!("not a number!")),
            422,
            "invalid_recipient",
            "to",
        ),
        // Once accepted and sent to Meta in `to`, which answers 200 and drops it.
        (
            with("to", json!("not-a-number")),
            422,
            "invalid_recipient",
            "to",
        ),
        // E.164-shaped, but no country's numbering plan has it.
        (
            with("to", json!("+1415555")),
            422,
            "invalid_phone_number",
            "to",
        ),
        (
            with("to", json!("+999123456789")),
            422,
            "invalid_phone_number",
            "to",
        ),
        // Twilio takes phone numbers only.
        (
            json!({"from": "+15550000002", "to": "US.13491208655302741918", "type": "text", "text": {"body": "hi"}}),
            422,
            "unsupported_by_bsp",
            "to",
        ),
        (
            json!({"from": "+15550000001", "type": "text", "text": {"body": "hi"}}),
            422,
            "missing_field",
            "to",
        ),
        (
            with("from", json!("+15550000009")),
            422,
            "unknown_sender",
            "from",
        ),
        (
            with("from", json!("12")),
            422,
            "invalid_phone_number",
            "from",
        ),
        (
            with("text", json!({"body": "x".repeat(4097)})),
            422,
            "too_long",
            "text.body",
        ),
        (
            with("text", json!({"body": "hi", "font": "bold"})),
            422,
            "unknown_field",
            "text.font",
        ),
        (with("colour", json!("red")), 422, "unknown_field", "colour"),
        (with("type", json!("fax")), 422, "unsupported_type", "type"),
        (
            with("scheduled_at", json!("2099-01-01T00:00:00Z")),
            422,
            "invalid_field",
            "scheduled_at",
        ),
        (
            with("scheduled_at", json!("tomorrow")),
            422,
            "invalid_field",
            "scheduled_at",
        ),
        (
            with("metadata", json!({"nested": {"a": 1}})),
            422,
            "invalid_field",
            "metadata",
        ),
        (
            json!({"from": "+15550000001", "to": "+4915112345678", "type": "template",
                "template": {"name": "order", "language": {"code": "en"},
                    "components": [{"type": "body", "parameters": [{"type": "emoji", "emoji": "x"}]}]}}),
            422,
            "template_parameter_invalid",
            "template.components[0].parameters[0].type",
        ),
        (
            json!({"from": "+15550000002", "to": "+4915112345678", "type": "interactive",
                "interactive": {"type": "button", "body": {"text": "b"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}]}}}),
            422,
            "unsupported_by_bsp",
            "type",
        ),
    ];
    for (body, status, code, field) in &cases {
        let (s, b) = p
            .call(
                Method::POST,
                "/v1/messages",
                &t.key,
                Some(body.clone()),
                &[],
            )
            .await?;
        assert_eq!(s, *status, "{body}: {b}");
        assert_eq!(b["error"]["code"], *code, "{body}: {b}");
        assert_eq!(b["error"]["field"], *field, "{body}: {b}");
    }
    // Malformed JSON, no key, a bad key, an oversized body, a too-large batch.
    let raw = |body: Vec<u8>, key: Option<&str>| {
        let mut r = p
            .http
            .post(format!("{}/v1/messages", p.gateway_url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let r = raw(b"{\"to\": ".to_vec(), Some(&t.key)).await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await?["error"]["code"], "malformed_body");
    assert_eq!(raw(serde_json::to_vec(&ok)?, None).await?.status(), 401);
    assert_eq!(
        raw(serde_json::to_vec(&ok)?, Some("sb_wrong"))
            .await?
            .status(),
        401
    );
    let huge = with("metadata", json!({"x": "y".repeat(300 * 1024)}));
    assert_eq!(
        raw(serde_json::to_vec(&huge)?, Some(&t.key))
            .await?
            .status(),
        413
    );
    let batch: Vec<Value> = (0..1001).map(|_| ok.clone()).collect();
    let (s, b) = p
        .call(
            Method::POST,
            "/v1/messages/batch",
            &t.key,
            Some(json!({"messages": batch})),
            &[],
        )
        .await?;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("messages")),
        "{b}"
    );
    // A batch keeps its good items and names each bad one.
    let (s, b) = p
        .call(Method::POST, "/v1/messages/batch", &t.key,
            Some(json!({"messages": [with("to", json!("+1")), with("text", json!({"body": "good one"}))]})), &[])
        .await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["status"], 422);
    assert_eq!(b["results"][0]["error"]["field"], "messages[0].to");
    assert_eq!(b["results"][1]["status"], 202);
    let good = b["results"][1]["message"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Nothing but the good batch item was written or sent.
    p.wait_final(std::slice::from_ref(&good), Duration::from_secs(30))
        .await?;
    assert_eq!(
        p.pg_count("SELECT count(*) FROM outbound_messages").await?,
        1
    );
    let calls = p.sim().calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].text, "good one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_are_isolated_and_revoked_keys_stop_working() -> anyhow::Result<()> {
    let p = Pipeline::start(send_opts()).await?;
    let a = p.tenant("a").await?;
    let b = p.tenant("b").await?;
    p.number(&a, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    p.number(&b, "+15550000002", "meta", "15550000002", 80, None)
        .await?;
    let (_, m) = p
        .send_text(&a, "+15550000001", "+4915112345678", "for a")
        .await?;
    let id = m["id"].as_str().unwrap().to_string();
    p.wait_final(std::slice::from_ref(&id), Duration::from_secs(30))
        .await?;

    assert_eq!(p.message(&a, &id).await?.0, 200);
    // B cannot see, list or cancel A's message: 404, the same as an unknown id.
    let (s, body) = p.message(&b, &id).await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, list) = p
        .call(Method::GET, "/v1/messages", &b.key, None, &[])
        .await?;
    assert_eq!(s, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (s, _) = p
        .call(
            Method::DELETE,
            &format!("/v1/messages/{id}"),
            &b.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 404);
    // B cannot send from A's number.
    let (s, body) = p
        .send_text(&b, "+15550000001", "+4915112345678", "spoof")
        .await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("unknown_sender"))
    );
    // A lists its own.
    let (_, list) = p
        .call(
            Method::GET,
            "/v1/messages?from=%2B15550000001",
            &a.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(list["data"][0]["id"], id.as_str());
    // Cursor pagination over every message once, newest first; filters.
    let mut all = vec![id.clone()];
    for i in 0..4 {
        let (_, m) = p
            .send_text(&a, "+15550000001", "+4915112345679", &format!("page {i}"))
            .await?;
        all.push(m["id"].as_str().unwrap().to_string());
    }
    p.wait_final(&all, Duration::from_secs(30)).await?;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/messages?limit=2".to_string(),
            Some(c) => format!("/v1/messages?limit=2&cursor={c}"),
        };
        let (s, page) = p.call(Method::GET, &path, &a.key, None, &[]).await?;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut want = all.clone();
    want.reverse();
    assert_eq!(seen, want, "newest first, each once");
    let (_, to) = p
        .call(
            Method::GET,
            "/v1/messages?to=%2B4915112345679",
            &a.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(to["data"].as_array().unwrap().len(), 4);
    let (s, bad) = p
        .call(
            Method::GET,
            "/v1/messages?cursor=nonsense",
            &a.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, bad["error"]["field"].as_str()), (400, Some("cursor")));
    let since = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let (_, none) = p
        .call(
            Method::GET,
            &format!("/v1/messages?since={since}"),
            &a.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);

    // Revoke A's key: it stops working.
    p.admin(
        Method::DELETE,
        &format!("/admin/tenants/{}/api-keys/{}", a.id, a.key_id),
        None,
    )
    .await?;
    let (s, body) = p.message(&a, &id).await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // The API's own rate limit per tenant: 429 with Retry-After past it.
    let slow = p
        .admin(
            Method::POST,
            "/admin/tenants",
            Some(json!({"name": "slow", "api_rate_per_sec": 5})),
        )
        .await?;
    let slow_id = slow["id"].as_str().unwrap();
    let k = p
        .admin(
            Method::POST,
            &format!("/admin/tenants/{slow_id}/api-keys"),
            None,
        )
        .await?;
    let slow_key = k["key"].as_str().unwrap();
    let mut limited = 0;
    for _ in 0..20 {
        let r = p
            .http
            .get(format!("{}/v1/messages", p.gateway_url))
            .bearer_auth(slow_key)
            .send()
            .await?;
        if r.status() == 429 {
            limited += 1;
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert!(
        limited >= 10,
        "only {limited} of 20 rapid requests limited at 5/s"
    );
    // The admin API wants the admin key.
    let (s, _) = p
        .call(
            Method::POST,
            "/admin/tenants",
            &b.key,
            Some(json!({"name": "x"})),
            &[],
        )
        .await?;
    assert_eq!(s, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sends_once_across_restarts() -> anyhow::Result<()> {
    let mut p = Pipeline::start(send_opts()).await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    let body = json!({"from": "+15550000001", "to": "+4915112345678", "type": "text", "text": {"body": "only once"}});
    let sends = (0..100).map(|_| {
        p.call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(body.clone()),
            &[("idempotency-key", "order-42")],
        )
    });
    let answers = futures::future::join_all(sends).await;
    let ids: HashSet<String> = answers
        .into_iter()
        .map(|r| {
            let (s, b) = r.expect("answer");
            assert_eq!(s, 202, "{b}");
            b["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the same message");
    let id = ids.into_iter().next().unwrap();
    p.wait_final(std::slice::from_ref(&id), Duration::from_secs(30))
        .await?;

    // Restart the gateway and the router; the key still means the same message.
    p.restart_send_path(false).await?;
    let (s, b) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(body.clone()),
            &[("idempotency-key", "order-42")],
        )
        .await?;
    assert_eq!((s, b["id"].as_str()), (202, Some(id.as_str())));
    // Same key, different body: refused.
    let mut other = body.clone();
    other["text"]["body"] = json!("something else");
    let (s, b) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(other),
            &[("idempotency-key", "order-42")],
        )
        .await?;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );

    // Everything the router was given is handled: no late second request can come.
    p.wait_router_caught_up(Duration::from_secs(30)).await?;
    assert_eq!(
        p.calls_by_text().get("only once").map(Vec::len),
        Some(1),
        "exactly one BSP request"
    );
    assert_eq!(
        p.pg_count("SELECT count(*) FROM outbound_messages").await?,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_sends_go_on_time_across_restarts_and_can_be_cancelled() -> anyhow::Result<()> {
    let mut p = Pipeline::start(send_opts()).await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    let at = chrono::Utc::now() + chrono::Duration::seconds(6);
    let sched = |text: &str| {
        json!({"from": "+15550000001", "to": "+4915112345678", "type": "text", "text": {"body": text},
            "scheduled_at": at.to_rfc3339()})
    };
    let (s, keep) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(sched("on time")),
            &[],
        )
        .await?;
    assert_eq!(
        (s, keep["status"].as_str()),
        (202, Some("scheduled")),
        "{keep}"
    );
    let (_, drop_) = p
        .call(
            Method::POST,
            "/v1/messages",
            &t.key,
            Some(sched("never")),
            &[],
        )
        .await?;
    let drop_id = drop_["id"].as_str().unwrap().to_string();
    let (s, c) = p
        .call(
            Method::DELETE,
            &format!("/v1/messages/{drop_id}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!((s, c["status"].as_str()), (200, Some("cancelled")), "{c}");

    // Every binary restarts while the send waits; the router crashes. (It runs with a
    // static group membership id, so the restarted router gets its partitions back at
    // once rather than after the dead one's 10 s session.)
    p.restart_send_path(true).await?;

    let keep_id = keep["id"].as_str().unwrap().to_string();
    let states = p
        .wait_final(&[keep_id.clone(), drop_id.clone()], Duration::from_secs(30))
        .await?;
    assert_eq!(states[&keep_id], "accepted");
    assert_eq!(states[&drop_id], "cancelled");
    let calls = p.calls_by_text();
    let sent_at = calls["on time"][0].at_ms;
    let late = sent_at - at.timestamp_millis();
    assert!((0..1000).contains(&late), "sent {late} ms after its time");
    assert!(!calls.contains_key("never"));
    // What has gone out, or was cancelled, cannot be cancelled.
    let (s, _) = p
        .call(
            Method::DELETE,
            &format!("/v1/messages/{keep_id}"),
            &t.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(s, 409);
    // Only a waiting send has a due time (the due index and HOT updates rely on it):
    // the released one and the cancelled one have none.
    assert_eq!(
        p.pg_count(
            "SELECT count(*) FROM outbound_messages \
              WHERE due_at IS NOT NULL AND state NOT IN ('scheduled', 'retrying')"
        )
        .await?,
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_encrypted_at_rest_and_the_keyring_rotates() -> anyhow::Result<()> {
    let mut p = Pipeline::start(send_opts()).await?;
    let t = p.tenant("acme").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    let token = p.send_path().secrets.meta_access_token.clone();
    // At rest: ciphertext under the first key, never the token.
    let (kid, ct): (String, String) =
        sqlx::query_as("SELECT key_id, ciphertext FROM bsp_credentials WHERE bsp = 'meta'")
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(kid, "k1");
    assert!(!ct.contains(&token), "the token is stored in clear");
    let (_, m) = p
        .send_text(&t, "+15550000001", "+4915112345678", "before rotation")
        .await?;
    let first = m["id"].as_str().unwrap().to_string();
    assert_eq!(
        p.wait_final(std::slice::from_ref(&first), Duration::from_secs(30))
            .await?[&first],
        "accepted"
    );

    // Rotate: the new key first, re-encrypt, then drop the old key.
    let old = p.gateway.env_var("SWITCHBOARD_CREDENTIALS_KEYS").unwrap();
    let new = switchboard_runtime::secrets::Keyring::generate("k2");
    let restart = |p: &mut Pipeline, ring: String| {
        p.gateway.set_env("SWITCHBOARD_CREDENTIALS_KEYS", &ring);
        p.send
            .as_mut()
            .unwrap()
            .router
            .set_env("SWITCHBOARD_CREDENTIALS_KEYS", &ring);
    };
    restart(&mut p, format!("{new},{old}"));
    p.restart_send_path(false).await?;
    let r = p
        .admin(Method::POST, "/admin/credentials/rotate", None)
        .await?;
    assert_eq!(
        (r["rotated"].as_i64(), r["active_key"].as_str()),
        (Some(1), Some("k2")),
        "{r}"
    );
    let (kid, _): (String, String) =
        sqlx::query_as("SELECT key_id, ciphertext FROM bsp_credentials WHERE bsp = 'meta'")
            .fetch_one(&p.pg)
            .await?;
    assert_eq!(kid, "k2");

    restart(&mut p, new.clone());
    p.restart_send_path(false).await?;
    // Only the new key is left, and sends still open their credentials.
    let (_, m) = p
        .send_text(&t, "+15550000001", "+4915112345678", "after rotation")
        .await?;
    let second = m["id"].as_str().unwrap().to_string();
    assert_eq!(
        p.wait_final(std::slice::from_ref(&second), Duration::from_secs(30))
            .await?[&second],
        "accepted"
    );
    let calls = p.calls_by_text();
    assert_eq!(calls["after rotation"].len(), 1);
    Ok(())
}
