//! A tenant's live events from a cursor, whatever carries them: `sse` (`GET
//! /v1/events/stream`) and `ws` (`GET /v1/events/ws`) only render the [`Item`]s.
//!
//! A connection resuming from a cursor (`Last-Event-ID` or `?cursor=`) first gets what
//! it missed, read from the topic by the polling reader, then the live events, with no
//! repeat and no gap: a live event is passed on only if it lies after the position the
//! client already has in its partition. A cursor older than retention gets a
//! [`Item::Gap`] first. A connection that falls behind the live events (a burst larger
//! than its buffer) catches up from the topic the same way, so a fast client never
//! loses its stream to a burst. The feed ends with [`Item::End`] naming the reason when
//! the client stops reading (`slow`) or the gateway shuts down.

pub mod sse;
pub mod ws;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_schemas::config::type_matches;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::event_log::{Cursor, From, LogError, Query as LogQuery};
use crate::live::{Subscription, METRICS};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this cursor (`Last-Event-ID` wins when both are given).
    cursor: Option<String>,
    types: Option<String>,
    number: Option<String>,
}

fn bad(field: &str, msg: &str) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, "invalid_field", field, msg)
}

/// What one connection carries, in order.
pub enum Item {
    /// One webhook body (JSON text, without its cursor) of type `ty`, at `cursor`.
    /// Shared: a live event is rendered once for all its connections.
    Event {
        cursor: String,
        ty: Arc<str>,
        body: Arc<str>,
    },
    /// Events between the client's cursor and the oldest retained one are gone.
    Gap,
    /// The last item: why the feed stopped.
    End { reason: &'static str, detail: Value },
}

impl Item {
    pub const GAP_DETAIL: &'static str = "the cursor is older than what the broker retains; events were missed: re-read them through GET /v1/messages";
}

/// What the client asked to see.
struct Filter {
    tenant: String,
    types: Vec<String>,
    number: Option<String>,
}

impl Filter {
    fn wants(&self, ev: &switchboard_schemas::Event) -> bool {
        ev.tenant_id.as_deref() == Some(self.tenant.as_str())
            && self
                .number
                .as_deref()
                .is_none_or(|n| ev.business_number == n)
            && (self.types.is_empty() || {
                let ty = switchboard_processors::fanout::payload::webhook_type(ev);
                self.types.iter().any(|f| type_matches(f, &ty))
            })
    }
}

/// A checked request: its filter, its starting point and its place under the cap.
pub struct Opened {
    sub: Subscription,
    from: Option<Cursor>,
    filter: Filter,
}

/// Check a stream request and take one of the tenant's places; the errors are the
/// answers (400, 429) given before any event.
pub fn open(
    app: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    query: Result<axum::extract::Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Opened, ApiError> {
    let axum::extract::Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.cursor);
    let from = match resume.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(Cursor::decode(c).ok_or_else(|| bad("cursor", "not a cursor this API returned"))?)
        }
    };
    let types = crate::api::events::type_filters(q.types.as_deref())?;
    let sub = app.live.subscribe(tenant).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "a tenant may have {} event streams open on one gateway",
                app.live.max_per_tenant
            ),
        )
    })?;
    Ok(Opened {
        sub,
        from,
        filter: Filter {
            tenant: tenant.to_string(),
            types,
            number: q.number,
        },
    })
}

/// Start the connection's feed; it stops when the receiver is dropped.
pub fn start(app: Arc<AppState>, opened: Opened) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel::<Item>(64);
    tokio::spawn(feed(app, opened, tx));
    rx
}

/// Why a connection's feed stopped handing it events.
enum Stop {
    /// The client went away.
    Gone,
    /// The client took longer than the stall timeout to accept one more event.
    Stalled,
}

/// Hand `item` to the connection, waiting at most `stall` for room.
async fn give(tx: &mpsc::Sender<Item>, item: Item, stall: Duration) -> Result<(), Stop> {
    match tokio::time::timeout(stall, tx.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::Gone),
        Err(_) => Err(Stop::Stalled),
    }
}

/// The events of one connection: what it missed (from the topic), then live ones; when
/// it falls behind the live events (its subscription overflowed), what it missed again,
/// from the topic at its own pace, then live ones again. Ends when the client goes away
/// (the channel closes), stalls, or on shutdown.
async fn feed(app: Arc<AppState>, opened: Opened, tx: mpsc::Sender<Item>) {
    let stall = app.live.stall;
    match run(&app, opened, &tx).await {
        Ok(()) => {}
        Err(Stop::Gone) => METRICS.closed.with_label_values(&["client"]).inc(),
        Err(Stop::Stalled) => {
            METRICS.closed.with_label_values(&["slow"]).inc();
            tracing::info!(?stall, "event stream ended: the client stopped reading");
            let _ = tx.try_send(Item::End {
                reason: "slow",
                detail: json!(
                    "the client did not read events as they came; reconnect with the last cursor"
                ),
            });
        }
    }
}

/// The gateway is stopping: the connection's last item says so.
fn shut_down(tx: &mpsc::Sender<Item>) -> Result<(), Stop> {
    METRICS.closed.with_label_values(&["shutdown"]).inc();
    let _ = tx.try_send(Item::End {
        reason: "shutdown",
        detail: json!("the gateway is stopping; reconnect with the last cursor"),
    });
    Ok(())
}

async fn run(app: &AppState, opened: Opened, tx: &mpsc::Sender<Item>) -> Result<(), Stop> {
    let stall = app.live.stall;
    let Opened {
        mut sub,
        from,
        filter,
    } = opened;
    // The feed must read from a position taken after this subscription before the
    // catch-up reads the topic up to its end: then the two overlap.
    tokio::select! {
        _ = app.shutdown.cancelled() => return shut_down(tx),
        _ = tx.closed() => return Err(Stop::Gone),
        _ = sub.ready() => {}
    }
    // What the client has: the next offset per partition (empty: only live events).
    let mut have: BTreeMap<i32, i64> = BTreeMap::new();
    let mut catch_up = from;
    loop {
        if let Some(cursor) = catch_up.take() {
            let mut at = cursor;
            loop {
                let q = LogQuery {
                    tenant: &filter.tenant,
                    types: &filter.types,
                    number: filter.number.as_deref(),
                    limit: 500,
                };
                let page = match app.events.poll(From::Cursor(at.clone()), &q).await {
                    Ok(p) => p,
                    Err(e) => {
                        let reason = match e {
                            LogError::UnknownPartition(_) => "bad_cursor",
                            LogError::Unavailable(_) => "unavailable",
                        };
                        let detail = json!(e.to_string());
                        return give(tx, Item::End { reason, detail }, stall).await;
                    }
                };
                if page.gap {
                    give(tx, Item::Gap, stall).await?;
                }
                for mut body in page.events {
                    let cursor = match body.as_object_mut().and_then(|o| o.remove("cursor")) {
                        Some(Value::String(c)) => c,
                        _ => String::new(),
                    };
                    let ty: Arc<str> = body["type"].as_str().unwrap_or_default().into();
                    let body: Arc<str> = body.to_string().into();
                    give(tx, Item::Event { cursor, ty, body }, stall).await?;
                }
                at = page.next;
                if page.done {
                    break;
                }
            }
            for (p, o) in at.0 {
                let e = have.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        loop {
            let live = tokio::select! {
                _ = app.shutdown.cancelled() => return shut_down(tx),
                _ = tx.closed() => return Err(Stop::Gone),
                live = sub.events.recv() => live,
            };
            let Some(live) = live else {
                // Cut off from the live events (its buffer overflowed): live events flow
                // into a fresh buffer from now on, and what came in between is read from
                // the topic. `have` is not empty: the overflowed buffer was full, and
                // every event taken from it moved `have`.
                sub.renew();
                catch_up = Some(Cursor(have.clone()));
                break;
            };
            // Already given (read from the topic while catching up)?
            if have
                .get(&live.partition)
                .is_some_and(|next| live.offset < *next)
            {
                continue;
            }
            // The client now has everything up to the feed's position and its own.
            for (p, o) in &live.feed_position {
                let e = have.entry(*p).or_insert(*o);
                *e = (*e).max(*o);
            }
            if !filter.wants(&live.event) {
                continue;
            }
            let rendered = live.rendered();
            let item = Item::Event {
                cursor: Cursor(have.clone()).encode(),
                ty: rendered.ty.clone(),
                body: rendered.body.clone(),
            };
            give(tx, item, stall).await?;
        }
    }
}
