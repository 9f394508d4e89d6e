//! A service loads a model only when it runs an arm that calls one: the executor, guardian
//! and retriever services (and an orchestrator whose arms all run elsewhere) start with no
//! model file at all, while a planner service without its model refuses to start, saying
//! why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::process::Command;

use common::spawn;

/// The local provider, pointed at a model file that does not exist.
fn no_model_file(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("OCTOLLM_LLM_PROVIDER", "local".into()),
        (
            "OCTOLLM_LLM_MODEL_PATH",
            dir.join("missing.gguf").display().to_string(),
        ),
    ]
}

#[test]
fn arms_that_call_no_model_start_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let env = no_model_file(dir.path());
    for arm in ["executor", "guardian", "retriever"] {
        // spawn() waits for /ready: a service that tried to load the model would exit.
        let service = spawn(dir.path(), &["serve", "arm", arm], &env);
        let (status, health) = common::get(&format!("{}/health", service.base)).unwrap();
        assert_eq!(status, 200, "{arm}: {health}");
    }
    // An orchestrator whose arms all come from the registry runs none of them itself.
    let mut remote = env.clone();
    remote.push((
        "OCTOLLM_ARM_REGISTRY_TOKEN",
        "a-registry-token-of-enough-length".into(),
    ));
    let orchestrator = spawn(dir.path(), &["serve"], &remote);
    let (status, _) = common::get(&format!("{}/health/live", orchestrator.base)).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn an_arm_that_calls_a_model_refuses_to_start_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(["serve", "arm", "planner", "--bind", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("OCTOLLM_DATA_DIR", dir.path().join("data"))
        .envs(no_model_file(dir.path()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("model file not found"), "{stderr}");
}
