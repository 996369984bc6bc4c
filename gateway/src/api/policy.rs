//! The rules a valid send must also pass before it is accepted, checked against what
//! Switchboard knows about the customer and the templates (one query per rule per
//! batch of sends):
//!
//! - a free-form message needs an open customer-service window (`db::conversations`),
//!   unless the tenant turned the check off;
//! - a template must exist at the BSP, be approved and get the parameters it takes,
//!   where its WABA's templates have been synced (`db::templates`; not synced: the BSP
//!   decides);
//! - a marketing template does not go to a customer who stopped marketing messages
//!   (`db::suppressions`).
//!
//! A refused item is a 422 with its own code; the others go on. An item whose
//! idempotency key was accepted before is not refused: the earlier request decides.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use switchboard_connectors::meta::templates::check_parameters;
use switchboard_connectors::send::codes;
use switchboard_processors::db::conversations::{self, Conversations};
use switchboard_processors::db::outbox::Requests;
use switchboard_processors::db::suppressions::Suppressions;
use switchboard_processors::db::templates::Templates;
use switchboard_schemas::config::Tenant;

use super::messages::Valid;
use crate::error::ApiError;
use crate::AppState;

type Refused = HashMap<usize, ApiError>;

pub async fn refusals(
    app: &AppState,
    tenant: &Tenant,
    items: &[Valid],
) -> Result<Refused, ApiError> {
    let mut refused = window(app, tenant, items).await?;
    for (i, e) in templates(app, tenant, items).await? {
        refused.entry(i).or_insert(e);
    }
    let keys: Vec<String> = refused
        .keys()
        .filter_map(|i| items[*i].idempotency_key.clone())
        .collect();
    if !keys.is_empty() {
        let known: HashSet<String> = Requests::new(app.db.clone())
            .earlier(&tenant.id, &keys)
            .await
            .map_err(ApiError::db)?
            .into_iter()
            .map(|e| e.idempotency_key)
            .collect();
        refused.retain(|i, _| {
            items[*i]
                .idempotency_key
                .as_ref()
                .is_none_or(|k| !known.contains(k))
        });
    }
    Ok(refused)
}

/// Free-form sends outside the customer-service window (`conversations::refusal`).
async fn window(app: &AppState, tenant: &Tenant, items: &[Valid]) -> Result<Refused, ApiError> {
    if !tenant.enforce_service_window {
        return Ok(Refused::new());
    }
    let pairs: Vec<(String, String)> = items
        .iter()
        .filter(|v| v.message_type != "template")
        .map(|v| (v.from.clone(), v.to.clone()))
        .collect();
    if pairs.is_empty() {
        return Ok(Refused::new());
    }
    let windows = Conversations::new(app.db.clone())
        .windows(&pairs)
        .await
        .map_err(ApiError::db)?;
    let now = switchboard_runtime::now_ms();
    let mut refused = Refused::new();
    for (i, v) in items.iter().enumerate() {
        let expires = windows.get(&(v.from.clone(), v.to.clone())).copied();
        if let Some(why) = conversations::refusal(&v.message_type, expires, now) {
            let e = ApiError::invalid(conversations::OUTSIDE_SERVICE_WINDOW, "to", why).with(
                "window_closed_at",
                json!(expires.map(conversations::rfc3339)),
            );
            refused.insert(i, e);
        }
    }
    Ok(refused)
}

/// Templates that the synced copy of their WABA says cannot go.
async fn templates(app: &AppState, tenant: &Tenant, items: &[Valid]) -> Result<Refused, ApiError> {
    let wanted: Vec<(usize, String, String, String)> = {
        let ix = app.config.read();
        items
            .iter()
            .enumerate()
            .filter(|(_, v)| v.message_type == "template")
            .filter_map(|(i, v)| {
                let waba = ix.numbers.get(&v.from)?.waba_id.clone()?;
                let t = v.message.get("template")?;
                let name = t.get("name")?.as_str()?.to_string();
                let lang = t.pointer("/language/code")?.as_str()?.to_string();
                Some((i, waba, name, lang))
            })
            .collect()
    };
    if wanted.is_empty() {
        return Ok(Refused::new());
    }
    let store = Templates::new(app.db.clone());
    let synced: HashSet<String> = store
        .syncs(&tenant.id)
        .await
        .map_err(ApiError::db)?
        .into_iter()
        .filter(|s| s.1.is_some())
        .map(|s| s.0)
        .collect();
    let mut refused = Refused::new();
    let mut marketing = Vec::new();
    for (i, waba, name, lang) in wanted {
        if !synced.contains(&waba) {
            continue;
        }
        let found = store
            .find(&tenant.id, &waba, &name, &lang)
            .await
            .map_err(ApiError::db)?;
        let err = |code, msg: String| ApiError::invalid(code, "template", msg);
        let e = match found {
            None => err(
                codes::TEMPLATE_NOT_FOUND,
                format!("WABA {waba} has no template {name:?} in {lang:?}"),
            ),
            Some(t) if !t.is_approved() => err(
                codes::TEMPLATE_NOT_APPROVED,
                format!("template {name:?} ({lang}) is {}", t.status),
            ),
            Some(t) => {
                let given = items[i]
                    .message
                    .pointer("/template/components")
                    .cloned()
                    .unwrap_or(Value::Null);
                match check_parameters(&t.needs(), &given) {
                    Ok(()) => {
                        if t.is_marketing() {
                            marketing.push(i);
                        }
                        continue;
                    }
                    Err(why) => err(codes::TEMPLATE_INVALID, format!("template {name:?}: {why}")),
                }
            }
        };
        refused.insert(i, e);
    }
    if !marketing.is_empty() {
        let customers: Vec<String> = marketing.iter().map(|i| items[*i].to.clone()).collect();
        let stopped = Suppressions::new(app.db.clone())
            .suppressed(&tenant.id, &customers)
            .await
            .map_err(ApiError::db)?;
        for i in marketing {
            if stopped.contains(&items[i].to) {
                let msg = format!(
                    "{} stopped marketing messages from this business; see GET /v1/suppressions",
                    items[i].to
                );
                refused.insert(i, ApiError::invalid(codes::CUSTOMER_OPTED_OUT, "to", msg));
            }
        }
    }
    Ok(refused)
}
