//! Inbound media end to end: a Meta image webhook through the gateway and the
//! normalizer; the router's media fetcher gets it from the simulated Graph API while its
//! URL lives, checks its hash, keeps it once per content and says so on `wa.events`; the
//! message row has it; the API serves it to its tenant only; refused types and expired
//! URLs end as dead letters with their reason.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_loadtest::bsp_sim::Behavior;

fn image(customer: &str, wamid: &str, media_id: &str, kind: &str, ts: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": "15550000001"},
        "contacts": [{"profile": {"name": "Test"}, "wa_id": customer}],
        "messages": [{"from": customer, "id": wamid, "timestamp": ts.to_string(), "type": kind,
            kind: {"id": media_id, "mime_type": "image/jpeg", "caption": "look"}}]}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbound_media_is_kept_once_and_served_to_its_tenant_only() -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let jpeg = "\u{ff}\u{d8}JPEG bytes of a receipt";
    p.sim().set_behavior(Behavior {
        media: [
            (
                "m1".to_string(),
                json!({"mime_type": "image/jpeg", "body": jpeg}),
            ),
            // The same bytes under another id: one blob.
            (
                "m2".to_string(),
                json!({"mime_type": "image/jpeg", "body": jpeg}),
            ),
            (
                "m3".to_string(),
                json!({"mime_type": "application/x-msdownload", "body": "MZ"}),
            ),
        ]
        .into(),
        ..Default::default()
    });
    let t = p.tenant("acme").await?;
    let other = p.tenant("other").await?;
    p.number(&t, "+15550000001", "meta", "15550000001", 80, None)
        .await?;
    let now = chrono::Utc::now().timestamp();
    for (customer, wamid, id) in [
        ("4915112345691", "wamid.img1", "m1"),
        ("4915112345692", "wamid.img2", "m2"),
    ] {
        p.post_meta_until_accepted(&image(customer, wamid, id, "image", now))
            .await?;
    }
    wait_until("both messages' media recorded", Duration::from_secs(60), || async {
        Ok(p
            .pg_count("SELECT count(*) FROM messages WHERE wamid IN ('wamid.img1', 'wamid.img2') AND media_sha256 IS NOT NULL")
            .await?
            == 2)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let rows: Vec<(String, String, i64, String, String)> = sqlx::query_as(
        "SELECT wamid, media_sha256, media_size, media_mime_type, direction FROM messages WHERE wamid IN ('wamid.img1', 'wamid.img2') ORDER BY wamid",
    )
    .fetch_all(&p.pg)
    .await?;
    let sha = rows[0].1.clone();
    assert_eq!(rows[1].1, sha, "same bytes, same blob");
    assert_eq!(rows[0].2, jpeg.len() as i64);
    assert_eq!(rows[0].3, "image/jpeg");
    assert_eq!(rows[0].4, "inbound");
    assert_eq!(p.pg_count("SELECT count(*) FROM media_blobs").await?, 1);
    assert_eq!(p.pg_count("SELECT count(*) FROM media_refs").await?, 2);
    let kept = std::fs::read_dir(p.log_dir.0.join("media"))?.count();
    assert_eq!(kept, 1, "one file for the two messages");

    // Served to its tenant, as an attachment; another tenant cannot tell it exists.
    let get = |key: String| {
        let url = format!("{}/v1/media/{sha}", p.gateway_url);
        let http = p.http.clone();
        async move { http.get(url).bearer_auth(key).send().await }
    };
    let r = get(t.key.clone()).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["content-disposition"], "attachment");
    assert_eq!(r.bytes().await?.as_ref(), jpeg.as_bytes());
    assert_eq!(get(other.key.clone()).await?.status(), 404);
    let (s, _) = p
        .call(Method::GET, "/v1/media/not-a-hash", &t.key, None, &[])
        .await?;
    assert_eq!(s, 404);

    // A refused type, then a URL that is dead by the time it is fetched: dead letters with
    // their reasons, and the stream goes on.
    p.post_meta_until_accepted(&image("4915112345693", "wamid.exe", "m3", "document", now))
        .await?;
    let mut b = p.sim().behavior();
    b.media.insert(
        "m4".into(),
        json!({"mime_type": "image/png", "body": "PNG"}),
    );
    b.media_url_ttl_ms = 0;
    p.sim().set_behavior(b);
    p.post_meta_until_accepted(&image("4915112345694", "wamid.late", "m4", "image", now))
        .await?;
    let letters = p
        .dead_letters("wa.media.dlq", 2, Duration::from_secs(60))
        .await?;
    let mut reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["media_gone", "media_type_refused"], "{letters:?}");
    assert!(letters.iter().all(|l| l.stage == "media"));
    assert_eq!(p.pg_count("SELECT count(*) FROM media_blobs").await?, 1);
    Ok(())
}

/// Twilio, WAHA and Gupshup put a URL in the webhook instead of an id. Twilio's URL takes
/// the account's token and redirects to a signed CDN URL that refuses it (as S3 does), so
/// the fetch works only if the token stays on Twilio's origin; WAHA's takes its API key;
/// Gupshup's CDN URL is fetched through the address guard. A URL pointing at the cloud
/// metadata address is dead-lettered with its reason and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_given_by_url_is_fetched_with_credentials_only_on_the_bsps_origin(
) -> anyhow::Result<()> {
    let p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let receipt = "\u{ff}\u{d8}JPEG receipt by URL";
    let png = "\u{89}PNG a screenshot";
    p.sim().set_behavior(Behavior {
        media: [
            (
                "t1".to_string(),
                json!({"mime_type": "image/jpeg", "body": receipt}),
            ),
            (
                "w1".to_string(),
                json!({"mime_type": "image/png", "body": png}),
            ),
            // The same bytes as Twilio's: one blob.
            (
                "g1".to_string(),
                json!({"mime_type": "image/jpeg", "body": receipt}),
            ),
        ]
        .into(),
        ..Default::default()
    });
    let t = p.tenant("acme").await?;
    let sid = "AC0123456789abcdef0123456789abcdef";
    p.number(&t, "+14155238886", "twilio", sid, 80, None)
        .await?;
    p.number(&t, "+15550783881", "waha", "default", 80, None)
        .await?;
    p.number(&t, "+918000000001", "gupshup", "AcmeShop", 80, None)
        .await?;
    let sim = p.send_path().sim_url.clone();
    // The CDN is another origin than the BSP's API: the guarded client fetches it.
    let cdn = sim.replacen("127.0.0.1", "localhost", 1);
    let now = chrono::Utc::now();

    let twilio: String = serde_urlencoded::to_string([
        ("MessageSid", "MMmedia00000000000000000000000001"),
        ("AccountSid", sid),
        ("From", "whatsapp:+16505551234"),
        ("To", "whatsapp:+14155238886"),
        ("WaId", "16505551234"),
        ("SmsStatus", "received"),
        ("MessageType", "image"),
        ("NumMedia", "1"),
        ("MediaContentType0", "image/jpeg"),
        (
            "MediaUrl0",
            &format!("{sim}/2010-04-01/Accounts/{sid}/Messages/MMmedia00000000000000000000000001/Media/t1"),
        ),
    ])?;
    let waha = json!({"id": "evt_media_1", "timestamp": now.timestamp_millis(), "event": "message",
        "session": "default", "me": {"id": "15550783881@c.us"},
        "payload": {"id": "false_16505551235@c.us_MEDIA1", "timestamp": now.timestamp(),
            "from": "16505551235@c.us", "fromMe": false, "to": "15550783881@c.us", "body": "",
            "hasMedia": true, "media": {"url": format!("{sim}/api/files/default/w1.png"), "mimetype": "image/png"},
            "_data": {"type": "image"}}});
    let gupshup = |id: &str, url: &str| {
        json!({"app": "AcmeShop", "timestamp": now.timestamp_millis(), "version": 2, "type": "message",
            "payload": {"id": id, "source": "919876543210", "type": "image",
                "payload": {"caption": "This one", "url": url, "contentType": "image/jpeg",
                    "urlExpiry": now.timestamp() + 600},
                "sender": {"phone": "919876543210", "name": "Smit"}}})
        .to_string()
    };
    for (bsp, body) in [
        ("twilio", twilio.into_bytes()),
        ("waha", waha.to_string().into_bytes()),
        (
            "gupshup",
            gupshup("gs-media-1", &format!("{cdn}/_cdn/g1")).into_bytes(),
        ),
        (
            "gupshup",
            gupshup("gs-media-2", "http://169.254.169.254/latest/meta-data/iam").into_bytes(),
        ),
    ] {
        let r = p.post_bsp(bsp, &body).await?;
        anyhow::ensure!(r.status() == 200, "{bsp}: {}", r.text().await?);
    }
    let wamids =
        "('MMmedia00000000000000000000000001', 'false_16505551235@c.us_MEDIA1', 'gs-media-1')";
    wait_until("the three messages' media recorded", Duration::from_secs(60), || async {
        Ok(p
            .pg_count(&format!("SELECT count(*) FROM messages WHERE wamid IN {wamids} AND media_sha256 IS NOT NULL"))
            .await?
            == 3)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", p.logs()))?;
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT bsp, media_sha256, media_mime_type, media_size FROM messages WHERE wamid IN {wamids} ORDER BY bsp"
    )))
    .fetch_all(&p.pg)
    .await?;
    let by = |bsp: &str| rows.iter().find(|r| r.0 == bsp).cloned().expect(bsp);
    assert_eq!(by("twilio").1, by("gupshup").1, "same bytes, same blob");
    assert_ne!(by("twilio").1, by("waha").1);
    assert_eq!(by("waha").2, "image/png");
    assert_eq!(by("twilio").3, receipt.len() as i64);
    assert_eq!(p.pg_count("SELECT count(*) FROM media_blobs").await?, 2);
    assert_eq!(p.pg_count("SELECT count(*) FROM media_refs").await?, 3);
    for (bsp, want) in [("twilio", receipt), ("waha", png)] {
        let r = p
            .http
            .get(format!("{}/v1/media/{}", p.gateway_url, by(bsp).1))
            .bearer_auth(&t.key)
            .send()
            .await?;
        assert_eq!(r.status(), 200, "{bsp}");
        assert_eq!(r.bytes().await?.as_ref(), want.as_bytes(), "{bsp}");
    }

    let letters = p
        .dead_letters("wa.media.dlq", 1, Duration::from_secs(60))
        .await?;
    assert_eq!(letters[0].reason, "media_url_refused", "{letters:?}");
    assert!(letters[0].detail.contains("169.254.169.254"), "{letters:?}");
    assert_eq!(
        p.pg_count(
            "SELECT count(*) FROM messages WHERE wamid = 'gs-media-2' AND media_sha256 IS NULL"
        )
        .await?,
        1,
        "the message itself is kept"
    );
    Ok(())
}
