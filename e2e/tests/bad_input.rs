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
            .get(format!("{}/readyz", p.gateway_url))
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
