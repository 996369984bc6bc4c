//! The media fetcher: inbound messages with media (image, video, audio, voice,
//! document, sticker) name it by an id or a URL that lives minutes, so the routers fetch
//! it right away (a consumer group of its own on `wa.events`), check
//! it against the BSP's hash, keep it content-addressed ([`store`]) and record which
//! tenant's message refers to it (`db::media`); a `message.media_stored` event then says
//! where it is (`GET /v1/media/{sha256}`), for the stores and the client endpoints.
//!
//! Meta and 360dialog name media by id and give a hash; Twilio, WAHA, Gupshup and
//! Aisensy give a URL ([`by_url`]). A fetch that fails for good (gone, too large, refused
//! type, corrupt, a URL pointing where Switchboard does not go) is dead-lettered with its
//! reason; a transient one holds the batch until the URL's lifetime is over, then is
//! dead-lettered `media_expired`.

pub mod by_url;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::OwnedMessage;
use serde_json::{json, Value};
use switchboard_connectors::media::{read_body, source, FetchError, Source};
use switchboard_connectors::meta::media::{download, info};
use switchboard_connectors::Bsp;
use switchboard_runtime::failure::Permanent;
use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::{media_event_id, Event, EventType, EVENT_SCHEMA};

use crate::db::media::Media;
use crate::route::dispatch::SendRouter;
use by_url::UrlClients;
use store::BlobStore;

/// How long a BSP's media URL is good for (Meta: about five minutes).
pub const URL_LIFETIME: Duration = Duration::from_secs(300);

const MEDIA_TYPES: [&str; 6] = ["image", "video", "audio", "voice", "document", "sticker"];

/// What the fetcher needs besides the router's credentials and HTTP client.
#[derive(Clone)]
pub struct Fetcher {
    pub core: Arc<SendRouter>,
    pub store: BlobStore,
    pub media: Media,
    pub urls: UrlClients,
    pub max_bytes: u64,
    /// MIME types kept: exact (`application/pdf`) or a family (`image/`).
    pub types: Vec<String>,
}

/// Where an inbound message's media is, if it has some this fetcher can get.
pub fn media_source(e: &Event) -> Option<Source> {
    if e.event_type != EventType::Received.as_str()
        || !MEDIA_TYPES.contains(&e.message_type.as_deref()?)
    {
        return None;
    }
    let bsp: Bsp = e.bsp.parse().ok()?;
    let v: Value = serde_json::from_str(e.content.as_deref()?).ok()?;
    source(bsp, &v)
}

impl Fetcher {
    fn allowed(&self, mime: &str) -> bool {
        let base = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| {
            if t.ends_with('/') {
                base.starts_with(t.as_str())
            } else {
                base == *t
            }
        })
    }

    fn refuse_type(&self, mime: &str) -> anyhow::Result<()> {
        if self.allowed(mime) {
            return Ok(());
        }
        Err(Permanent::new(
            "media_type_refused",
            anyhow::anyhow!("{mime} is not an allowed media type"),
        )
        .into())
    }

    /// Fetch, keep and record one message's media; the event that says so.
    async fn fetch(&self, e: &Event, src: &Source) -> anyhow::Result<Event> {
        let tenant = e.tenant_id.as_deref().ok_or_else(|| {
            Permanent::new(
                "media_no_tenant",
                anyhow::anyhow!("the business number belongs to no tenant"),
            )
        })?;
        let bsp: Bsp = e
            .bsp
            .parse()
            .map_err(|_| anyhow::anyhow!("unknown BSP {}", e.bsp))?;
        let no_creds = |d: String| -> anyhow::Error {
            Permanent::new("media_no_credentials", anyhow::anyhow!(d)).into()
        };
        let creds = self.core.credentials(tenant, bsp).map_err(|err| err.detail);
        // A URL's own expiry where the webhook gives one, else the BSP's usual lifetime.
        let dies_at = match src {
            Source::Url {
                expires_at_ms: Some(at),
                ..
            } => *at,
            _ => e.received_at_ms + URL_LIFETIME.as_millis() as i64,
        };
        let classify = |err: FetchError| -> anyhow::Error {
            let permanent =
                |reason: &'static str, d: String| Permanent::new(reason, anyhow::anyhow!(d)).into();
            match err {
                FetchError::Transient(d) if switchboard_runtime::now_ms() > dies_at => {
                    permanent("media_expired", format!("{d}; the URL's lifetime is over"))
                }
                FetchError::Transient(d) => anyhow::anyhow!(d),
                FetchError::Gone(d) => permanent("media_gone", d),
                FetchError::TooLarge(d) => permanent("media_too_large", d),
                FetchError::Corrupt(d) => permanent("media_corrupt", d),
                FetchError::UrlRefused(d) => permanent("media_url_refused", d),
            }
        };
        let base = self.core.cfg.base_url(bsp);
        let (bytes, sha256, mime, media_id) = match src {
            Source::Id(id) => {
                let creds = creds.map_err(no_creds)?;
                let secret = creds
                    .get(if bsp == Bsp::Dialog360 {
                        "api_key"
                    } else {
                        "access_token"
                    })
                    .and_then(Value::as_str)
                    .ok_or_else(|| no_creds(format!("no token in the {bsp} credentials")))?;
                let meta = info(&self.core.http, bsp, base, id, secret)
                    .await
                    .map_err(classify)?;
                let mime = meta
                    .mime_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into());
                self.refuse_type(&mime)?;
                let (bytes, sha256) = download(&self.core.http, bsp, &meta, secret, self.max_bytes)
                    .await
                    .map_err(classify)?;
                (bytes, sha256, mime, Some(id.clone()))
            }
            Source::Url { url, mime_type, .. } => {
                if let Some(m) = mime_type {
                    self.refuse_type(m)?;
                }
                // Credentials are needed only on the BSP's own origin; a missing set
                // shows there as a refusal by the BSP.
                let resp = self
                    .urls
                    .open(bsp, base, url, creds.as_ref().ok())
                    .await
                    .map_err(classify)?;
                let served = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mime = mime_type
                    .clone()
                    .or(served)
                    .unwrap_or_else(|| "application/octet-stream".into());
                self.refuse_type(&mime)?;
                let (bytes, sha256) = read_body(resp, self.max_bytes, None)
                    .await
                    .map_err(classify)?;
                (bytes, sha256, mime, None)
            }
        };
        let size = bytes.len() as i64;
        self.store
            .put(&sha256, bytes)
            .await
            .context("keeping the media blob")?;
        self.media
            .record(tenant, &e.bsp, &e.wamid, &sha256, size, &mime)
            .await
            .context("recording the media blob")?;
        let now = switchboard_runtime::now_ms();
        Ok(Event {
            event_id: media_event_id(&e.bsp, &e.wamid),
            event_type: EventType::MediaStored.as_str().into(),
            status: None,
            content: Some(
                json!({"media_id": media_id, "sha256": sha256, "size": size, "mime_type": mime,
                    "url": format!("/v1/media/{sha256}")})
                .to_string(),
            ),
            message_type: e.message_type.clone(),
            occurred_at_ms: now,
            received_at_ms: e.received_at_ms,
            error_code: None,
            error_title: None,
            error_detail: None,
            ..e.clone()
        })
    }
}

impl BatchHandler for Fetcher {
    async fn handle(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let events = switchboard_sinks::decode_events(&self.core.codec, batch).await?;
        let wanted: Vec<(&Event, Source)> = events
            .iter()
            .filter_map(|e| Some((e, media_source(e)?)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // A few at a time: each is two calls to the BSP.
        let mut stored = Vec::new();
        for chunk in wanted.chunks(8) {
            let done =
                futures::future::join_all(chunk.iter().map(|(e, src)| self.fetch(e, src))).await;
            for d in done {
                stored.push(d?);
            }
        }
        let topic = &self.core.topics.events;
        let mut out = Vec::with_capacity(stored.len());
        for ev in &stored {
            out.push(OutRecord {
                topic: topic.clone(),
                key: ev.conversation_key(),
                payload: self.core.codec.encode(topic, EVENT_SCHEMA, ev).await?,
                headers: vec![("request-id", ev.request_id.clone())],
            });
        }
        produce_all(&self.core.producer, &out).await?;
        Ok(())
    }
}
