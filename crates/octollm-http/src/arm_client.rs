//! The arms over HTTP: one client per arm implementing the same trait as the in-process arm,
//! so the orchestrator does not know which it talks to.
//!
//! Each arm may have several instances. Calls go round-robin over the instances whose
//! circuit breaker is closed; a transport failure, a timeout, a 503/504 or any error the arm
//! marks retryable trips a failure on that instance and the call moves on to the next one
//! (each instance at most once per call). After [`BreakerSettings::failures`] failures in a
//! row an instance's breaker opens for [`BreakerSettings::cool_down`]; then the next call
//! tries it first (half-open): a success closes it, a failure opens it again and the call
//! goes on to a healthy instance. Every call has a timeout: the
//! configured one, or less when the task's deadline is nearer.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use octollm_arms::{ArmError, ArmOutcome, Arms, CallContext};
use octollm_core::ArmKind;
use octollm_core::budget::Usage;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::arm_service::{
    ArmErrorBody, BUDGET_COST, BUDGET_DEADLINE, BUDGET_TOKENS, MODEL, STEP_ID, TASK_ID,
    USAGE_COMPLETION, USAGE_COST, USAGE_PROMPT,
};

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Failures in a row that open an instance's breaker.
    pub failures: u32,
    /// How long an open breaker keeps calls away.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 3,
            cool_down: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// The cool-down is over: the next call may try the instance.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
struct Instance {
    base: String,
    breaker: Mutex<Breaker>,
}

impl Instance {
    fn state(&self, now: Instant) -> BreakerState {
        let Ok(b) = self.breaker.lock() else {
            return BreakerState::Closed;
        };
        match b.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn succeeded(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.failures = 0;
            b.open_until = None;
        }
    }

    fn failed(&self, settings: BreakerSettings, arm: ArmKind) {
        if let Ok(mut b) = self.breaker.lock() {
            b.failures += 1;
            let half_open = b.open_until.is_some();
            if half_open || b.failures >= settings.failures {
                if b.open_until.is_none() || half_open {
                    tracing::warn!(arm = arm.id(), instance = %self.base, "circuit breaker open");
                    metrics::counter!("octollm_arm_breaker_opened_total", "arm" => arm.id())
                        .increment(1);
                }
                b.open_until = Some(Instant::now() + settings.cool_down);
            }
        }
    }
}

/// The instances of one arm and how to call them.
pub struct ArmClient {
    arm: ArmKind,
    instances: Vec<Instance>,
    next: AtomicUsize,
    http: reqwest::Client,
    timeout: Duration,
    breaker: BreakerSettings,
}

/// What went wrong with one instance.
enum Attempt {
    /// Try the next instance.
    Retry(ArmError),
    /// The answer stands (the arm refused, the request was bad, …).
    Final(ArmError),
}

fn usage_of(headers: &reqwest::header::HeaderMap) -> Usage {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Usage {
        prompt_tokens: get(USAGE_PROMPT).and_then(|v| v.parse().ok()).unwrap_or(0),
        completion_tokens: get(USAGE_COMPLETION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        cost_dollars: get(USAGE_COST).and_then(|v| v.parse().ok()).unwrap_or(0.0),
    }
}

/// The error an arm service answered, as the arm error it was.
fn error_of(status: u16, body: Option<ArmErrorBody>, usage: Usage) -> ArmError {
    let (code, message, retryable, budget) = match body {
        Some(b) => (b.code, b.message, b.retryable, b.budget),
        None => (
            String::new(),
            format!("status {status}"),
            status >= 500,
            None,
        ),
    };
    match code.as_str() {
        "validation_error" => ArmError::InvalidRequest(message),
        "refused" => ArmError::Refused(message),
        "budget_exceeded" => match budget {
            Some(limit) => ArmError::BudgetExceeded(limit, usage),
            None => ArmError::Internal(format!("budget exceeded in the arm: {message}")),
        },
        "invalid_model_output" => ArmError::InvalidOutput { message, usage },
        "timeout" => ArmError::Timeout,
        "service_unavailable" => ArmError::Unavailable(message),
        _ if retryable => ArmError::Unavailable(message),
        _ => ArmError::Internal(message),
    }
}

impl ArmClient {
    /// `bases` are the instances' base URLs (`http://coder-arm:8102`); at least one.
    pub fn new(
        arm: ArmKind,
        bases: &[String],
        timeout: Duration,
        breaker: BreakerSettings,
    ) -> Result<Self, String> {
        if bases.is_empty() {
            return Err(format!("no endpoint for the {} arm", arm.id()));
        }
        for base in bases {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!(
                    "{} arm endpoint {base:?} must start with http:// or https://",
                    arm.id()
                ));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            arm,
            instances: bases
                .iter()
                .map(|b| Instance {
                    base: b.trim_end_matches('/').to_owned(),
                    breaker: Mutex::new(Breaker {
                        failures: 0,
                        open_until: None,
                    }),
                })
                .collect(),
            next: AtomicUsize::new(0),
            http,
            timeout,
            breaker,
        })
    }

    /// Each instance's base URL and breaker state, in configuration order.
    pub fn breakers(&self) -> Vec<(String, BreakerState)> {
        let now = Instant::now();
        self.instances
            .iter()
            .map(|i| (i.base.clone(), i.state(now)))
            .collect()
    }

    /// The instances to try for one call: a half-open one first (its probe; if it fails the
    /// call moves on), then the closed ones from the round-robin position; open ones are
    /// skipped.
    fn order(&self) -> Vec<&Instance> {
        let now = Instant::now();
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotated: Vec<&Instance> = (0..n).map(|k| &self.instances[(start + k) % n]).collect();
        let probe = rotated
            .iter()
            .copied()
            .find(|i| i.state(now) == BreakerState::HalfOpen);
        probe
            .into_iter()
            .chain(
                rotated
                    .into_iter()
                    .filter(|i| i.state(now) == BreakerState::Closed),
            )
            .collect()
    }

    async fn attempt<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        instance: &Instance,
        path: &str,
        request: &Req,
        ctx: &CallContext,
    ) -> Result<ArmOutcome<Resp>, Attempt> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left = Duration::from_millis(ctx.budget.time_remaining_ms(now_ms));
        if left.is_zero() {
            return Err(Attempt::Final(ArmError::Timeout));
        }
        let mut call = self
            .http
            .post(format!("{}{path}", instance.base))
            .timeout(self.timeout.min(left))
            .json(request)
            .header(BUDGET_TOKENS, ctx.budget.tokens_remaining().to_string())
            .header(BUDGET_COST, ctx.budget.cost_remaining().to_string())
            .header(BUDGET_DEADLINE, ctx.budget.deadline_unix_ms.to_string());
        if !ctx.request_id.is_empty() {
            call = call.header(crate::request_id::HEADER, &ctx.request_id);
        }
        if let Some(task) = &ctx.task_id {
            call = call.header(TASK_ID, task.as_str());
        }
        if let Some(step) = &ctx.step_id {
            call = call.header(STEP_ID, step.as_str());
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(Attempt::Retry(ArmError::Timeout)),
            Err(e) => {
                return Err(Attempt::Retry(ArmError::Unavailable(format!(
                    "{} arm at {}: {}",
                    self.arm.id(),
                    instance.base,
                    if e.is_connect() {
                        "connection refused"
                    } else {
                        "request failed"
                    }
                ))));
            }
        };
        let status = response.status().as_u16();
        let usage = usage_of(response.headers());
        let model = response
            .headers()
            .get(MODEL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if response.status().is_success() {
            return match response.json::<Resp>().await {
                Ok(body) => Ok(ArmOutcome {
                    response: body,
                    usage,
                    model,
                }),
                Err(e) => Err(Attempt::Retry(ArmError::Unavailable(format!(
                    "unreadable answer from {}: {e}",
                    instance.base
                )))),
            };
        }
        let error = error_of(status, response.json::<ArmErrorBody>().await.ok(), usage);
        if error.is_retryable() {
            Err(Attempt::Retry(error))
        } else {
            Err(Attempt::Final(error))
        }
    }

    /// One call, moving to the next instance when one fails in a way another may not.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
        ctx: &CallContext,
    ) -> Result<ArmOutcome<Resp>, ArmError> {
        let order = self.order();
        if order.is_empty() {
            return Err(ArmError::Unavailable(format!(
                "every {} arm instance is failing (circuit breakers open)",
                self.arm.id()
            )));
        }
        let mut last = None;
        for instance in order {
            match self.attempt(instance, path, request, ctx).await {
                Ok(outcome) => {
                    instance.succeeded();
                    return Ok(outcome);
                }
                Err(Attempt::Final(e)) => {
                    // The instance answered: it is healthy.
                    instance.succeeded();
                    return Err(e);
                }
                Err(Attempt::Retry(e)) => {
                    instance.failed(self.breaker, self.arm);
                    metrics::counter!("octollm_arm_call_failovers_total", "arm" => self.arm.id())
                        .increment(1);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ArmError::Unavailable(format!(
            "no {} arm instance answered",
            self.arm.id()
        ))))
    }
}

/// Arm clients by kind, shared by the per-arm trait implementations.
struct Remote(Arc<ArmClient>);

#[async_trait]
impl octollm_arms::PlannerArm for Remote {
    async fn plan(
        &self,
        request: octollm_arms::planner::PlanRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::planner::PlanResponse>, ArmError> {
        self.0.call("/plan", &request, &ctx).await
    }
}

#[async_trait]
impl octollm_arms::CoderArm for Remote {
    async fn code(
        &self,
        request: octollm_arms::coder::CodeRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::coder::CodeResponse>, ArmError> {
        self.0.call("/code", &request, &ctx).await
    }
}

#[async_trait]
impl octollm_arms::ExecutorArm for Remote {
    async fn execute(
        &self,
        request: octollm_arms::executor::ExecuteRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::executor::ExecuteResponse>, ArmError> {
        self.0.call("/execute", &request, &ctx).await
    }

    fn unavailable_reason(&self) -> Option<String> {
        // The service's own readiness says whether its sandbox works.
        None
    }
}

#[async_trait]
impl octollm_arms::RetrieverArm for Remote {
    async fn search(
        &self,
        request: octollm_arms::retriever::SearchRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::retriever::SearchResponse>, ArmError> {
        self.0.call("/search", &request, &ctx).await
    }

    async fn ingest(
        &self,
        request: octollm_arms::retriever::DocumentRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::retriever::DocumentResponse>, ArmError> {
        self.0.call("/documents", &request, &ctx).await
    }
}

#[async_trait]
impl octollm_arms::JudgeArm for Remote {
    async fn validate(
        &self,
        request: octollm_arms::judge::ValidateRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::judge::ValidateResponse>, ArmError> {
        self.0.call("/validate", &request, &ctx).await
    }
}

#[async_trait]
impl octollm_arms::GuardianArm for Remote {
    async fn check(
        &self,
        request: octollm_arms::guardian::CheckRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<octollm_arms::guardian::CheckResponse>, ArmError> {
        self.0.call("/check", &request, &ctx).await
    }
}

/// Every arm over HTTP, from one client per arm.
pub fn remote_arms(clients: [Arc<ArmClient>; 6]) -> Arms {
    let [planner, coder, executor, retriever, judge, guardian] = clients;
    Arms {
        planner: Arc::new(Remote(planner)),
        coder: Arc::new(Remote(coder)),
        executor: Arc::new(Remote(executor)),
        retriever: Arc::new(Remote(retriever)),
        judge: Arc::new(Remote(judge)),
        guardian: Arc::new(Remote(guardian)),
    }
}

/// One arm over HTTP, the others as given: a remote arm can replace an in-process one.
pub fn with_remote(mut arms: Arms, client: Arc<ArmClient>) -> Arms {
    let remote = Arc::new(Remote(Arc::clone(&client)));
    match client.arm {
        ArmKind::Planner => arms.planner = remote,
        ArmKind::Coder => arms.coder = remote,
        ArmKind::Executor => arms.executor = remote,
        ArmKind::Retriever => arms.retriever = remote,
        ArmKind::Judge => arms.judge = remote,
        ArmKind::Guardian => arms.guardian = remote,
    }
    arms
}
