use octollm_core::budget::Budget;
use serde::{Deserialize, Serialize};

/// The output guardrail of untrusted content (retrieved chunks, command output, arms'
/// answers). What a prompt injection in it does is the guardian policy's to say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreeningConfig {
    /// Replace secrets and personal data with placeholders stable within the task, whatever
    /// the policy says.
    pub redact: bool,
}

impl Default for ScreeningConfig {
    fn default() -> Self {
        Self { redact: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Tasks one process runs at once.
    pub workers: usize,
    /// Independent steps of one task run at once.
    pub max_parallel_steps: usize,
    /// A worker's claim on a task; another worker resumes it after this long without a heartbeat.
    pub lease_seconds: u64,
    /// How often an idle worker looks for work (it is also woken on every submission).
    pub poll_interval_ms: u64,
    pub step_timeout_seconds: u64,
    /// Attempts per step, first one included.
    pub step_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Repair rounds after a failed validation.
    pub max_repairs: u32,
    /// Used when a submission names no budget (or only part of one).
    pub default_budget: Budget,
    /// Keep the unredacted input (`OCTOLLM_STORE_RAW_INPUT`).
    pub store_raw_input: bool,
    pub screening: ScreeningConfig,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            max_parallel_steps: 4,
            lease_seconds: 30,
            poll_interval_ms: 500,
            step_timeout_seconds: 120,
            step_attempts: 3,
            retry_base_ms: 200,
            retry_max_ms: 5000,
            max_repairs: 1,
            default_budget: Budget::default(),
            store_raw_input: false,
            screening: ScreeningConfig::default(),
        }
    }
}

impl OrchestratorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=256).contains(&self.workers) {
            return Err("orchestrator.workers must be 1 to 256".into());
        }
        if !(1..=10).contains(&self.max_parallel_steps) {
            return Err("orchestrator.max_parallel_steps must be 1 to 10".into());
        }
        if !(2..=3600).contains(&self.lease_seconds) {
            return Err("orchestrator.lease_seconds must be 2 to 3600".into());
        }
        if !(1..=10).contains(&self.step_attempts) {
            return Err("orchestrator.step_attempts must be 1 to 10".into());
        }
        if self.max_repairs > 5 {
            return Err("orchestrator.max_repairs must be 0 to 5".into());
        }
        if self.step_timeout_seconds == 0 || self.poll_interval_ms == 0 {
            return Err(
                "orchestrator.step_timeout_seconds and poll_interval_ms must be positive".into(),
            );
        }
        self.default_budget
            .validate()
            .map_err(|e| format!("orchestrator.default_{e}"))
    }
}
