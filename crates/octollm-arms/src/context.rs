//! What every arm call carries, what it returns, and how it fails.

use octollm_core::budget::{BudgetExceeded, BudgetTracker, Usage};
use octollm_core::token::ExecutorGrant;
use octollm_core::{TaskId, UnitKey};
use octollm_llm::{LlmError, MeteredError};
use serde::{Deserialize, Serialize};

/// The caller's side of one arm call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallContext {
    pub task_id: Option<TaskId>,
    /// The unit of the task this call does (`X-Step-ID` on the wire).
    pub unit: Option<UnitKey>,
    pub request_id: String,
    /// The trace this call belongs to (its span is the caller's side of the call).
    #[serde(skip)]
    pub trace: Option<octollm_core::TraceContext>,
    /// The share of the task's budget this call may spend. Arms spend from it and
    /// report what they spent in [`ArmOutcome::usage`].
    pub budget: BudgetTracker,
    /// For an executor step: what its plan granted ([`octollm_core::Plan::executor_grant`]).
    /// The executor refuses anything beyond it, and a capability token grants exactly it.
    #[serde(skip)]
    pub grant: Option<ExecutorGrant>,
}

impl CallContext {
    /// A context for a call made outside any task (CLI tools, direct API use).
    pub fn standalone(request_id: impl Into<String>, budget: BudgetTracker) -> Self {
        Self {
            task_id: None,
            unit: None,
            request_id: request_id.into(),
            trace: None,
            budget,
            grant: None,
        }
    }
}

/// An arm's answer plus what producing it cost and who produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmOutcome<T> {
    pub response: T,
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The instance that answered: `in-process`, or the base URL of the arm service.
    pub instance: String,
}

impl<T> ArmOutcome<T> {
    /// An answer from this process that used no model.
    pub fn free(response: T) -> Self {
        Self::metered(response, Usage::default(), None)
    }

    /// An answer from this process that cost `usage` on `model`.
    pub fn metered(response: T, usage: Usage, model: Option<String>) -> Self {
        Self {
            response,
            usage,
            model,
            instance: crate::contract::ArmStatus::IN_PROCESS.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArmError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    BudgetExceeded(BudgetExceeded, Usage),
    #[error("model error: {0}")]
    Llm(LlmError),
    /// The model answered, but not in a usable form; what the answer cost still counts.
    #[error("unusable model output: {message}")]
    InvalidOutput { message: String, usage: Usage },
    #[error("arm unavailable: {0}")]
    Unavailable(String),
    #[error("arm call timed out")]
    Timeout,
    #[error("internal arm error: {0}")]
    Internal(String),
}

impl ArmError {
    /// Worth trying again, possibly on another instance.
    pub fn is_retryable(&self) -> bool {
        match self {
            ArmError::Unavailable(_) | ArmError::Timeout => true,
            ArmError::Llm(e) => e.is_retryable(),
            ArmError::InvalidRequest(_)
            | ArmError::Refused(_)
            | ArmError::BudgetExceeded(..)
            | ArmError::InvalidOutput { .. }
            | ArmError::Internal(_) => false,
        }
    }

    /// What went wrong, without the kind's prefix: what an arm service's error body says (its
    /// code names the kind), so the client's error reads as the arm's did.
    pub fn message(&self) -> String {
        match self {
            ArmError::InvalidRequest(m)
            | ArmError::Refused(m)
            | ArmError::Unavailable(m)
            | ArmError::Internal(m)
            | ArmError::InvalidOutput { message: m, .. } => m.clone(),
            ArmError::BudgetExceeded(b, _) => b.to_string(),
            ArmError::Llm(e) => e.to_string(),
            ArmError::Timeout => self.to_string(),
        }
    }

    /// Tokens and dollars spent before the failure; they count against the task all the same.
    pub fn usage(&self) -> Usage {
        match self {
            ArmError::BudgetExceeded(_, usage) | ArmError::InvalidOutput { usage, .. } => *usage,
            _ => Usage::default(),
        }
    }

    /// Converts a metered LLM failure, keeping what was spent before it.
    pub fn from_metered(error: MeteredError, spent: Usage) -> Self {
        match error {
            MeteredError::Budget(b) => ArmError::BudgetExceeded(b, spent),
            MeteredError::Llm(e) => ArmError::Llm(e),
        }
    }
}

/// `GET /capabilities` of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArmInfo {
    pub arm_id: octollm_core::ArmKind,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub cost_tier: u8,
    pub version: String,
}

impl ArmInfo {
    pub fn of(arm: octollm_core::ArmKind) -> Self {
        Self {
            arm_id: arm,
            name: arm.display_name().to_owned(),
            description: arm.description().to_owned(),
            capabilities: arm.capabilities().iter().map(|c| (*c).to_owned()).collect(),
            cost_tier: arm.cost_tier(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
