//! The API's errors and their one mapping to status codes and bodies:
//! `{code, message, details?, request_id, retry_after?}`. 5xx bodies say nothing internal;
//! the cause is logged. Semantic validation errors use 400 (we do not use 422).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use octollm_orchestrator::SubmitError;
use octollm_store::StoreError;
use serde::Serialize;

use crate::request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("{0}")]
    Blocked(serde_json::Value),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("rate limit exceeded")]
    RateLimited { retry_after_seconds: u64 },
    /// Something this service needs is down; the cause is logged, not shown.
    #[error("{0}")]
    Unavailable(String),
    /// A named dependency is down: clients are told which (`database`, `rate-limit store`,
    /// `orchestrator`, …), the cause is logged.
    #[error("{dependency} is unavailable; try again later")]
    DependencyDown {
        dependency: &'static str,
        cause: String,
    },
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the scope the request needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
    request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            details: None,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "validation_error"),
            ApiError::Blocked(_) => (StatusCode::BAD_REQUEST, "input_blocked"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) | ApiError::DependencyDown { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let request_id = request_id::current().unwrap_or_else(request_id::generate);
        let (message, details, retry_after) = match &self {
            ApiError::Validation { message, details } => (message.clone(), details.clone(), None),
            ApiError::Blocked(matches) => (
                "the input was blocked as a likely prompt injection".to_owned(),
                Some(matches.clone()),
                None,
            ),
            ApiError::RateLimited {
                retry_after_seconds,
            } => (self.to_string(), None, Some(*retry_after_seconds)),
            ApiError::Internal(cause) => {
                tracing::error!(request_id = %request_id, cause = %cause, "internal error");
                ("internal error".to_owned(), None, None)
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(request_id = %request_id, cause = %cause, "dependency unavailable");
                (
                    "a dependency is unavailable; try again later".to_owned(),
                    None,
                    Some(5),
                )
            }
            ApiError::DependencyDown { dependency, cause } => {
                tracing::warn!(request_id = %request_id, dependency, cause = %cause, "dependency unavailable");
                (self.to_string(), None, Some(5))
            }
            other => (other.to_string(), None, None),
        };
        let body = ErrorBody {
            code,
            message,
            details,
            request_id,
            retry_after,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = retry_after
            && let Ok(v) = http::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::NotFound(format!("task {id}")),
            StoreError::InvalidCursor => ApiError::validation("invalid cursor"),
            StoreError::Invalid(message) => ApiError::validation(message),
            StoreError::LeaseLost(id) => {
                ApiError::Conflict(format!("task {id} is owned by another worker"))
            }
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            e @ (StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migration(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(v) => ApiError::Validation {
                message: v.to_string(),
                details: Some(serde_json::json!({"field": v.field, "reason": v.message})),
            },
            SubmitError::Blocked { field, matches } => ApiError::Blocked(serde_json::json!({
                "field": field,
                "matches": matches.iter().map(|m| serde_json::json!({
                    "kind": m.kind, "type": m.label, "severity": m.severity, "confidence": m.confidence,
                })).collect::<Vec<_>>(),
            })),
            SubmitError::Store(s) => s.into(),
        }
    }
}
