//! The real binary: SIGKILL `octollm serve` in the middle of a task, start it again, and the
//! task resumes from its last completed step; no completed step runs again. And SIGTERM
//! stops the server gracefully with exit code 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_octollm"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("OCTOLLM_DATA_DIR", dir.join("data"))
            .env("OCTOLLM_LLM_PROVIDER", "scripted")
            .env("OCTOLLM_LLM_SCRIPT", dir.join("script.json"))
            .env("OCTOLLM_LLM_SCRIPT_LOG", dir.join("calls.jsonl"))
            .env("OCTOLLM_LEASE_SECONDS", "2")
            .env("OCTOLLM_WORKERS", "1")
            .env("OCTOLLM__ORCHESTRATOR__POLL_INTERVAL_MS", "50")
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join(format!(
                    "server-{}.log",
                    Instant::now().elapsed().as_nanos()
                )))
                .unwrap(),
            ))
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if get(&format!("{}/ready", self.base)).is_some_and(|(status, _)| status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became ready");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn get(url: &str) -> Option<(u16, serde_json::Value)> {
    runtime().block_on(async {
        let r = reqwest::get(url).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    })
}

fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

fn calls(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["entry"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_script(dir: &Path) -> PathBuf {
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write part one", "dependencies": []},
            {"step_id": "s2", "arm_id": "coder", "description": "Write part two", "dependencies": ["s1"]},
            {"step_id": "s3", "arm_id": "executor", "description": "Run part two", "dependencies": ["s2"]}
        ]}},
        {"purpose": "coder", "when": "part one", "content": "```python\nprint('one')\n```"},
        {"purpose": "coder", "when": "part two", "content": "```python\nprint('two')\n```", "delay_ms": 4000},
    ]});
    let path = dir.join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    path
}

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
    // Cancelling a finished task leaves it as it was; a queued one is cancelled.
    let (ok, state) = cli(&server.base, &["cancel", &id]);
    assert!(ok);
    assert_eq!(state.trim(), "completed");
    let (ok, missing) = cli(&server.base, &["status", "task_AAAAAAAAAAAAAAAA"]);
    assert!(!ok && missing.is_empty());
}
