//! Records the store reads and writes.

use chrono::{DateTime, Utc};
use octollm_core::budget::Usage;
use octollm_core::{ArmKind, Phase, Provenance, TaskError, TaskId, TaskSpec, TaskStatus, UnitKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    /// Validated and already redacted.
    pub spec: TaskSpec,
    /// The unredacted input, kept only when `OCTOLLM_STORE_RAW_INPUT=true`.
    pub raw_input: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The submitting request's trace context: the task's work continues its trace.
    pub trace: Option<octollm_core::TraceContext>,
    /// The API key that submitted it (its id); `None` without one.
    pub owner: Option<String>,
}

impl NewTask {
    /// The idempotency key as stored: per owner, so one key's retries never find (or
    /// collide with) another key's task.
    pub(crate) fn stored_idempotency_key(&self) -> Option<String> {
        let key = self.spec.idempotency_key.as_deref()?;
        Some(match &self.owner {
            Some(owner) => format!("{owner}/{key}"),
            None => key.to_owned(),
        })
    }
}

#[derive(Debug, Clone)]
pub enum CreateOutcome {
    Created(TaskRecord),
    /// The idempotency key was used within 24 hours: this is the first task.
    Existing(TaskRecord),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskResult {
    pub output: String,
    pub confidence: f64,
    pub validation_passed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The unit running now, or the last one that ran.
    pub current_unit: Option<UnitKey>,
    pub completed_steps: u32,
    pub total_steps: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub status: TaskStatus,
    pub spec: TaskSpec,
    pub phase: Option<Phase>,
    /// The answer; for a task that failed validation, its partial output
    /// (`validation_passed: false`).
    pub result: Option<TaskResult>,
    pub error: Option<TaskError>,
    pub usage: Usage,
    pub arms_used: Vec<ArmKind>,
    pub progress: Progress,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub trace: Option<octollm_core::TraceContext>,
    /// The API key that submitted it (its id); `None` without one.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Completed,
    Failed,
}

/// One unit of work's durable result: the plan, a step of a round, a validation
/// ([`UnitKey`]). `output` is the unit's typed output as JSON; the orchestrator reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub unit: UnitKey,
    pub arm_id: ArmKind,
    pub status: StepStatus,
    pub output: serde_json::Value,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Completed(TaskResult),
    /// With what was produced before the failure, when there is something to show.
    Failed {
        error: TaskError,
        partial: Option<TaskResult>,
    },
}

impl Finish {
    pub fn status(&self) -> TaskStatus {
        match self {
            Finish::Completed(_) => TaskStatus::Completed,
            Finish::Failed { .. } => TaskStatus::Failed,
        }
    }
}

/// A completed or failed unit, with what the task has spent and how far it is.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitDone<'a> {
    pub record: &'a StepRecord,
    pub usage: Usage,
    pub arms_used: &'a [ArmKind],
    pub progress: &'a Progress,
    /// What screening found in the unit's output: one `screening` event each, written in the
    /// same transaction as the unit.
    pub screening: &'a [serde_json::Value],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// Expired and taken by another worker, or the task is no longer processing.
    Lost,
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<TaskStatus>,
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    /// Only the tasks of this API key (its id).
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    pub next_cursor: Option<String>,
}

/// What a task event reports; its name in the event stream (`event: step_completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEventKind {
    /// `{status, attempt?, error?}`: queued, processing (per claim), and the final status.
    Status,
    /// `{phase}`.
    Phase,
    /// `{plan: "plan"|"replan", steps: [{step_id, arm_id, dependencies}]}`.
    Plan,
    /// `{step_id, arm_id, attempt}`: a unit's call begins.
    StepStarted,
    /// `{step_id, arm_id, duration_ms, tokens, attempt}`.
    StepCompleted,
    /// `{step_id, arm_id, duration_ms, tokens, attempt, error}`.
    StepFailed,
    /// `{step_id, arm_id, origin, action, injection, types, redacted}`: screening found a
    /// prompt injection, a secret or personal data in untrusted content a unit produced.
    Screening,
}

impl TaskEventKind {
    pub const ALL: [TaskEventKind; 7] = [
        TaskEventKind::Status,
        TaskEventKind::Phase,
        TaskEventKind::Plan,
        TaskEventKind::StepStarted,
        TaskEventKind::StepCompleted,
        TaskEventKind::StepFailed,
        TaskEventKind::Screening,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskEventKind::Status => "status",
            TaskEventKind::Phase => "phase",
            TaskEventKind::Plan => "plan",
            TaskEventKind::StepStarted => "step_started",
            TaskEventKind::StepCompleted => "step_completed",
            TaskEventKind::StepFailed => "step_failed",
            TaskEventKind::Screening => "screening",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub seq: i64,
    pub task_id: TaskId,
    pub kind: TaskEventKind,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl TaskEvent {
    /// The final status event of a task (completed, failed or cancelled): nothing follows it.
    pub fn is_final(&self) -> bool {
        self.kind == TaskEventKind::Status
            && self
                .data
                .get("status")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<TaskStatus>().ok())
                .is_some_and(TaskStatus::is_terminal)
    }
}
