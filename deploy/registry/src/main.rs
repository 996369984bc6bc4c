//! A small Confluent-compatible schema registry for local runs and tests.
//!
//! It serves the subset of the REST API that Switchboard's codec (schema_registry_converter)
//! uses, and persists to one JSON file so schema ids stay stable across restarts (clients
//! cache ids for their lifetime). Production points at a real registry (Confluent,
//! Redpanda, Karapace, Apicurio) by URL instead.
//!
//! Compatibility: a new version of a subject must be able to read everything written with
//! the previous one (BACKWARD). Switchboard's rule is "only add fields with defaults", and
//! that is what is checked here for record schemas.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use apache_avro::Schema;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default = "default_addr")]
    registry_addr: String,
    /// Where the schemas are kept across restarts. Not `registry_file`: a variable ending
    /// in `_FILE` names a file holding a setting's value (`switchboard_runtime::config`).
    #[serde(default = "default_store")]
    registry_store: PathBuf,
}
fn default_addr() -> String {
    "127.0.0.1:8081".into()
}
fn default_store() -> PathBuf {
    PathBuf::from(".local/schema-registry.json")
}

#[derive(Default, Serialize, Deserialize)]
struct Store {
    /// Schema text by id - 1.
    schemas: Vec<String>,
    /// Canonical form by id - 1, for "same schema, same id".
    canonical: Vec<String>,
    /// Subject → schema ids of its versions (version = index + 1).
    subjects: BTreeMap<String, Vec<u32>>,
}

struct App {
    store: Mutex<Store>,
    file: PathBuf,
}

type Shared = Arc<App>;

fn err(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": code, "message": message.into()})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct RegisterBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

async fn register(
    State(app): State<Shared>,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: RegisterBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return err(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("invalid request body: {e}"),
            )
        }
    };
    if let Some(t) = &body.schema_type {
        if t != "AVRO" {
            return err(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("schemaType {t} is not supported here"),
            );
        }
    }
    let schema = match Schema::parse_str(&body.schema) {
        Ok(s) => s,
        Err(e) => {
            return err(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("invalid Avro schema: {e}"),
            )
        }
    };
    let canonical = schema.canonical_form();
    let mut store = app.store.lock().await;
    let existing = store
        .canonical
        .iter()
        .position(|c| *c == canonical)
        .map(|i| i as u32 + 1);
    let versions = store.subjects.get(&subject).cloned().unwrap_or_default();
    if let Some(id) = existing {
        if versions.contains(&id) {
            return Json(json!({"id": id})).into_response();
        }
    }
    if let Some(prev_id) = versions.last() {
        let prev = &store.schemas[*prev_id as usize - 1];
        if let Err(why) = backward_compatible(prev, &schema) {
            return err(
                StatusCode::CONFLICT,
                409,
                format!(
                    "schema is incompatible with version {} of {subject}: {why}",
                    versions.len()
                ),
            );
        }
    }
    let id = match existing {
        Some(id) => id,
        None => {
            store.schemas.push(body.schema.clone());
            store.canonical.push(canonical);
            store.schemas.len() as u32
        }
    };
    store.subjects.entry(subject).or_default().push(id);
    if let Err(e) = persist(&app.file, &store).await {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("cannot persist registry: {e}"),
        );
    }
    Json(json!({"id": id})).into_response()
}

/// Can a reader with `new` read every record written with `old`?
fn backward_compatible(old: &str, new: &Schema) -> Result<(), String> {
    let old = Schema::parse_str(old).map_err(|e| e.to_string())?;
    let (Schema::Record(o), Schema::Record(n)) = (&old, new) else {
        return if old.canonical_form() == new.canonical_form() {
            Ok(())
        } else {
            Err("non-record schemas must not change".into())
        };
    };
    for f in &n.fields {
        let in_old = o.fields.iter().any(|of| of.name == f.name);
        if !in_old && f.default.is_none() {
            return Err(format!("new field {} has no default", f.name));
        }
    }
    Ok(())
}

async fn persist(file: &PathBuf, store: &Store) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = file.with_extension("tmp");
    tokio::fs::write(&tmp, serde_json::to_vec_pretty(store)?).await?;
    tokio::fs::rename(&tmp, file).await
}

async fn schema_by_id(State(app): State<Shared>, Path(id): Path<u32>) -> Response {
    let store = app.store.lock().await;
    match id
        .checked_sub(1)
        .and_then(|i| store.schemas.get(i as usize))
    {
        Some(s) => Json(json!({"schema": s})).into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            40403,
            format!("schema {id} not found"),
        ),
    }
}

async fn subjects(State(app): State<Shared>) -> Response {
    let store = app.store.lock().await;
    Json(store.subjects.keys().collect::<Vec<_>>()).into_response()
}

async fn versions(State(app): State<Shared>, Path(subject): Path<String>) -> Response {
    let store = app.store.lock().await;
    match store.subjects.get(&subject) {
        Some(v) => Json((1..=v.len()).collect::<Vec<_>>()).into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            40401,
            format!("subject {subject} not found"),
        ),
    }
}

async fn version(
    State(app): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let store = app.store.lock().await;
    let Some(ids) = store.subjects.get(&subject) else {
        return err(
            StatusCode::NOT_FOUND,
            40401,
            format!("subject {subject} not found"),
        );
    };
    let idx = if version == "latest" {
        ids.len()
    } else {
        match version.parse::<usize>() {
            Ok(v) if v >= 1 && v <= ids.len() => v,
            _ => {
                return err(
                    StatusCode::NOT_FOUND,
                    40402,
                    format!("version {version} not found"),
                )
            }
        }
    };
    let id = ids[idx - 1];
    Json(json!({"subject": subject, "version": idx, "id": id, "schema": store.schemas[id as usize - 1]})).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_runtime::telemetry::init("schema-registry");
    let cfg: Config = switchboard_runtime::config::load()?;
    let store = match tokio::fs::read(&cfg.registry_store).await {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::default(),
        Err(e) => anyhow::bail!("cannot read {}: {e}", cfg.registry_store.display()),
    };
    let app = Arc::new(App {
        store: Mutex::new(store),
        file: cfg.registry_store.clone(),
    });
    let ready: switchboard_runtime::ops::ReadinessCheck = Arc::new(|| Box::pin(async { Ok(()) }));
    let router = Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}/versions", post(register).get(versions))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .with_state(app)
        .merge(switchboard_runtime::ops::router(ready));
    let shutdown = switchboard_runtime::shutdown::on_signal();
    let server = switchboard_runtime::ops::serve(&cfg.registry_addr, router, shutdown).await?;
    server.await?;
    Ok(())
}
