//! `GET /v1/events/stream`: a tenant's events as they happen, over Server-Sent Events.
//!
//! Each SSE event is one webhook body (`event:` its type, `data:` the body), with `id:`
//! its cursor, the same cursor as the polling API's. A client that reconnects with
//! `Last-Event-ID` (or `?cursor=`) first gets what it missed, read from the topic by the
//! polling reader, then the live events, with no repeat and no gap: a live event is
//! passed on only if it lies after the position the client already has in its
//! partition. A cursor older than retention gets a `gap` event first. The stream ends
//! with an `end` event naming the reason when the client cannot keep up or the gateway
//! shuts down; a comment every 15 s keeps proxies from closing an idle stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_schemas::config::{type_matches, valid_type_filter};
use tokio::sync::mpsc;

use super::auth::TenantAuth;
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

/// What the client asked to see.
struct Filter {
    tenant: String,
    types: Vec<String>,
    number: Option<String>,
}

impl Filter {
    fn wants(&self, ev: &switchboard_schemas::Event) -> bool {
        let ty = switchboard_processors::fanout::payload::webhook_type(ev);
        ev.tenant_id.as_deref() == Some(self.tenant.as_str())
            && self
                .number
                .as_deref()
                .is_none_or(|n| ev.business_number == n)
            && (self.types.is_empty() || self.types.iter().any(|f| type_matches(f, &ty)))
    }
}

pub async fn stream(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
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
    let types: Vec<String> = q
        .types
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(t) = types.iter().find(|t| !valid_type_filter(t)) {
        return Err(bad(
            "types",
            &format!("{t:?} is not a webhook type or prefix.*"),
        ));
    }
    let sub = app.live.subscribe(&tenant.id).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "a tenant may have {} event streams open on one gateway",
                app.live.max_per_tenant
            ),
        )
    })?;
    let filter = Filter {
        tenant: tenant.id.clone(),
        types,
        number: q.number,
    };
    let (tx, rx) = mpsc::channel::<Sse>(64);
    tokio::spawn(feed(app.clone(), sub, from, filter, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut resp = axum::response::Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Proxies (nginx) must pass events through as they come.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn sse(cursor: &Cursor, ev: &switchboard_schemas::Event) -> Sse {
    let (ty, body) = switchboard_processors::fanout::payload::envelope(ev);
    Sse::default()
        .id(cursor.encode())
        .event(ty)
        .data(body.to_string())
}

fn end(reason: &str, detail: Value) -> Sse {
    Sse::default()
        .event("end")
        .data(json!({"reason": reason, "detail": detail}).to_string())
}

/// The events of one connection: what it missed (from the topic), then live ones.
/// Ends when the client goes away (the channel closes), is too slow, or on shutdown.
async fn feed(
    app: Arc<AppState>,
    mut sub: Subscription,
    from: Option<Cursor>,
    filter: Filter,
    tx: mpsc::Sender<Sse>,
) {
    // What the client has: the next offset per partition (empty: only live events).
    let mut have: BTreeMap<i32, i64> = BTreeMap::new();
    if let Some(cursor) = from {
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
                    let _ = tx.send(end(reason, json!(e.to_string()))).await;
                    return;
                }
            };
            if page.gap {
                let gap = Sse::default().event("gap").data(
                    json!({"detail": "the cursor is older than what the broker retains; events were missed: re-read them through GET /v1/messages"})
                        .to_string(),
                );
                if tx.send(gap).await.is_err() {
                    return;
                }
            }
            for body in page.events {
                let cursor = body["cursor"].as_str().unwrap_or_default().to_string();
                let ty = body["type"].as_str().unwrap_or_default().to_string();
                let ev = Sse::default().id(cursor).event(ty).data(body.to_string());
                if tx.send(ev).await.is_err() {
                    METRICS.closed.with_label_values(&["client"]).inc();
                    return;
                }
            }
            at = page.next;
            if page.done {
                break;
            }
        }
        have = at.0;
    }
    loop {
        let live = tokio::select! {
            _ = app.shutdown.cancelled() => {
                METRICS.closed.with_label_values(&["shutdown"]).inc();
                let _ = tx.try_send(end("shutdown", json!("the gateway is stopping; reconnect with Last-Event-ID")));
                return;
            }
            _ = tx.closed() => {
                METRICS.closed.with_label_values(&["client"]).inc();
                return;
            }
            live = sub.events.recv() => live,
        };
        let Some(live) = live else {
            // The feed closed the subscription: this client did not keep up.
            let _ = tx.try_send(end(
                "slow",
                json!("the client did not read events as fast as they came; reconnect with Last-Event-ID"),
            ));
            return;
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
        if tx
            .send(sse(&Cursor(have.clone()), &live.event))
            .await
            .is_err()
        {
            METRICS.closed.with_label_values(&["client"]).inc();
            return;
        }
    }
}
