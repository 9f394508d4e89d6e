//! One error body for every service, `{code, message, details?, request_id, retry_after?}`,
//! with its one mapping from errors to codes and statuses and, beside it, the inverse an arm
//! client uses to turn an arm service's error back into the [`ArmError`] it was. 5xx bodies
//! say nothing internal; the cause is logged. Semantic validation errors use 400 (we do not
//! use 422).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use octollm_arms::ArmError;
use octollm_core::budget::{BudgetExceeded, Usage};
use octollm_orchestrator::OrchestratorError;
use octollm_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::request_id;

/// Every error code a service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationError,
    InputBlocked,
    Unauthorized,
    Forbidden,
    /// An arm refused the work itself (the executor's policy).
    Refused,
    NotFound,
    MethodNotAllowed,
    Conflict,
    BudgetExceeded,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    InternalError,
    /// The model failed in a way another attempt will not fix.
    ModelError,
    /// The model's answer was not usable (a plan that is not a plan, say).
    InvalidModelOutput,
    /// The model is unreachable or overloaded: worth trying again.
    ModelUnavailable,
    ServiceUnavailable,
    Timeout,
    /// A code this version does not know (from a newer service); never sent.
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ValidationError | ErrorCode::InputBlocked => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::Refused => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::BudgetExceeded => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InternalError | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ModelError | ErrorCode::InvalidModelOutput => StatusCode::BAD_GATEWAY,
            ErrorCode::ModelUnavailable | ErrorCode::ServiceUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// What exactly was wrong: the field, the matches of a blocked input, the limit that ran
    /// out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(default)]
    pub request_id: String,
    /// Seconds to wait before trying again (also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("the input was blocked as a likely prompt injection")]
    Blocked(serde_json::Value),
    #[error("{0} not found")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("rate limit exceeded")]
    RateLimited { retry_after_seconds: u64 },
    /// Something this service needs is down; the cause is logged, not shown.
    #[error("a dependency is unavailable; try again later")]
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
    /// An arm's own failure, as the arm service answers it.
    #[error("{0}")]
    Arm(ArmError),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            details: None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation { .. } => ErrorCode::ValidationError,
            ApiError::Blocked(_) => ErrorCode::InputBlocked,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Unavailable(_) | ApiError::DependencyDown { .. } => {
                ErrorCode::ServiceUnavailable
            }
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Internal(_) => ErrorCode::InternalError,
            ApiError::Arm(e) => match e {
                ArmError::InvalidRequest(_) => ErrorCode::ValidationError,
                ArmError::Refused(_) => ErrorCode::Refused,
                ArmError::BudgetExceeded(..) => ErrorCode::BudgetExceeded,
                ArmError::Llm(e) if e.is_retryable() => ErrorCode::ModelUnavailable,
                ArmError::Llm(_) => ErrorCode::ModelError,
                ArmError::InvalidOutput { .. } => ErrorCode::InvalidModelOutput,
                ArmError::Unavailable(_) => ErrorCode::ServiceUnavailable,
                ArmError::Timeout => ErrorCode::Timeout,
                ArmError::Internal(_) => ErrorCode::InternalError,
            },
        }
    }

    /// The body, with the request id; the cause of a 5xx is logged here and left out.
    pub fn body(&self) -> ErrorBody {
        let code = self.code();
        let request_id = request_id::current().unwrap_or_else(request_id::generate);
        let (message, details, retry_after) = match self {
            ApiError::Validation { message, details } => (message.clone(), details.clone(), None),
            ApiError::Blocked(matches) => (self.to_string(), Some(matches.clone()), None),
            ApiError::RateLimited {
                retry_after_seconds,
            } => (self.to_string(), None, Some(*retry_after_seconds)),
            ApiError::Internal(cause) | ApiError::Arm(ArmError::Internal(cause)) => {
                tracing::error!(request_id = %request_id, cause = %cause, "internal error");
                ("internal error".to_owned(), None, None)
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(request_id = %request_id, cause = %cause, "dependency unavailable");
                (self.to_string(), None, Some(5))
            }
            ApiError::DependencyDown { dependency, cause } => {
                tracing::warn!(request_id = %request_id, dependency, cause = %cause, "dependency unavailable");
                (self.to_string(), None, Some(5))
            }
            ApiError::Arm(e @ ArmError::BudgetExceeded(limit, _)) => {
                (e.message(), serde_json::to_value(limit).ok(), None)
            }
            ApiError::Arm(e) => (e.message(), None, None),
            other => (other.to_string(), None, None),
        };
        ErrorBody {
            code,
            message,
            details,
            request_id,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let status = body.code.status();
        let retry_after = body.retry_after;
        let usage = match &self {
            ApiError::Arm(e) => Some(e.usage()),
            _ => None,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = retry_after
            && let Ok(v) = http::HeaderValue::from_str(&seconds.to_string())
        {
            headers.insert(http::header::RETRY_AFTER, v);
        }
        // What a failed arm call spent still counts against the task.
        if let Some(usage) = usage {
            crate::arm_service::set_usage(headers, usage);
        }
        response
    }
}

/// The inverse, for arm clients: an arm service's error answer as the [`ArmError`] it was.
/// `usage` is what the answer's headers say the call spent.
pub fn arm_error(status: u16, body: Option<ErrorBody>, usage: Usage) -> ArmError {
    let Some(body) = body else {
        let message = format!("status {status}");
        return if status >= 500 {
            ArmError::Unavailable(message)
        } else {
            ArmError::Internal(message)
        };
    };
    let message = body.message;
    match body.code {
        ErrorCode::ValidationError
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UnsupportedMediaType => ArmError::InvalidRequest(message),
        // A capability token the arm would not take: a configuration fault (keys, audience),
        // not something another attempt fixes.
        ErrorCode::Refused | ErrorCode::Unauthorized | ErrorCode::Forbidden => {
            ArmError::Refused(message)
        }
        ErrorCode::BudgetExceeded => {
            match body
                .details
                .and_then(|d| serde_json::from_value::<BudgetExceeded>(d).ok())
            {
                Some(limit) => ArmError::BudgetExceeded(limit, usage),
                None => ArmError::Internal(format!("budget exceeded in the arm: {message}")),
            }
        }
        ErrorCode::InvalidModelOutput => ArmError::InvalidOutput { message, usage },
        ErrorCode::Timeout => ArmError::Timeout,
        ErrorCode::ServiceUnavailable | ErrorCode::ModelUnavailable | ErrorCode::RateLimited => {
            ArmError::Unavailable(message)
        }
        ErrorCode::InputBlocked
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::Conflict
        | ErrorCode::InternalError
        | ErrorCode::ModelError
        | ErrorCode::Unknown => ArmError::Internal(message),
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
            StoreError::Unavailable(cause) => ApiError::DependencyDown {
                dependency: "database",
                cause,
            },
            e @ (StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migration(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::Invalid(v) => ApiError::Validation {
                message: v.to_string(),
                details: Some(serde_json::json!({"field": v.field, "reason": v.message})),
            },
            OrchestratorError::Blocked { field, matches } => ApiError::Blocked(serde_json::json!({
                "field": field,
                "matches": matches.iter().map(|m| serde_json::json!({
                    "kind": m.kind, "type": m.label, "severity": m.severity, "confidence": m.confidence,
                })).collect::<Vec<_>>(),
            })),
            OrchestratorError::NotFound(id) => ApiError::NotFound(format!("task {id}")),
            OrchestratorError::Finished { .. } => ApiError::Conflict(e.to_string()),
            OrchestratorError::Store(s) => s.into(),
        }
    }
}

impl From<ArmError> for ApiError {
    fn from(e: ArmError) -> Self {
        ApiError::Arm(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octollm_llm::LlmError;

    /// Every arm error survives the trip through an arm service's answer and back.
    #[test]
    fn arm_errors_map_back_to_what_they_were() {
        let spent = Usage {
            prompt_tokens: 5,
            completion_tokens: 7,
            cost_dollars: 0.0,
        };
        let limit = BudgetExceeded::Tokens {
            limit: 10,
            used: 9,
            needed: 4,
        };
        let cases = [
            ArmError::InvalidRequest("bad".into()),
            ArmError::Refused("no".into()),
            ArmError::BudgetExceeded(limit, spent),
            ArmError::InvalidOutput {
                message: "not json".into(),
                usage: spent,
            },
            ArmError::Unavailable("down".into()),
            ArmError::Timeout,
        ];
        for error in cases {
            let api = ApiError::Arm(error.clone());
            let body = api.body();
            let status = body.code.status().as_u16();
            let wire: ErrorBody =
                serde_json::from_value(serde_json::to_value(&body).unwrap()).unwrap();
            let back = arm_error(status, Some(wire), error.usage());
            assert_eq!(back.to_string(), error.to_string(), "{error:?}");
            assert_eq!(back.is_retryable(), error.is_retryable(), "{error:?}");
            assert_eq!(back.usage(), error.usage(), "{error:?}");
        }
        // A model error keeps whether it is worth retrying.
        for llm in [
            LlmError::Unavailable("x".into()),
            LlmError::Config("y".into()),
        ] {
            let retryable = llm.is_retryable();
            let body = ApiError::Arm(ArmError::Llm(llm)).body();
            let back = arm_error(body.code.status().as_u16(), Some(body), Usage::default());
            assert_eq!(back.is_retryable(), retryable);
        }
        // An internal cause never leaves the service.
        let body = ApiError::Arm(ArmError::Internal("secret path /x".into())).body();
        assert_eq!(body.message, "internal error");
    }

    #[test]
    fn an_unknown_code_reads_back_as_an_internal_error() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"brand_new","message":"m","request_id":"r"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
        assert!(matches!(
            arm_error(500, Some(body), Usage::default()),
            ArmError::Internal(_)
        ));
    }
}
