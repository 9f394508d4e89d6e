//! What a request to the orchestrator can fail with. The HTTP adapter maps each to a status
//! in one place.

use octollm_core::{TaskId, TaskStatus, ValidationError};
use octollm_reflex::Finding;
use octollm_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("invalid task: {0}")]
    Invalid(#[from] ValidationError),
    #[error("the input was blocked as a prompt injection")]
    Blocked {
        field: String,
        matches: Vec<Finding>,
    },
    /// No such task, or not one the caller may see (another key's task is as unknown as a
    /// missing one, so ids cannot be probed), or one that was cancelled and so deleted.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task has finished: there is nothing left to cancel.
    #[error("task {id} has already {status}")]
    Finished { id: TaskId, status: TaskStatus },
    #[error(transparent)]
    Store(#[from] StoreError),
}
