//! The README's main job with the real local model (SmolLM2-135M through llama.cpp): the task
//! reaches a final status with a plan of at least two steps, executed by at least two arms.
//! Needs the default models (`octollm model pull`, which `scripts/test.sh` runs first).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::process::Command;

#[test]
fn the_main_job_runs_end_to_end_with_the_local_model() {
    let model_dir = common::local_model_dir();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args([
            "run",
            "Write a Python function that returns the n-th Fibonacci number and print fib(10)",
            "--criterion",
            "The code runs without errors",
            "--json",
        ])
        .env("OCTOLLM_DATA_DIR", dir.path())
        .env("OCTOLLM_MODEL_DIR", &model_dir)
        .env("OCTOLLM_LLM_PROVIDER", "local")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let task: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let status = task["status"].as_str().unwrap();
    assert!(matches!(status, "completed" | "failed"), "{task:#}");
    assert_eq!(
        output.status.success(),
        status == "completed",
        "exit code follows the status"
    );
    let steps = task["steps"].as_array().unwrap();
    let plan_steps: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| {
            s["step_id"] != "plan" && !s["step_id"].as_str().unwrap().starts_with("validate")
        })
        .collect();
    assert!(
        plan_steps.len() >= 2,
        "a plan of at least two steps ran: {task:#}"
    );
    let arms: std::collections::BTreeSet<&str> = plan_steps
        .iter()
        .filter(|s| s["status"] == "completed")
        .map(|s| s["arm_id"].as_str().unwrap())
        .collect();
    assert!(
        arms.len() >= 2,
        "at least two arms executed steps: {arms:?} in {task:#}"
    );
    // Real model usage was recorded.
    assert!(task["metadata"]["tokens_used"].as_u64().unwrap() > 0);
    assert!(
        steps[0]["provenance"]["model"]
            .as_str()
            .unwrap()
            .contains("SmolLM2")
    );
}
