//! Two `octollm serve` replicas on one PostgreSQL database (a real server the test starts):
//! `octollm migrate` creates the schema; one replica is SIGKILLed while it holds a task; the
//! other claims the task after the lease expires and finishes it without running a
//! completed step again; the task and its events are readable from the survivor.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;
use octollm_test_support::postgres as pg;
use octollm_test_support::redis as redis_server;

use std::process::Command;
use std::time::Duration;

use common::{Server, calls, free_port, get, poll, post, write_script};

#[test]
fn a_replica_finishes_the_task_of_a_killed_one() {
    let server = pg::PgServer::start();
    let url = server.database("octollm");
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let log = dir.path().join("calls.jsonl");
    let env = [
        ("DATABASE_URL", url.clone()),
        ("OCTOLLM_MIGRATE_ON_START", "false".to_owned()),
    ];

    // The replicas here do not migrate at start: `octollm migrate` makes the schema.
    let out = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .arg("migrate")
        .env("OCTOLLM_DATA_DIR", dir.path().join("data"))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("postgres://…@127.0.0.1"),
        "credentials or URL missing: {printed}"
    );

    let mut first = Server::start_with(dir.path(), free_port(), &env);
    let (status, accepted) = post(
        &format!("{}/tasks", first.base),
        serde_json::json!({
            "goal": "Write a two part Python program",
            "acceptance_criteria": ["The output must contain \"two\""]
        }),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    // Part two is in flight on the first replica (its answer takes 4 s).
    poll("part two to start", Duration::from_secs(20), || {
        (calls(&log).len() >= 3).then_some(())
    });
    // The second replica starts while the first holds the lease, then the first dies.
    let second = Server::start_with(dir.path(), free_port(), &env);
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let task = poll(
        "the survivor to finish the task",
        Duration::from_secs(40),
        || {
            let (_, t) = get(&format!("{}/tasks/{id}", second.base))?;
            matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
        },
    );
    assert_eq!(task["status"], "completed", "{task}");
    // The plan and part one ran once across both replicas; part two, interrupted, twice.
    let served = calls(&log);
    assert_eq!(served.iter().filter(|&&e| e == 0).count(), 1, "{served:?}");
    assert_eq!(served.iter().filter(|&&e| e == 1).count(), 1, "{served:?}");
    assert_eq!(served.iter().filter(|&&e| e == 2).count(), 2, "{served:?}");
    let keys: Vec<&str> = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["plan", "s1", "s2", "s3", "validate.0"]);
    // The survivor serves the whole event history, the dead replica's part included.
    let events = common::text(&format!("{}/tasks/{id}/events", second.base));
    assert!(events.contains(r#""attempt":1"#), "{events}");
    assert!(events.contains(r#""attempt":2"#), "{events}");
    assert!(events.contains(r#""status":"completed""#), "{events}");
    drop(server);
}

#[test]
fn sigterm_hands_a_replica_s_task_over_at_once() {
    let server = pg::PgServer::start();
    let url = server.database("octollm");
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let log = dir.path().join("calls.jsonl");
    // A long lease: the survivor may only take the task this fast if it was released.
    let env = [
        ("DATABASE_URL", url),
        ("OCTOLLM_LEASE_SECONDS", "60".to_owned()),
    ];
    let mut first = Server::start_with(dir.path(), free_port(), &env);
    let (status, accepted) = post(
        &format!("{}/tasks", first.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    poll("part two to start", Duration::from_secs(20), || {
        (calls(&log).len() >= 3).then_some(())
    });
    let second = Server::start_with(dir.path(), free_port(), &env);
    let sent = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = poll("the first replica to exit", Duration::from_secs(30), || {
        first.child.try_wait().unwrap()
    });
    assert!(exit.success(), "{exit:?}");
    let task = poll(
        "the second replica to finish the task",
        Duration::from_secs(30),
        || {
            let (_, t) = get(&format!("{}/tasks/{id}", second.base))?;
            matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
        },
    );
    assert_eq!(task["status"], "completed", "{task}");
    // The second replica took the task over (a second claim), long before the 60 s lease
    // could have expired: the first released it.
    let events = common::text(&format!("{}/tasks/{id}/events", second.base));
    assert!(events.contains(r#""attempt":2"#), "{events}");
    // The in-flight step finished within the grace period: nothing ran twice.
    let served = calls(&log);
    for entry in 0..3 {
        assert_eq!(
            served.iter().filter(|&&e| e == entry).count(),
            1,
            "entry {entry}: {served:?}"
        );
    }
}

#[test]
fn a_database_outage_makes_replicas_unready_and_they_recover_without_restart() {
    let mut server = pg::PgServer::start();
    let url = server.database("octollm");
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let replica = Server::start_with(dir.path(), free_port(), &[("DATABASE_URL", url)]);
    server.stop();
    let (status, body) = poll("readiness to fail", Duration::from_secs(30), || {
        get(&format!("{}/ready", replica.base)).filter(|(s, _)| *s == 503)
    });
    assert_eq!(status, 503);
    assert_eq!(body["code"], "service_unavailable", "{body}");
    // Liveness does not depend on the database.
    assert_eq!(
        get(&format!("{}/health/live", replica.base)).unwrap().0,
        200
    );
    server.restart();
    poll("readiness to return", Duration::from_secs(30), || {
        get(&format!("{}/ready", replica.base)).filter(|(s, _)| *s == 200)
    });
    // The workers reconnected: a new task runs to the end.
    let (status, accepted) = post(
        &format!("{}/tasks", replica.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(40), || {
        let (_, t) = get(&format!("{}/tasks/{id}", replica.base))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    });
    assert_eq!(task["status"], "completed", "{task}");
}

#[test]
fn a_task_s_live_events_stream_from_a_replica_that_does_not_run_it() {
    let server = pg::PgServer::start();
    let url = server.database("octollm");
    let redis = redis_server::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    // Part two takes 8 s here, so the stream below surely opens while the task runs.
    let script = write_script(dir.path());
    let slower = std::fs::read_to_string(&script)
        .unwrap()
        .replace(r#""delay_ms":4000"#, r#""delay_ms":8000"#);
    assert!(slower.contains("8000"));
    std::fs::write(&script, slower).unwrap();
    let log = dir.path().join("calls.jsonl");
    let env = [("DATABASE_URL", url), ("REDIS_URL", redis.url())];
    let first = Server::start_with(dir.path(), free_port(), &env);
    let (status, accepted) = post(
        &format!("{}/tasks", first.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    // The first replica holds the task (part two in flight, 4 s) when the second starts.
    poll("part two to start", Duration::from_secs(20), || {
        (calls(&log).len() >= 3).then_some(())
    });
    let second = Server::start_with(dir.path(), free_port(), &env);
    // Give the second replica's relay a moment to subscribe before the rest of the run.
    std::thread::sleep(Duration::from_millis(500));
    let (_, now) = get(&format!("{}/tasks/{id}", second.base)).unwrap();
    assert_eq!(now["status"], "processing", "{now}");
    // The stream ends only after the final status, which the first replica stores later:
    // it reaches the second replica's stream only through the relay.
    let events = common::events_to_end(
        &format!("{}/tasks/{id}/events", second.base),
        Duration::from_secs(40),
        "the stream never ended: live events did not cross replicas",
    );
    assert!(events.contains(r#""status":"completed""#), "{events}");
    assert!(events.contains("step_completed"), "{events}");
    // Nobody but the first replica ran it.
    assert!(!events.contains(r#""attempt":2"#), "{events}");
}

/// `/health` of an orchestrator replica.
fn health(base: &str) -> serde_json::Value {
    get(&format!("{base}/health")).unwrap().1
}

#[test]
fn a_redis_outage_is_reported_and_recovered_from_without_restart() {
    let server = pg::PgServer::start();
    let url = server.database("octollm");
    let mut redis = redis_server::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    // Part two takes 8 s, so a stream opened during it follows a running task; every answer
    // repeats, so the script serves more than one task.
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write part one", "dependencies": []},
            {"step_id": "s2", "arm_id": "coder", "description": "Write part two", "dependencies": ["s1"]}
        ]}},
        {"purpose": "coder", "repeat": true, "when": "part one", "content": "```python\nprint('one')\n```"},
        {"purpose": "coder", "repeat": true, "when": "part two", "content": "```python\nprint('two')\n```", "delay_ms": 8000},
        {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let log = dir.path().join("calls.jsonl");
    let env = [("DATABASE_URL", url), ("REDIS_URL", redis.url())];
    let first = Server::start_with(dir.path(), free_port(), &env);
    let reflex = common::spawn(
        dir.path(),
        &["serve", "reflex"],
        &[
            ("OCTOLLM_ORCHESTRATOR_URL", first.base.clone()),
            ("REDIS_URL", redis.url()),
            ("RATE_LIMIT_ENABLED", "true".into()),
        ],
    );
    poll(
        "the event relay to subscribe",
        Duration::from_secs(20),
        || (health(&first.base)["components"]["redis"] == "healthy").then_some(()),
    );

    redis.stop();
    // The reflex layer needs Redis for its rate limits (closed by default): unready, and a
    // clear 503 rather than a misleading 429 or a hang.
    poll(
        "the reflex layer to be unready",
        Duration::from_secs(20),
        || get(&format!("{}/ready", reflex.base)).filter(|(s, _)| *s == 503),
    );
    let (status, refused) = post(
        &format!("{}/tasks", reflex.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["code"], "service_unavailable", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("rate-limit store"),
        "{refused}"
    );
    // The orchestrator runs tasks without Redis: degraded, still ready.
    let degraded = poll(
        "the replica to report Redis",
        Duration::from_secs(20),
        || {
            let h = health(&first.base);
            h["components"]["redis"]
                .as_str()
                .is_some_and(|s| s.starts_with("unavailable"))
                .then_some(h)
        },
    );
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(get(&format!("{}/ready", first.base)).unwrap().0, 200);

    // A task runs on the first replica; a second replica, started while Redis is down,
    // streams its events to the end from the table.
    let (status, accepted) = post(
        &format!("{}/tasks", first.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    poll("part two to start", Duration::from_secs(20), || {
        (calls(&log).len() >= 3).then_some(())
    });
    let second = Server::start_with(dir.path(), free_port(), &env);
    let (_, now) = get(&format!("{}/tasks/{id}", second.base)).unwrap();
    assert_eq!(now["status"], "processing", "{now}");
    let events = common::events_to_end(
        &format!("{}/tasks/{id}/events", second.base),
        Duration::from_secs(40),
        "the stream stalled while Redis was down",
    );
    assert!(events.contains(r#""status":"completed""#), "{events}");

    // Redis returns on its port: everything recovers without a restart.
    let redis = redis_server::Redis::start_on(redis.port);
    poll(
        "the reflex layer to be ready",
        Duration::from_secs(30),
        || get(&format!("{}/ready", reflex.base)).filter(|(s, _)| *s == 200),
    );
    for replica in [&first, &second] {
        poll(
            "the replicas' relays to resubscribe",
            Duration::from_secs(30),
            || {
                let h = health(&replica.base);
                (h["components"]["redis"] == "healthy" && h["status"] == "healthy").then_some(())
            },
        );
    }
    let (status, accepted) = post(
        &format!("{}/tasks", reflex.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(60), || {
        let (_, t) = get(&format!("{}/tasks/{id}", reflex.base))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    });
    assert_eq!(task["status"], "completed", "{task}");
    drop(redis);
}
