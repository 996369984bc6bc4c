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
