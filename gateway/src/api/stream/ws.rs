//! `GET /v1/events/ws`: the live feed over a WebSocket, for clients (agent inboxes,
//! dashboards) that hold one. Every text frame is one JSON object: a webhook body with
//! its `cursor` added (the polling API's items), `{"type": "gap", ...}`, or, last,
//! `{"type": "end", "reason": ..., "detail": ...}` followed by a close frame. The server
//! pings every heartbeat; what the client sends is ignored apart from close, and a
//! client message larger than a few KiB ends the connection.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

use super::{Item, StreamQuery};
use crate::api::auth::TenantAuth;
use crate::edge::ConnSlot;
use crate::error::ApiError;
use crate::AppState;

/// Clients only close or answer pings; anything bigger is not a client of this API.
const MAX_CLIENT_MESSAGE: usize = 4096;

// RFC 6455 close codes.
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const INTERNAL: u16 = 1011;

pub async fn ws(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    slot: Option<axum::Extension<ConnSlot>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade =
        upgrade.map_err(|e| ApiError::new(e.status(), "not_a_websocket_request", e.body_text()))?;
    let opened = super::open(&app, &tenant.id, &headers, query)?;
    let tracker = app.upgraded.clone();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            // The upgraded socket still holds its place under the connection cap, and the
            // gateway waits for it to say goodbye when it stops.
            tracker.track_future(async move {
                serve(app, opened, socket).await;
                drop(slot);
            })
        }))
}

async fn serve(app: Arc<AppState>, opened: super::Opened, socket: WebSocket) {
    let heartbeat = app.live.heartbeat;
    let mut items = super::start(app, opened);
    let (mut out, mut incoming) = socket.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            item = items.recv() => {
                let Some(item) = item else { break };
                let (frame, close) = render(item);
                if out.send(Message::Text(frame.into())).await.is_err() {
                    return;
                }
                if let Some((code, reason)) = close {
                    let _ = out
                        .send(Message::Close(Some(CloseFrame { code, reason: reason.into() })))
                        .await;
                    return;
                }
            }
            _ = ping.tick() => {
                if out.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            msg = incoming.next() => match msg {
                // Pongs, and anything else a client says, need no answer (tungstenite
                // answers pings itself).
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The frame of `item`, and the close frame that follows it when it is the last.
fn render(item: Item) -> (String, Option<(u16, &'static str)>) {
    match item {
        // The shared body with this connection's cursor spliced in as its first field.
        Item::Event { cursor, body, .. } => match body.strip_prefix('{') {
            Some(rest) => (
                format!("{{\"cursor\":{},{rest}", Value::String(cursor)),
                None,
            ),
            None => (body.to_string(), None),
        },
        Item::Gap => (
            json!({"type": "gap", "detail": Item::GAP_DETAIL}).to_string(),
            None,
        ),
        Item::End { reason, detail } => {
            let code = match reason {
                "shutdown" => GOING_AWAY,
                "slow" | "bad_cursor" => POLICY,
                _ => INTERNAL,
            };
            (
                json!({"type": "end", "reason": reason, "detail": detail}).to_string(),
                Some((code, reason)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_is_the_shared_body_with_the_connections_cursor() {
        let body: std::sync::Arc<str> =
            r#"{"type":"message.status.read","data":{"wamid":"w\"1"}}"#.into();
        let (frame, close) = render(Item::Event {
            cursor: "v1.MDox".into(),
            ty: "message.status.read".into(),
            body,
        });
        let v: Value = serde_json::from_str(&frame).expect("valid JSON");
        assert_eq!(v["cursor"], "v1.MDox");
        assert_eq!(v["type"], "message.status.read");
        assert_eq!(v["data"]["wamid"], "w\"1");
        assert!(close.is_none());
        let (frame, close) = render(Item::End {
            reason: "slow",
            detail: json!("x"),
        });
        assert!(frame.contains("\"end\"") && close == Some((POLICY, "slow")));
    }
}
