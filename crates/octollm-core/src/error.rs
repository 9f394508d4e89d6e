//! The typed error a task ends with, as stored and as shown to clients.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskErrorKind {
    BudgetExceeded,
    ValidationFailed,
    PlanningFailed,
    StepFailed,
    Cancelled,
    InputBlocked,
    Internal,
}

impl TaskErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskErrorKind::BudgetExceeded => "budget_exceeded",
            TaskErrorKind::ValidationFailed => "validation_failed",
            TaskErrorKind::PlanningFailed => "planning_failed",
            TaskErrorKind::StepFailed => "step_failed",
            TaskErrorKind::Cancelled => "cancelled",
            TaskErrorKind::InputBlocked => "input_blocked",
            TaskErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct TaskError {
    #[serde(rename = "type")]
    pub kind: TaskErrorKind,
    pub message: String,
    /// More about the failure, for people: which step, which criteria, which limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "details_text"
    )]
    pub details: Option<String>,
}

/// Details as text; older records kept a JSON object here, read back as its JSON text.
fn details_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

impl TaskError {
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_written_as_objects_read_back_as_text() {
        let old: TaskError = serde_json::from_str(
            r#"{"type":"step_failed","message":"m","details":{"step_id":"s1"}}"#,
        )
        .unwrap();
        assert_eq!(old.details.as_deref(), Some(r#"{"step_id":"s1"}"#));
        let new = TaskError::new(TaskErrorKind::StepFailed, "m").with_details("step s1");
        let back: TaskError = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
