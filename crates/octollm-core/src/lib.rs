//! OctoLLM's domain model. Pure data and rules: no I/O, no async runtime, no framework types.
//!
//! Everything that crosses the system edge is parsed here once (`TaskSpec::try_from`,
//! `Plan::validate`), so the rest of the system works with values that are already valid.
//!
//! # Layout
//! - [`ids`]: task ids (`task_` + 16 alphanumerics) and step ids.
//! - [`arm`]: the six specialist arms and what each can do.
//! - [`task`]: the task submission, its validated form, priorities, statuses and phases.
//! - [`plan`]: the plan DAG: validation, scheduling order, sinks.
//! - [`budget`]: hard limits on tokens, dollars and wall time, and the tracker that enforces them.
//! - [`unit`]: units of work (the plan, a step of a round, a validation) and their keys.
//! - [`content`]: where a piece of text came from (trusted or not) and what screening does with it.
//! - [`provenance`]: who produced a step result, when, at what cost.
//! - [`error`]: the typed failure a task ends with.
//! - [`trace`]: W3C trace context (`traceparent`) carried from a request through every call.
//! - [`token`]: Ed25519 capability tokens between the orchestrator and the arms.
//! - [`auth`]: API key scopes, the key format and hash, the principal a request acts as.
//! - [`wire`]: reading numbers the way JSON Schema means them.

pub mod arm;
pub mod auth;
pub mod budget;
pub mod content;
pub mod error;
pub mod ids;
pub mod plan;
pub mod provenance;
pub mod secret;
pub mod task;
pub mod token;
pub mod trace;
pub mod unit;
pub mod wire;

pub use arm::ArmKind;
pub use auth::{Principal, Scope, Scopes};
pub use budget::{Budget, BudgetExceeded, BudgetTracker, CallEstimate, Usage};
pub use content::ContentOrigin;
pub use error::{TaskError, TaskErrorKind};
pub use ids::{StepId, TaskId};
pub use plan::{Plan, PlanError, PlanStep};
pub use provenance::Provenance;
pub use secret::Secret;
pub use task::{Phase, Priority, TaskSpec, TaskStatus, TaskSubmission, ValidationError};
pub use trace::TraceContext;
pub use unit::{PlanNo, StepUnit, UnitKey};
