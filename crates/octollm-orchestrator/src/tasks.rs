//! Reading, listing and cancelling tasks on behalf of a caller. A key sees its own tasks (an
//! admin key every task); any other task is as unknown as a missing one. A cancelled task is
//! deleted: `DELETE /tasks/{id}` answers it, and from then on it is not found by id (lists
//! still show it until retention prunes it).

use chrono::Utc;
use octollm_core::plan::Plan;
use octollm_core::{Principal, Scope, TaskId, TaskStatus, UnitKey};
use octollm_store::{ListFilter, StepRecord, TaskPage, TaskRecord};

use crate::Orchestrator;
use crate::error::OrchestratorError;

/// A task with its units, for `GET /tasks/{id}`.
#[derive(Debug, Clone)]
pub struct TaskDetail {
    pub task: TaskRecord,
    pub units: Vec<UnitReport>,
}

/// One stored unit and, for a plan step, what the plan said it does.
#[derive(Debug, Clone)]
pub struct UnitReport {
    pub record: StepRecord,
    pub description: Option<String>,
}

impl Orchestrator {
    /// The task if `principal` may see it and it exists (not deleted).
    pub(crate) async fn visible(
        &self,
        principal: &Principal,
        id: &TaskId,
    ) -> Result<TaskRecord, OrchestratorError> {
        self.store
            .get_task(id)
            .await?
            .filter(|t| principal.sees(t.owner.as_deref()))
            .filter(|t| t.status != TaskStatus::Cancelled)
            .ok_or_else(|| OrchestratorError::NotFound(id.clone()))
    }

    pub async fn task(
        &self,
        principal: &Principal,
        id: &TaskId,
    ) -> Result<TaskDetail, OrchestratorError> {
        let task = self.visible(principal, id).await?;
        let records = self.store.units(id).await?;
        let plans: Vec<(UnitKey, Plan)> = records
            .iter()
            .filter(|r| matches!(r.unit, UnitKey::Plan | UnitKey::Replan))
            .filter_map(|r| {
                Some((
                    r.unit.clone(),
                    serde_json::from_value(r.output.clone()).ok()?,
                ))
            })
            .collect();
        let units = records
            .into_iter()
            .map(|record| {
                let description = record.unit.as_step().and_then(|s| {
                    let (_, plan) = plans.iter().find(|(key, _)| *key == s.plan.unit())?;
                    Some(plan.step(&s.step)?.description.clone())
                });
                UnitReport {
                    record,
                    description,
                }
            })
            .collect();
        Ok(TaskDetail { task, units })
    }

    /// Newest first: a key's own tasks, every task for an admin key.
    pub async fn tasks(
        &self,
        principal: &Principal,
        status: Option<TaskStatus>,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<TaskPage, OrchestratorError> {
        Ok(self
            .store
            .list_tasks(ListFilter {
                status,
                limit,
                cursor,
                owner: if principal.allows(Scope::Admin) {
                    None
                } else {
                    principal.owner().map(str::to_owned)
                },
            })
            .await?)
    }

    /// Cancels a task that has not finished; a running step is aborted at its next await.
    /// Answers the task as cancelled.
    pub async fn cancel(
        &self,
        principal: &Principal,
        id: &TaskId,
    ) -> Result<TaskRecord, OrchestratorError> {
        self.visible(principal, id).await?;
        let task = self
            .store
            .cancel(id, Utc::now())
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(id.clone()))?;
        match task.status {
            TaskStatus::Cancelled => {
                if let Some(token) = self.running_tasks().get(id) {
                    token.cancel();
                }
                self.revoke_task_tokens(id).await;
                Ok(task)
            }
            status => Err(OrchestratorError::Finished {
                id: id.clone(),
                status,
            }),
        }
    }
}
