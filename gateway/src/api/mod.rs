//! The client-facing API (`/v1/...`, tenant API keys) and the operator's admin API
//! (`/admin/...`, the admin key). State lives in PostgreSQL; the configuration plane is
//! also published to `wa.config`, from which every process (this one included) keeps
//! the copy it authenticates and routes with.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod batcher;
pub mod campaigns;
pub mod conversations;
pub mod deliveries;
pub mod endpoints;
pub mod events;
pub mod media;
pub mod messages;
pub mod policy;
pub mod publish;
pub mod replays;
pub mod store;
pub mod stream;
pub mod suppressions;
pub mod templates;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::AppState;

/// The OpenAPI document of everything below, served as is.
pub const OPENAPI: &str = include_str!("openapi.yaml");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/openapi.yaml", get(openapi))
        .route("/v1/messages", post(messages::send).get(messages::list))
        .route("/v1/messages/batch", post(messages::send_batch))
        .route("/v1/templates", get(templates::list))
        .route("/v1/media/{sha256}", get(media::get_one))
        .route(
            "/v1/campaigns",
            post(campaigns::create).get(campaigns::list),
        )
        .route("/v1/campaigns/{id}", get(campaigns::get_one))
        .route("/v1/campaigns/{id}/{action}", post(campaigns::act))
        .route("/v1/suppressions", get(suppressions::list))
        .route(
            "/v1/suppressions/{customer}",
            get(suppressions::get_one)
                .put(suppressions::put)
                .delete(suppressions::delete),
        )
        .route("/v1/conversations", get(conversations::list))
        .route(
            "/v1/conversations/{number}/{customer}",
            get(conversations::get_one),
        )
        .route(
            "/v1/messages/{id}",
            get(messages::get_one).delete(messages::cancel),
        )
        .route(
            "/v1/endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::get_one)
                .patch(endpoints::patch)
                .delete(endpoints::delete),
        )
        .route("/v1/endpoints/{id}/enable", post(endpoints::enable))
        .route(
            "/v1/endpoints/{id}/secret/rotate",
            post(endpoints::rotate_secret),
        )
        .route("/v1/endpoints/{id}/attempts", get(deliveries::attempts))
        .route("/v1/endpoints/{id}/stats", get(deliveries::stats))
        .route("/v1/endpoints/{id}/recover", post(deliveries::recover))
        .route("/v1/analytics/messages", get(analytics::tenant_messages))
        .route("/v1/analytics/{report}", get(analytics::tenant_report))
        .route("/v1/events", get(events::poll))
        .route("/v1/events/stream", get(stream::sse::stream))
        .route("/v1/events/ws", get(stream::ws::ws))
        .route("/v1/events/{id}/resend", post(deliveries::resend))
        .route(
            "/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/admin/tenants/{tenant}",
            get(admin::get_tenant).patch(admin::patch_tenant),
        )
        .route("/admin/tenants/{tenant}/api-keys", post(admin::create_key))
        .route(
            "/admin/tenants/{tenant}/api-keys/{key}",
            delete(admin::revoke_key),
        )
        .route(
            "/admin/tenants/{tenant}/numbers/{number}",
            put(admin::put_number).delete(admin::delete_number),
        )
        .route(
            "/admin/tenants/{tenant}/credentials/{bsp}",
            put(admin::put_credentials),
        )
        .route("/admin/credentials/rotate", post(admin::rotate_credentials))
        .route(
            "/admin/analytics/messages",
            get(analytics::operator_messages),
        )
        .route("/admin/analytics/{report}", get(analytics::operator_report))
        .route("/admin/replays", post(replays::create).get(replays::list))
        .route(
            "/admin/replays/{id}",
            get(replays::get_one).delete(replays::cancel),
        )
        .route("/admin/dead-letters", get(replays::letters))
        .route(
            "/admin/dead-letters/{stage}/{partition}/{offset}",
            get(replays::letter),
        )
        .route("/admin/dead-letters/redrive", post(replays::redrive))
        .route("/admin/dead-letters/purge", post(replays::purge))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

/// Random identifiers: a prefix and 128 bits (ids) or 256 bits (secrets), URL-safe.
pub fn random_token(prefix: &str, bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

/// A time-ordered id (UUIDv7), so ids sort by creation.
pub fn ordered_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    /// Every route this module serves is in the OpenAPI document (a path parameter
    /// spelled the same way), so the document cannot silently fall behind.
    #[test]
    fn openapi_documents_every_route() {
        let src = include_str!("mod.rs");
        let routes: Vec<&str> = src
            .split('"')
            .filter(|s| s.starts_with("/v1/") || s.starts_with("/admin/"))
            .filter(|s| s.len() > "/admin/".len())
            .collect();
        assert!(routes.len() >= 10, "found {routes:?}");
        for r in routes {
            assert!(
                super::OPENAPI.contains(&format!("  {r}:")),
                "{r} is not in openapi.yaml"
            );
        }
    }
}
