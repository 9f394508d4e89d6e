//! The typed error a task ends with, as stored and as shown to clients.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl TaskError {
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}
