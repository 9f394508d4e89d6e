//! The orchestrator: accepts tasks, screens them, and runs the main loop on a durable queue.
//! claim → plan → execute (dependency order, parallel, retried, budgeted) → validate (with
//! repair rounds) → synthesise, every unit of work persisted before the next one starts.
//!
//! # Layout
//! - [`config`]: the orchestrator's settings, [`OrchestratorConfig`].
//! - [`submit`]: validation, reflex screening and redaction of a submission.
//! - [`pipeline`]: one task's run, resumable from its last completed step.
//! - [`dispatch`]: a plan step → the right arm call → the step's output.
//! - [`worker`]: worker loops, leases and heartbeats, graceful shutdown.
//! - [`budget`]: the task budget shared by parallel steps.
//! - [`metrics`]: metric names.
//! - [`trace_link`]: our W3C trace context and an exporting tracer (OTLP), joined.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use octollm_arms::Arms;
use octollm_core::{TaskId, TaskStatus};
use octollm_reflex::Scanner;
use octollm_store::{ListFilter, StepRecord, StoreError, TaskPage, TaskRecord, TaskStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod budget;
pub mod config;
pub mod dispatch;
pub mod metrics;
pub mod pipeline;
pub mod submit;
pub mod trace_link;
pub mod worker;

pub use config::OrchestratorConfig;
pub use submit::{SubmitError, Submitted};

pub struct Orchestrator {
    store: Arc<dyn TaskStore>,
    arms: Arms,
    scanner: Scanner,
    config: OrchestratorConfig,
    /// Identifies this process's workers in leases.
    instance: String,
    wake: Notify,
    /// Cancellation handles of the tasks this process is running.
    running: Mutex<HashMap<TaskId, CancellationToken>>,
}

impl Orchestrator {
    pub fn new(store: Arc<dyn TaskStore>, arms: Arms, config: OrchestratorConfig) -> Arc<Self> {
        metrics::describe();
        let instance = format!(
            "{}-{}",
            std::process::id(),
            &TaskId::generate().as_str()[5..13]
        );
        Arc::new(Self {
            store,
            arms,
            scanner: Scanner::new(),
            config,
            instance,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.store
    }

    pub fn arms(&self) -> &Arms {
        &self.arms
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    pub async fn get(
        &self,
        id: &TaskId,
    ) -> Result<Option<(TaskRecord, Vec<StepRecord>)>, StoreError> {
        let Some(task) = self.store.get_task(id).await? else {
            return Ok(None);
        };
        let steps = self.store.steps(id).await?;
        Ok(Some((task, steps)))
    }

    pub async fn list(&self, filter: ListFilter) -> Result<TaskPage, StoreError> {
        self.store.list_tasks(filter).await
    }

    /// Cancels a task that has not finished; a running step is aborted at its next await.
    pub async fn cancel(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let task = self.store.cancel(id, chrono::Utc::now()).await?;
        if task
            .as_ref()
            .is_some_and(|t| t.status == TaskStatus::Cancelled)
            && let Some(token) = self.running_tasks().get(id)
        {
            token.cancel();
        }
        Ok(task)
    }

    fn running_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
