//! One arm as its own HTTP service (SPEC §6, distributed mode), and the wire conventions its
//! client ([`crate::arm_client`]) shares.
//!
//! - Requests and responses are the arm's own request and response types, as JSON.
//! - The call context travels in headers: `X-Request-ID`, `X-Task-ID`, `X-Step-ID`, and the
//!   budget share the arm may spend, `X-Budget-Tokens`, `X-Budget-Cost-Dollars` and
//!   `X-Budget-Deadline-Ms` (Unix milliseconds).
//! - What the call cost comes back in `X-Usage-Prompt-Tokens`, `X-Usage-Completion-Tokens`
//!   and `X-Usage-Cost-Dollars`, on answers and on errors alike (a failed call's spending
//!   still counts against the task), and the model that answered in `X-Model`.
//! - Errors are `{code, message, request_id, retryable}` with the status of [`status_of`];
//!   the client turns them back into the same [`ArmError`] kinds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode};
use octollm_arms::{ArmError, ArmInfo, ArmOutcome, Arms, CallContext};
use octollm_core::budget::{BudgetTracker, Usage};
use octollm_core::{ArmKind, StepId, TaskId};
use serde::{Deserialize, Serialize};

use crate::extract::ApiJson;
use crate::{observe, request_id};

pub const TASK_ID: &str = "x-task-id";
pub const STEP_ID: &str = "x-step-id";
pub const BUDGET_TOKENS: &str = "x-budget-tokens";
pub const BUDGET_COST: &str = "x-budget-cost-dollars";
pub const BUDGET_DEADLINE: &str = "x-budget-deadline-ms";
pub const USAGE_PROMPT: &str = "x-usage-prompt-tokens";
pub const USAGE_COMPLETION: &str = "x-usage-completion-tokens";
pub const USAGE_COST: &str = "x-usage-cost-dollars";
/// The model that answered, when one did.
pub const MODEL: &str = "x-model";

/// The error body of an arm service.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArmErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub retryable: bool,
    /// Which limit ran out, for `budget_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<octollm_core::budget::BudgetExceeded>,
}

/// The one mapping from arm errors to statuses and codes.
pub fn status_of(error: &ArmError) -> (StatusCode, &'static str) {
    match error {
        ArmError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "validation_error"),
        ArmError::Refused(_) => (StatusCode::FORBIDDEN, "refused"),
        ArmError::BudgetExceeded(..) => (StatusCode::CONFLICT, "budget_exceeded"),
        ArmError::Llm(_) => (StatusCode::BAD_GATEWAY, "model_error"),
        ArmError::InvalidOutput { .. } => (StatusCode::BAD_GATEWAY, "invalid_model_output"),
        ArmError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        ArmError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ArmError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// The call context a request carries; a request without a budget gets none to spend
/// (a zero budget), so an arm that calls a model refuses rather than spending unmetered.
fn context(headers: &HeaderMap) -> CallContext {
    CallContext {
        task_id: headers
            .get(TASK_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TaskId::parse(v).ok()),
        step_id: headers
            .get(STEP_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| StepId::parse(v).ok()),
        request_id: request_id::current().unwrap_or_default(),
        trace: request_id::trace(),
        budget: BudgetTracker {
            token_limit: header(headers, BUDGET_TOKENS).unwrap_or(0),
            cost_limit: header::<f64>(headers, BUDGET_COST)
                .filter(|c| c.is_finite() && *c >= 0.0)
                .unwrap_or(0.0),
            deadline_unix_ms: header(headers, BUDGET_DEADLINE).unwrap_or(0),
            used: Usage::default(),
        },
    }
}

fn set_usage(headers: &mut HeaderMap, usage: Usage) {
    for (name, value) in [
        (USAGE_PROMPT, usage.prompt_tokens.to_string()),
        (USAGE_COMPLETION, usage.completion_tokens.to_string()),
        (USAGE_COST, usage.cost_dollars.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

fn answer<T: Serialize>(kind: ArmKind, result: Result<ArmOutcome<T>, ArmError>) -> Response {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    metrics::counter!("octollm_arm_requests_total", "arm" => kind.id(), "outcome" => outcome)
        .increment(1);
    // One line per call (calls are few and costly); the request span adds the request and
    // trace ids.
    tracing::info!(arm = kind.id(), outcome, "arm call served");
    match result {
        Ok(outcome) => {
            let mut response = Json(outcome.response).into_response();
            set_usage(response.headers_mut(), outcome.usage);
            if let Some(v) = outcome.model.and_then(|m| HeaderValue::from_str(&m).ok()) {
                response.headers_mut().insert(MODEL, v);
            }
            response
        }
        Err(error) => {
            let (status, code) = status_of(&error);
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(arm = kind.id(), error = %error, "arm call failed");
            }
            let body = ArmErrorBody {
                code: code.to_owned(),
                // Internal causes are logged, never sent.
                message: if status == StatusCode::INTERNAL_SERVER_ERROR {
                    "internal error".to_owned()
                } else {
                    error.to_string()
                },
                request_id: request_id::current().unwrap_or_default(),
                retryable: error.is_retryable(),
                budget: match &error {
                    ArmError::BudgetExceeded(b, _) => Some(b.clone()),
                    _ => None,
                },
            };
            let mut response = (status, Json(body)).into_response();
            set_usage(response.headers_mut(), error.usage());
            response
        }
    }
}

struct ArmState {
    kind: ArmKind,
    arms: Arms,
    started: Instant,
}

type Shared = State<Arc<ArmState>>;

async fn plan(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::planner::PlanRequest>,
) -> Response {
    answer(s.kind, s.arms.planner.plan(r, context(&headers)).await)
}

async fn code(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::coder::CodeRequest>,
) -> Response {
    answer(s.kind, s.arms.coder.code(r, context(&headers)).await)
}

async fn execute(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::executor::ExecuteRequest>,
) -> Response {
    answer(s.kind, s.arms.executor.execute(r, context(&headers)).await)
}

async fn search(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::retriever::SearchRequest>,
) -> Response {
    answer(s.kind, s.arms.retriever.search(r, context(&headers)).await)
}

async fn documents(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::retriever::DocumentRequest>,
) -> Response {
    answer(s.kind, s.arms.retriever.ingest(r, context(&headers)).await)
}

async fn validate(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::judge::ValidateRequest>,
) -> Response {
    answer(s.kind, s.arms.judge.validate(r, context(&headers)).await)
}

async fn check(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::guardian::CheckRequest>,
) -> Response {
    answer(s.kind, s.arms.guardian.check(r, context(&headers)).await)
}

async fn capabilities(State(s): Shared) -> Json<ArmInfo> {
    Json(ArmInfo::of(s.kind))
}

async fn health(State(s): Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "healthy",
        "arm_id": s.kind,
        "uptime_seconds": s.started.elapsed().as_secs(),
    }))
}

/// Ready unless the arm cannot work here (the executor without its sandbox).
async fn ready(State(s): Shared) -> Response {
    let blocked = (s.kind == ArmKind::Executor)
        .then(|| s.arms.executor.unavailable_reason())
        .flatten();
    match blocked {
        None => Json(serde_json::json!({"status": "ready"})).into_response(),
        Some(reason) => crate::ApiError::Unavailable(reason).into_response(),
    }
}

/// The service of one arm: its operation(s), `/capabilities`, probes and `/metrics`. `arms`
/// holds the implementation to serve (in process, the only kind an arm service runs).
pub fn router(kind: ArmKind, arms: Arms, body_limit: usize) -> Router {
    let state = Arc::new(ArmState {
        kind,
        arms,
        started: Instant::now(),
    });
    let operations = match kind {
        ArmKind::Planner => Router::new().route("/plan", post(plan)),
        ArmKind::Coder => Router::new().route("/code", post(code)),
        ArmKind::Executor => Router::new().route("/execute", post(execute)),
        ArmKind::Retriever => Router::new()
            .route("/search", post(search))
            .route("/documents", post(documents)),
        ArmKind::Judge => Router::new().route("/validate", post(validate)),
        ArmKind::Guardian => Router::new().route("/check", post(check)),
    };
    let routes = operations
        .route("/capabilities", get(capabilities))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(observe::render));
    crate::common_layers(routes, body_limit).with_state(state)
}
