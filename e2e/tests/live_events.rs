//! A tenant's events by polling (`GET /v1/events`): pages from a cursor through the real
//! gateway, normalizer and broker; every event of the tenant once, in order per
//! conversation, none of another tenant's, across a gateway restart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use switchboard_e2e::send::TestTenant;
use switchboard_e2e::{wait_until, Options, Pipeline};
use switchboard_schemas::{status_event_id, Status};

async fn poll(p: &Pipeline, t: &TestTenant, query: &str) -> anyhow::Result<(u16, Value)> {
    p.call(
        Method::GET,
        &format!("/v1/events?{query}"),
        &t.key,
        None,
        &[],
    )
    .await
}

/// Every page from `after` (none: the oldest) until `done`.
async fn drain(
    p: &Pipeline,
    t: &TestTenant,
    after: Option<&str>,
    extra: &str,
) -> anyhow::Result<(Vec<Value>, String)> {
    let mut events = Vec::new();
    let mut cursor = after.map(str::to_string);
    loop {
        let q = match &cursor {
            Some(c) => format!("after={c}&limit=7{extra}"),
            None => format!("limit=7{extra}"),
        };
        let (s, page) = poll(p, t, &q).await?;
        anyhow::ensure!(s == 200, "poll: {s} {page}");
        anyhow::ensure!(page["gap"] == false, "no gap expected: {page}");
        events.extend(page["data"].as_array().cloned().unwrap_or_default());
        cursor = Some(page["next_cursor"].as_str().unwrap_or_default().to_string());
        if page["done"] == true {
            return Ok((events, cursor.unwrap_or_default()));
        }
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["data"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_pages_through_a_tenants_events_once_in_order_across_a_restart(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options {
        send_path: true,
        ..Default::default()
    })
    .await?;
    let a = p.tenant("a").await?;
    let b = p.tenant("b").await?;
    p.number(&a, "+15550301", "meta", "pnid-301", 80, None)
        .await?;
    p.number(&b, "+15550302", "meta", "pnid-302", 80, None)
        .await?;
    // The normalizer stamps events with their tenant once it knows the numbers: a probe
    // per number, polled until it shows up as that tenant's.
    for (t, n) in [(&a, "+15550301"), (&b, "+15550302")] {
        let probe = format!("wamid.{}.probe.{n}", p.id);
        p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
            n,
            "+919000000000",
            &probe,
            "sent",
            chrono::Utc::now().timestamp(),
        ))
        .await?;
        let id = status_event_id("meta", &probe, Status::Sent);
        wait_until(
            "the probe polled as the tenant's",
            Duration::from_secs(60),
            || async { Ok(ids(&drain(&p, t, None, "").await?.0).contains(&id)) },
        )
        .await?;
    }
    let (_, start_a) = drain(&p, &a, None, "").await?;
    let (_, start_b) = drain(&p, &b, None, "").await?;

    // 20 conversations × sent, delivered, read for A; 10 × 3 for B.
    let na = p.post_statuses("+15550301", 20, 1).await?;
    let nb = p.post_statuses("+15550302", 10, 1).await?;
    let expected = |n: &str, conversations: usize| -> HashSet<String> {
        let mut s = HashSet::new();
        for c in 0..conversations {
            let wamid = format!("wamid.{}.{}.{c}.0", p.id, n.trim_start_matches('+'));
            for st in [Status::Sent, Status::Delivered, Status::Read] {
                s.insert(status_event_id("meta", &wamid, st));
            }
        }
        s
    };
    let (want_a, want_b) = (expected("+15550301", 20), expected("+15550302", 10));
    assert_eq!((want_a.len(), want_b.len()), (na, nb));

    // Page through A's new events (once all are on the topic), restarting the gateway
    // halfway.
    wait_until(
        "A's events on the topic",
        Duration::from_secs(60),
        || async { Ok(drain(&p, &a, Some(&start_a), "").await?.0.len() >= na) },
    )
    .await?;
    let mut got: Vec<Value> = Vec::new();
    let mut cursor = start_a.clone();
    let mut restarted = false;
    loop {
        let (s, page) = poll(&p, &a, &format!("after={cursor}&limit=7")).await?;
        assert_eq!(s, 200, "{page}");
        got.extend(page["data"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().unwrap().to_string();
        if !restarted && got.len() >= na / 2 {
            p.gateway.stop().await?;
            p.gateway.start()?;
            p.wait_send_path_ready().await?;
            restarted = true;
        }
        if page["done"] == true && got.len() >= na {
            break;
        }
    }
    assert!(restarted);
    let got_ids = ids(&got);
    assert_eq!(got_ids.len(), na, "no event twice");
    assert_eq!(
        got_ids.iter().cloned().collect::<HashSet<_>>(),
        want_a,
        "exactly A's events"
    );
    assert!(got.iter().all(|e| e["data"]["tenant_id"] == a.id.as_str()));
    // In order per conversation: sent, then delivered, then read.
    let mut per_conv: HashMap<String, Vec<String>> = HashMap::new();
    for e in &got {
        per_conv
            .entry(
                e["data"]["conversation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_default()
            .push(e["type"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(per_conv.len(), 20);
    for (conv, types) in &per_conv {
        assert_eq!(
            types,
            &[
                "message.status.sent",
                "message.status.delivered",
                "message.status.read"
            ],
            "{conv}"
        );
    }
    // An event's own cursor resumes right after it: the events after it, once each
    // (partitions interleave in whatever order the broker serves them).
    let tenth = got[9]["cursor"].as_str().unwrap().to_string();
    let (rest, _) = drain(&p, &a, Some(&tenth), "").await?;
    let rest = ids(&rest);
    assert_eq!(rest.len(), na - 10);
    assert_eq!(
        rest.into_iter().collect::<HashSet<_>>(),
        got_ids[10..].iter().cloned().collect::<HashSet<_>>()
    );

    // B sees exactly its own; a type filter; only what comes next.
    let (bs, _) = drain(&p, &b, Some(&start_b), "").await?;
    assert_eq!(ids(&bs).into_iter().collect::<HashSet<_>>(), want_b);
    let (reads, _) = drain(&p, &a, Some(&start_a), "&types=message.status.read").await?;
    assert_eq!(reads.len(), 20);
    assert!(reads.iter().all(|e| e["type"] == "message.status.read"));
    let (s, now) = poll(&p, &a, "after=now").await?;
    assert_eq!(
        (s, now["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{now}"
    );
    let from_now = now["next_cursor"].as_str().unwrap().to_string();
    let more = 2;
    for i in 0..more {
        p.post_meta_until_accepted(&switchboard_e2e::bsp::meta_status(
            "+15550301",
            "+919000000001",
            &format!("wamid.{}.fresh.{i}", p.id),
            "sent",
            chrono::Utc::now().timestamp(),
        ))
        .await?;
    }
    wait_until("the new events", Duration::from_secs(60), || async {
        Ok(drain(&p, &a, Some(&from_now), "").await?.0.len() >= more)
    })
    .await?;
    let fresh = ids(&drain(&p, &a, Some(&from_now), "").await?.0);
    assert_eq!(fresh.len(), more, "only what came after `now`");
    assert!(fresh.iter().all(|id| !got_ids.contains(id)));

    // Bad requests: precise 400s.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=v1.not-a-cursor!", "after"),
        ("after=v1.OTk6MA", "after"), // partition 99
        ("types=message.nonsense", "types"),
    ] {
        let (s, v) = poll(&p, &a, q).await?;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{q}: {v}"
        );
    }
    let (s, v) = poll(&p, &a, "since=yesterday").await?;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{v}"
    );
    let (s, _) = p
        .call(Method::GET, "/v1/events", "sb_not_a_key", None, &[])
        .await?;
    assert_eq!(s, 401);
    Ok(())
}

/// One Server-Sent Events connection, read event by event.
struct SseClient {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: Value,
}

impl SseClient {
    async fn connect(
        p: &Pipeline,
        t: &TestTenant,
        last_id: Option<&str>,
    ) -> anyhow::Result<Result<Self, (u16, Value)>> {
        let mut req = p
            .http_stream()
            .get(format!("{}/v1/events/stream", p.gateway_url))
            .bearer_auth(&t.key);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await?;
        if r.status() != 200 {
            let s = r.status().as_u16();
            return Ok(Err((s, r.json().await.unwrap_or_default())));
        }
        anyhow::ensure!(
            r.headers()["content-type"] == "text/event-stream"
                && r.headers()["x-accel-buffering"] == "no",
            "{:?}",
            r.headers()
        );
        Ok(Ok(SseClient {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }))
    }

    /// The next event (comments skipped); `None` when the stream ended.
    async fn next(&mut self, within: Duration) -> anyhow::Result<Option<SseEvent>> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Ok(Some(SseEvent {
                    id,
                    event,
                    data: serde_json::from_str(&data)?,
                }));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => anyhow::bail!("no event within {within:?}"),
                Ok(None) => return Ok(None),
                Ok(Some(chunk)) => {
                    let chunk: bytes::Bytes = chunk?;
                    self.buf.push_str(&String::from_utf8_lossy(&chunk[..]));
                }
            }
        }
    }

    /// Events until `n` of them satisfy `counts` (others are returned too).
    async fn until(
        &mut self,
        n: usize,
        counts: impl Fn(&SseEvent) -> bool,
    ) -> anyhow::Result<Vec<SseEvent>> {
        let mut got = Vec::new();
        while got.iter().filter(|e| counts(e)).count() < n {
            match self.next(Duration::from_secs(60)).await? {
                Some(e) => got.push(e),
                None => anyhow::bail!("the stream ended after {} events", got.len()),
            }
        }
        Ok(got)
    }
}

/// A `sent` status of A's number.
async fn post(p: &Pipeline, wamid: String) -> anyhow::Result<()> {
    let body = switchboard_e2e::bsp::meta_status(
        "+15550311",
        "+919000000007",
        &wamid,
        "sent",
        chrono::Utc::now().timestamp(),
    );
    p.post_meta_until_accepted(&body).await
}

fn wamid_of(e: &SseEvent) -> String {
    e.data["data"]["wamid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_live_resumes_without_gaps_or_repeats_and_sheds_slow_clients(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options {
        send_path: true,
        gateway_env: vec![
            ("SWITCHBOARD_STREAM_MAX_PER_TENANT", "3".into()),
            ("SWITCHBOARD_STREAM_BUFFER", "300".into()),
            ("SWITCHBOARD_STREAM_STALL_TIMEOUT", "2s".into()),
        ],
        ..Default::default()
    })
    .await?;
    let a = p.tenant("a").await?;
    let b = p.tenant("b").await?;
    p.number(&a, "+15550311", "meta", "pnid-311", 80, None)
        .await?;
    p.number(&b, "+15550312", "meta", "pnid-312", 80, None)
        .await?;
    let mut client = SseClient::connect(&p, &a, None)
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // Live once a probe of A's comes through (the normalizer learns the number, the feed
    // starts reading): probes until one arrives.
    let mut live = false;
    for i in 0..60 {
        post(&p, format!("wamid.{}.probe.{i}", p.id)).await?;
        if let Ok(Some(_)) = client.next(Duration::from_secs(2)).await {
            live = true;
            break;
        }
    }
    assert!(live, "the stream never delivered a probe");

    // B's events and A's: the client gets A's only, in order per conversation.
    p.post_statuses("+15550312", 5, 1).await?;
    let na = p.post_statuses("+15550311", 10, 1).await?;
    let prefix = format!("wamid.{}.15550311.", p.id);
    let got = client
        .until(na, |e| wamid_of(e).starts_with(&prefix))
        .await?;
    assert!(
        got.iter()
            .all(|e| e.data["data"]["tenant_id"] == a.id.as_str()),
        "only A's"
    );
    let mut per_conv: HashMap<String, Vec<String>> = HashMap::new();
    for e in got.iter().filter(|e| wamid_of(e).starts_with(&prefix)) {
        assert_eq!(e.event, e.data["type"].as_str().unwrap_or_default());
        per_conv
            .entry(
                e.data["data"]["conversation"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            )
            .or_default()
            .push(e.event.clone());
    }
    for types in per_conv.values() {
        assert_eq!(
            types,
            &[
                "message.status.sent",
                "message.status.delivered",
                "message.status.read"
            ]
        );
    }
    let seen: HashSet<String> = got.iter().map(wamid_of).collect();
    let last_id = got
        .last()
        .and_then(|e| e.id.clone())
        .expect("events carry ids");

    // Disconnected: events keep coming; resuming gives exactly the missed ones.
    drop(client);
    for i in 0..6 {
        post(&p, format!("wamid.{}.missed.{i}", p.id)).await?;
    }
    let mut client = SseClient::connect(&p, &a, Some(&last_id))
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    post(&p, format!("wamid.{}.marker.1", p.id)).await?;
    let marker = format!("wamid.{}.marker.1", p.id);
    let resumed = client.until(1, |e| wamid_of(e) == marker).await?;
    let wamids: Vec<String> = resumed.iter().map(wamid_of).collect();
    assert_eq!(
        wamids.len(),
        7,
        "6 missed and the marker, nothing else: {wamids:?}"
    );
    assert!(wamids.iter().all(|w| !seen.contains(w)), "no repeats");
    assert_eq!(
        wamids.iter().filter(|w| w.contains(".missed.")).count(),
        6,
        "every missed one"
    );

    // The per-tenant cap (3 here): this stream, a slow one and a third; a fourth is 429.
    let slow = slow_reader(&p, &a).await?;
    let third = SseClient::connect(&p, &a, None)
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    match SseClient::connect(&p, &a, None).await? {
        Ok(_) => anyhow::bail!("a fourth stream was accepted"),
        Err((s, v)) => {
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (429, Some("too_many_streams")),
                "{v}"
            )
        }
    }
    drop(third);

    // The slow one reads nothing: once the sockets' and the server's write buffers are
    // full and it has not taken an event for 2 s it is ended, while this one gets every
    // event (catching up from the topic if a burst overflows its 300 waiting events).
    let burst = 1500;
    let posting = async {
        use futures::StreamExt;
        let p = &p;
        let posted: Vec<anyhow::Result<()>> = futures::stream::iter(0..burst)
            .map(|i| post(p, format!("wamid.{}.burst.{i}", p.id)))
            .buffer_unordered(20)
            .collect()
            .await;
        posted.into_iter().collect::<anyhow::Result<Vec<()>>>()
    };
    let reading = client.until(burst, |e| wamid_of(e).contains(".burst."));
    let (posted, got) = tokio::join!(posting, reading);
    posted?;
    let got = got?;
    assert_eq!(
        got.iter()
            .filter(|e| wamid_of(e).contains(".burst."))
            .count(),
        burst
    );
    let slow_closed = || async {
        let text = p
            .http
            .get(format!("{}/metrics", p.gateway_ops_url))
            .send()
            .await?
            .text()
            .await?;
        Ok::<bool, anyhow::Error>(text.lines().any(|l| {
            l.starts_with("switchboard_gateway_streams_closed_total{reason=\"slow\"}")
                && !l.ends_with(" 0")
        }))
    };
    wait_until(
        "the slow stream ended",
        Duration::from_secs(30),
        slow_closed,
    )
    .await?;
    drop(slow);
    let last_id = got.last().and_then(|e| e.id.clone()).expect("ids");

    // A gateway restart ends the stream; resuming afterwards loses nothing.
    p.gateway.stop().await?;
    let ended = client.next(Duration::from_secs(30)).await?;
    assert!(
        ended
            .as_ref()
            .is_none_or(|e| e.event == "end" && e.data["reason"] == "shutdown"),
        "{ended:?}"
    );
    p.gateway.start()?;
    p.wait_send_path_ready().await?;
    for i in 0..3 {
        post(&p, format!("wamid.{}.after.{i}", p.id)).await?;
    }
    let mut client = SseClient::connect(&p, &a, Some(&last_id))
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let marker = format!("wamid.{}.marker.2", p.id);
    post(&p, marker.clone()).await?;
    let after: Vec<String> = client
        .until(1, |e| wamid_of(e) == marker)
        .await?
        .iter()
        .map(wamid_of)
        .collect();
    assert_eq!(
        after.len(),
        4,
        "the 3 posted while away and the marker: {after:?}"
    );
    assert_eq!(after.iter().filter(|w| w.contains(".after.")).count(), 3);

    // Bad requests.
    let (s, v) = p
        .call(
            Method::GET,
            "/v1/events/stream?cursor=v1.nope!",
            &a.key,
            None,
            &[],
        )
        .await?;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("cursor")),
        "{v}"
    );
    let (s, _) = p
        .call(Method::GET, "/v1/events/stream", "sb_not_a_key", None, &[])
        .await?;
    assert_eq!(s, 401);
    Ok(())
}

/// A stream connection that never reads, with a small receive buffer, so the gateway's
/// writes back up quickly.
async fn slow_reader(p: &Pipeline, t: &TestTenant) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = p.gateway_url.trim_start_matches("http://").parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut s = socket.connect(addr).await?;
    s.write_all(
        format!(
            "GET /v1/events/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
            t.key
        )
        .as_bytes(),
    )
    .await?;
    // Read the head only (to know it was accepted), then never again.
    let mut head = [0u8; 64];
    let n = s.read(&mut head).await?;
    anyhow::ensure!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    Ok(s)
}

/// One WebSocket connection to `/v1/events/ws`.
struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pings: usize,
}

/// What a WebSocket said last.
#[derive(Debug)]
enum WsItem {
    Frame(Value),
    Closed(Option<u16>),
}

impl WsClient {
    async fn connect(
        p: &Pipeline,
        t: &TestTenant,
        cursor: Option<&str>,
    ) -> anyhow::Result<Result<Self, u16>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/v1/events/ws{}",
            p.gateway_url.replacen("http://", "ws://", 1),
            cursor.map(|c| format!("?cursor={c}")).unwrap_or_default()
        );
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {}", t.key).parse()?);
        match tokio_tungstenite::connect_async(req).await {
            Ok((socket, _)) => Ok(Ok(WsClient { socket, pings: 0 })),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Ok(Err(r.status().as_u16())),
            Err(e) => Err(e.into()),
        }
    }

    /// The next frame (pings counted and skipped), or the close.
    async fn next(&mut self, within: Duration) -> anyhow::Result<WsItem> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => anyhow::bail!("nothing within {within:?}"),
                Ok(None) => return Ok(WsItem::Closed(None)),
                Ok(Some(m)) => match m? {
                    Message::Text(t) => return Ok(WsItem::Frame(serde_json::from_str(&t)?)),
                    Message::Close(f) => return Ok(WsItem::Closed(f.map(|f| f.code.into()))),
                    Message::Ping(_) => self.pings += 1,
                    other => anyhow::bail!("unexpected {other:?}"),
                },
            }
        }
    }

    /// Frames until `n` of them satisfy `counts`.
    async fn until(
        &mut self,
        n: usize,
        counts: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let mut got = Vec::new();
        while got.iter().filter(|e| counts(e)).count() < n {
            match self.next(Duration::from_secs(60)).await? {
                WsItem::Frame(f) => got.push(f),
                WsItem::Closed(c) => anyhow::bail!("closed ({c:?}) after {} frames", got.len()),
            }
        }
        Ok(got)
    }
}

fn frame_wamid(f: &Value) -> String {
    f["data"]["wamid"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_carries_the_same_feed_with_pings_resume_and_a_clean_close(
) -> anyhow::Result<()> {
    let mut p = Pipeline::start(Options {
        send_path: true,
        gateway_env: vec![
            ("SWITCHBOARD_STREAM_HEARTBEAT", "1s".into()),
            // Every burst overflows: the socket lives on catching up from the topic.
            ("SWITCHBOARD_STREAM_BUFFER", "1".into()),
        ],
        ..Default::default()
    })
    .await?;
    let a = p.tenant("a").await?;
    let b = p.tenant("b").await?;
    p.number(&a, "+15550311", "meta", "pnid-311", 80, None)
        .await?;
    p.number(&b, "+15550312", "meta", "pnid-312", 80, None)
        .await?;

    // A plain GET is not a WebSocket handshake: a JSON error, like every other answer.
    let (s, v) = p
        .call(Method::GET, "/v1/events/ws", &a.key, None, &[])
        .await?;
    assert_eq!(
        (s / 100, v["error"]["code"].as_str()),
        (4, Some("not_a_websocket_request")),
        "{s} {v}"
    );
    // A bad cursor or key is refused at the handshake.
    assert_eq!(
        WsClient::connect(&p, &a, Some("v1.nope!")).await?.err(),
        Some(400)
    );
    let stranger = TestTenant {
        key: "sb_not_a_key".into(),
        ..a.clone()
    };
    assert_eq!(
        WsClient::connect(&p, &stranger, None).await?.err(),
        Some(401)
    );

    let mut client = WsClient::connect(&p, &a, None)
        .await?
        .map_err(|s| anyhow::anyhow!("handshake: {s}"))?;
    let mut live = false;
    for i in 0..60 {
        post(&p, format!("wamid.{}.probe.{i}", p.id)).await?;
        if let Ok(WsItem::Frame(_)) = client.next(Duration::from_secs(2)).await {
            live = true;
            break;
        }
    }
    assert!(live, "the socket never delivered a probe");

    // Only A's, in order per conversation, each with its cursor.
    p.post_statuses("+15550312", 5, 1).await?;
    let na = p.post_statuses("+15550311", 10, 1).await?;
    let prefix = format!("wamid.{}.15550311.", p.id);
    let got = client
        .until(na, |f| frame_wamid(f).starts_with(&prefix))
        .await?;
    assert!(
        got.iter().all(|f| f["data"]["tenant_id"] == a.id.as_str()),
        "only A's"
    );
    assert!(got
        .iter()
        .all(|f| f["cursor"].as_str().is_some_and(|c| c.starts_with("v1."))));
    let mut per_conv: HashMap<String, Vec<String>> = HashMap::new();
    for f in got.iter().filter(|f| frame_wamid(f).starts_with(&prefix)) {
        per_conv
            .entry(
                f["data"]["conversation"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            )
            .or_default()
            .push(f["type"].as_str().unwrap_or_default().into());
    }
    assert_eq!(per_conv.len(), 10);
    let text = p
        .http
        .get(format!("{}/metrics", p.gateway_ops_url))
        .send()
        .await?
        .text()
        .await?;
    let catch_ups: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_gateway_stream_catch_ups_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(catch_ups > 0.0, "the burst overflowed a buffer of 1");
    for types in per_conv.values() {
        assert_eq!(
            types,
            &[
                "message.status.sent",
                "message.status.delivered",
                "message.status.read"
            ]
        );
    }
    // Idle: the server pings every heartbeat (1 s here).
    let before = client.pings;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.pings < before + 2 && tokio::time::Instant::now() < deadline {
        // Pings are counted while waiting for a frame; none is due now.
        if let Ok(WsItem::Closed(c)) = client.next(Duration::from_millis(500)).await {
            anyhow::bail!("closed while idle: {c:?}");
        }
    }
    assert!(client.pings >= before + 2, "pings: {}", client.pings);
    let seen: HashSet<String> = got.iter().map(frame_wamid).collect();
    let last = got
        .last()
        .and_then(|f| f["cursor"].as_str())
        .expect("cursors")
        .to_string();

    // Away: what came meanwhile comes first on resuming, nothing twice.
    drop(client);
    for i in 0..6 {
        post(&p, format!("wamid.{}.missed.{i}", p.id)).await?;
    }
    let mut client = WsClient::connect(&p, &a, Some(&last))
        .await?
        .map_err(|s| anyhow::anyhow!("handshake: {s}"))?;
    let marker = format!("wamid.{}.marker.1", p.id);
    post(&p, marker.clone()).await?;
    let resumed: Vec<String> = client
        .until(1, |f| frame_wamid(f) == marker)
        .await?
        .iter()
        .map(frame_wamid)
        .collect();
    assert_eq!(resumed.len(), 7, "6 missed and the marker: {resumed:?}");
    assert!(resumed.iter().all(|w| !seen.contains(w)), "no repeats");
    assert_eq!(resumed.iter().filter(|w| w.contains(".missed.")).count(), 6);
    // Polling from the same cursor pages through the same events, in the same order.
    let (polled, _) = drain(&p, &a, Some(&last), "").await?;
    let polled: Vec<String> = polled.iter().map(frame_wamid).collect();
    assert_eq!(polled, resumed, "the poll and the socket agree");

    // A stopping gateway says why, then closes with 1001 (going away).
    p.gateway.stop().await?;
    let mut said_end = false;
    let code = loop {
        match client.next(Duration::from_secs(30)).await? {
            WsItem::Frame(f) => {
                said_end = f["type"] == "end" && f["reason"] == "shutdown";
            }
            WsItem::Closed(c) => break c,
        }
    };
    assert!(said_end, "an end frame before the close");
    assert_eq!(code, Some(1001));
    Ok(())
}
