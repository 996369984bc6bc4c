//! Bad input gets a precise 4xx and writes nothing, or (for data already accepted) a DLQ
//! record with the reason; never a panic.

use std::time::Duration;

use switchboard_e2e::bsp::meta_status;
use switchboard_e2e::{Options, Pipeline};
use switchboard_schemas::{Codec, DeadLetter};

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_input_gets_its_answer_and_changes_nothing() -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    let good = meta_status(
        "15550783881",
        "16505550001",
        "wamid.GOOD",
        "sent",
        1_750_000_000,
    );
    let url = format!("{}/webhooks/meta", p.gateway_url);
    let sig = |b: &[u8]| switchboard_connectors::meta::signature::sign(&p.meta_secret, b);
    let post = |path: &str, ct: &str, sig: Option<String>, body: Vec<u8>| {
        let mut r = p
            .http
            .post(format!("{}{path}", p.gateway_url))
            .header("content-type", ct)
            .body(body);
        if let Some(s) = sig {
            r = r.header("x-hub-signature-256", s);
        }
        r.send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        (
            status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };

    // Rejected at the door: nothing may reach Kafka.
    let truncated = &good[..good.len() / 2];
    let big = vec![b' '; 70_000];
    let cases: Vec<(&str, u16, &str, reqwest::Response)> = vec![
        (
            "wrong signature",
            401,
            "bad_signature",
            post(
                "/webhooks/meta",
                "application/json",
                Some(sig(b"other body")),
                good.clone(),
            )
            .await?,
        ),
        (
            "missing signature",
            401,
            "bad_signature",
            post("/webhooks/meta", "application/json", None, good.clone()).await?,
        ),
        (
            "malformed signature",
            401,
            "bad_signature",
            post(
                "/webhooks/meta",
                "application/json",
                Some("md5=abc".into()),
                good.clone(),
            )
            .await?,
        ),
        (
            "truncated JSON",
            400,
            "malformed_body",
            post(
                "/webhooks/meta",
                "application/json",
                Some(sig(truncated)),
                truncated.to_vec(),
            )
            .await?,
        ),
        (
            "oversized body",
            413,
            "body_too_large",
            post(
                "/webhooks/meta",
                "application/json",
                Some(sig(&big)),
                big.clone(),
            )
            .await?,
        ),
        (
            "wrong content type",
            415,
            "unsupported_media_type",
            post(
                "/webhooks/meta",
                "text/plain",
                Some(sig(&good)),
                good.clone(),
            )
            .await?,
        ),
        (
            "unknown BSP",
            404,
            "unknown_bsp",
            post(
                "/webhooks/nosuchbsp",
                "application/json",
                None,
                good.clone(),
            )
            .await?,
        ),
        (
            "360dialog without token",
            401,
            "bad_signature",
            post(
                "/webhooks/360dialog",
                "application/json",
                None,
                good.clone(),
            )
            .await?,
        ),
    ];
    for (what, want_status, want_code, resp) in cases {
        assert_eq!(
            code(resp).await,
            (want_status, want_code.to_string()),
            "{what}"
        );
    }
    // A chunked body with no Content-Length is capped while reading, too.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8192])));
    let r = p
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig(b""))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await?;
    assert_eq!(r.status(), 413, "chunked oversized body");

    // Accepted, then dead-lettered by the normalizer with a reason; the good item of a
    // partly bad webhook still lands.
    let wrong_shape = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"statuses":"not-a-list"}}]}]}"#.to_vec();
    let partly_bad = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},"statuses":[
        {"id":"wamid.PARTGOOD","status":"delivered","timestamp":"1750000001","recipient_id":"16505550002"},
        {"id":"wamid.PARTBAD","status":"delivered","timestamp":"1750000001","recipient_id":"not-a-number"}]}}]}]}"#.to_vec();
    let unknown_field_value = meta_status(
        "15550783881",
        "16505550003",
        "wamid.WEIRD",
        "teleported",
        1_750_000_000,
    );
    for b in [&wrong_shape, &partly_bad, &unknown_field_value, &good] {
        assert_eq!(p.post_meta(b).await?.status(), 200);
    }

    let dlq = p
        .read_topic("wa.webhooks.dlq", 3, Duration::from_secs(60))
        .await?;
    assert_eq!(dlq.len(), 3, "three dead letters\n{}", p.logs());
    let codec = Codec::new(&p.services.registry);
    let mut reasons = Vec::new();
    for (_, payload) in &dlq {
        let d: DeadLetter = codec.decode(payload).await?;
        assert_eq!(d.source_topic, format!("{}wa.webhooks.raw", p.topic_prefix));
        assert!(!d.detail.is_empty());
        reasons.push(d.reason);
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec!["bad_phone_number", "bad_shape", "unknown_status"]
    );

    p.wait_for_status_events(2, Duration::from_secs(60)).await?;
    let raw = p
        .read_topic("wa.webhooks.raw", 5, Duration::from_secs(5))
        .await?;
    assert_eq!(raw.len(), 4, "only the four accepted webhooks were written");
    let wamids: Vec<(String,)> =
        sqlx::query_as("SELECT wamid FROM message_status_history ORDER BY wamid")
            .fetch_all(&p.pg)
            .await?;
    assert_eq!(
        wamids,
        vec![("wamid.GOOD".to_string(),), ("wamid.PARTGOOD".to_string(),)]
    );
    assert_eq!(p.pg_count("SELECT count(*) FROM messages").await?, 2);
    assert_eq!(p.ch_count("SELECT count() FROM events").await?, 2);

    // Still healthy, and nothing panicked.
    assert_eq!(
        p.http
            .get(format!("{}/readyz", p.gateway_ops_url))
            .send()
            .await?
            .status(),
        200
    );
    assert!(!p.logs().contains("panicked"), "{}", p.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn meta_subscription_handshake() -> anyhow::Result<()> {
    let p = Pipeline::start(Options::default()).await?;
    let get = |q: String| {
        p.http
            .get(format!("{}/webhooks/meta?{q}", p.gateway_url))
            .send()
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.verify_token=verify-{}&hub.challenge=1158201444",
        p.id
    ))
    .await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await?, "1158201444");
    assert_eq!(
        get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".into())
            .await?
            .status(),
        403
    );
    assert_eq!(get("hub.mode=subscribe".into()).await?.status(), 400);
    Ok(())
}

/// The public port sheds what a hostile or broken client does before any handler runs:
/// a request head or body that stalls is cut off, connections beyond the cap wait,
/// guessing the admin key is stopped, and readiness (with its internal error text) and
/// metrics are only on the ops port.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_edge_sheds_slow_clients_guessers_and_keeps_ops_private() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let p = Pipeline::start(Options {
        send_path: true,
        gateway_env: vec![
            ("SWITCHBOARD_HTTP_HEADER_TIMEOUT", "1s".into()),
            ("SWITCHBOARD_HTTP_BODY_TIMEOUT", "1s".into()),
            ("SWITCHBOARD_HTTP_MAX_CONNECTIONS", "4".into()),
            ("SWITCHBOARD_ADMIN_AUTH_FAILURES_PER_MINUTE", "5".into()),
        ],
        ..Default::default()
    })
    .await?;
    let addr = p.gateway_url.trim_start_matches("http://").to_string();
    for path in ["/readyz", "/metrics"] {
        let public = p
            .http
            .get(format!("{}{path}", p.gateway_url))
            .send()
            .await?;
        assert_eq!(public.status(), 404, "{path} is not on the public port");
        let ops = p
            .http
            .get(format!("{}{path}", p.gateway_ops_url))
            .send()
            .await?;
        assert_eq!(ops.status(), 200, "{path} is on the ops port");
    }
    assert_eq!(
        p.http
            .get(format!("{}/healthz", p.gateway_url))
            .send()
            .await?
            .status(),
        200,
        "load balancers keep /healthz on the public port"
    );

    // Read until the server closes the connection (or 15 s pass); what it sent.
    async fn until_closed(s: &mut TcpStream) -> anyhow::Result<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
                Err(_) => anyhow::bail!(
                    "the connection stayed open: {:?}",
                    String::from_utf8_lossy(&got)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&got).into_owned()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }
    // A head that never ends.
    let mut slow_head = TcpStream::connect(&addr).await?;
    slow_head
        .write_all(b"POST /webhooks/meta HTTP/1.1\r\nhost: x\r\nx-a: ")
        .await?;
    let answer = until_closed(&mut slow_head).await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A body that stalls after 10 of its 100 bytes.
    let mut slow_body = TcpStream::connect(&addr).await?;
    slow_body
        .write_all(
            b"POST /webhooks/meta HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"object\":",
        )
        .await?;
    let answer = until_closed(&mut slow_body).await?;
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a stalled body is not accepted: {answer}"
    );

    // Four connections held open: a fifth waits to be served until one closes.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await?;
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut fifth = TcpStream::connect(&addr).await?;
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buf))
            .await
            .is_err(),
        "a fifth connection is not served while four are open"
    );
    held.pop();
    let answer = until_closed(&mut fifth).await?;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served once a slot frees: {answer}"
    );
    drop(held);

    // Guessing the admin key: five failures, then even the right key waits.
    for _ in 0..5 {
        let (s, _) = p
            .call(reqwest::Method::GET, "/admin/tenants", "guess", None, &[])
            .await?;
        assert_eq!(s, 401);
    }
    let key = p.send_path().admin_key.clone();
    let (s, v) = p
        .call(reqwest::Method::GET, "/admin/tenants", &key, None, &[])
        .await?;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_failed_attempts", "{v}");
    Ok(())
}

/// With webhook secrets per tenant, one tenant's token cannot vouch for another tenant's
/// accounts, the global secret no longer speaks for a tenant with its own, and a body
/// mixing tenants' accounts is refused; nothing refused reaches Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_webhook_secret_proves_its_own_accounts_and_no_others() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let (a, b, c) = (
        p.tenant("a").await?,
        p.tenant("b").await?,
        p.tenant("c").await?,
    );
    p.number(&a, "+15550090001", "gupshup", "app-a", 80, None)
        .await?;
    p.number(&b, "+15550090002", "gupshup", "app-b", 80, None)
        .await?;
    p.number(&c, "+15550090003", "meta", "pnid-c", 80, None)
        .await?;
    let p = &p;
    let creds = |t: &switchboard_e2e::send::TestTenant, bsp: &str, extra: serde_json::Value| {
        let mut v = p.send_path().credentials(bsp);
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let path = format!("/admin/tenants/{}/credentials/{bsp}", t.id);
        async move { p.admin(reqwest::Method::PUT, &path, Some(v)).await }
    };
    creds(&a, "gupshup", serde_json::json!({"webhook_token": "tok-a"})).await?;
    creds(&b, "gupshup", serde_json::json!({"webhook_token": "tok-b"})).await?;
    creds(&c, "meta", serde_json::json!({"app_secret": "meta-c"})).await?;

    let gupshup = |app: &str, id: &str| {
        serde_json::json!({"app": app, "timestamp": 1_750_263_775_456i64, "version": 2, "type": "message-event",
            "payload": {"id": id, "type": "delivered", "destination": "919876543210", "payload": {"ts": 1_750_263_775}}})
        .to_string()
        .into_bytes()
    };
    let post = |path: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut r = p
            .http
            .post(format!("{}{path}", p.gateway_url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let r = r.send().await?;
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            anyhow::Ok((
                status,
                v["error"]["code"].as_str().unwrap_or("").to_string(),
            ))
        }
    };
    let token = |t: &str| vec![("x-switchboard-token", t.to_string())];
    let global = format!("gupshup-{}", p.id);
    // The gateway learns secrets from wa.config: wait until B's own token proves B.
    switchboard_e2e::wait_until(
        "the gateway to know tenant b's token",
        Duration::from_secs(30),
        || async {
            Ok(post(
                "/webhooks/gupshup",
                token("tok-b"),
                gupshup("app-b", "gs-b1"),
            )
            .await?
            .0 == 200)
        },
    )
    .await?;
    let accepted_before = p.topic_records("wa.webhooks.raw").await?;

    // B's account with A's token, or with the global one: refused.
    for (who, t) in [
        ("a's token", "tok-a"),
        ("the global token", global.as_str()),
    ] {
        let got = post("/webhooks/gupshup", token(t), gupshup("app-b", "gs-forged")).await?;
        assert_eq!(got, (401, "bad_signature".into()), "b's account with {who}");
    }
    let got = post(
        &format!("/webhooks/gupshup?token={global}"),
        vec![],
        gupshup("app-b", "gs-forged"),
    )
    .await?;
    assert_eq!(got.0, 401, "the global token in the query string");
    // A's own account with A's token, an account no tenant owns with the global token.
    assert_eq!(
        post(
            "/webhooks/gupshup",
            token("tok-a"),
            gupshup("app-a", "gs-a1")
        )
        .await?
        .0,
        200
    );
    assert_eq!(
        post(
            "/webhooks/gupshup",
            token(&global),
            gupshup("app-x", "gs-x1")
        )
        .await?
        .0,
        200
    );
    assert_eq!(
        post(
            "/webhooks/gupshup",
            token("tok-a"),
            gupshup("app-x", "gs-x2")
        )
        .await?
        .0,
        401
    );

    // Meta: C's app secret proves C's number; the global app secret does not; a batch that
    // names C's number and a number no tenant owns is refused whoever signed it.
    let sign = switchboard_connectors::meta::signature::sign;
    let meta = |pnids: &[&str]| {
        let entries: Vec<serde_json::Value> = pnids
            .iter()
            .enumerate()
            .map(|(i, pnid)| serde_json::json!({"id": "waba", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550090003", "phone_number_id": pnid},
                "statuses": [{"id": format!("wamid.c{i}"), "status": "sent", "timestamp": "1750000000", "recipient_id": "16505550001"}]}}]}))
            .collect();
        serde_json::json!({"object": "whatsapp_business_account", "entry": entries})
            .to_string()
            .into_bytes()
    };
    let signed = |secret: &str, body: &[u8]| vec![("x-hub-signature-256", sign(secret, body))];
    let own = meta(&["pnid-c"]);
    assert_eq!(
        post("/webhooks/meta", signed("meta-c", &own), own.clone())
            .await?
            .0,
        200
    );
    assert_eq!(
        post("/webhooks/meta", signed(&p.meta_secret, &own), own.clone()).await?,
        (401, "bad_signature".into())
    );
    let mixed = meta(&["pnid-c", "pnid-nobody"]);
    for secret in ["meta-c", p.meta_secret.as_str()] {
        assert_eq!(
            post("/webhooks/meta", signed(secret, &mixed), mixed.clone()).await?,
            (401, "accounts_of_several_tenants".into())
        );
    }

    // Exactly the three accepted since (A's, the unowned account's, C's) reached Kafka.
    assert_eq!(
        p.topic_records("wa.webhooks.raw").await? - accepted_before,
        3
    );
    Ok(())
}
