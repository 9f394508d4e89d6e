//! The task store: tasks, a durable queue with leases, step results and events.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use octollm_core::budget::Usage;
use octollm_core::{ArmKind, Phase, TaskId, UnitKey};
use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::model::{
    CreateOutcome, Finish, LeaseState, ListFilter, NewTask, StepRecord, TaskEvent, TaskPage,
    TaskRecord, UnitDone,
};

#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Writes the task durably (status `queued`). With an idempotency key used in the last
    /// 24 hours, returns that task instead.
    async fn create_task(&self, task: NewTask) -> Result<CreateOutcome, StoreError>;

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError>;

    async fn list_tasks(&self, filter: ListFilter) -> Result<TaskPage, StoreError>;

    /// Claims the most urgent task that is queued, or processing with an expired lease,
    /// sets it `processing` under `owner`'s lease and returns it.
    async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskRecord>, StoreError>;

    /// Extends the lease if `owner` still holds it.
    async fn heartbeat(
        &self,
        id: &TaskId,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseState, StoreError>;

    /// Gives the lease up (graceful shutdown) so another worker can resume at once.
    async fn release(&self, id: &TaskId, owner: &str) -> Result<(), StoreError>;

    /// Moves the task into `phase`; fails with `LeaseLost` unless `owner` holds the lease.
    async fn set_phase(
        &self,
        id: &TaskId,
        owner: &str,
        phase: Phase,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records that attempt `attempt` of `unit` on `arm` begins (the task's current unit, and
    /// a `step_started` event), while `owner` holds the lease.
    async fn start_unit(
        &self,
        id: &TaskId,
        owner: &str,
        unit: &UnitKey,
        arm: ArmKind,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Persists one unit's result together with the task's usage and progress, atomically,
    /// and only while `owner` holds the lease. A plan unit's output is the plan: it is
    /// stored there and nowhere else.
    async fn save_unit(
        &self,
        id: &TaskId,
        owner: &str,
        done: UnitDone<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The task's stored units, in the order they were first saved.
    async fn units(&self, id: &TaskId) -> Result<Vec<StepRecord>, StoreError>;

    /// Ends the task (completed or failed) while `owner` holds the lease.
    async fn finish(
        &self,
        id: &TaskId,
        owner: &str,
        finish: Finish,
        usage: Usage,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Cancels a task that has not finished. Returns the task as it now is.
    async fn cancel(
        &self,
        id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskRecord>, StoreError>;

    async fn events_since(&self, id: &TaskId, after_seq: i64)
    -> Result<Vec<TaskEvent>, StoreError>;

    /// Live events of every task, as they are appended.
    fn subscribe(&self) -> broadcast::Receiver<TaskEvent>;

    /// Tasks waiting to be claimed.
    async fn queue_depth(&self) -> Result<u64, StoreError>;

    /// Deletes finished tasks (and their steps and events) older than `before`.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Cheap round trip for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the channel that carries live events to the other replicas (Redis) works;
    /// `None` when events are not shared (one process).
    fn shared_events_connected(&self) -> Option<bool> {
        None
    }
}
