//! Wire shapes of tasks (SPEC §4): RFC 3339 timestamps, integer counts, float costs, the
//! five statuses and the five phases. Two additions, both optional for clients: `goal`, and
//! `progress.current_unit` (the unit of work the task is on, e.g. `s2` or `validate.0`).

use chrono::{DateTime, SecondsFormat, Utc};
use octollm_core::{ArmKind, Phase, Provenance, TaskError, TaskErrorKind, TaskStatus};
use octollm_orchestrator::{TaskDetail, UnitReport};
use octollm_store::{StepStatus, TaskRecord, TaskResult};
use serde::{Deserialize, Serialize};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `202` to `POST /tasks` (`200` when an idempotency key returned an earlier task).
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Accepted {
    pub task_id: String,
    pub status: TaskStatus,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion: Option<String>,
}

impl Accepted {
    pub fn of(task: &TaskRecord) -> Self {
        Self {
            task_id: task.id.to_string(),
            status: task.status,
            created_at: ts(task.created_at),
            estimated_completion: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProgressView {
    /// The phase: a queued task is in `preprocessing` (screened, waiting for a worker), a
    /// completed one in `synthesis`, a failed or cancelled one where it stopped.
    pub current_step: Phase,
    pub completed_steps: u32,
    pub total_steps: u32,
    pub percentage: u32,
    /// The unit of work it is on or last ran (`plan`, `s2`, `r1.s2`, `validate.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_unit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetadataView {
    pub arms_used: Vec<ArmKind>,
    pub tokens_used: u64,
    pub cost_dollars: f64,
    pub duration_seconds: f64,
}

/// Why a task failed: `{type, message, details?}`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorView {
    #[serde(rename = "type")]
    pub kind: TaskErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl From<&TaskError> for ErrorView {
    fn from(e: &TaskError) -> Self {
        Self {
            kind: e.kind,
            message: e.message.clone(),
            details: e.details.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepView {
    /// The unit's key: a plan step (`s1`, `r1.s1` in a repair round, `p2.s1` of a
    /// replacement plan), `plan`, `replan` or `validate.N`.
    pub step_id: String,
    pub arm_id: ArmKind,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The plan (for `plan` and `replan`), or the arm's answer.
    pub output: serde_json::Value,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&UnitReport> for StepView {
    fn from(u: &UnitReport) -> Self {
        let s = &u.record;
        Self {
            step_id: s.unit.to_string(),
            arm_id: s.arm_id,
            status: s.status,
            description: u.description.clone(),
            output: s.output.clone(),
            provenance: s.provenance.clone(),
            error: s.error.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskView {
    pub task_id: String,
    pub status: TaskStatus,
    pub goal: String,
    pub progress: ProgressView,
    /// The answer; after a failed validation, the unvalidated output
    /// (`validation_passed: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    pub metadata: MetadataView,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

/// `GET /tasks`: a page of tasks, newest first.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

impl TaskView {
    /// The task without its steps (lists, `DELETE`).
    pub fn of(task: &TaskRecord) -> Self {
        let p = &task.progress;
        let current_step = match task.status {
            TaskStatus::Completed => Phase::Synthesis,
            _ => task.phase.unwrap_or(Phase::Preprocessing),
        };
        let percentage = if task.status == TaskStatus::Completed {
            100
        } else {
            (p.completed_steps.min(p.total_steps) * 100)
                .checked_div(p.total_steps)
                .unwrap_or(0)
                .min(99)
        };
        let end = task.finished_at.unwrap_or_else(Utc::now);
        let duration_seconds = task
            .started_at
            .map(|s| (end - s).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        Self {
            task_id: task.id.to_string(),
            status: task.status,
            goal: task.spec.goal.clone(),
            progress: ProgressView {
                current_step,
                completed_steps: p.completed_steps,
                total_steps: p.total_steps,
                percentage,
                current_unit: p.current_unit.as_ref().map(ToString::to_string),
            },
            result: task.result.clone(),
            error: task.error.as_ref().map(ErrorView::from),
            metadata: MetadataView {
                arms_used: task.arms_used.clone(),
                tokens_used: task.usage.total_tokens(),
                cost_dollars: task.usage.cost_dollars,
                duration_seconds,
            },
            created_at: ts(task.created_at),
            updated_at: ts(task.updated_at),
            completed_at: (task.status == TaskStatus::Completed)
                .then_some(task.finished_at)
                .flatten()
                .map(ts),
            failed_at: matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled)
                .then_some(task.finished_at)
                .flatten()
                .map(ts),
            steps: None,
        }
    }

    /// The task with its steps (`GET /tasks/{id}`).
    pub fn detailed(detail: &TaskDetail) -> Self {
        Self {
            steps: Some(detail.units.iter().map(StepView::from).collect()),
            ..Self::of(&detail.task)
        }
    }
}
