//! The task body clients read, against a JSON Schema written from SPEC §4
//! (tests/spec/task.schema.json), in every status a task can have: queued, processing,
//! completed, failed and cancelled, from the real binary. What clients validate (the public
//! Python SDK checks `status` and `progress.current_step` against the SPEC's literals) is
//! what this checks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::time::Duration;

use common::{Server, free_port, get, poll, post};

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("spec/task.schema.json")).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

/// The task checked against the schema, and against what SPEC §4 says of its status.
fn check(validator: &jsonschema::Validator, task: &serde_json::Value, status: &str) {
    let errors: Vec<String> = validator
        .iter_errors(task)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{status}: {errors:?}\n{task:#}");
    assert_eq!(task["status"], status, "{task}");
    let phase = task["progress"]["current_step"].as_str().unwrap();
    match status {
        "queued" => assert_eq!(phase, "preprocessing", "{task}"),
        "processing" => assert!(
            ["planning", "execution", "validation", "synthesis"].contains(&phase),
            "{task}"
        ),
        "completed" => {
            assert_eq!(phase, "synthesis", "{task}");
            assert_eq!(task["result"]["validation_passed"], true, "{task}");
            assert_eq!(task["progress"]["percentage"], 100, "{task}");
            assert!(task["completed_at"].is_string(), "{task}");
        }
        "failed" | "cancelled" => {
            assert!(task["error"]["type"].is_string(), "{task}");
            assert!(task["failed_at"].is_string(), "{task}");
        }
        other => panic!("no such status {other}"),
    }
}

fn wait_status(base: &str, id: &str, want: &[&str]) -> serde_json::Value {
    poll(
        &format!("{id} to be {want:?}"),
        Duration::from_secs(30),
        || {
            let (_, task) = get(&format!("{base}/tasks/{id}"))?;
            want.contains(&task["status"].as_str()?).then_some(task)
        },
    )
}

fn submit(base: &str, goal: &str) -> String {
    let (status, accepted) = post(
        &format!("{base}/tasks"),
        serde_json::json!({"goal": goal, "acceptance_criteria": ["The output must contain \"print\""]}),
    );
    assert_eq!(status, 202, "{accepted}");
    accepted["task_id"].as_str().unwrap().to_owned()
}

#[test]
fn every_status_has_the_shape_spec_section_4_gives() {
    let dir = tempfile::tempdir().unwrap();
    let plan = serde_json::json!({"steps": [{"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}]});
    let script = serde_json::json!({"responses": [
        // The slow tasks hold the only worker while others wait in the queue.
        {"purpose": "planner", "when": "slow task", "json": plan, "delay_ms": 3000, "repeat": true},
        {"purpose": "planner", "when": "failing task", "json": {"steps": [{"step_id": "s1", "arm_id": "wizard", "description": "x", "dependencies": []}]}, "repeat": true},
        {"purpose": "planner", "json": plan, "repeat": true},
        {"purpose": "coder", "content": "```python\nprint(1)\n```", "repeat": true},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let server = Server::start(dir.path(), free_port());
    let base = &server.base;
    let validator = validator();

    let slow = submit(base, "A slow task that writes a program");
    let processing = wait_status(base, &slow, &["processing"]);
    check(&validator, &processing, "processing");
    // With the only worker busy, the next task waits in the queue.
    let waiting = submit(base, "A quick task that writes a program");
    let (_, queued) = get(&format!("{base}/tasks/{waiting}")).unwrap();
    check(&validator, &queued, "queued");

    for id in [&slow, &waiting] {
        let done = wait_status(base, id, &["completed", "failed"]);
        check(&validator, &done, "completed");
        assert!(!done["steps"].as_array().unwrap().is_empty(), "{done}");
    }

    let failing = submit(base, "A failing task that cannot be planned");
    let failed = wait_status(base, &failing, &["completed", "failed"]);
    check(&validator, &failed, "failed");
    assert_eq!(failed["error"]["type"], "planning_failed", "{failed}");

    let doomed = submit(base, "Another slow task that will be cancelled");
    wait_status(base, &doomed, &["processing"]);
    let (status, cancelled) = common::delete(&format!("{base}/tasks/{doomed}"));
    assert_eq!(status, 200, "{cancelled}");
    check(&validator, &cancelled, "cancelled");
    assert_eq!(cancelled["error"]["type"], "cancelled", "{cancelled}");

    // Lists carry the same shape (without the steps).
    let (_, list) = get(&format!("{base}/tasks?limit=100")).unwrap();
    let tasks = list["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{list}");
    for task in tasks {
        let status = task["status"].as_str().unwrap().to_owned();
        check(&validator, task, &status);
        assert!(task.get("steps").is_none(), "{task}");
    }
}
