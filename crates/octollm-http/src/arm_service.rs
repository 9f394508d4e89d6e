//! One arm as its own HTTP service (SPEC §6), built from the operation table, and the wire
//! conventions its client ([`crate::arm_client`]) shares.
//!
//! - Requests and responses are the operation's own request and response types, as JSON.
//! - The call context travels in headers: `X-Request-ID`, `X-Task-ID`, `X-Step-ID` (the unit
//!   key), and the budget share the arm may spend, `X-Budget-Tokens`, `X-Budget-Cost-Dollars`
//!   and `X-Budget-Deadline-Ms` (Unix milliseconds).
//! - What the call cost comes back in `X-Usage-Prompt-Tokens`, `X-Usage-Completion-Tokens`
//!   and `X-Usage-Cost-Dollars`, on answers and on errors alike (a failed call's spending
//!   still counts against the task), and the model that answered in `X-Model`.
//! - Errors are the one error body of every service ([`crate::error`]).
//!
//! Who may call: the orchestrator, with a capability token (`Authorization: Bearer v1.…`)
//! when token public keys are configured ([`ArmGuard`]); anyone else with an API key, exactly
//! as on the orchestrator (keys required off loopback unless a gateway authenticates; scope
//! `tasks:submit` for operations). A direct call needs no budget headers: it gets the arm's
//! configured direct-call budget (headers may only lower it).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use octollm_arms::guard::{ArmGuard, Refusal};
use octollm_arms::{ArmInfo, Arms, CallContext, Health, Operation, OperationVisitor};
use octollm_core::budget::{Budget, BudgetTracker, Usage};
use octollm_core::token::Claims;
use octollm_core::{ArmKind, Scope, TaskId, UnitKey};
use serde::Deserialize;

use crate::api::{HealthView, Ready};
use crate::auth::{Access, Auth, Gate, Route};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::openapi::{Document, Operation as DocOperation};
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

/// The routes every arm service has besides its operations, and what they need. Operations
/// need a capability token or an API key with `tasks:submit` (see [`authorize`]).
pub const COMMON_ROUTES: &[Route] = &[
    // Revocations check the registry token themselves.
    Route::new(Method::POST, "/tokens/revoked", Access::Open, doc_revoke),
    Route::new(
        Method::GET,
        "/capabilities",
        Access::AnyKey,
        doc_capabilities,
    ),
    Route::new(
        Method::GET,
        "/openapi.json",
        Access::Open,
        crate::api::doc_openapi,
    ),
    Route::new(Method::GET, "/health", Access::Open, crate::api::doc_health),
    Route::new(Method::GET, "/ready", Access::Open, crate::api::doc_ready),
    Route::new(
        Method::GET,
        "/metrics",
        Access::AnyKey,
        crate::api::doc_metrics,
    ),
];

fn doc_revoke(doc: &mut Document, access: Access) -> DocOperation {
    let body = doc.schema::<Revocation>();
    DocOperation::new(
        "Refuse a capability token id from now on (with the registry token)",
        access,
    )
    .with("security", serde_json::json!([{"Bearer": []}]))
    .json_body(doc, body)
    .empty(204, "Revoked")
    .error(doc, 401, "Without the registry token")
}

fn doc_capabilities(doc: &mut Document, access: Access) -> DocOperation {
    let info = doc.schema::<ArmInfo>();
    DocOperation::new("What this arm does", access).json(200, "The arm", info)
}

/// The entry of operation `O`. Its security is required wherever the arm takes tokens: a
/// call then needs a token or a key, on loopback too.
fn doc_operation<O: Operation>(doc: &mut Document, tokens_required: bool) -> DocOperation {
    let body = doc.schema::<O::Request>();
    let answer = doc.schema::<O::Response>();
    let mut op = DocOperation::new(O::SUMMARY, Access::Scope(OPERATION_SCOPE))
        .json_body(doc, body)
        .param(
            "header",
            "X-Budget-Tokens",
            false,
            crate::openapi::pattern(WHOLE_HEADER_PATTERN),
            "Tokens the call may spend (the orchestrator's share; a direct call gets the arm's \
             budget, which these headers may only lower)",
        )
        .param(
            "header",
            "X-Budget-Cost-Dollars",
            false,
            crate::openapi::pattern(DOLLARS_HEADER_PATTERN),
            "Dollars the call may spend",
        )
        .param(
            "header",
            "X-Budget-Deadline-Ms",
            false,
            crate::openapi::pattern(WHOLE_HEADER_PATTERN),
            "When the call must be done, Unix milliseconds",
        )
        .json(200, "The arm's answer", answer)
        .headers(
            200,
            &[
                (
                    USAGE_PROMPT,
                    crate::openapi::pattern("^[0-9]+$"),
                    "Prompt tokens spent",
                ),
                (
                    USAGE_COMPLETION,
                    crate::openapi::pattern("^[0-9]+$"),
                    "Completion tokens spent",
                ),
                (
                    USAGE_COST,
                    serde_json::json!({"type": "string"}),
                    "Dollars spent",
                ),
                (
                    MODEL,
                    serde_json::json!({"type": "string"}),
                    "The model that answered",
                ),
            ],
        )
        .error(
            doc,
            400,
            "The request breaks the schema, or a budget header is malformed",
        )
        .error(
            doc,
            403,
            "Refused: by the arm's policy, or a capability token that does not grant it, or a key \
             without the tasks:submit scope",
        )
        .error(
            doc,
            409,
            "The budget would be exceeded; details name the limit",
        )
        .error(doc, 502, "The model failed or answered unusably")
        .error(doc, 503, "Something the arm needs is unavailable")
        .error(doc, 504, "The call ran out of time");
    if tokens_required {
        op = op.with(
            "security",
            serde_json::json!([{"ApiKey": []}, {"Bearer": []}]),
        );
    }
    op
}

/// An arm service's OpenAPI document, as it runs: its operations and common routes, with
/// `limits` (JSON pointer, value) applied to the schemas (the executor's configured
/// timeout, say).
pub fn document(
    kind: ArmKind,
    keys_required: bool,
    tokens_required: bool,
    limits: &[(String, serde_json::Value)],
) -> serde_json::Value {
    struct Describe<'a> {
        kind: ArmKind,
        doc: &'a mut Document,
        tokens_required: bool,
    }
    impl OperationVisitor for Describe<'_> {
        fn visit<O: Operation>(&mut self) {
            if O::ARM == self.kind {
                let op = doc_operation::<O>(self.doc, self.tokens_required);
                self.doc.add(&Method::POST, O::ROUTE, op);
            }
        }
    }
    let mut doc = Document::new(
        &format!("OctoLLM {}", kind.display_name()),
        kind.description(),
        keys_required,
    );
    octollm_arms::visit_operations(&mut Describe {
        kind,
        doc: &mut doc,
        tokens_required,
    });
    for route in COMMON_ROUTES {
        route.document(&mut doc);
    }
    let mut document = doc.finish();
    for (pointer, value) in limits {
        if let Some(slot) = document.pointer_mut(pointer) {
            *slot = value.clone();
        }
    }
    document
}

/// The scope a direct caller's API key needs for an operation.
pub const OPERATION_SCOPE: Scope = Scope::TasksSubmit;

pub(crate) fn set_usage(headers: &mut HeaderMap, usage: Usage) {
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

/// Who is calling an operation.
#[derive(Clone)]
enum Caller {
    /// The orchestrator, with the claims of its capability token.
    Orchestrator(Claims),
    /// The orchestrator of a deployment that runs without tokens (loopback, a gateway).
    Trusted,
    /// A direct caller with an API key (or none where keys are not required).
    Direct,
}

/// A whole budget header: 1 to 18 digits (as the document says).
pub const WHOLE_HEADER_PATTERN: &str = "^[0-9]{1,18}$";
/// A budget header in dollars: digits, perhaps with a fraction.
pub const DOLLARS_HEADER_PATTERN: &str = "^[0-9]{1,12}(\\.[0-9]{1,12})?$";
/// The largest values the two patterns hold (a budget beyond them is as good as unlimited).
const MAX_WHOLE_HEADER: u64 = 999_999_999_999_999_999;
const MAX_DOLLARS_HEADER: f64 = 999_999_999_999.0;

/// A budget header's value, when sent. It must have the form the document gives
/// (`pattern` spelled out in `well_formed`); anything else is a bad request, not a
/// missing header.
fn budget_header<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &str,
    well_formed: fn(&str) -> bool,
) -> Result<Option<T>, ApiError> {
    let Some(raw) = headers.get(name) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .filter(|v| well_formed(v))
        .and_then(|v| v.parse::<T>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::validation(format!("{name} must be a non-negative number")))
}

fn digits(v: &str, max: usize) -> bool {
    (1..=max).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
}

/// [`WHOLE_HEADER_PATTERN`].
fn whole(v: &str) -> bool {
    digits(v, 18)
}

/// [`DOLLARS_HEADER_PATTERN`].
fn dollars(v: &str) -> bool {
    match v.split_once('.') {
        None => digits(v, 12),
        Some((int, frac)) => digits(int, 12) && digits(frac, 12),
    }
}

/// The headers that hand a call what is left of `budget` (what [`budget`] reads back).
pub fn budget_headers(budget: &BudgetTracker) -> [(&'static str, String); 3] {
    [
        (
            BUDGET_TOKENS,
            budget.tokens_remaining().min(MAX_WHOLE_HEADER).to_string(),
        ),
        // Nine places: a nanodollar is below any price, and the header stays in its pattern.
        (
            BUDGET_COST,
            format!("{:.9}", budget.cost_remaining().min(MAX_DOLLARS_HEADER)),
        ),
        (
            BUDGET_DEADLINE,
            budget
                .deadline_unix_ms
                .clamp(0, MAX_WHOLE_HEADER as i64)
                .to_string(),
        ),
    ]
}

/// The budget a call may spend, limit by limit: a budget header the orchestrator sends is
/// its share of the task's budget; one a direct caller sends may lower the arm's configured
/// direct-call budget but not raise it; a limit with no header is the configured one.
fn budget(
    headers: &HeaderMap,
    caller: &Caller,
    direct: &Budget,
) -> Result<BudgetTracker, ApiError> {
    let default = BudgetTracker::new(
        direct,
        chrono::Utc::now().timestamp_millis(),
        Usage::default(),
    );
    let may_raise = matches!(caller, Caller::Orchestrator(_) | Caller::Trusted);
    fn limit<T: PartialOrd>(sent: Option<T>, default: T, may_raise: bool) -> T {
        match sent {
            Some(v) if may_raise || v < default => v,
            _ => default,
        }
    }
    Ok(BudgetTracker {
        token_limit: limit(
            budget_header::<u64>(headers, BUDGET_TOKENS, whole)?,
            default.token_limit,
            may_raise,
        ),
        cost_limit: limit(
            budget_header::<f64>(headers, BUDGET_COST, dollars)?,
            default.cost_limit,
            may_raise,
        ),
        deadline_unix_ms: limit(
            budget_header::<i64>(headers, BUDGET_DEADLINE, whole)?,
            default.deadline_unix_ms,
            may_raise,
        ),
        used: Usage::default(),
    })
}

fn context(headers: &HeaderMap, caller: &Caller, direct: &Budget) -> Result<CallContext, ApiError> {
    Ok(CallContext {
        task_id: headers
            .get(TASK_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TaskId::parse(v).ok()),
        unit: headers
            .get(STEP_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<UnitKey>().ok()),
        request_id: request_id::current().unwrap_or_default(),
        trace: request_id::trace(),
        budget: budget(headers, caller, direct)?,
        // The service checks the token's grant itself (`ArmGuard::check_grant`).
        grant: None,
    })
}

/// What an arm service is built from.
pub struct ArmService {
    pub kind: ArmKind,
    pub arms: Arms,
    pub guard: ArmGuard,
    pub auth: Auth,
    /// The budget of a direct call (one without the orchestrator's budget headers).
    pub direct_budget: Budget,
    /// Schema values set by configuration: (JSON pointer into the document, value).
    pub limits: Vec<(String, serde_json::Value)>,
    pub version: &'static str,
}

struct ArmState {
    service: ArmService,
    started: Instant,
}

type Shared = State<Arc<ArmState>>;

fn refusal(r: Refusal) -> ApiError {
    if r.unavailable {
        ApiError::DependencyDown {
            dependency: "revocation list",
            cause: r.message,
        }
    } else if r.unauthenticated {
        ApiError::Unauthorized(r.message)
    } else {
        ApiError::Forbidden(r.message)
    }
}

/// Admits an operation call: a capability token when the arm takes them, else an API key
/// with [`OPERATION_SCOPE`].
async fn authorize<O: Operation>(State(s): Shared, mut request: Request, next: Next) -> Response {
    let guard = &s.service.guard;
    let auth = &s.service.auth;
    let token = crate::auth::bearer(request.headers()).filter(|t| t.starts_with("v1."));
    let caller = match token {
        Some(token) if guard.requires_tokens() => {
            let now = chrono::Utc::now().timestamp();
            let request_id = request_id::current();
            match guard
                .verify::<O>(Some(token), now, request_id.as_deref())
                .await
            {
                Ok(claims) => Caller::Orchestrator(claims),
                Err(r) => return refusal(r).into_response(),
            }
        }
        // An orchestrator signing tokens for an arm that takes none: as if it sent none.
        Some(_) if !auth.required() => Caller::Trusted,
        Some(_) => {
            return ApiError::Unauthorized("an API key is required".into()).into_response();
        }
        None => match auth
            .admit(Access::Scope(OPERATION_SCOPE), request.headers())
            .await
        {
            Ok(principal) if principal.key_id.is_some() => Caller::Direct,
            // No key where none is needed: the orchestrator of a token-less deployment, or
            // a caller on loopback.
            Ok(_) if !guard.requires_tokens() => Caller::Trusted,
            // With tokens on, a call without one must bring a key, wherever the arm listens.
            Ok(_) => {
                let request_id = request_id::current();
                return refusal(guard.missing::<O>(request_id.as_deref()).await).into_response();
            }
            Err(e) => return e.into_response(),
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// One operation call, whichever arm and operation.
async fn handle<O: Operation>(
    State(s): Shared,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(r): ApiJson<O::Request>,
) -> Result<Response, ApiError> {
    let request_id = request_id::current();
    if let Caller::Orchestrator(claims) = &caller {
        // The step runs only what its token grants.
        s.service
            .guard
            .check_grant::<O>(claims, &r, request_id.as_deref())
            .await
            .map_err(refusal)?;
    }
    let ctx = context(&headers, &caller, &s.service.direct_budget)?;
    let result = s.service.arms.call::<O>(r, ctx).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("octollm_arm_requests_total", "arm" => O::ARM.id(), "outcome" => outcome)
        .increment(1);
    // One line per call (calls are few and costly); the request span adds the request and
    // trace ids.
    tracing::info!(arm = O::ARM.id(), outcome, "arm call served");
    match result {
        Ok(outcome) => {
            let mut response = Json(outcome.response).into_response();
            set_usage(response.headers_mut(), outcome.usage);
            if let Some(v) = outcome.model.and_then(|m| HeaderValue::from_str(&m).ok()) {
                response.headers_mut().insert(MODEL, v);
            }
            Ok(response)
        }
        Err(error) => Err(ApiError::Arm(error)),
    }
}

/// `POST /tokens/revoked`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Revocation {
    jti: String,
    /// When the token expires anyway (Unix seconds): the entry is kept until then.
    #[serde(deserialize_with = "octollm_core::wire::whole")]
    exp: i64,
}

/// `POST /tokens/revoked`: refuse a token id from now on (the orchestrator, with the
/// registry token).
async fn revoke_token(
    State(s): Shared,
    headers: HeaderMap,
    ApiJson(revocation): ApiJson<Revocation>,
) -> Result<StatusCode, ApiError> {
    s.service
        .guard
        .revoke(
            crate::auth::bearer(&headers),
            &revocation.jti,
            revocation.exp,
        )
        .await
        .map_err(refusal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn capabilities(State(s): Shared) -> Json<ArmInfo> {
    Json(ArmInfo::of(s.service.kind))
}

async fn health(State(s): Shared) -> Json<HealthView> {
    let status = s.service.arms.status(s.service.kind);
    let mut components = std::collections::BTreeMap::new();
    components.insert(
        s.service.kind.id().to_owned(),
        match status.health.reason() {
            None => status.health.as_str().to_owned(),
            Some(reason) => format!("{}: {reason}", status.health.as_str()),
        },
    );
    Json(HealthView {
        status: match status.health {
            Health::Healthy => "healthy",
            Health::Degraded(_) => "degraded",
            Health::Unavailable(_) => "unhealthy",
        }
        .to_owned(),
        version: s.service.version.to_owned(),
        uptime_seconds: s.started.elapsed().as_secs(),
        components,
    })
}

/// Ready unless the arm cannot work here (the executor without its sandbox). A retriever
/// service without its embedding model is unready too: it exists to ingest and search by
/// meaning and can do neither, so a rollout that forgot the model stops at its first pod (in
/// process the retriever stays usable for keyword search, degraded).
async fn ready(State(s): Shared) -> Result<Json<Ready>, ApiError> {
    match s.service.arms.status(s.service.kind).health {
        Health::Unavailable(reason) => Err(ApiError::Unavailable(reason)),
        Health::Degraded(reason) if s.service.kind == ArmKind::Retriever => {
            Err(ApiError::Unavailable(reason))
        }
        Health::Healthy | Health::Degraded(_) => Ok(crate::api::ready_answer()),
    }
}

/// Adds the routes of `kind`'s operations.
struct OperationRoutes {
    kind: ArmKind,
    state: Arc<ArmState>,
    router: Router<Arc<ArmState>>,
}

impl OperationVisitor for OperationRoutes {
    fn visit<O: Operation>(&mut self) {
        if O::ARM != self.kind {
            return;
        }
        let router = std::mem::take(&mut self.router);
        self.router = router.route(
            O::ROUTE,
            post(handle::<O>).route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                authorize::<O>,
            )),
        );
    }
}

/// The routes of `kind`'s operations (`POST /plan`, …), for the route table and the document.
pub fn operation_routes(kind: ArmKind) -> Vec<&'static str> {
    struct Collect(ArmKind, Vec<&'static str>);
    impl OperationVisitor for Collect {
        fn visit<O: Operation>(&mut self) {
            if O::ARM == self.0 {
                self.1.push(O::ROUTE);
            }
        }
    }
    let mut c = Collect(kind, Vec::new());
    octollm_arms::visit_operations(&mut c);
    c.1
}

/// The service of one arm: its operations, `/capabilities`, probes and `/metrics`.
pub fn router(service: ArmService, body_limit: usize) -> Router {
    let kind = service.kind;
    let document = crate::openapi::prepared(&document(
        kind,
        service.auth.required(),
        service.guard.requires_tokens(),
        &service.limits,
    ));
    let gate = Gate {
        auth: service.auth.clone(),
        routes: COMMON_ROUTES,
    };
    let state = Arc::new(ArmState {
        service,
        started: Instant::now(),
    });
    let mut operations = OperationRoutes {
        kind,
        state: state.clone(),
        router: Router::new(),
    };
    octollm_arms::visit_operations(&mut operations);
    let common = Router::new()
        .route("/tokens/revoked", post(revoke_token))
        .route("/capabilities", get(capabilities))
        .route(
            "/openapi.json",
            get(move || crate::openapi::serve(document.clone())),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(observe::render))
        .fallback(crate::no_route)
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::auth::middleware,
        ));
    let routes = operations.router.merge(common);
    crate::common_layers(routes, body_limit).with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    const DIRECT: Budget = Budget {
        max_tokens: 8_000,
        max_time_seconds: 300,
        max_cost_dollars: 0.5,
    };

    #[test]
    fn what_the_client_sends_the_service_reads_back() {
        for (tokens, cost, deadline) in [
            (0, 0.0, 0),
            (123_456, 0.123_456_789, 1_764_000_000_000),
            (
                MAX_WHOLE_HEADER,
                MAX_DOLLARS_HEADER,
                MAX_WHOLE_HEADER as i64,
            ),
        ] {
            let sent = BudgetTracker {
                token_limit: tokens,
                cost_limit: cost,
                deadline_unix_ms: deadline,
                used: Usage::default(),
            };
            let read = budget(&headers(&budget_headers(&sent)), &Caller::Trusted, &DIRECT).unwrap();
            assert_eq!(read.token_limit, tokens);
            assert!(
                (read.cost_limit - cost).abs() < 1e-9,
                "{cost} -> {}",
                read.cost_limit
            );
            assert_eq!(read.deadline_unix_ms, deadline);
        }
        // Beyond what a header holds, the most it holds: still a valid header.
        let huge = BudgetTracker {
            token_limit: u64::MAX,
            cost_limit: 1e300,
            deadline_unix_ms: i64::MAX,
            used: Usage::default(),
        };
        let read = budget(&headers(&budget_headers(&huge)), &Caller::Trusted, &DIRECT).unwrap();
        assert_eq!(read.token_limit, MAX_WHOLE_HEADER);
        assert_eq!(read.deadline_unix_ms, MAX_WHOLE_HEADER as i64);
    }

    #[test]
    fn direct_callers_may_lower_the_configured_budget_but_not_raise_it() {
        let now = chrono::Utc::now().timestamp_millis();
        let none = budget(&HeaderMap::new(), &Caller::Direct, &DIRECT).unwrap();
        assert_eq!((none.token_limit, none.cost_limit), (8_000, 0.5));
        assert!((now + 299_000..=now + 301_000).contains(&none.deadline_unix_ms));

        let lower = headers(&[(BUDGET_TOKENS, "100".into())]);
        let lowered = budget(&lower, &Caller::Direct, &DIRECT).unwrap();
        assert_eq!((lowered.token_limit, lowered.cost_limit), (100, 0.5));

        let higher = headers(&[
            (BUDGET_TOKENS, "1000000".into()),
            (BUDGET_COST, "9".into()),
            (BUDGET_DEADLINE, (now + 86_400_000).to_string()),
        ]);
        let capped = budget(&higher, &Caller::Direct, &DIRECT).unwrap();
        assert_eq!((capped.token_limit, capped.cost_limit), (8_000, 0.5));
        assert!(capped.deadline_unix_ms <= now + 301_000);
        // The orchestrator's share is its own, above the direct budget or not.
        let share = budget(&higher, &Caller::Trusted, &DIRECT).unwrap();
        assert_eq!((share.token_limit, share.cost_limit), (1_000_000, 9.0));
        // A header it leaves out is the configured limit, not zero.
        let partial = budget(&lower, &Caller::Trusted, &DIRECT).unwrap();
        assert_eq!((partial.token_limit, partial.cost_limit), (100, 0.5));
        assert!(partial.deadline_unix_ms > now);
    }

    #[test]
    fn malformed_budget_headers_are_refused() {
        for (name, value) in [
            (BUDGET_TOKENS, "-1"),
            (BUDGET_TOKENS, "1e3"),
            (BUDGET_TOKENS, "1234567890123456789"),
            (BUDGET_COST, "0.1234567890123"),
            (BUDGET_COST, ".5"),
            (BUDGET_COST, "NaN"),
            (BUDGET_DEADLINE, "soon"),
        ] {
            let err = budget(&headers(&[(name, value.into())]), &Caller::Direct, &DIRECT)
                .map(|_| ())
                .unwrap_err();
            assert!(
                matches!(err, ApiError::Validation { .. }),
                "{name}: {value}"
            );
        }
    }
}
