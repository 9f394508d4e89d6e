//! The real binary: SIGKILL `octollm serve` in the middle of a task, start it again, and the
//! task resumes from its last completed step; no completed step runs again. And SIGTERM
//! stops the server gracefully with exit code 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{Server, calls, free_port, get, poll, post, write_script};

#[test]
fn a_killed_server_resumes_the_task_without_rerunning_completed_steps() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let log = dir.path().join("calls.jsonl");
    let port = free_port();
    let mut first = Server::start(dir.path(), port);
    let (status, accepted) = post(
        &format!("{}/tasks", first.base),
        serde_json::json!({
            "goal": "Write a two part Python program",
            "acceptance_criteria": ["The output must contain \"two\""]
        }),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    // Part two is in flight (its call is logged, its answer takes 4 s): kill now.
    poll("part two to start", Duration::from_secs(20), || {
        (calls(&log).len() >= 3).then_some(())
    });
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let second = Server::start(dir.path(), port);
    let task = poll(
        "the task to finish after restart",
        Duration::from_secs(40),
        || {
            let (_, t) = get(&format!("{}/tasks/{id}", second.base))?;
            matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
        },
    );
    assert_eq!(task["status"], "completed", "{task}");
    // Entry 0 = plan, 1 = part one: served once across both processes. Entry 2 = part two:
    // interrupted by the kill, so it ran again (it had not completed).
    let served = calls(&log);
    assert_eq!(
        served.iter().filter(|&&e| e == 0).count(),
        1,
        "plan re-ran: {served:?}"
    );
    assert_eq!(
        served.iter().filter(|&&e| e == 1).count(),
        1,
        "completed step s1 re-ran: {served:?}"
    );
    assert_eq!(served.iter().filter(|&&e| e == 2).count(), 2, "{served:?}");
    let steps = task["steps"].as_array().unwrap();
    let keys: Vec<&str> = steps
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["plan", "s1", "s2", "s3", "validate.0"]);
    assert!(task["result"]["output"].as_str().unwrap().contains("two"));
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let server = Server::start(dir.path(), free_port());
    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let mut server = server;
    let clock = Instant::now();
    let status = poll("exit after SIGTERM", Duration::from_secs(30), || {
        server.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert!(clock.elapsed() < Duration::from_secs(26));
}

fn cli(server: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .arg("task")
        .args(["--server", server])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_task_client_submits_watches_lists_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let server = Server::start(dir.path(), free_port());
    let (ok, id) = cli(
        &server.base,
        &[
            "submit",
            "Write a two part Python program",
            "--criterion",
            "The output must contain \"two\"",
        ],
    );
    assert!(ok);
    let id = id.trim().to_owned();
    assert!(id.starts_with("task_"), "{id}");
    // watch follows the events until the end; part two takes 4 s.
    let (ok, events) = cli(&server.base, &["watch", &id]);
    assert!(ok, "{events}");
    assert!(
        events.contains("step_completed") && events.lines().last().unwrap().contains("completed"),
        "{events}"
    );
    let (ok, status) = cli(&server.base, &["status", &id]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&status).unwrap()["status"],
        "completed"
    );
    let (ok, listed) = cli(&server.base, &["list", "--status", "completed"]);
    assert!(ok && listed.contains(&id), "{listed}");
    // A finished task cannot be cancelled: refused, and left as it was.
    let (ok, state) = cli(&server.base, &["cancel", &id]);
    assert!(!ok && state.is_empty(), "{state}");
    let (ok, status) = cli(&server.base, &["status", &id]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&status).unwrap()["status"],
        "completed"
    );
    let (ok, missing) = cli(&server.base, &["status", "task_AAAAAAAAAAAAAAAA"]);
    assert!(!ok && missing.is_empty());
}

#[test]
fn metrics_have_their_own_port_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let metrics_port = free_port();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[("OCTOLLM_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))],
    );
    // A request on the API port so a request metric exists.
    assert!(get(&format!("{}/health", server.base)).is_some());
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let (status, text) = common::runtime().block_on(async {
        let r = reqwest::get(format!("{metrics}/metrics")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200);
    assert!(text.contains("octollm_http_requests_total"), "{text}");
    // Only metrics there: the API is not reachable through the metrics port.
    let (status, _) = get(&format!("{metrics}/tasks")).unwrap();
    assert_eq!(status, 404);
}
