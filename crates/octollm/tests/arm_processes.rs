//! Arms as their own processes: `octollm serve arm coder` twice, an orchestrator
//! (`octollm serve` with OCTOLLM_ARM_CODER_URLS naming both) and a task whose coder steps go
//! over HTTP. The coder instance serving a step is SIGKILLed mid-call: the step moves to the
//! other instance and the task completes, no completed step running twice; the dead
//! instance's circuit breaker opens, and closes again when the instance is back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, calls, free_port, get, poll, post, write_script};

struct Arm {
    child: Child,
    base: String,
}

impl Drop for Arm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_arm(dir: &Path, name: &str) -> Arm {
    start_arm_on(dir, name, free_port())
}

fn start_arm_on(dir: &Path, name: &str, port: u16) -> Arm {
    start_arm_with(dir, name, port, &[])
}

fn start_arm_with(dir: &Path, name: &str, port: u16, env: &[(&str, &str)]) -> Arm {
    let child = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(["serve", "arm", name, "--bind", &format!("127.0.0.1:{port}")])
        .env_clear()
        .envs(env.iter().copied())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("OCTOLLM_DATA_DIR", dir.join(format!("arm-{port}")))
        .env("OCTOLLM_LLM_PROVIDER", "scripted")
        .env("OCTOLLM_LLM_SCRIPT", dir.join("script.json"))
        .env("OCTOLLM_LLM_SCRIPT_LOG", dir.join("calls.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("arm-{port}.log"))).unwrap(),
        ))
        .spawn()
        .unwrap();
    let arm = Arm {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    poll("the arm to be ready", Duration::from_secs(30), || {
        get(&format!("{}/ready", arm.base)).filter(|(s, _)| *s == 200)
    });
    arm
}

#[test]
fn a_step_moves_to_the_other_coder_when_its_instance_dies() {
    let dir = tempfile::tempdir().unwrap();
    // Every answer may be given again: a second task runs after the restart below.
    let script_path = write_script(dir.path());
    let mut script: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&script_path).unwrap()).unwrap();
    for response in script["responses"].as_array_mut().unwrap() {
        response["repeat"] = serde_json::Value::Bool(true);
    }
    std::fs::write(&script_path, script.to_string()).unwrap();
    let log = dir.path().join("calls.jsonl");
    let first = start_arm(dir.path(), "coder");
    let mut second = start_arm(dir.path(), "coder");
    let urls = format!("{},{}", first.base, second.base);
    let orchestrator = Server::start_with(
        dir.path(),
        free_port(),
        // One failure opens an instance's breaker; it may be probed again after a second.
        &[
            ("OCTOLLM_ARM_CODER_URLS", urls),
            ("OCTOLLM__ARMS__BREAKER_FAILURES", "1".into()),
            ("OCTOLLM__ARMS__BREAKER_COOL_DOWN_SECONDS", "1".into()),
        ],
    );
    let (status, accepted) = post(
        &format!("{}/tasks", orchestrator.base),
        serde_json::json!({
            "goal": "Write a two part Python program",
            "acceptance_criteria": ["The output must contain \"two\""]
        }),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    // Calls go round-robin: part one to the first instance, part two (4 s) to the second.
    poll("part two to start", Duration::from_secs(20), || {
        (calls(&log).len() >= 3).then_some(())
    });
    assert_eq!(
        common::arm_calls(&first.base, "coder"),
        1,
        "part one was served by the first coder"
    );
    second.child.kill().unwrap(); // SIGKILL mid-call
    second.child.wait().unwrap();
    let task = poll("the task to finish", Duration::from_secs(40), || {
        let (_, t) = get(&format!("{}/tasks/{id}", orchestrator.base))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    });
    assert_eq!(task["status"], "completed", "{task}");
    assert!(task["result"]["output"].as_str().unwrap().contains("two"));
    // Part two moved to the first coder; the plan and part one ran once.
    assert_eq!(common::arm_calls(&first.base, "coder"), 2);
    let served = calls(&log);
    assert_eq!(served.iter().filter(|&&e| e == 0).count(), 1, "{served:?}");
    assert_eq!(served.iter().filter(|&&e| e == 1).count(), 1, "{served:?}");
    // The dead instance's breaker opened...
    let metrics = common::text(&format!("{}/metrics", orchestrator.base));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("octollm_arm_breaker_opened_total") && l.contains("coder")),
        "{metrics}"
    );
    // ...and once the instance is back on its port, the orchestrator uses it again (after
    // the cool-down its breaker is probed first, and the probe closes it).
    let port: u16 = second.base.rsplit(':').next().unwrap().parse().unwrap();
    drop(second);
    let back = start_arm_on(dir.path(), "coder", port);
    std::thread::sleep(Duration::from_millis(1200));
    let (status, accepted) = post(
        &format!("{}/tasks", orchestrator.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the second task to finish", Duration::from_secs(40), || {
        let (_, t) = get(&format!("{}/tasks/{id}", orchestrator.base))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    });
    assert_eq!(task["status"], "completed", "{task}");
    assert!(
        common::arm_calls(&back.base, "coder") >= 1,
        "the restarted coder got no call"
    );
}

#[test]
fn the_judge_process_runs_no_code_the_executor_arm_does() {
    let dir = tempfile::tempdir().unwrap();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}
        ]}, "repeat": true},
        {"purpose": "coder", "content": "```python\nprint('ok')\n```", "repeat": true},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let executor = start_arm(dir.path(), "executor");
    // A judge that tried to run code itself would fail: it has no sandbox to run it in.
    let judge = start_arm_with(
        dir.path(),
        "judge",
        free_port(),
        &[("OCTOLLM_BWRAP_PATH", "/nonexistent/bwrap")],
    );
    let orchestrator = Server::start_with(
        dir.path(),
        free_port(),
        &[
            ("OCTOLLM_ARM_JUDGE_URLS", judge.base.clone()),
            ("OCTOLLM_ARM_EXECUTOR_URLS", executor.base.clone()),
        ],
    );
    let (status, accepted) = post(
        &format!("{}/tasks", orchestrator.base),
        serde_json::json!({
            "goal": "Write a Python program that prints ok",
            "acceptance_criteria": ["The code runs without errors"]
        }),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(40), || {
        let (_, t) = get(&format!("{}/tasks/{id}", orchestrator.base))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    });
    assert_eq!(task["status"], "completed", "{task}");
    // The run was the executor arm's (one call, for the validation); the judge only judged.
    assert_eq!(common::arm_calls(&executor.base, "executor"), 1);
    assert_eq!(common::arm_calls(&judge.base, "judge"), 1);
}
