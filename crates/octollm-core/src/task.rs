//! Tasks: the submission as it arrives, its validated form, and its lifecycle.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;

pub const GOAL_MIN_CHARS: usize = 10;
pub const GOAL_MAX_CHARS: usize = 2000;
pub const MAX_LIST_ITEMS: usize = 50;
pub const MAX_ITEM_CHARS: usize = 2000;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The body of `POST /tasks` exactly as a client sends it. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    /// What to achieve, in plain words.
    #[schemars(length(min = GOAL_MIN_CHARS, max = GOAL_MAX_CHARS), pattern(NOT_BLANK_PATTERN))]
    pub goal: String,
    /// Hard constraints the planner and the coder are told.
    #[serde(default)]
    #[schemars(
        length(max = MAX_LIST_ITEMS),
        inner(length(min = 1, max = MAX_ITEM_CHARS), pattern(NOT_BLANK_PATTERN))
    )]
    pub constraints: Vec<String>,
    /// What the judge checks the result against.
    #[serde(default)]
    #[schemars(
        length(max = MAX_LIST_ITEMS),
        inner(length(min = 1, max = MAX_ITEM_CHARS), pattern(NOT_BLANK_PATTERN))
    )]
    pub acceptance_criteria: Vec<String>,
    /// Anything else the task should know; every string in it is screened.
    #[serde(default)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Hard limits; each limit left out takes the server's default.
    #[serde(default)]
    pub budget: Option<BudgetSubmission>,
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The same key (here or in the `Idempotency-Key` header) within 24 hours returns the
    /// first task.
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_IDEMPOTENCY_KEY_CHARS))]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSubmission {
    #[serde(default, deserialize_with = "crate::wire::whole_opt")]
    #[schemars(range(min = crate::budget::MAX_TOKENS_RANGE.0, max = crate::budget::MAX_TOKENS_RANGE.1))]
    pub max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "crate::wire::whole_opt")]
    #[schemars(range(min = crate::budget::MAX_TIME_RANGE.0, max = crate::budget::MAX_TIME_RANGE.1))]
    pub max_time_seconds: Option<u64>,
    #[serde(default)]
    #[schemars(range(min = crate::budget::MAX_COST_RANGE.0, max = crate::budget::MAX_COST_RANGE.1))]
    pub max_cost_dollars: Option<f64>,
}

/// A validated task. Every field is within its documented range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub goal: String,
    pub constraints: Vec<String>,
    pub acceptance_criteria: Vec<String>,
    pub context: BTreeMap<String, serde_json::Value>,
    pub budget: Budget,
    pub priority: Priority,
    pub idempotency_key: Option<String>,
}

/// One field that failed validation: which, and why. Sent to clients as `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The white space a text may not consist of alone; everything else counts as content.
const BLANK: &[char] = &[' ', '\t', '\n', '\r', '\u{b}', '\u{c}'];

/// The same rule for JSON Schema: at least one character that is not blank.
pub const NOT_BLANK_PATTERN: &str = "[^ \\t\\n\\r\\u000b\\f]";

/// Whether `text` is empty or only [`BLANK`] characters (the rule of [`NOT_BLANK_PATTERN`]).
pub fn is_blank(text: &str) -> bool {
    text.trim_matches(BLANK).is_empty()
}

/// A text of `min..=max` characters as sent, not blank; returned without the blank around it.
pub fn check_text(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<String, ValidationError> {
    let chars = value.chars().count();
    if chars < min || chars > max {
        return Err(ValidationError::new(
            field,
            format!("must be {min} to {max} characters, got {chars}"),
        ));
    }
    let trimmed = value.trim_matches(BLANK);
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "must not be blank"));
    }
    Ok(trimmed.to_owned())
}

pub fn check_list(field: &str, items: Vec<String>) -> Result<Vec<String>, ValidationError> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(ValidationError::new(
            field,
            format!("at most {MAX_LIST_ITEMS} items"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| check_text(&format!("{field}[{i}]"), item, 1, MAX_ITEM_CHARS))
        .collect()
}

impl TaskSubmission {
    /// Validates against the defaults used when the client sends no budget.
    pub fn validate(self, default_budget: &Budget) -> Result<TaskSpec, ValidationError> {
        let goal = check_text("goal", &self.goal, GOAL_MIN_CHARS, GOAL_MAX_CHARS)?;
        let constraints = check_list("constraints", self.constraints)?;
        let acceptance_criteria = check_list("acceptance_criteria", self.acceptance_criteria)?;
        let budget = match self.budget {
            None => default_budget.clone(),
            Some(b) => Budget::from_submission(&b, default_budget)?,
        };
        if let Some(key) = &self.idempotency_key {
            let chars = key.chars().count();
            if !(1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&chars) {
                return Err(ValidationError::new(
                    "idempotency_key",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {chars}"),
                ));
            }
        }
        Ok(TaskSpec {
            goal,
            constraints,
            acceptance_criteria,
            context: self
                .context
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
            budget,
            priority: self.priority.unwrap_or_default(),
            idempotency_key: self.idempotency_key,
        })
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Priority {
    /// Higher is served first.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Medium => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }
}

/// `queued → processing → completed | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Queued,
        TaskStatus::Processing,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Processing => "processing",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The allowed transitions. A worker that resumes an interrupted task moves
    /// `processing → processing`, which is allowed so resumption needs no special case.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Queued, Processing | Cancelled | Failed) => true,
            (Processing, Processing | Completed | Failed | Cancelled) => true,
            (Queued, Queued | Completed) => false,
            (Processing, Queued) => false,
            (Completed | Failed | Cancelled, _) => false,
        }
    }

    /// The statuses that may become `next`: what a store's update to `next` may start from.
    pub fn sources(next: TaskStatus) -> impl Iterator<Item = TaskStatus> {
        Self::ALL.into_iter().filter(move |s| s.can_become(next))
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => TaskStatus::Queued,
            "processing" => TaskStatus::Processing,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => {
                return Err(ValidationError::new(
                    "status",
                    "must be one of queued, processing, completed, failed, cancelled",
                ));
            }
        })
    }
}

/// Where a running task is in the main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Preprocessing,
    Planning,
    Execution,
    Validation,
    Synthesis,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preprocessing => "preprocessing",
            Phase::Planning => "planning",
            Phase::Execution => "execution",
            Phase::Validation => "validation",
            Phase::Synthesis => "synthesis",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn submission(goal: &str) -> TaskSubmission {
        TaskSubmission {
            goal: goal.into(),
            ..Default::default()
        }
    }

    #[test]
    fn goal_length_is_enforced() {
        let budget = Budget::default();
        assert_eq!(
            submission("too short").validate(&budget).unwrap_err().field,
            "goal"
        );
        assert!(submission("long enough goal").validate(&budget).is_ok());
        assert!(submission(&"x".repeat(2001)).validate(&budget).is_err());
        assert!(submission(&"é".repeat(2000)).validate(&budget).is_ok());
        // Length counts the text as sent; blank around it is dropped after.
        assert_eq!(
            submission("  ten chars ").validate(&budget).unwrap().goal,
            "ten chars"
        );
        assert_eq!(
            submission(&" ".repeat(12))
                .validate(&budget)
                .unwrap_err()
                .message,
            "must not be blank"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<TaskSubmission>(r#"{"goal":"a valid goal here","x":1}"#);
        assert!(err.is_err());
        let err = serde_json::from_str::<TaskSubmission>(
            r#"{"goal":"a valid goal here","budget":{"max_tokens":500,"nope":1}}"#,
        );
        assert!(err.is_err());
    }

    #[test]
    fn empty_criteria_are_refused() {
        let mut s = submission("a valid goal here");
        s.acceptance_criteria = vec!["  ".into()];
        assert_eq!(
            s.validate(&Budget::default()).unwrap_err().field,
            "acceptance_criteria[0]"
        );
    }

    const ALL: [TaskStatus; 5] = TaskStatus::ALL;

    #[test]
    fn terminal_states_are_final() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    proptest! {
        #[test]
        fn no_path_leads_back_to_queued(path in proptest::collection::vec(0usize..5, 1..10)) {
            let mut state = TaskStatus::Queued;
            for i in path {
                let next = ALL[i];
                if state.can_become(next) {
                    state = next;
                    prop_assert_ne!(state, TaskStatus::Queued);
                }
            }
        }
    }
}
