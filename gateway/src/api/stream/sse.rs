//! `GET /v1/events/stream`: the live feed over Server-Sent Events. Each SSE event is one
//! webhook body (`event:` its type, `data:` the body, `id:` its cursor, the polling
//! API's); `gap` and `end` are events of their own; a comment every heartbeat keeps
//! proxies from closing an idle stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Item, StreamQuery};
use crate::api::auth::TenantAuth;
use crate::error::ApiError;
use crate::AppState;

pub async fn stream(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let opened = super::open(&app, &tenant.id, &headers, query)?;
    let heartbeat = app.live.heartbeat;
    let rx = super::start(app, opened);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (Ok::<_, Infallible>(render(item)), rx))
    });
    let mut resp = axum::response::Sse::new(body)
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response();
    // Proxies (nginx) must pass events through as they come.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn render(item: Item) -> Sse {
    match item {
        Item::Event { cursor, ty, body } => Sse::default().id(cursor).event(&*ty).data(&*body),
        Item::Gap => Sse::default()
            .event("gap")
            .data(json!({"detail": Item::GAP_DETAIL}).to_string()),
        Item::End { reason, detail } => Sse::default()
            .event("end")
            .data(json!({"reason": reason, "detail": detail}).to_string()),
    }
}
