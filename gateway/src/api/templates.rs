//! `GET /v1/templates`: the tenant's message templates as last synced from the BSP
//! (`db::templates`), with each WABA's last sync.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use switchboard_processors::db::templates::Templates;

use super::auth::TenantAuth;
use crate::error::ApiError;
use crate::AppState;

pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(app): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    let store = Templates::new(app.db.clone());
    let rows = store.list(&tenant.id).await.map_err(ApiError::db)?;
    let syncs = store.syncs(&tenant.id).await.map_err(ApiError::db)?;
    Ok(Json(json!({
        "data": rows.iter().map(|t| json!({
            "waba_id": t.waba_id, "name": t.name, "language": t.language, "status": t.status,
            "category": t.category, "components": t.components, "parameters": t.needs,
            "synced_at": t.synced_at,
        })).collect::<Vec<_>>(),
        "syncs": syncs.iter().map(|(waba, at, n, err)| json!({
            "waba_id": waba, "synced_at": at, "templates": n, "error": err,
        })).collect::<Vec<_>>(),
    })))
}
