//! Rows as both SQL backends return them, and their conversion to the store's records: the
//! columns are plain text and integers in both, so one decoding serves SQLite and PostgreSQL.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use octollm_core::budget::Usage;
use octollm_core::plan::Plan;
use octollm_core::{ArmKind, Phase, TaskError, TaskId, TaskSpec, TaskStatus, UnitKey};

use crate::error::StoreError;
use crate::model::{
    Progress, StepRecord, StepStatus, TaskEvent, TaskEventKind, TaskRecord, TaskResult,
};

/// The task columns every task query returns, as a literal so queries stay `&'static str`.
macro_rules! task_columns {
    () => {
        "id, status, spec, phase, result, error, prompt_tokens, completion_tokens, \
         cost_dollars, arms_used, completed_steps, total_steps, current_step, attempts, \
         created_at, updated_at, started_at, finished_at, trace_parent, owner_key"
    };
}
pub(crate) use task_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: String,
    status: String,
    spec: String,
    phase: Option<String>,
    result: Option<String>,
    error: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_dollars: f64,
    arms_used: String,
    completed_steps: i64,
    total_steps: i64,
    current_step: Option<String>,
    attempts: i64,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    trace_parent: Option<String>,
    owner_key: Option<String>,
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("bad timestamp {v}")))
}

fn opt_json<T: serde::de::DeserializeOwned>(v: Option<String>) -> Result<Option<T>, StoreError> {
    v.map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(StoreError::from)
}

impl TaskRow {
    pub(crate) fn into_record(self) -> Result<TaskRecord, StoreError> {
        Ok(TaskRecord {
            id: TaskId::parse(&self.id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            status: TaskStatus::from_str(&self.status)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            spec: serde_json::from_str::<TaskSpec>(&self.spec)?,
            phase: self
                .phase
                .map(|p| serde_json::from_value::<Phase>(serde_json::Value::String(p)))
                .transpose()?,
            result: opt_json::<TaskResult>(self.result)?,
            error: opt_json::<TaskError>(self.error)?,
            usage: Usage {
                prompt_tokens: u64::try_from(self.prompt_tokens).unwrap_or(0),
                completion_tokens: u64::try_from(self.completion_tokens).unwrap_or(0),
                cost_dollars: self.cost_dollars,
            },
            arms_used: serde_json::from_str::<Vec<ArmKind>>(&self.arms_used)?,
            progress: Progress {
                current_unit: self.current_step.as_deref().map(unit_key).transpose()?,
                completed_steps: u32::try_from(self.completed_steps).unwrap_or(0),
                total_steps: u32::try_from(self.total_steps).unwrap_or(0),
            },
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            started_at: self.started_at.map(from_ms).transpose()?,
            finished_at: self.finished_at.map(from_ms).transpose()?,
            // Written from a parsed context; an unreadable one only loses the trace link.
            trace: self
                .trace_parent
                .as_deref()
                .and_then(octollm_core::TraceContext::parse),
            owner: self.owner_key,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    step_key: String,
    arm_id: String,
    status: String,
    output: String,
    provenance: String,
    error: Option<String>,
}

impl StepRow {
    pub(crate) fn into_record(self) -> Result<StepRecord, StoreError> {
        Ok(StepRecord {
            unit: unit_key(&self.step_key)?,
            arm_id: self
                .arm_id
                .parse()
                .map_err(|e: octollm_core::arm::UnknownArm| StoreError::Corrupt(e.to_string()))?,
            status: if self.status == "completed" {
                StepStatus::Completed
            } else {
                StepStatus::Failed
            },
            output: serde_json::from_str(&self.output)?,
            provenance: serde_json::from_str(&self.provenance)?,
            error: self.error,
        })
    }
}

pub(crate) fn step_status(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
    }
}

fn unit_key(raw: &str) -> Result<UnitKey, StoreError> {
    raw.parse()
        .map_err(|e: octollm_core::ids::InvalidId| StoreError::Corrupt(e.to_string()))
}

/// The events a saved unit publishes: completed or failed, and for a plan unit that
/// completed, the plan's shape.
pub(crate) fn unit_events(step: &StepRecord) -> Vec<(TaskEventKind, serde_json::Value)> {
    let kind = match step.status {
        StepStatus::Completed => TaskEventKind::StepCompleted,
        StepStatus::Failed => TaskEventKind::StepFailed,
    };
    let mut events = vec![(
        kind,
        serde_json::json!({
            "step_id": step.unit,
            "arm_id": step.arm_id,
            "duration_ms": step.provenance.duration_ms,
            "tokens": step.provenance.tokens,
            "attempt": step.provenance.attempt,
            "error": step.error,
        }),
    )];
    let is_plan = matches!(step.unit, UnitKey::Plan | UnitKey::Replan);
    if is_plan
        && step.status == StepStatus::Completed
        && let Ok(plan) = serde_json::from_value::<Plan>(step.output.clone())
    {
        let steps: Vec<serde_json::Value> = plan
            .steps
            .iter()
            .map(|s| serde_json::json!({"step_id": s.step_id, "arm_id": s.arm_id, "dependencies": s.dependencies}))
            .collect();
        events.push((
            TaskEventKind::Plan,
            serde_json::json!({"plan": step.unit, "steps": steps}),
        ));
    }
    events
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    kind: String,
    data: String,
    created_at: i64,
}

impl EventRow {
    pub(crate) fn into_event(self, task_id: &TaskId) -> Result<TaskEvent, StoreError> {
        Ok(TaskEvent {
            seq: self.seq,
            task_id: task_id.clone(),
            kind: TaskEventKind::parse(&self.kind).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown event kind {:?}", self.kind))
            })?,
            data: serde_json::from_str(&self.data)?,
            created_at: from_ms(self.created_at)?,
        })
    }
}

pub(crate) fn tokens(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn encode_cursor(created_at: i64, id: &str) -> String {
    format!("{created_at}.{id}")
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<(i64, TaskId), StoreError> {
    let (ts, id) = cursor.split_once('.').ok_or(StoreError::InvalidCursor)?;
    let ts = ts.parse().map_err(|_| StoreError::InvalidCursor)?;
    let id = TaskId::parse(id).map_err(|_| StoreError::InvalidCursor)?;
    Ok((ts, id))
}

/// Milliseconds of a lease, saturating.
pub(crate) fn lease_ms(lease: std::time::Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// A used idempotency key counts for this long.
pub(crate) const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
