//! One error shape for every gateway answer: `{"error": {"code", "message"}}` with the
//! status code that tells the BSP whether to retry (4xx: never; 503: later).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u32>,
    /// The request field at fault (API validation errors).
    pub field: Option<String>,
    /// For a failed send request: the messages that were accepted nonetheless and will be
    /// sent (`[{"index", "id"}]`); absent when none were.
    pub accepted: Option<Vec<serde_json::Value>>,
    /// More members of the error object, particular to its code (e.g. when the
    /// customer-service window closed).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            field: None,
            accepted: None,
            extra: None,
        }
    }

    pub fn field(
        status: StatusCode,
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(status, code, message)
        }
    }

    /// 422 for a field that parsed but is not acceptable.
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::field(StatusCode::UNPROCESSABLE_ENTITY, code, field, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the gateway's log",
        )
    }

    /// A database error: 503 while it is unreachable, 500 otherwise.
    pub fn db(e: sqlx::Error) -> Self {
        if switchboard_runtime::retry::is_transient_sqlx_error(&e) {
            tracing::warn!(error = %e, "database unavailable");
            Self::unavailable("database_unavailable", "the database is unavailable; retry")
        } else {
            Self::internal(e)
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
}

impl ApiError {
    /// The error as item `i` of a batch sees it when it was one request of its own (the
    /// single-send batcher): only its own entry of `accepted`, at index 0.
    pub fn for_item(&self, i: usize) -> ApiError {
        let mine = self.accepted.as_ref().and_then(|a| {
            a.iter()
                .find(|x| x["index"] == json!(i))
                .map(|x| vec![json!({"index": 0, "id": x["id"]})])
        });
        let mut e = self.clone();
        if self.accepted.is_some() {
            e.message = match &mine {
                Some(_) => "the broker did not acknowledge in time, but the message was accepted and will be sent (error.accepted)".into(),
                None => "the broker did not acknowledge; nothing was accepted, retry".into(),
            };
        }
        e.accepted = mine;
        e
    }
}

impl ApiError {
    /// With one more member of the error object.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.into(), value);
        self
    }

    /// The `error` object of the answer.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(f) = &self.field {
            error["field"] = json!(f);
        }
        if let Some(a) = &self.accepted {
            error["accepted"] = json!(a);
        }
        for (k, v) in self.extra.iter().flat_map(|m| m.iter()) {
            error[k] = v.clone();
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.body();
        let mut resp = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}
