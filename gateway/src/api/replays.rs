//! Replays and dead letters in the admin API: thin handlers over
//! `switchboard_processors::replay`, the code the `switchboard` CLI runs. A replay made
//! here is a job in PostgreSQL that a `replayer` runs; its progress is read back from the
//! job.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use switchboard_processors::replay::{self, dlq, PlanError, ReplayRequest, SpecError};

use super::admin::json_body;
use super::auth::AdminAuth;
use crate::error::ApiError;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// A replay request's errors: what the operator asked for cannot be done (400), or the
/// broker is away (503).
fn refused(e: anyhow::Error) -> ApiError {
    if let Some(s) = e.downcast_ref::<SpecError>() {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_replay", s.to_string());
    }
    match e.downcast_ref::<PlanError>() {
        Some(PlanError::NoTopic(_)) | Some(PlanError::NoPartition { .. }) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_topic", e.to_string())
        }
        Some(PlanError::BeforeLogStart { .. }) => {
            ApiError::new(StatusCode::BAD_REQUEST, "range_not_retained", e.to_string())
        }
        Some(PlanError::Broker(_)) => ApiError::unavailable("broker_unavailable", e.to_string()),
        None => ApiError::internal(format!("{e:#}")),
    }
}

fn job_error(e: anyhow::Error) -> ApiError {
    match e.downcast::<sqlx::Error>() {
        Ok(db) => ApiError::db(db),
        Err(e) => ApiError::internal(format!("{e:#}")),
    }
}

/// `POST /admin/replays`
pub async fn create(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let r: ReplayRequest = json_body(&body)?;
    start(&app, &r, r.dry_run, "admin api").await
}

async fn start(
    app: &AppState,
    req: &ReplayRequest,
    dry_run: bool,
    by: &str,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (spec, plan) = replay::prepare(&app.replay.cfg, req)
        .await
        .map_err(refused)?;
    if dry_run {
        return Ok((
            StatusCode::OK,
            Json(json!({"spec": spec, "plan": plan, "records": plan.records()})),
        ));
    }
    let job = app
        .replay
        .jobs()
        .create(&spec, &plan, by)
        .await
        .map_err(job_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job": job, "records": plan.records()})),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
}

/// `GET /admin/replays`
pub async fn list(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let jobs = app
        .replay
        .jobs()
        .list(q.limit.unwrap_or(50).clamp(1, 500))
        .await
        .map_err(job_error)?;
    Ok(Json(json!({ "replays": jobs })))
}

/// `GET /admin/replays/{id}`: the job, with its progress.
pub async fn get_one(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let job = app
        .replay
        .jobs()
        .get(&id)
        .await
        .map_err(job_error)?
        .ok_or_else(|| ApiError::not_found("replay"))?;
    let read = job.plan.records() - job.remaining();
    Ok(Json(
        json!({"job": job, "progress": {"records": job.plan.records(), "read": read, "remaining": job.remaining()}}),
    ))
}

/// `DELETE /admin/replays/{id}`: stop at the next checkpoint (resumable).
pub async fn cancel(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let job = app
        .replay
        .jobs()
        .cancel(&id)
        .await
        .map_err(job_error)?
        .ok_or_else(|| ApiError::not_found("replay"))?;
    Ok(Json(json!({ "job": job })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LetterQuery {
    stage: Option<String>,
    /// Comma-separated reason codes.
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    all: bool,
    limit: Option<usize>,
}

impl LetterQuery {
    fn selection(&self) -> ApiResult<dlq::Selection> {
        let now = switchboard_runtime::now_ms();
        let t = |field: &str, s: &Option<String>| {
            s.as_deref()
                .map(|v| replay::spec::parse_time(v, now))
                .transpose()
                .map_err(|e| super::admin::bad(field, e.to_string()))
        };
        Ok(dlq::Selection {
            reasons: self
                .reason
                .as_deref()
                .map(|r| {
                    r.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            since_ms: t("since", &self.since)?,
            until_ms: t("until", &self.until)?,
            all: self.all,
            limit: match self.limit {
                Some(0) => 0,
                l => l.unwrap_or(100).min(10_000),
            },
        })
    }

    fn stages(&self) -> ApiResult<Vec<&str>> {
        match &self.stage {
            Some(s) => {
                dlq::topic_of(s).map_err(|e| super::admin::bad("stage", e.to_string()))?;
                Ok(vec![s.as_str()])
            }
            None => Ok(dlq::STAGES.iter().map(|(s, _)| *s).collect()),
        }
    }

    fn one_stage(&self) -> ApiResult<&str> {
        let s = self
            .stage
            .as_deref()
            .ok_or_else(|| super::admin::bad("stage", "required"))?;
        dlq::topic_of(s).map_err(|e| super::admin::bad("stage", e.to_string()))?;
        Ok(s)
    }
}

/// `GET /admin/dead-letters`: the selected letters of one or every stage, with counts
/// per stage and reason.
pub async fn letters(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Query(q): Query<LetterQuery>,
) -> ApiResult<impl IntoResponse> {
    let sel = q.selection()?;
    let mut out = Vec::new();
    for stage in q.stages()? {
        out.extend(dlq::list(&app.replay, stage, &sel).await.map_err(refused)?);
    }
    let mut counts = serde_json::Map::new();
    for l in &out {
        let per = counts.entry(l.stage.clone()).or_insert_with(|| json!({}));
        per[&l.reason] = json!(per[&l.reason].as_u64().unwrap_or(0) + 1);
    }
    Ok(Json(json!({"counts": counts, "letters": out})))
}

/// `GET /admin/dead-letters/{stage}/{partition}/{offset}`: one letter and its payload.
pub async fn letter(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    Path((stage, partition, offset)): Path<(String, i32, i64)>,
) -> ApiResult<impl IntoResponse> {
    dlq::topic_of(&stage).map_err(|e| super::admin::bad("stage", e.to_string()))?;
    let l = dlq::show(&app.replay, &stage, partition, offset)
        .await
        .map_err(refused)?
        .ok_or_else(|| ApiError::not_found("dead letter"))?;
    let payload = dlq::describe_payload(&app.replay, &l).await;
    Ok(Json(json!({"letter": l, "payload": payload})))
}

/// The body of a redrive or purge.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LetterAction {
    stage: String,
    #[serde(default)]
    reasons: Vec<String>,
    since: Option<String>,
    until: Option<String>,
    /// Redrive: answer with the plan and change nothing.
    #[serde(default)]
    dry_run: bool,
}

impl LetterAction {
    fn query(&self) -> LetterQuery {
        LetterQuery {
            stage: Some(self.stage.clone()),
            reason: Some(self.reasons.join(",")),
            since: self.since.clone(),
            until: self.until.clone(),
            all: false,
            limit: Some(0),
        }
    }
}

/// `POST /admin/dead-letters/redrive`: a replay job sending the selected letters back to
/// their stage.
pub async fn redrive(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let a: LetterAction = json_body(&body)?;
    let q = a.query();
    let stage = q.one_stage()?;
    let sel = dlq::Selection {
        limit: 0,
        ..q.selection()?
    };
    let selected = dlq::list(&app.replay, stage, &sel).await.map_err(refused)?;
    let req =
        dlq::redrive_request(stage, &sel).map_err(|e| super::admin::bad("stage", e.to_string()))?;
    let (code, Json(mut body)) = start(&app, &req, a.dry_run, "admin api redrive").await?;
    body["selected"] = json!(selected.len());
    Ok((code, Json(body)))
}

/// `POST /admin/dead-letters/purge`: mark the selected letters purged.
pub async fn purge(
    _: AdminAuth,
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let a: LetterAction = json_body(&body)?;
    let q = a.query();
    let stage = q.one_stage()?;
    let sel = dlq::Selection {
        limit: 0,
        ..q.selection()?
    };
    let n = dlq::mark(&app.replay, stage, &sel, "purged", None)
        .await
        .map_err(refused)?;
    Ok(Json(json!({"stage": stage, "purged": n})))
}
