//! Wire shapes of tasks (SPEC §4): RFC 3339 timestamps, integer counts, float costs.

use chrono::{DateTime, SecondsFormat, Utc};
use octollm_core::{ArmKind, Provenance, TaskError, TaskStatus};
use octollm_store::{StepRecord, StepStatus, TaskRecord, TaskResult};
use serde::Serialize;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    pub task_id: String,
    pub status: TaskStatus,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Serialize)]
pub struct ProgressView {
    pub current_step: Option<String>,
    pub completed_steps: u32,
    pub total_steps: u32,
    pub percentage: u32,
}

#[derive(Debug, Serialize)]
pub struct MetadataView {
    pub arms_used: Vec<ArmKind>,
    pub tokens_used: u64,
    pub cost_dollars: f64,
    pub duration_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub step_id: String,
    pub arm_id: ArmKind,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub output: serde_json::Value,
    pub provenance: Provenance,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub status: TaskStatus,
    pub goal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    pub metadata: MetadataView,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

impl TaskView {
    pub fn of(task: &TaskRecord, steps: Option<&[StepRecord]>) -> Self {
        let p = &task.progress;
        let progress =
            (task.status == TaskStatus::Processing || p.total_steps > 0).then(|| ProgressView {
                current_step: p.current_step.clone(),
                completed_steps: p.completed_steps,
                total_steps: p.total_steps,
                percentage: if task.status == TaskStatus::Completed {
                    100
                } else {
                    (p.completed_steps.min(p.total_steps) * 100)
                        .checked_div(p.total_steps)
                        .unwrap_or(0)
                        .min(99)
                },
            });
        let end = task.finished_at.unwrap_or_else(Utc::now);
        let duration_seconds = task
            .started_at
            .map(|s| (end - s).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        // Repair rounds prefix the plan's step ids (`r1.s2`): fall back to the id without it.
        let description = |key: &str| {
            let plan = task.plan.as_ref()?;
            let unprefixed = key
                .split_once('.')
                .filter(|(round, _)| round.starts_with('r'))
                .map(|(_, base)| base);
            [Some(key), unprefixed]
                .into_iter()
                .flatten()
                .find_map(|k| plan.steps.iter().find(|s| s.step_id.as_str() == k))
                .map(|s| s.description.clone())
        };
        Self {
            task_id: task.id.to_string(),
            status: task.status,
            goal: task.spec.goal.clone(),
            progress,
            result: task.result.clone(),
            error: task.error.clone(),
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
            steps: steps.map(|steps| {
                steps
                    .iter()
                    .map(|s| StepView {
                        step_id: s.step_key.clone(),
                        arm_id: s.arm_id,
                        status: s.status,
                        description: description(&s.step_key),
                        output: s.output.clone(),
                        provenance: s.provenance.clone(),
                        error: s.error.clone(),
                    })
                    .collect()
            }),
        }
    }
}
