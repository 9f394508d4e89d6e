//! The orchestrator: accepts tasks, screens them, runs the main loop on a durable queue, and
//! answers for them. claim → plan → execute (dependency order, parallel, retried, budgeted) →
//! validate (with repair rounds) → synthesise, every unit of work persisted before the next
//! one starts. Everything the API serves comes from here, scoped to the caller: the HTTP
//! adapter extracts and delegates.
//!
//! # Layout
//! - [`config`]: the orchestrator's settings, [`OrchestratorConfig`].
//! - [`error`]: [`OrchestratorError`], what a request to the orchestrator can fail with.
//! - [`submit`]: validation, reflex screening and redaction of a submission.
//! - [`tasks`]: reading, listing and cancelling tasks on behalf of a caller.
//! - [`events`]: a task's event stream, replayed then live, across replicas.
//! - [`pipeline`]: one task's run, resumable from its last completed unit.
//! - [`screening`]: untrusted content a unit produced, screened before anything uses it.
//! - [`units`]: what units of work produce, typed.
//! - [`dispatch`]: a plan step → the right arm call → the step's output.
//! - [`worker`]: worker loops, leases and heartbeats, graceful shutdown.
//! - [`budget`]: the task budget shared by parallel steps.
//! - [`metrics`]: metric names.
//! - [`trace_link`]: our W3C trace context and an exporting tracer (OTLP), joined.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use octollm_arms::policy::PolicyHandle;
use octollm_arms::{ArmStatus, Arms, Health};
use octollm_core::{ArmKind, TaskId};
use octollm_reflex::Scanner;
use octollm_store::{AuditLog, Revocations, StoreError, TaskStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod budget;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod knowledge;
pub mod metrics;
pub mod pipeline;
pub mod screening;
pub mod submit;
pub mod tasks;
pub mod trace_link;
pub mod units;
pub mod worker;

pub use config::OrchestratorConfig;
pub use error::OrchestratorError;
pub use submit::{Origin, Submitted};
pub use tasks::{TaskDetail, UnitReport};

pub struct Orchestrator {
    store: Arc<dyn TaskStore>,
    audit: Arc<dyn AuditLog>,
    arms: Arms,
    scanner: Scanner,
    config: OrchestratorConfig,
    /// Identifies this process's workers in leases.
    instance: String,
    wake: Notify,
    /// Cancellation handles of the tasks this process is running.
    running: Mutex<HashMap<TaskId, CancellationToken>>,
    /// Where a task's capability tokens are revoked when it ends, and how long they live.
    revocations: std::sync::OnceLock<(Arc<dyn Revocations>, u64)>,
    /// The guardian policy untrusted content is screened with (the built-in one unless set).
    policy: std::sync::OnceLock<PolicyHandle>,
}

/// How the service is doing (`/health`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub database: Result<(), String>,
    /// Whether live events reach the other replicas (`None`: one process, nothing to share).
    pub shared_events: Option<bool>,
    pub arms: Vec<(ArmKind, ArmStatus)>,
}

impl HealthReport {
    /// Unhealthy without the database (nothing runs); degraded when an arm cannot work or
    /// other replicas' live events are late.
    pub fn health(&self) -> Health {
        if let Err(e) = &self.database {
            return Health::Unavailable(format!("database: {e}"));
        }
        if self.shared_events == Some(false) {
            return Health::Degraded(
                "live events of tasks run by other replicas are delayed".into(),
            );
        }
        match self.arms.iter().find(|(_, s)| s.health != Health::Healthy) {
            Some((arm, status)) => {
                Health::Degraded(format!("the {arm} arm is {}", status.health.as_str()))
            }
            None => Health::Healthy,
        }
    }
}

impl Orchestrator {
    pub fn new(
        store: Arc<dyn TaskStore>,
        audit: Arc<dyn AuditLog>,
        arms: Arms,
        config: OrchestratorConfig,
    ) -> Arc<Self> {
        metrics::describe();
        let instance = format!(
            "{}-{}",
            std::process::id(),
            &TaskId::generate().as_str()[5..13]
        );
        Arc::new(Self {
            store,
            audit,
            arms,
            scanner: Scanner::new(),
            config,
            instance,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            revocations: std::sync::OnceLock::new(),
            policy: std::sync::OnceLock::new(),
        })
    }

    /// Screen untrusted content with `policy` (a file's, reloaded on change) instead of the
    /// built-in one. Set once, at start.
    pub fn use_policy(&self, policy: PolicyHandle) {
        let _ = self.policy.set(policy);
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<octollm_arms::policy::Policy> {
        self.policy.get_or_init(PolicyHandle::default).current()
    }

    /// Revoke every capability token of a task when it ends (completed, failed, cancelled):
    /// a token copied out of a finished task is worthless. `token_ttl_seconds` bounds how
    /// long the entry must last. Set once, at start.
    pub fn revoke_tokens_in(&self, revocations: Arc<dyn Revocations>, token_ttl_seconds: u64) {
        let _ = self.revocations.set((revocations, token_ttl_seconds));
    }

    /// Revokes the tokens of `id`, which has ended. A failure is logged: the tokens still
    /// expire on their own within their lifetime.
    async fn revoke_task_tokens(&self, id: &TaskId) {
        let Some((revocations, ttl)) = self.revocations.get() else {
            return;
        };
        let until = chrono::Utc::now()
            .timestamp()
            .saturating_add(i64::try_from(*ttl).unwrap_or(i64::MAX / 2));
        match revocations.revoke_task(id.as_str(), until).await {
            Ok(()) => ::metrics::counter!(metrics::TOKEN_REVOCATIONS).increment(1),
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "could not revoke the task's capability tokens")
            }
        }
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    /// Every arm with where it runs and how it is doing.
    pub fn capabilities(&self) -> Vec<(ArmKind, ArmStatus)> {
        ArmKind::ALL
            .iter()
            .map(|&arm| (arm, self.arms.status(arm)))
            .collect()
    }

    pub async fn health(&self) -> HealthReport {
        HealthReport {
            database: self.store.ping().await.map_err(|e| e.to_string()),
            shared_events: self.store.shared_events_connected(),
            arms: self.capabilities(),
        }
    }

    /// Ready while the database answers (tasks need nothing else to be accepted and run).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Removes finished tasks older than `before` (retention).
    pub async fn prune(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        self.store.prune_finished(before).await
    }

    /// Writes an entry to the audit log (an arm instance's, relayed through the registry).
    pub async fn record_audit(&self, entry: &octollm_store::AuditEntry) -> Result<(), StoreError> {
        self.audit.record(entry).await
    }

    /// The audit log, newest first.
    pub async fn audit_entries(
        &self,
        filter: &octollm_store::AuditFilter,
    ) -> Result<Vec<octollm_store::AuditRecord>, StoreError> {
        self.audit.audit_entries(filter).await
    }

    fn running_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
