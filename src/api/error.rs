//! The one error shape clients see: `{"error": {"code", "message"}}` with a
//! stable code and an HTTP status, plus optional `details`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::embedding::EmbedError;
use crate::recommend::batcher::QueueError;
use crate::recommend::EngineError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the model or the index is still loading; retry shortly",
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::QueueFull => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "too many reindex jobs are queued; retry later",
            ),
            EngineError::Embed(e) => e.into(),
            EngineError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Self::internal("the answer store failed; nothing was changed")
            }
            EngineError::Index(e) => {
                tracing::error!(error = %e, "index failure");
                Self::internal("the vector index failed")
            }
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full { capacity } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!("{capacity} questions are already waiting for the model; retry shortly"),
            )
            .with_retry_after(1),
            QueueError::Stopped => {
                tracing::error!("the embedding worker has stopped");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "embedding_unavailable",
                    "the embedding worker has stopped; the service needs a restart",
                )
            }
            QueueError::Failed(reason) => {
                tracing::error!(%reason, "embedding worker failure");
                Self::internal("embedding the text failed")
            }
            QueueError::Embed(e) => e.into(),
        }
    }
}

impl From<EmbedError> for ApiError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::EmptyText { .. } => {
                Self::invalid("empty_question", "the question is empty or only whitespace")
            }
            EmbedError::TextTooLong { tokens, limit, .. } => Self::invalid(
                "question_too_long",
                format!("the question has {tokens} tokens, over the limit of {limit}"),
            ),
            EmbedError::ModelNotFound { .. }
            | EmbedError::InvalidModel { .. }
            | EmbedError::Tokenize(_)
            | EmbedError::Inference(_) => {
                tracing::error!(error = %e, "embedding failure");
                Self::internal("embedding the text failed")
            }
        }
    }
}

/// Parses a JSON body, mapping serde's complaints to stable codes.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(json_error)
}

/// Maps a serde error to `invalid_json` / `unknown_field` / `invalid_type`.
pub fn json_error(e: serde_json::Error) -> ApiError {
    let msg = e.to_string();
    let code = if e.is_syntax() || e.is_eof() {
        "invalid_json"
    } else if msg.starts_with("unknown field") {
        "unknown_field"
    } else if msg.starts_with("missing field") {
        "missing_field"
    } else {
        "invalid_type"
    };
    ApiError::bad_request(code, format!("request body: {msg}"))
}
