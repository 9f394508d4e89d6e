//! Metric names, in one place. Labels are low-cardinality (status, arm, model, kind).

pub const TASKS_SUBMITTED: &str = "octollm_tasks_submitted_total";
pub const TASKS_FINISHED: &str = "octollm_tasks_finished_total";
pub const TASKS_BLOCKED: &str = "octollm_tasks_blocked_total";
pub const STEP_DURATION: &str = "octollm_step_duration_seconds";
pub const STEP_RETRIES: &str = "octollm_step_retries_total";
pub const LLM_TOKENS: &str = "octollm_llm_tokens_total";
pub const LLM_COST: &str = "octollm_llm_cost_dollars_total";
pub const LEASE_RESUMPTIONS: &str = "octollm_lease_resumptions_total";
pub const QUEUE_DEPTH: &str = "octollm_queue_depth";
pub const REFLEX_DETECTIONS: &str = "octollm_reflex_detections_total";
pub const TASK_DURATION: &str = "octollm_task_duration_seconds";
pub const TOKEN_REVOCATIONS: &str = "octollm_token_revocations_total";
pub const CONTENT_FINDINGS: &str = "octollm_content_findings_total";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TASKS_SUBMITTED, "Tasks accepted for processing.");
    describe_counter!(
        TASKS_FINISHED,
        "Tasks that reached a final status, by status."
    );
    describe_counter!(TASKS_BLOCKED, "Submissions refused by the reflex layer.");
    describe_counter!(
        TOKEN_REVOCATIONS,
        "Tasks whose capability tokens were revoked when they ended."
    );
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Step latency by arm and outcome."
    );
    describe_counter!(STEP_RETRIES, "Step retries by arm.");
    describe_counter!(
        LLM_TOKENS,
        "LLM tokens by model and kind (prompt, completion)."
    );
    describe_gauge!(
        LLM_COST,
        "LLM cost in dollars by model since the process started (only grows)."
    );
    describe_counter!(
        LEASE_RESUMPTIONS,
        "Tasks resumed after another worker's lease expired."
    );
    describe_gauge!(QUEUE_DEPTH, "Tasks waiting to be claimed.");
    describe_counter!(
        REFLEX_DETECTIONS,
        "Reflex detections on submitted tasks by kind and type."
    );
    describe_counter!(
        CONTENT_FINDINGS,
        "Findings in untrusted content units produced, by origin (retrieved, executor_output, step_output) and action (drop, quarantine, stop, log, redact)."
    );
    describe_histogram!(
        TASK_DURATION,
        Unit::Seconds,
        "Task wall time from first claim to finish."
    );
}
