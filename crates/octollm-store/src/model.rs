//! Records the store reads and writes.

use chrono::{DateTime, Utc};
use octollm_core::budget::Usage;
use octollm_core::plan::Plan;
use octollm_core::{ArmKind, Phase, Provenance, TaskError, TaskId, TaskSpec, TaskStatus};
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub output: String,
    pub confidence: f64,
    pub validation_passed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub current_step: Option<String>,
    pub completed_steps: u32,
    pub total_steps: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub status: TaskStatus,
    pub spec: TaskSpec,
    pub phase: Option<Phase>,
    pub plan: Option<Plan>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Completed,
    Failed,
}

/// One unit of work's durable result. `step_key` is a plan step id, or a namespaced key for
/// work outside the plan (`validate.0`, `r1.s2`), so every unit resumes the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step_key: String,
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
    Failed(TaskError),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub seq: i64,
    pub task_id: TaskId,
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}
