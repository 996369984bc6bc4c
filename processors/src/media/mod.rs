//! The media fetcher: inbound messages with media (image, video, audio, voice,
//! document, sticker) name it by an id whose download URL lives about five minutes, so
//! the routers fetch it right away (a consumer group of its own on `wa.events`), check
//! it against the BSP's hash, keep it content-addressed ([`store`]) and record which
//! tenant's message refers to it (`db::media`); a `message.media_stored` event then says
//! where it is (`GET /v1/media/{sha256}`), for the stores and the client endpoints.
//!
//! Meta and 360dialog only: they name media by id and give a hash. A fetch that fails
//! for good (gone, too large, refused type, corrupt) is dead-lettered with its reason; a
//! transient one holds the batch until the URL's lifetime is over, then is dead-lettered
//! `media_expired`.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::OwnedMessage;
use serde_json::{json, Value};
use switchboard_connectors::meta::media::{download, info, FetchError};
use switchboard_connectors::Bsp;
use switchboard_runtime::failure::Permanent;
use switchboard_runtime::kafka::{produce_all, OutRecord};
use switchboard_runtime::stream::BatchHandler;
use switchboard_schemas::{media_event_id, Event, EventType, EVENT_SCHEMA};

use crate::db::media::Media;
use crate::route::dispatch::SendRouter;
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
    pub max_bytes: u64,
    /// MIME types kept: exact (`application/pdf`) or a family (`image/`).
    pub types: Vec<String>,
}

/// The media id of an inbound message with media, if it has one this fetcher can get.
pub fn media_id(e: &Event) -> Option<String> {
    if e.event_type != EventType::Received.as_str()
        || !MEDIA_TYPES.contains(&e.message_type.as_deref()?)
        || !matches!(e.bsp.as_str(), "meta" | "360dialog")
    {
        return None;
    }
    let v: Value = serde_json::from_str(e.content.as_deref()?).ok()?;
    v.get("id")?.as_str().map(str::to_string)
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

    /// Fetch, keep and record one message's media; the event that says so.
    async fn fetch(&self, e: &Event, id: &str) -> anyhow::Result<Event> {
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
        let creds = self
            .core
            .credentials(tenant, bsp)
            .map_err(|err| Permanent::new("media_no_credentials", anyhow::anyhow!(err.detail)))?;
        let secret = creds
            .get(if bsp == Bsp::Dialog360 {
                "api_key"
            } else {
                "access_token"
            })
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Permanent::new(
                    "media_no_credentials",
                    anyhow::anyhow!("no token in the {bsp} credentials"),
                )
            })?;
        let expired =
            || switchboard_runtime::now_ms() - e.received_at_ms > URL_LIFETIME.as_millis() as i64;
        let classify = |err: FetchError| -> anyhow::Error {
            match err {
                FetchError::Transient(d) if expired() => Permanent::new(
                    "media_expired",
                    anyhow::anyhow!("{d}; the URL's lifetime is over"),
                )
                .into(),
                FetchError::Transient(d) => anyhow::anyhow!(d),
                FetchError::Gone(d) => Permanent::new("media_gone", anyhow::anyhow!(d)).into(),
                FetchError::TooLarge(d) => {
                    Permanent::new("media_too_large", anyhow::anyhow!(d)).into()
                }
                FetchError::Corrupt(d) => {
                    Permanent::new("media_corrupt", anyhow::anyhow!(d)).into()
                }
            }
        };
        let base = self.core.cfg.base_url(bsp);
        let meta = info(&self.core.http, bsp, base, id, secret)
            .await
            .map_err(classify)?;
        let mime = meta
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        if !self.allowed(&mime) {
            return Err(Permanent::new(
                "media_type_refused",
                anyhow::anyhow!("{mime} is not an allowed media type"),
            )
            .into());
        }
        let (bytes, sha256) = download(&self.core.http, bsp, &meta, secret, self.max_bytes)
            .await
            .map_err(classify)?;
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
                json!({"media_id": id, "sha256": sha256, "size": size, "mime_type": mime,
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
        let wanted: Vec<(&Event, String)> = events
            .iter()
            .filter_map(|e| Some((e, media_id(e)?)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // A few at a time: each is two calls to the BSP.
        let mut stored = Vec::new();
        for chunk in wanted.chunks(8) {
            let done =
                futures::future::join_all(chunk.iter().map(|(e, id)| self.fetch(e, id))).await;
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
