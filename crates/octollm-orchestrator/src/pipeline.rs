//! One task's run. Every unit of work (the plan, each step, each validation) is keyed
//! ([`UnitKey`]) and persisted when it completes; a resumed run finds the completed units in
//! the store and skips them, so a crash costs at most the units that were in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use octollm_arms::judge::{ValidateRequest, ValidateResponse};
use octollm_arms::planner::PlanRequest;
use octollm_arms::{ArmError, CallContext};
use octollm_core::budget::{BudgetExceeded, Usage};
use octollm_core::plan::{Plan, PlanStep, RawPlan};
use octollm_core::{ArmKind, Phase, PlanNo, Provenance, StepId, TaskError, TaskErrorKind, UnitKey};
use octollm_store::{StepRecord, StepStatus, StoreError, TaskRecord, TaskResult, UnitDone};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, instrument, warn};

use crate::Orchestrator;
use crate::budget::TaskBudget;
use crate::dispatch::{self, Produced, StepInput};
use crate::metrics as m;
use crate::screening;
use crate::units::UnitOutput;

/// Why a run stopped before producing a result.
#[derive(Debug)]
pub enum Stop {
    /// The task fails with this error; what it produced before stays stored, and `partial`
    /// is shown as its (unvalidated) result.
    Failed {
        error: TaskError,
        partial: Option<TaskResult>,
    },
    /// Cancelled by request, or the lease was lost: another party owns the task's state now.
    Abandoned,
    /// The process is shutting down: release the lease so another worker resumes.
    Shutdown,
    Store(StoreError),
}

impl Stop {
    fn failed(error: TaskError) -> Self {
        Stop::Failed {
            error,
            partial: None,
        }
    }
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
    Stop::failed(TaskError::new(TaskErrorKind::BudgetExceeded, e.to_string()))
}

/// Where a plan's steps run: which plan, which round.
#[derive(Debug, Clone, Copy)]
struct Round {
    plan: PlanNo,
    number: u32,
}

impl Round {
    fn key(self, step: &StepId) -> UnitKey {
        UnitKey::step(self.plan, self.number, step.clone())
    }
}

pub(crate) struct Run<'a> {
    orch: &'a Orchestrator,
    task: TaskRecord,
    owner: String,
    budget: TaskBudget,
    /// The typed outputs of the completed units.
    done: Mutex<BTreeMap<UnitKey, UnitOutput>>,
    arms_used: Mutex<BTreeSet<ArmKind>>,
    total_steps: Mutex<u32>,
    phase: Mutex<Option<Phase>>,
    cancel: CancellationToken,
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another step panicked mid-update of plain values.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<'a> Run<'a> {
    pub(crate) async fn new(
        orch: &'a Orchestrator,
        task: TaskRecord,
        owner: String,
        cancel: CancellationToken,
        shutdown: CancellationToken,
    ) -> Result<Run<'a>, StoreError> {
        let units = orch.store.units(&task.id).await?;
        let started = task.started_at.unwrap_or_else(Utc::now).timestamp_millis();
        let budget = TaskBudget::new(&task.spec.budget, started, task.usage);
        let mut done = BTreeMap::new();
        for record in units
            .into_iter()
            .filter(|s| s.status == StepStatus::Completed)
        {
            let output = UnitOutput::decode(&record.unit, record.arm_id, record.output.clone())
                .map_err(|e| StoreError::Corrupt(format!("output of unit {}: {e}", record.unit)))?;
            done.insert(record.unit, output);
        }
        Ok(Run {
            orch,
            arms_used: Mutex::new(task.arms_used.iter().copied().collect()),
            total_steps: Mutex::new(task.progress.total_steps),
            phase: Mutex::new(task.phase),
            task,
            owner,
            budget,
            done: Mutex::new(done),
            cancel,
            shutdown,
        })
    }

    pub(crate) fn usage(&self) -> Usage {
        self.budget.used()
    }

    fn completed(&self, key: &UnitKey) -> Option<UnitOutput> {
        lock(&self.done).get(key).cloned()
    }

    fn completed_plan(&self, plan: PlanNo) -> Option<Plan> {
        match self.completed(&plan.unit()) {
            Some(UnitOutput::Plan(p)) => Some(p),
            _ => None,
        }
    }

    async fn phase(&self, phase: Phase) -> Result<(), Stop> {
        if *lock(&self.phase) == Some(phase) {
            return Ok(());
        }
        self.orch
            .store
            .set_phase(&self.task.id, &self.owner, phase, Utc::now())
            .await?;
        *lock(&self.phase) = Some(phase);
        Ok(())
    }

    fn add_total(&self, n: usize) {
        *lock(&self.total_steps) += u32::try_from(n).unwrap_or(u32::MAX);
    }

    /// Runs the task to a result, or stops.
    #[instrument(skip_all, fields(task_id = %self.task.id))]
    pub(crate) async fn run(&self) -> Result<TaskResult, Stop> {
        let first = self.plan().await?;
        let (mut plan, mut plan_no) = match self.completed_plan(PlanNo::Replacement) {
            Some(replacement) => (replacement, PlanNo::Replacement),
            None => (first, PlanNo::First),
        };
        self.phase(Phase::Execution).await?;
        let round = Round {
            plan: plan_no,
            number: 0,
        };
        match self.execute_plan(&plan, round, None).await {
            Ok(()) => {}
            // One failed step may trigger one replan, which works around the failure.
            Err(Stop::Failed { error, .. })
                if error.kind == TaskErrorKind::StepFailed && plan_no == PlanNo::First =>
            {
                plan = self.replan(&error).await?;
                plan_no = PlanNo::Replacement;
                let round = Round {
                    plan: plan_no,
                    number: 0,
                };
                self.execute_plan(&plan, round, None).await?;
            }
            Err(stop) => return Err(stop),
        }
        self.phase(Phase::Validation).await?;
        let mut round = Round {
            plan: plan_no,
            number: 0,
        };
        let mut output = self.synthesise(&plan, round);
        let mut verdict = self.validate(&output, round.number).await?;
        while !verdict.valid && round.number < self.orch.config.max_repairs {
            round.number += 1;
            let feedback = verdict
                .issues
                .iter()
                .map(|i| format!("- {}", i.message))
                .collect::<Vec<_>>()
                .join("\n");
            self.add_total(plan.steps.len() + 1);
            self.phase(Phase::Execution).await?;
            self.execute_plan(&plan, round, Some(&feedback)).await?;
            self.phase(Phase::Validation).await?;
            output = self.synthesise(&plan, round);
            verdict = self.validate(&output, round.number).await?;
        }
        if !verdict.valid {
            let rounds = match round.number {
                1 => "after 1 repair round".to_owned(),
                n => format!("after {n} repair rounds"),
            };
            let failed = if verdict.failed_criteria.is_empty() {
                verdict
                    .issues
                    .iter()
                    .map(|i| i.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                verdict.failed_criteria.join("; ")
            };
            return Err(Stop::Failed {
                error: TaskError::new(
                    TaskErrorKind::ValidationFailed,
                    "the result did not pass validation",
                )
                .with_details(format!("failed: {failed} ({rounds})")),
                partial: Some(TaskResult {
                    output,
                    confidence: verdict.confidence,
                    validation_passed: false,
                }),
            });
        }
        self.phase(Phase::Synthesis).await?;
        Ok(TaskResult {
            output,
            confidence: verdict.confidence,
            validation_passed: true,
        })
    }

    /// The stored plan, or a new one from the planner (re-asked once if invalid).
    async fn plan(&self) -> Result<Plan, Stop> {
        if let Some(plan) = self.completed_plan(PlanNo::First) {
            return Ok(plan);
        }
        self.phase(Phase::Planning).await?;
        let mut feedback: Option<String> = None;
        for ask in 1..=2u32 {
            match self
                .ask_planner(PlanNo::First, feedback.clone(), ask == 2)
                .await
            {
                Ok(plan) => return Ok(plan),
                Err(UnitError::Arm(e))
                    if ask == 1
                        && matches!(e, ArmError::InvalidOutput { .. } | ArmError::Llm(_)) =>
                {
                    warn!(error = %e, "plan refused; asking the planner once more");
                    feedback = Some(e.to_string());
                }
                Err(UnitError::Arm(e)) => {
                    return Err(Stop::failed(TaskError::new(
                        TaskErrorKind::PlanningFailed,
                        format!("no valid plan: {e}"),
                    )));
                }
                Err(UnitError::Stop(stop)) => return Err(stop),
            }
        }
        Err(Stop::failed(TaskError::new(
            TaskErrorKind::PlanningFailed,
            "no valid plan",
        )))
    }

    /// One planner call as a unit of work: the validated plan is the unit's output. An
    /// invalid plan is an `InvalidOutput` error that keeps the call's usage.
    async fn ask_planner(
        &self,
        plan_no: PlanNo,
        feedback: Option<String>,
        persist_failure: bool,
    ) -> Result<Plan, UnitError> {
        let spec = &self.task.spec;
        let request = PlanRequest {
            goal: spec.goal.clone(),
            constraints: spec.constraints.clone(),
            acceptance_criteria: spec.acceptance_criteria.clone(),
            context: spec.context.clone(),
            feedback: feedback.map(|f| {
                f.chars()
                    .take(octollm_arms::planner::FEEDBACK_MAX_CHARS)
                    .collect()
            }),
        };
        let arms = &self.orch.arms;
        let output = self
            .run_unit(
                plan_no.unit(),
                ArmKind::Planner,
                1,
                |ctx: CallContext| {
                    let request = request.clone();
                    Box::pin(async move {
                        let out = arms.call::<octollm_arms::Plan>(request, ctx).await?;
                        let raw = RawPlan {
                            steps: out.response.steps.clone(),
                        };
                        let plan = Plan::validate(raw).map_err(|e| ArmError::InvalidOutput {
                            message: format!("invalid plan: {e}"),
                            usage: out.usage,
                        })?;
                        Ok(Produced::of(out, |_| UnitOutput::Plan(plan)))
                    })
                },
                persist_failure,
            )
            .await?;
        match output {
            UnitOutput::Plan(plan) => Ok(plan),
            _ => Err(UnitError::Stop(Stop::Store(StoreError::Corrupt(
                "a plan unit holds no plan".into(),
            )))),
        }
    }

    /// Asks the planner once for a new plan that works around a failed step.
    async fn replan(&self, failure: &TaskError) -> Result<Plan, Stop> {
        warn!(error = %failure.message, "a step failed; asking the planner for a new plan");
        self.phase(Phase::Planning).await?;
        let feedback = format!("a step of the previous plan failed: {}", failure.message);
        match self
            .ask_planner(PlanNo::Replacement, Some(feedback), true)
            .await
        {
            Ok(plan) => {
                self.phase(Phase::Execution).await?;
                Ok(plan)
            }
            Err(UnitError::Stop(stop)) => Err(stop),
            // The replan did not help: the task fails with the original step failure.
            Err(UnitError::Arm(e)) => {
                let details = match &failure.details {
                    Some(d) => format!("{d}; the replacement plan failed too: {e}"),
                    None => format!("the replacement plan failed too: {e}"),
                };
                Err(Stop::failed(failure.clone().with_details(details)))
            }
        }
    }

    /// Runs every step of `plan` in `round` not already completed, in dependency order,
    /// independent steps concurrently.
    async fn execute_plan(
        &self,
        plan: &Plan,
        round: Round,
        feedback: Option<&str>,
    ) -> Result<(), Stop> {
        let mut running = FuturesUnordered::new();
        let mut in_flight: BTreeSet<StepId> = BTreeSet::new();
        let mut stopping: Option<Stop> = None;
        loop {
            let done: BTreeSet<StepId> = {
                let map = lock(&self.done);
                plan.steps
                    .iter()
                    .filter(|s| map.contains_key(&round.key(&s.step_id)))
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
                    running.push(async move {
                        let result = self.run_step(plan, step, round, feedback, share).await;
                        (step.step_id.clone(), result)
                    });
                }
            }
            if running.is_empty() {
                return Err(stopping.unwrap_or_else(|| {
                    Stop::failed(TaskError::new(
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
        plan: &Plan,
        step: &PlanStep,
        round: Round,
        feedback: Option<&str>,
        share: usize,
    ) -> Result<(), Stop> {
        let key = round.key(&step.step_id);
        // Inputs in dependency order, each under the name the plan gives it.
        let mut inputs: Vec<(Option<usize>, String, UnitOutput)> = step
            .input_mapping
            .iter()
            .filter_map(|(name, source)| {
                let output = self.completed(&round.key(source))?;
                let order = step.dependencies.iter().position(|d| d == source);
                Some((order, name.clone(), output))
            })
            .collect();
        inputs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let inputs: Vec<(String, UnitOutput)> = inputs
            .into_iter()
            .map(|(_, name, output)| (name, output))
            .collect();
        let previous = feedback
            .and_then(|_| key.previous_attempt())
            .and_then(|k| self.completed(&k));
        let spec = &self.task.spec;
        let arms = &self.orch.arms;
        // Fixed by the plan, before this or any step read untrusted content.
        let grant = (step.arm_id == ArmKind::Executor).then(|| plan.executor_grant(step));
        let result = self
            .run_unit(
                key.clone(),
                step.arm_id,
                share,
                |mut ctx: CallContext| {
                    ctx.grant.clone_from(&grant);
                    let input = StepInput {
                        spec,
                        inputs: inputs.clone(),
                        previous: previous.clone(),
                        feedback,
                    };
                    Box::pin(dispatch::dispatch(arms, step, input, ctx))
                },
                true,
            )
            .instrument(info_span!("step", step_id = %key, arm = %step.arm_id))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(UnitError::Stop(stop)) => Err(stop),
            Err(UnitError::Arm(e)) => Err(Stop::failed(
                TaskError::new(
                    TaskErrorKind::StepFailed,
                    format!("step {key} ({}) failed: {e}", step.arm_id),
                )
                .with_details(format!("step {key} on the {} arm", step.arm_id)),
            )),
        }
    }

    async fn validate(&self, output: &str, round: u32) -> Result<ValidateResponse, Stop> {
        let arms = &self.orch.arms;
        let criteria = self.task.spec.acceptance_criteria.clone();
        let result = self
            .run_unit(
                UnitKey::Validation { round },
                ArmKind::Judge,
                1,
                |ctx: CallContext| {
                    let criteria = criteria.clone();
                    Box::pin(async move {
                        // The judge runs no code: the run goes through the executor arm.
                        let run = dispatch::run_for_judge(arms, output, &criteria, &ctx).await?;
                        let request = ValidateRequest {
                            output: output.to_owned(),
                            acceptance_criteria: criteria,
                            output_type: None,
                            context: None,
                            run,
                        };
                        let out = arms.call::<octollm_arms::Validate>(request, ctx).await?;
                        Ok(Produced::of(out, UnitOutput::Validation))
                    })
                },
                true,
            )
            .await;
        match result {
            Ok(UnitOutput::Validation(verdict)) => Ok(verdict),
            Ok(_) => Err(Stop::Store(StoreError::Corrupt(
                "a validation unit holds no verdict".into(),
            ))),
            Err(UnitError::Stop(stop)) => Err(stop),
            Err(UnitError::Arm(e)) => Err(Stop::failed(TaskError::new(
                TaskErrorKind::StepFailed,
                format!("validation failed to run: {e}"),
            ))),
        }
    }

    /// The answer: every step's output of `round` in plan order, in text form.
    fn synthesise(&self, plan: &Plan, round: Round) -> String {
        let map = lock(&self.done);
        plan.steps
            .iter()
            .filter_map(|s| map.get(&round.key(&s.step_id)).map(UnitOutput::text))
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Runs one unit of work with budget, timeout and retries, and persists its result.
    /// A unit already completed (before a crash) is returned from the store instead.
    async fn run_unit<'f>(
        &self,
        key: UnitKey,
        arm: ArmKind,
        share: usize,
        call: impl Fn(CallContext) -> BoxFuture<'f, Result<Produced, ArmError>> + Send + Sync,
        persist_failure: bool,
    ) -> Result<UnitOutput, UnitError> {
        if let Some(output) = self.completed(&key) {
            return Ok(output);
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
            if let Err(e) = self
                .orch
                .store
                .start_unit(&self.task.id, &self.owner, &key, arm, attempt, Utc::now())
                .await
            {
                self.budget.settle(&allowance, Usage::default());
                return Err(UnitError::Stop(e.into()));
            }
            let ctx = CallContext {
                task_id: Some(self.task.id.clone()),
                unit: Some(key.clone()),
                request_id: format!("{}:{key}:{attempt}", self.task.id),
                // Each attempt is its own span in the submitting request's trace (the
                // exported step span when traces are exported).
                trace: crate::trace_link::current().or_else(|| self.task.trace.map(|t| t.child())),
                budget: allowance.clone(),
                grant: None,
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
                    self.budget.settle(&allowance, Usage::default());
                    return Err(UnitError::Stop(budget_error(&BudgetExceeded::Time {
                        deadline_unix_ms: allowance.deadline_unix_ms,
                    })));
                }
                Err(_) => (Err(ArmError::Timeout), Usage::default()),
            };
            self.budget.settle(&allowance, spent);
            let outcome_label = if result.is_ok() { "ok" } else { "error" };
            metrics::histogram!(m::STEP_DURATION, "arm" => arm.id(), "outcome" => outcome_label)
                .record(elapsed.as_secs_f64());
            let model = result.as_ref().ok().and_then(|o| o.model.clone());
            record_spending(spent, model.as_deref());
            let provenance = Provenance {
                arm_id: arm,
                instance: result.as_ref().map_or_else(
                    |_| octollm_arms::ArmStatus::IN_PROCESS.to_owned(),
                    |o| o.instance.clone(),
                ),
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
                Ok(mut out) => {
                    let screened = screening::screen(
                        &self.orch.scanner,
                        &self.orch.policy(),
                        &config.screening,
                        &self.task.id,
                        &key,
                        arm,
                        &mut out.output,
                    );
                    let events = self.report_screening(&key, arm, &screened).await;
                    if let Some(origin) = screened.stop {
                        let message = format!(
                            "{} held a prompt injection, and the screening policy stops the task",
                            origin.describe()
                        );
                        let record = StepRecord {
                            unit: key.clone(),
                            arm_id: arm,
                            status: StepStatus::Failed,
                            output: serde_json::Value::Null,
                            provenance,
                            error: Some(message.clone()),
                        };
                        self.persist(record, None, &events)
                            .await
                            .map_err(UnitError::Stop)?;
                        return Err(UnitError::Stop(Stop::failed(TaskError::new(
                            TaskErrorKind::InputBlocked,
                            message,
                        ))));
                    }
                    let json = out.output.to_json().map_err(|e| {
                        UnitError::Stop(Stop::Store(StoreError::Corrupt(format!(
                            "cannot store the output of {key}: {e}"
                        ))))
                    })?;
                    let record = StepRecord {
                        unit: key.clone(),
                        arm_id: arm,
                        status: StepStatus::Completed,
                        output: json,
                        provenance,
                        error: None,
                    };
                    if let UnitOutput::Plan(plan) = &out.output {
                        // The plan's steps and its validation are still to come.
                        let extra = if key == UnitKey::Plan { 2 } else { 1 };
                        self.add_total(plan.steps.len() + extra);
                    }
                    self.persist(record, Some(out.output.clone()), &events)
                        .await
                        .map_err(UnitError::Stop)?;
                    return Ok(out.output);
                }
                Err(ArmError::BudgetExceeded(e, _)) => {
                    return Err(UnitError::Stop(budget_error(&e)));
                }
                Err(e) if e.is_retryable() && attempt < config.step_attempts => {
                    metrics::counter!(m::STEP_RETRIES, "arm" => arm.id()).increment(1);
                    let backoff = backoff(config.retry_base_ms, config.retry_max_ms, attempt);
                    warn!(step = %key, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "step failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.cancel.cancelled() => return Err(UnitError::Stop(Stop::Abandoned)),
                    }
                }
                Err(e) => {
                    if persist_failure {
                        let record = StepRecord {
                            unit: key.clone(),
                            arm_id: arm,
                            status: StepStatus::Failed,
                            output: serde_json::Value::Null,
                            provenance,
                            error: Some(e.to_string()),
                        };
                        self.persist(record, None, &[])
                            .await
                            .map_err(UnitError::Stop)?;
                    }
                    return Err(UnitError::Arm(e));
                }
            }
        }
    }

    /// Stores a unit with the task's spending and progress; a completed one joins the run's
    /// completed units.
    async fn persist(
        &self,
        record: StepRecord,
        output: Option<UnitOutput>,
        screening: &[serde_json::Value],
    ) -> Result<(), Stop> {
        let arms_used: Vec<ArmKind> = {
            let mut arms = lock(&self.arms_used);
            if record.status == StepStatus::Completed {
                arms.insert(record.arm_id);
            }
            arms.iter().copied().collect()
        };
        let completed =
            u32::try_from(lock(&self.done).len()).unwrap_or(u32::MAX) + u32::from(output.is_some());
        let total = *lock(&self.total_steps);
        let progress = octollm_store::Progress {
            current_unit: Some(record.unit.clone()),
            completed_steps: completed,
            total_steps: total.max(completed),
        };
        self.orch
            .store
            .save_unit(
                &self.task.id,
                &self.owner,
                UnitDone {
                    record: &record,
                    usage: self.budget.used(),
                    arms_used: &arms_used,
                    progress: &progress,
                    screening,
                },
                Utc::now(),
            )
            .await?;
        if let Some(output) = output {
            lock(&self.done).insert(record.unit, output);
        }
        Ok(())
    }
}

impl Run<'_> {
    /// Counts what screening found, audits every injection, and returns the `screening`
    /// events to store with the unit.
    async fn report_screening(
        &self,
        key: &UnitKey,
        arm: ArmKind,
        screened: &screening::Screened,
    ) -> Vec<serde_json::Value> {
        let mut events = Vec::with_capacity(screened.findings.len());
        for finding in &screened.findings {
            metrics::counter!(m::CONTENT_FINDINGS, "origin" => finding.origin.kind(), "action" => finding.action)
                .increment(1);
            let mut event = serde_json::json!({
                "step_id": key,
                "arm_id": arm,
                "origin": finding.origin,
                "action": finding.action,
                "rules": finding.rules,
                "injection": finding.injection,
                "types": finding.types,
                "redacted": finding.redacted,
            });
            if finding.injection {
                event["confidence"] = serde_json::json!(finding.confidence);
                warn!(step = %key, origin = finding.origin.kind(), action = finding.action, types = ?finding.types, "prompt injection in untrusted content");
                let entry = octollm_store::AuditEntry {
                    at: Utc::now(),
                    kind: octollm_store::AuditKind::UntrustedContent,
                    request_id: None,
                    key_id: self.task.owner.clone(),
                    detail: serde_json::json!({
                        "task_id": self.task.id,
                        "step_id": key,
                        "arm_id": arm,
                        "origin": finding.origin,
                        "action": finding.action,
                        "rules": finding.rules,
                        "types": finding.types,
                    }),
                };
                if let Err(e) = self.orch.audit.record(&entry).await {
                    warn!(error = %e, "audit entry not written");
                }
            }
            events.push(event);
        }
        events
    }
}

/// Tokens and dollars by model.
fn record_spending(spent: Usage, model: Option<&str>) {
    if spent.total_tokens() == 0 {
        return;
    }
    let label = model.unwrap_or("unknown").to_owned();
    metrics::counter!(m::LLM_TOKENS, "model" => label.clone(), "kind" => "prompt")
        .increment(spent.prompt_tokens);
    metrics::counter!(m::LLM_TOKENS, "model" => label.clone(), "kind" => "completion")
        .increment(spent.completion_tokens);
    // In dollars (a counter holds only whole numbers): a gauge that only ever grows.
    metrics::gauge!(m::LLM_COST, "model" => label).increment(spent.cost_dollars);
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
    fn backoff_grows_and_is_capped() {
        for attempt in 1..10 {
            let d = backoff(100, 1000, attempt).as_millis() as u64;
            let exp = (100u64 << (attempt - 1)).min(1000);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
        }
    }
}
