//! One task's run. Every unit of work (the plan, each step, each validation) is keyed and
//! persisted when it completes; a resumed run finds the completed units in the store and
//! skips them, so a crash costs at most the units that were in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use octollm_arms::judge::ValidateResponse;
use octollm_arms::planner::PlanRequest;
use octollm_arms::{ArmError, CallContext};
use octollm_core::budget::BudgetExceeded;
use octollm_core::plan::{Plan, PlanStep};
use octollm_core::{ArmKind, Phase, Provenance, StepId, TaskError, TaskErrorKind};
use octollm_store::{Progress, StepRecord, StepStatus, StoreError, TaskRecord, TaskResult};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, instrument, warn};

use crate::Orchestrator;
use crate::budget::TaskBudget;
use crate::dispatch::{self, StepInput, StepOutput};
use crate::metrics as m;

/// Why a run stopped before producing a result.
#[derive(Debug)]
pub enum Stop {
    /// The task fails with this error (partial results stay stored).
    Failed(TaskError),
    /// Cancelled by request, or the lease was lost: another party owns the task's state now.
    Abandoned,
    /// The process is shutting down: release the lease so another worker resumes.
    Shutdown,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost(_) => Stop::Abandoned,
            other => Stop::Store(other),
        }
    }
}

fn budget_error(e: &BudgetExceeded) -> Stop {
    Stop::Failed(
        TaskError::new(TaskErrorKind::BudgetExceeded, e.to_string())
            .with_details(serde_json::to_value(e).unwrap_or_default()),
    )
}

pub(crate) const PLAN_KEY: &str = "plan";
pub(crate) const REPLAN_KEY: &str = "replan";
/// Steps of a replacement plan live in this namespace (`p2.s1`), apart from the first plan's.
const REPLAN_NAMESPACE: &str = "p2";

fn stored_plan(record: StepRecord) -> Result<Plan, Stop> {
    serde_json::from_value(record.output)
        .map_err(|e| Stop::Store(StoreError::Corrupt(format!("stored plan: {e}"))))
}

pub(crate) struct Run<'a> {
    orch: &'a Orchestrator,
    task: TaskRecord,
    owner: String,
    budget: TaskBudget,
    done: Mutex<BTreeMap<String, StepRecord>>,
    arms_used: Mutex<BTreeSet<ArmKind>>,
    total_steps: Mutex<u32>,
    cancel: CancellationToken,
    shutdown: CancellationToken,
}

impl<'a> Run<'a> {
    pub(crate) async fn new(
        orch: &'a Orchestrator,
        task: TaskRecord,
        owner: String,
        cancel: CancellationToken,
        shutdown: CancellationToken,
    ) -> Result<Run<'a>, StoreError> {
        let steps = orch.store.steps(&task.id).await?;
        let started = task.started_at.unwrap_or_else(Utc::now).timestamp_millis();
        let budget = TaskBudget::new(&task.spec.budget, started, task.usage);
        let arms_used = task.arms_used.iter().copied().collect();
        let total_steps = task.progress.total_steps;
        let done = steps
            .into_iter()
            .filter(|s| s.status == StepStatus::Completed)
            .map(|s| (s.step_key.clone(), s))
            .collect();
        Ok(Run {
            orch,
            task,
            owner,
            budget,
            done: Mutex::new(done),
            arms_used: Mutex::new(arms_used),
            total_steps: Mutex::new(total_steps),
            cancel,
            shutdown,
        })
    }

    pub(crate) fn usage(&self) -> octollm_core::budget::Usage {
        self.budget.used()
    }

    fn done_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StepRecord>> {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn completed(&self, key: &str) -> Option<StepRecord> {
        self.done_map().get(key).cloned()
    }

    async fn phase(&self, phase: Phase) -> Result<(), Stop> {
        if self.task.phase == Some(phase) {
            return Ok(());
        }
        self.orch
            .store
            .set_phase(&self.task.id, &self.owner, phase, Utc::now())
            .await?;
        Ok(())
    }

    /// Runs the task to a result, or stops.
    #[instrument(skip_all, fields(task_id = %self.task.id))]
    pub(crate) async fn run(&self) -> Result<TaskResult, Stop> {
        let first = self.plan().await?;
        let plan = match self.completed(REPLAN_KEY) {
            Some(record) => stored_plan(record)?,
            None => first,
        };
        self.phase(Phase::Execution).await?;
        let plan = match self.execute_plan(&plan, None).await {
            Ok(()) => plan,
            // One failed step may trigger one replan, which works around the failure.
            Err(Stop::Failed(error))
                if error.kind == TaskErrorKind::StepFailed
                    && self.completed(REPLAN_KEY).is_none() =>
            {
                let replanned = self.replan(&error).await?;
                self.execute_plan(&replanned, None).await?;
                replanned
            }
            Err(stop) => return Err(stop),
        };
        self.phase(Phase::Validation).await?;
        let mut output = self.synthesise(&plan);
        let mut verdict = self.validate(&output, 0).await?;
        let mut round = 0;
        while !verdict.valid && round < self.orch.config.max_repairs {
            round += 1;
            let feedback = verdict
                .issues
                .iter()
                .map(|i| format!("- {}", i.message))
                .collect::<Vec<_>>()
                .join("\n");
            let repair = plan.namespaced(&format!("r{round}"));
            self.add_total(repair.steps.len() as u32 + 1);
            self.phase(Phase::Execution).await?;
            self.execute_plan(&repair, Some(&feedback)).await?;
            self.phase(Phase::Validation).await?;
            output = self.synthesise(&repair);
            verdict = self.validate(&output, round).await?;
        }
        if !verdict.valid {
            let details = serde_json::json!({
                "failed_criteria": verdict.failed_criteria,
                "issues": verdict.issues,
                "repair_rounds": round,
                "partial_output": output,
            });
            return Err(Stop::Failed(
                TaskError::new(
                    TaskErrorKind::ValidationFailed,
                    "the result did not pass validation",
                )
                .with_details(details),
            ));
        }
        self.phase(Phase::Synthesis).await?;
        Ok(TaskResult {
            output,
            confidence: verdict.confidence,
            validation_passed: true,
        })
    }

    fn add_total(&self, n: u32) {
        *self
            .total_steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += n;
    }

    /// The stored plan, or a new one from the planner (re-asked once if invalid).
    async fn plan(&self) -> Result<Plan, Stop> {
        if let Some(record) = self.completed(PLAN_KEY) {
            let plan = stored_plan(record)?;
            if self.task.plan.is_none() {
                self.orch
                    .store
                    .save_plan(&self.task.id, &self.owner, &plan, Utc::now())
                    .await?;
            }
            return Ok(plan);
        }
        self.phase(Phase::Planning).await?;
        let mut feedback: Option<String> = None;
        for ask in 1..=2u32 {
            let result = self
                .ask_planner(PLAN_KEY, feedback.clone(), None, ask == 2)
                .await;
            match result {
                Ok(record) => {
                    let plan = stored_plan(record)?;
                    self.add_total(plan.steps.len() as u32 + 2);
                    self.orch
                        .store
                        .save_plan(&self.task.id, &self.owner, &plan, Utc::now())
                        .await?;
                    return Ok(plan);
                }
                Err(UnitError::Arm(e))
                    if ask == 1
                        && matches!(e, ArmError::InvalidOutput { .. } | ArmError::Llm(_)) =>
                {
                    warn!(error = %e, "plan refused; asking the planner once more");
                    feedback = Some(e.to_string());
                }
                Err(UnitError::Arm(e)) => {
                    return Err(Stop::Failed(TaskError::new(
                        TaskErrorKind::PlanningFailed,
                        format!("no valid plan: {e}"),
                    )));
                }
                Err(UnitError::Stop(stop)) => return Err(stop),
            }
        }
        Err(Stop::Failed(TaskError::new(
            TaskErrorKind::PlanningFailed,
            "no valid plan",
        )))
    }

    /// One planner call as a unit of work: the validated plan (moved into `namespace`, if
    /// any) is the unit's output. An invalid plan is an `InvalidOutput` error that keeps the
    /// call's usage.
    async fn ask_planner(
        &self,
        key: &str,
        feedback: Option<String>,
        namespace: Option<&str>,
        persist_failure: bool,
    ) -> Result<StepRecord, UnitError> {
        let spec = &self.task.spec;
        let request = PlanRequest {
            goal: spec.goal.clone(),
            constraints: spec.constraints.clone(),
            acceptance_criteria: spec.acceptance_criteria.clone(),
            context: spec.context.clone(),
            feedback,
        };
        let planner = &self.orch.arms.planner;
        self.run_unit(
            key,
            ArmKind::Planner,
            1,
            |ctx: CallContext| {
                let request = request.clone();
                Box::pin(async move {
                    let out = planner.plan(request, ctx).await?;
                    let raw = octollm_core::plan::RawPlan {
                        steps: out.response.steps.clone(),
                    };
                    let plan = Plan::validate(raw).map_err(|e| ArmError::InvalidOutput {
                        message: format!("invalid plan: {e}"),
                        usage: out.usage,
                    })?;
                    let plan = match namespace {
                        Some(ns) => plan.namespaced(ns),
                        None => plan,
                    };
                    let value = serde_json::to_value(&plan)
                        .map_err(|e| ArmError::Internal(e.to_string()))?;
                    Ok(StepOutput {
                        value,
                        usage: out.usage,
                        model: out.model,
                    })
                })
            },
            persist_failure,
        )
        .await
    }

    /// Asks the planner once for a new plan that works around a failed step.
    async fn replan(&self, failure: &TaskError) -> Result<Plan, Stop> {
        warn!(error = %failure.message, "a step failed; asking the planner for a new plan");
        self.phase(Phase::Planning).await?;
        let feedback = format!("a step of the previous plan failed: {}", failure.message);
        let result = self
            .ask_planner(REPLAN_KEY, Some(feedback), Some(REPLAN_NAMESPACE), true)
            .await;
        match result {
            Ok(record) => {
                let plan = stored_plan(record)?;
                self.add_total(plan.steps.len() as u32 + 1);
                self.orch
                    .store
                    .save_plan(&self.task.id, &self.owner, &plan, Utc::now())
                    .await?;
                self.phase(Phase::Execution).await?;
                Ok(plan)
            }
            Err(UnitError::Stop(stop)) => Err(stop),
            // The replan did not help: the task fails with the original step failure.
            Err(UnitError::Arm(e)) => {
                Err(Stop::Failed(failure.clone().with_details(
                    serde_json::json!({"replan_error": e.to_string()}),
                )))
            }
        }
    }

    /// Runs every step of `plan` not already completed, in dependency order, independent
    /// steps concurrently.
    async fn execute_plan(&self, plan: &Plan, feedback: Option<&str>) -> Result<(), Stop> {
        let arms_of: BTreeMap<String, ArmKind> = plan
            .steps
            .iter()
            .map(|s| (s.step_id.to_string(), s.arm_id))
            .chain(plan.steps.iter().map(|s| {
                (
                    s.step_id
                        .as_str()
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    s.arm_id,
                )
            }))
            .collect();
        let mut running = FuturesUnordered::new();
        let mut in_flight: BTreeSet<StepId> = BTreeSet::new();
        let mut stopping: Option<Stop> = None;
        loop {
            let done: BTreeSet<StepId> = {
                let map = self.done_map();
                plan.steps
                    .iter()
                    .filter(|s| map.contains_key(s.step_id.as_str()))
                    .map(|s| s.step_id.clone())
                    .collect()
            };
            if done.len() == plan.steps.len() {
                return Ok(());
            }
            if stopping.is_none() && self.shutdown.is_cancelled() {
                stopping = Some(Stop::Shutdown);
            }
            if stopping.is_none() {
                let room = self
                    .orch
                    .config
                    .max_parallel_steps
                    .saturating_sub(in_flight.len());
                let ready: Vec<&PlanStep> = plan
                    .ready(&done, &in_flight)
                    .into_iter()
                    .take(room)
                    .collect();
                let share = ready.len();
                for step in ready {
                    in_flight.insert(step.step_id.clone());
                    let arms_of = &arms_of;
                    running.push(async move {
                        let result = self.run_step(step, feedback, arms_of, share).await;
                        (step.step_id.clone(), result)
                    });
                }
            }
            if running.is_empty() {
                return Err(stopping.unwrap_or_else(|| {
                    Stop::Failed(TaskError::new(
                        TaskErrorKind::Internal,
                        "the plan cannot make progress",
                    ))
                }));
            }
            let next = tokio::select! {
                next = running.next() => next,
                () = self.cancel.cancelled() => return Err(Stop::Abandoned),
            };
            if let Some((step_id, result)) = next {
                in_flight.remove(&step_id);
                // A failed step ends the run; steps still in flight are dropped (aborted).
                result?;
            }
        }
    }

    async fn run_step(
        &self,
        step: &PlanStep,
        feedback: Option<&str>,
        arms_of: &BTreeMap<String, ArmKind>,
        share: usize,
    ) -> Result<(), Stop> {
        let mut inputs = BTreeMap::new();
        for (name, source) in &step.input_mapping {
            let key = source.strip_suffix(".output").unwrap_or(source);
            if let Some(record) = self.completed(key) {
                inputs.insert(name.clone(), record.output);
            }
        }
        // In a repair round a step also sees its own previous attempt (the code to fix).
        if feedback.is_some()
            && let Some(previous) = previous_attempt_key(step.step_id.as_str())
            && let Some(record) = self.completed(&previous)
        {
            inputs.insert("previous_attempt".to_owned(), record.output);
        }
        let spec = &self.task.spec;
        let arms = &self.orch.arms;
        let result = self
            .run_unit(
                step.step_id.as_str(),
                step.arm_id,
                share,
                |ctx: CallContext| {
                    let input = StepInput {
                        spec,
                        inputs: inputs.clone(),
                        feedback,
                    };
                    Box::pin(dispatch::dispatch(arms, step, input, arms_of, ctx))
                },
                true,
            )
            .instrument(info_span!("step", step_id = %step.step_id, arm = %step.arm_id))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(UnitError::Stop(stop)) => Err(stop),
            Err(UnitError::Arm(e)) => Err(Stop::Failed(
                TaskError::new(
                    TaskErrorKind::StepFailed,
                    format!("step {} ({}) failed: {e}", step.step_id, step.arm_id),
                )
                .with_details(serde_json::json!({"step_id": step.step_id, "arm_id": step.arm_id})),
            )),
        }
    }

    async fn validate(&self, output: &str, round: u32) -> Result<ValidateResponse, Stop> {
        let key = format!("validate.{round}");
        let judge = &self.orch.arms.judge;
        let criteria = self.task.spec.acceptance_criteria.clone();
        let result = self
            .run_unit(
                &key,
                ArmKind::Judge,
                1,
                |ctx: CallContext| {
                    let request = octollm_arms::judge::ValidateRequest {
                        output: output.to_owned(),
                        acceptance_criteria: criteria.clone(),
                        output_type: None,
                        context: None,
                    };
                    Box::pin(async move {
                        let out = judge.validate(request, ctx).await?;
                        let value = serde_json::to_value(&out.response)
                            .map_err(|e| ArmError::Internal(e.to_string()))?;
                        Ok(StepOutput {
                            value,
                            usage: out.usage,
                            model: out.model,
                        })
                    })
                },
                true,
            )
            .await;
        match result {
            Ok(record) => serde_json::from_value(record.output)
                .map_err(|e| Stop::Store(StoreError::Corrupt(e.to_string()))),
            Err(UnitError::Stop(stop)) => Err(stop),
            Err(UnitError::Arm(e)) => Err(Stop::Failed(TaskError::new(
                TaskErrorKind::StepFailed,
                format!("validation failed to run: {e}"),
            ))),
        }
    }

    /// The answer: every step's output in plan order, in text form.
    fn synthesise(&self, plan: &Plan) -> String {
        let map = self.done_map();
        plan.steps
            .iter()
            .filter_map(|s| {
                map.get(s.step_id.as_str())
                    .map(|r| dispatch::render(s.arm_id, &r.output))
            })
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Runs one unit of work with budget, timeout and retries, and persists its result.
    /// A unit already completed (before a crash) is returned from the store instead.
    async fn run_unit<'f>(
        &self,
        key: &str,
        arm: ArmKind,
        share: usize,
        call: impl Fn(CallContext) -> BoxFuture<'f, Result<StepOutput, ArmError>> + Send + Sync,
        persist_failure: bool,
    ) -> Result<StepRecord, UnitError> {
        if let Some(record) = self.completed(key) {
            return Ok(record);
        }
        let config = &self.orch.config;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let now_ms = Utc::now().timestamp_millis();
            let allowance = self
                .budget
                .reserve(share, now_ms)
                .map_err(|e| UnitError::Stop(budget_error(&e)))?;
            let _ = self
                .orch
                .store
                .append_event(
                    &self.task.id,
                    "step_started",
                    serde_json::json!({"step_id": key, "arm_id": arm, "attempt": attempt}),
                    Utc::now(),
                )
                .await;
            let ctx = CallContext {
                task_id: Some(self.task.id.clone()),
                step_id: StepId::parse(key).ok(),
                request_id: format!("{}:{key}:{attempt}", self.task.id),
                // Each attempt is its own span in the submitting request's trace (the
                // exported step span when traces are exported).
                trace: crate::trace_link::current().or_else(|| self.task.trace.map(|t| t.child())),
                budget: allowance.clone(),
            };
            let time_left = Duration::from_millis(self.budget.time_remaining_ms(now_ms));
            let timeout = Duration::from_secs(config.step_timeout_seconds).min(time_left);
            let started_at = Utc::now();
            let clock = Instant::now();
            let outcome = tokio::time::timeout(timeout, call(ctx)).await;
            let elapsed = clock.elapsed();
            let (result, spent) = match outcome {
                Ok(Ok(out)) => {
                    let usage = out.usage;
                    (Ok(out), usage)
                }
                Ok(Err(e)) => {
                    let usage = e.usage();
                    (Err(e), usage)
                }
                Err(_) if timeout >= time_left => {
                    self.budget.settle(&allowance, Default::default());
                    return Err(UnitError::Stop(budget_error(&BudgetExceeded::Time {
                        deadline_unix_ms: allowance.deadline_unix_ms,
                    })));
                }
                Err(_) => (Err(ArmError::Timeout), Default::default()),
            };
            self.budget.settle(&allowance, spent);
            let outcome_label = if result.is_ok() { "ok" } else { "error" };
            metrics::histogram!(m::STEP_DURATION, "arm" => arm.id(), "outcome" => outcome_label)
                .record(elapsed.as_secs_f64());
            let model = result.as_ref().ok().and_then(|o| o.model.clone());
            if spent.total_tokens() > 0 {
                let label = model.clone().unwrap_or_else(|| "unknown".into());
                metrics::counter!(m::LLM_TOKENS, "model" => label.clone(), "kind" => "prompt")
                    .increment(spent.prompt_tokens);
                metrics::counter!(m::LLM_TOKENS, "model" => label.clone(), "kind" => "completion")
                    .increment(spent.completion_tokens);
                metrics::counter!(m::LLM_COST, "model" => label)
                    .increment((spent.cost_dollars * 1e6) as u64);
            }
            let provenance = Provenance {
                arm_id: arm,
                instance: "in-process".into(),
                started_at,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                tokens: spent.total_tokens(),
                cost: spent.cost_dollars,
                model,
                attempt,
            };
            if let Some(over) = self.budget.overspent() {
                return Err(UnitError::Stop(budget_error(&over)));
            }
            match result {
                Ok(out) => {
                    let record = StepRecord {
                        step_key: key.to_owned(),
                        arm_id: arm,
                        status: StepStatus::Completed,
                        output: out.value,
                        provenance,
                        error: None,
                    };
                    self.persist(&record).await.map_err(UnitError::Stop)?;
                    return Ok(record);
                }
                Err(ArmError::BudgetExceeded(e, _)) => {
                    return Err(UnitError::Stop(budget_error(&e)));
                }
                Err(e) if e.is_retryable() && attempt < config.step_attempts => {
                    metrics::counter!(m::STEP_RETRIES, "arm" => arm.id()).increment(1);
                    let backoff = backoff(config.retry_base_ms, config.retry_max_ms, attempt);
                    warn!(step = key, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "step failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.cancel.cancelled() => return Err(UnitError::Stop(Stop::Abandoned)),
                    }
                }
                Err(e) => {
                    if persist_failure {
                        let record = StepRecord {
                            step_key: key.to_owned(),
                            arm_id: arm,
                            status: StepStatus::Failed,
                            output: serde_json::Value::Null,
                            provenance,
                            error: Some(e.to_string()),
                        };
                        self.persist(&record).await.map_err(UnitError::Stop)?;
                    }
                    return Err(UnitError::Arm(e));
                }
            }
        }
    }

    async fn persist(&self, record: &StepRecord) -> Result<(), Stop> {
        let arms_used: Vec<ArmKind> = {
            let mut arms = self
                .arms_used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if record.status == StepStatus::Completed {
                arms.insert(record.arm_id);
            }
            arms.iter().copied().collect()
        };
        let completed = {
            let map = self.done_map();
            u32::try_from(map.len()).unwrap_or(u32::MAX)
                + u32::from(record.status == StepStatus::Completed)
        };
        let total = *self
            .total_steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let progress = Progress {
            current_step: Some(record.step_key.clone()),
            completed_steps: completed,
            total_steps: total.max(completed),
        };
        self.orch
            .store
            .save_step(
                &self.task.id,
                &self.owner,
                record,
                self.budget.used(),
                &arms_used,
                &progress,
                Utc::now(),
            )
            .await?;
        if record.status == StepStatus::Completed {
            self.done_map()
                .insert(record.step_key.clone(), record.clone());
        }
        Ok(())
    }
}

/// `r1.s2` → `s2`; `r2.s2` → `r1.s2`; a key outside a repair round has none.
fn previous_attempt_key(key: &str) -> Option<String> {
    let (round, base) = key.split_once('.')?;
    let n: u32 = round.strip_prefix('r')?.parse().ok()?;
    Some(if n <= 1 {
        base.to_owned()
    } else {
        format!("r{}.{base}", n - 1)
    })
}

pub(crate) enum UnitError {
    Arm(ArmError),
    Stop(Stop),
}

/// Exponential backoff with full jitter: uniform in [base·2^(n-1) / 2, base·2^(n-1)], capped.
fn backoff(base_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(max_ms);
    let low = exp / 2;
    let ms = if exp > low {
        rand::rng().random_range(low..=exp)
    } else {
        exp
    };
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_attempts() {
        assert_eq!(previous_attempt_key("r1.s2").as_deref(), Some("s2"));
        assert_eq!(previous_attempt_key("r3.s2").as_deref(), Some("r2.s2"));
        assert_eq!(previous_attempt_key("s2"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..10 {
            let d = backoff(100, 1000, attempt).as_millis() as u64;
            let exp = (100u64 << (attempt - 1)).min(1000);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
        }
    }
}
