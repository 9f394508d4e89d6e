//! The real binary in tests: a server with the scripted LLM, HTTP helpers, the script and
//! its call log.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use octollm_test_support::{free_port, poll};

/// The model directory of the test run (`scripts/env.sh` sets it), for servers that would
/// otherwise look under their own empty home: with the embedding model there, the retriever
/// is healthy.
pub fn model_dir() -> Option<(&'static str, String)> {
    std::env::var("OCTOLLM_MODEL_DIR")
        .ok()
        .map(|dir| ("OCTOLLM_MODEL_DIR", dir))
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(dir: &Path, port: u16) -> Server {
        Self::start_with(dir, port, &[])
    }

    /// [`Server::start`] with more environment (a database URL, say).
    pub fn start_with(dir: &Path, port: u16, extra: &[(&str, String)]) -> Server {
        Self::start_on(dir, "127.0.0.1", port, extra)
    }

    /// [`Server::start_with`] listening on `host` (`0.0.0.0`: every interface); reached
    /// over loopback all the same.
    pub fn start_on(dir: &Path, host: &str, port: u16, extra: &[(&str, String)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_octollm"))
            .args(["serve", "--bind", &format!("{host}:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("OCTOLLM_DATA_DIR", dir.join("data"))
            .env("OCTOLLM_LLM_PROVIDER", "scripted")
            .env("OCTOLLM_LLM_SCRIPT", dir.join("script.json"))
            .env("OCTOLLM_LLM_SCRIPT_LOG", dir.join("calls.jsonl"))
            .envs(model_dir())
            .env("OCTOLLM_LEASE_SECONDS", "2")
            .env("OCTOLLM_WORKERS", "1")
            .env("OCTOLLM__ORCHESTRATOR__POLL_INTERVAL_MS", "50")
            .env("LOG_LEVEL", "info")
            // Tests poll from one address far above any sane limit; the limits have their own
            // test.
            .env("RATE_LIMIT_ENABLED", "false")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            // One file per port, appended to: a server restarted on its port keeps the
            // earlier run's lines, and no two servers write over each other.
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("server-{port}.log")))
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

    pub fn wait_ready(&self) {
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

/// The directory holding the default local model, which `octollm model pull` fetched
/// (`scripts/test.sh` runs it first); panics, saying so, when the model is not there.
pub fn local_model_dir() -> PathBuf {
    let dir = octollm_llm::models::default_model_dir();
    assert!(
        dir.join(octollm_llm::models::DEFAULT_LLM_FILE).exists(),
        "the default model is missing in {}: run `octollm model pull`",
        dir.display()
    );
    dir
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn get(url: &str) -> Option<(u16, serde_json::Value)> {
    runtime().block_on(async {
        let r = reqwest::get(url).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    })
}

/// `DELETE url`: the status and the JSON body.
pub fn delete(url: &str) -> (u16, serde_json::Value) {
    runtime().block_on(async {
        let r = reqwest::Client::new().delete(url).send().await.unwrap();
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(serde_json::Value::Null),
        )
    })
}

/// The body of `GET url` as text (event streams end after the final status).
pub fn text(url: &str) -> String {
    runtime().block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

pub fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    post_with(url, body, &[])
}

/// [`post`] with extra request headers (`traceparent`, say).
pub fn post_with(
    url: &str,
    body: serde_json::Value,
    headers: &[(&str, String)],
) -> (u16, serde_json::Value) {
    runtime().block_on(async {
        let mut request = reqwest::Client::new().post(url).json(&body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

/// A task's whole event stream (it ends after the final status); panics with `stalled` when
/// it has not ended within `within`.
pub fn events_to_end(url: &str, within: Duration, stalled: &str) -> String {
    runtime().block_on(async {
        tokio::time::timeout(within, async {
            reqwest::get(url).await.unwrap().text().await.unwrap()
        })
        .await
        .unwrap_or_else(|_| panic!("{stalled}"))
    })
}

/// Successful calls an arm service has served (`octollm_arm_requests_total`, outcome ok).
pub fn arm_calls(base: &str, arm: &str) -> u64 {
    text(&format!("{base}/metrics"))
        .lines()
        .filter(|l| {
            l.starts_with("octollm_arm_requests_total")
                && l.contains(&format!(r#"arm="{arm}""#))
                && l.contains(r#"outcome="ok""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub fn calls(path: &Path) -> Vec<u64> {
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

pub fn write_script(dir: &Path) -> PathBuf {
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

/// A service of the binary (`serve reflex`, `serve arm coder`, …) on a free port, ready.
pub struct Process {
    pub child: Child,
    pub base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Process {
    let port = free_port();
    let log = dir.join(format!("{}-{port}.log", args.join("-")));
    let child = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(args)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("OCTOLLM_DATA_DIR", dir.join(format!("data-{port}")))
        .env("OCTOLLM_LLM_PROVIDER", "scripted")
        .env("OCTOLLM_LLM_SCRIPT", dir.join("script.json"))
        .envs(model_dir())
        .env("LOG_LEVEL", "info")
        .env("RATE_LIMIT_ENABLED", "false")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        ))
        .spawn()
        .unwrap();
    let process = Process {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    poll(
        &format!("{args:?} to be ready"),
        Duration::from_secs(30),
        || get(&format!("{}/ready", process.base)).filter(|(s, _)| *s == 200),
    );
    process
}

/// The binary as a command-line tool on `dir`'s database: exit code, stdout, stderr.
pub fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("OCTOLLM_DATA_DIR", dir.join("data"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new API key with `scopes` in `dir`'s database (`octollm keys create`).
pub fn make_api_key(dir: &Path, scopes: &str) -> String {
    let (code, key, err) = cli(
        dir,
        &["keys", "create", "--name", "test", "--scopes", scopes],
    );
    assert_eq!(code, 0, "{err}");
    key.trim().to_owned()
}
