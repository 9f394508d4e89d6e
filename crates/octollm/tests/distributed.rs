//! The distributed deployment on loopback, every component its own process: PostgreSQL and
//! Redis (real servers), the six arms (`octollm serve arm …`), two orchestrator replicas on
//! the same database with every arm over HTTP, and the reflex layer in front. 50 tasks go in
//! through the reflex layer; each completes exactly once, and each task's events can be read
//! from either replica, whichever ran it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;
use octollm_test_support::postgres as pg;
use octollm_test_support::redis as redis_server;

use std::time::Duration;

use common::{Process, Server, free_port, get, poll, post, spawn};

const ARMS: [&str; 6] = [
    "planner",
    "coder",
    "executor",
    "retriever",
    "judge",
    "guardian",
];

/// Each arm's name and process.
type ArmProcesses = Vec<(&'static str, Process)>;

/// Every arm as its own process; the orchestrator environment that names them.
fn arm_services(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (ArmProcesses, Vec<(String, String)>) {
    let arms: Vec<(&str, Process)> = ARMS
        .into_iter()
        .map(|name| (name, spawn(dir, &["serve", "arm", name], env)))
        .collect();
    let urls = arms
        .iter()
        .map(|(name, p)| {
            (
                format!("OCTOLLM_ARM_{}_URLS", name.to_uppercase()),
                p.base.clone(),
            )
        })
        .collect();
    (arms, urls)
}

#[test]
fn fifty_tasks_through_the_reflex_layer_over_every_service() {
    let database = pg::PgServer::start();
    let url = database.database("octollm");
    let redis = redis_server::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}
        ]}},
        {"purpose": "coder", "repeat": true, "content": "```python\nprint('hello')\n```"},
        {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();

    let (arms, mut env) = arm_services(dir.path(), &[]);
    env.push(("DATABASE_URL".into(), url));
    env.push(("REDIS_URL".into(), redis.url()));
    env.push(("OCTOLLM_WORKERS".into(), "4".into()));
    // A lease that a busy 2-core machine cannot miss: every task is claimed once.
    env.push(("OCTOLLM_LEASE_SECONDS".into(), "30".into()));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let first = Server::start_with(dir.path(), free_port(), &env);
    let second = Server::start_with(dir.path(), free_port(), &env);
    let reflex = spawn(
        dir.path(),
        &["serve", "reflex"],
        &[
            ("OCTOLLM_ORCHESTRATOR_URL", first.base.clone()),
            ("RATE_LIMIT_ENABLED", "false".into()),
        ],
    );

    // One task arrives inside a caller's trace (W3C traceparent): the reflex layer, the
    // orchestrator that runs it and the arms it calls all log that trace id.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (_, traced) = common::post_with(
        &format!("{}/tasks", reflex.base),
        serde_json::json!({"goal": "Write a Python program that prints hello, traced"}),
        &[("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))],
    );
    let mut ids = vec![traced["task_id"].as_str().unwrap().to_owned()];
    for n in 1..50 {
        let (status, accepted) = post(
            &format!("{}/tasks", reflex.base),
            serde_json::json!({"goal": format!("Write a Python program that prints hello, number {n}")}),
        );
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["task_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let task = poll("every task to finish", Duration::from_secs(120), || {
            let (_, t) = get(&format!("{}/tasks/{id}", reflex.base))?;
            matches!(
                t["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(t)
        });
        assert_eq!(task["status"], "completed", "{task}");
        let keys: Vec<&str> = task["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step_id"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["plan", "s1", "validate.0"], "each unit once: {task}");
    }
    // Both replicas did work, and each serves every task's events, whichever ran it: one
    // claim and one final status per task.
    let mut ran_by = [0usize; 2];
    for id in &ids {
        let mut seen = Vec::new();
        for base in [&first.base, &second.base] {
            let events = common::text(&format!("{base}/tasks/{id}/events"));
            assert_eq!(
                events.matches(r#""status":"processing""#).count(),
                1,
                "{events}"
            );
            assert_eq!(
                events.matches(r#""status":"completed""#).count(),
                1,
                "{events}"
            );
            seen.push(events);
        }
        assert_eq!(seen[0], seen[1], "both replicas serve the same history");
    }
    // Which replica ran each task shows in the arms' view only, so count claims per replica
    // from their metrics instead.
    for (k, base) in [&first.base, &second.base].into_iter().enumerate() {
        let text = common::text(&format!("{base}/metrics"));
        ran_by[k] = text
            .lines()
            .filter(|l| l.starts_with("octollm_tasks_finished_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize;
    }
    assert_eq!(ran_by[0] + ran_by[1], 50, "{ran_by:?}");
    // The arms' own services did the work: 50 plans and 50 programs.
    for (name, arm) in &arms {
        let expected = match *name {
            "planner" | "coder" => 50,
            _ => continue,
        };
        let text = common::text(&format!("{}/metrics", arm.base));
        let ok: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("octollm_arm_requests_total") && l.contains(r#"outcome="ok""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(ok as usize, expected, "{name}: {text}");
    }
    let logs_with_trace: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(trace_id))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for service in ["serve-reflex", "serve-arm-planner", "serve-arm-coder"] {
        assert!(
            logs_with_trace.iter().any(|l| l.starts_with(service)),
            "{service} did not log trace {trace_id}: {logs_with_trace:?}"
        );
    }
    assert!(
        logs_with_trace.iter().any(|l| l.starts_with("server-")),
        "no orchestrator logged trace {trace_id}: {logs_with_trace:?}"
    );
    drop(arms);
}

/// A replica holding several tasks mid-step is SIGKILLed; the other replica finishes every
/// one after the leases expire. Per task: the plan and part one ran once, part two (in flight
/// at the kill) twice; every task completes once, none is lost or duplicated.
#[test]
fn a_killed_replica_s_tasks_are_finished_by_the_other_over_every_service() {
    const TASKS: usize = 4;
    let database = pg::PgServer::start();
    let url = database.database("octollm");
    let redis = redis_server::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let script = common::write_script(dir.path());
    let mut parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&script).unwrap()).unwrap();
    for response in parsed["responses"].as_array_mut().unwrap() {
        response["repeat"] = serde_json::Value::Bool(true);
    }
    std::fs::write(&script, parsed.to_string()).unwrap();
    let log = dir.path().join("calls.jsonl");
    let (arms, mut env) = arm_services(
        dir.path(),
        &[("OCTOLLM_LLM_SCRIPT_LOG", log.display().to_string())],
    );
    env.push(("DATABASE_URL".into(), url));
    env.push(("REDIS_URL".into(), redis.url()));
    env.push(("OCTOLLM_WORKERS".into(), TASKS.to_string()));
    env.push(("OCTOLLM_LEASE_SECONDS".into(), "3".into()));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut first = Server::start_with(dir.path(), free_port(), &env);
    let ids: Vec<String> = (0..TASKS)
        .map(|n| {
            let (status, accepted) = post(
                &format!("{}/tasks", first.base),
                serde_json::json!({"goal": format!("Write a two part Python program, number {n}")}),
            );
            assert_eq!(status, 202, "{accepted}");
            accepted["task_id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Every task's part two (4 s at the coder) is in flight on the first replica.
    let entries = |log: &std::path::Path, entry: u64| {
        common::calls(log).iter().filter(|&&e| e == entry).count()
    };
    poll("every part two to start", Duration::from_secs(30), || {
        (entries(&log, 2) == TASKS).then_some(())
    });
    let second = Server::start_with(dir.path(), free_port(), &env);
    first.child.kill().unwrap(); // SIGKILL while it holds every task
    first.child.wait().unwrap();
    for id in &ids {
        let task = poll("the survivor to finish", Duration::from_secs(90), || {
            let (_, t) = get(&format!("{}/tasks/{id}", second.base))?;
            matches!(
                t["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(t)
        });
        assert_eq!(task["status"], "completed", "{task}");
        let keys: Vec<&str> = task["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step_id"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["plan", "s1", "s2", "s3", "validate.0"], "{task}");
        let events = common::text(&format!("{}/tasks/{id}/events", second.base));
        assert_eq!(
            events.matches(r#""status":"completed""#).count(),
            1,
            "{events}"
        );
    }
    // Completed work never ran again: one plan and one part one per task; part two, cut
    // off by the kill, ran twice.
    assert_eq!(entries(&log, 0), TASKS);
    assert_eq!(entries(&log, 1), TASKS);
    assert_eq!(entries(&log, 2), 2 * TASKS);
    // Nothing lost, nothing duplicated.
    let (_, listed) = get(&format!("{}/tasks?limit=100", second.base)).unwrap();
    let mut listed: Vec<String> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    drop(arms);
}
