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
//! - With token public keys configured ([`ArmGuard`]), every operation needs
//!   `Authorization: Bearer <capability token>` signed by the orchestrator for this arm and
//!   operation (SPEC §8); the executor also runs only the programs, and uses the network only
//!   if, the token grants. Refusals are 401/403, counted and audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode};
use octollm_arms::{ArmError, ArmInfo, ArmOutcome, Arms, CallContext};
use octollm_core::budget::{BudgetTracker, Usage};
use octollm_core::token::{Claims, TokenError, TokenVerifier};
use octollm_core::{ArmKind, StepId, TaskId};
use octollm_store::{AuditEntry, AuditKind, AuditLog};
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

/// Who may call an arm service. [`ArmGuard::open`] lets anyone (an arm on loopback, or
/// tests); with a verifier only capability tokens from the orchestrator pass.
#[derive(Clone, Default)]
pub struct ArmGuard {
    verifier: Option<TokenVerifier>,
    /// The shared registry token: it also authorises revocations (`POST /tokens/revoked`).
    admin_token: Option<String>,
    audit: Option<Arc<dyn AuditLog>>,
    /// Revoked token ids until they expire (Unix seconds).
    revoked: Arc<Mutex<HashMap<String, i64>>>,
}

impl ArmGuard {
    pub fn open() -> Self {
        Self::default()
    }

    pub fn new(
        verifier: Option<TokenVerifier>,
        admin_token: Option<String>,
        audit: Option<Arc<dyn AuditLog>>,
    ) -> Self {
        ArmGuard {
            verifier,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            audit,
            revoked: Arc::default(),
        }
    }

    /// Whether operations need a capability token.
    pub fn requires_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .lock()
            .map(|set| set.contains_key(jti))
            .unwrap_or(true)
    }

    fn revoke(&self, jti: String, exp: i64, now: i64) {
        if let Ok(mut set) = self.revoked.lock() {
            set.retain(|_, until| *until >= now);
            set.insert(jti, exp);
        }
    }

    async fn audit(&self, kind: AuditKind, detail: serde_json::Value) {
        let Some(audit) = &self.audit else { return };
        let entry = AuditEntry {
            at: chrono::Utc::now(),
            kind,
            request_id: request_id::current(),
            key_id: None,
            detail,
        };
        if let Err(e) = audit.record(&entry).await {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }

    /// A refusal as the arm's error body, counted and audited.
    async fn refuse(
        &self,
        kind: AuditKind,
        status: StatusCode,
        reason: &'static str,
        message: String,
        detail: serde_json::Value,
    ) -> Response {
        metrics::counter!("octollm_arm_token_refusals_total", "reason" => reason).increment(1);
        self.audit(kind, detail).await;
        let body = ArmErrorBody {
            code: if status == StatusCode::UNAUTHORIZED {
                "unauthorized"
            } else {
                "forbidden"
            }
            .to_owned(),
            message,
            request_id: request_id::current().unwrap_or_default(),
            retryable: false,
            budget: None,
        };
        (status, Json(body)).into_response()
    }
}

struct ArmState {
    kind: ArmKind,
    arms: Arms,
    started: Instant,
    guard: ArmGuard,
}

/// Checks the capability token of an operation call and hands its claims to the handler.
async fn require_token(
    State(s): Shared,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(verifier) = &s.guard.verifier else {
        return next.run(request).await;
    };
    let action = request.uri().path().trim_start_matches('/').to_owned();
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = chrono::Utc::now().timestamp();
    let checked = match token {
        None => Err(TokenError::Missing),
        Some(token) => verifier
            .verify(token, s.kind, &action, now)
            .and_then(|claims| {
                if s.guard.is_revoked(&claims.jti) {
                    Err(TokenError::Revoked)
                } else {
                    Ok(claims)
                }
            }),
    };
    match checked {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Err(e) => {
            let status = if e.is_unauthenticated() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            s.guard
                .refuse(
                    AuditKind::TokenRefused,
                    status,
                    e.reason(),
                    e.to_string(),
                    serde_json::json!({"reason": e.reason(), "arm": s.kind, "action": action}),
                )
                .await
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    jti: String,
    /// When the token expires anyway (Unix seconds): the entry is kept until then.
    exp: i64,
}

/// A program name fit for the audit log: a bare name, else a marker (a refused `command` may
/// be any text the model wrote).
fn loggable(program: &str) -> &str {
    let bare = !program.is_empty()
        && program.len() <= 64
        && program
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if bare {
        program
    } else {
        "(not a program name)"
    }
}

/// `POST /tokens/revoked`: refuse a token id from now on (the orchestrator, with the
/// registry token).
async fn revoke_token(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(revocation): ApiJson<Revocation>,
) -> Response {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let allowed = match (&s.guard.admin_token, presented) {
        (Some(expected), Some(given)) => {
            octollm_core::auth::key_matches(given, &octollm_core::auth::hash_key(expected))
        }
        _ => false,
    };
    if !allowed {
        return crate::ApiError::Unauthorized("revocations need the registry token".into())
            .into_response();
    }
    let now = chrono::Utc::now().timestamp();
    s.guard.revoke(revocation.jti, revocation.exp, now);
    StatusCode::NO_CONTENT.into_response()
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
    claims: Option<axum::Extension<Claims>>,
    headers: HeaderMap,
    ApiJson(r): ApiJson<octollm_arms::executor::ExecuteRequest>,
) -> Response {
    // With tokens on, the step runs only what its token grants.
    if let Some(axum::Extension(claims)) = claims {
        let program = r.program().to_owned();
        let denial = if !claims.programs.contains(&program) {
            Some((
                "program_not_granted",
                format!("the capability token does not grant running `{program}`"),
            ))
        } else if r.allow_network && !claims.network {
            Some((
                "network_not_granted",
                "the capability token does not grant network access".to_owned(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = denial {
            return s
                .guard
                .refuse(
                    AuditKind::ExecutorDenied,
                    StatusCode::FORBIDDEN,
                    reason,
                    message,
                    serde_json::json!({"reason": reason, "program": program, "task_id": claims.task_id}),
                )
                .await;
        }
    }
    let program = r.program().to_owned();
    let result = s.arms.executor.execute(r, context(&headers)).await;
    if let Err(ArmError::Refused(_)) = &result {
        // The sandbox policy said no (allowlist, flags, paths, env): an executor denial.
        s.guard
            .audit(
                AuditKind::ExecutorDenied,
                serde_json::json!({"reason": "policy", "program": loggable(&program)}),
            )
            .await;
    }
    answer(s.kind, result)
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
    guarded_router(kind, arms, body_limit, ArmGuard::open())
}

/// [`router`] with its operations behind `guard`.
pub fn guarded_router(kind: ArmKind, arms: Arms, body_limit: usize, guard: ArmGuard) -> Router {
    let state = Arc::new(ArmState {
        kind,
        arms,
        started: Instant::now(),
        guard,
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
    let operations = operations.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_token,
    ));
    let routes = operations
        .route("/tokens/revoked", post(revoke_token))
        .route("/capabilities", get(capabilities))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(observe::render));
    crate::common_layers(routes, body_limit).with_state(state)
}
