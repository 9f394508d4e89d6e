//! A rolling restart under load: every service of the distributed deployment (two instances of
//! each arm, two orchestrator replicas, the reflex layer) is stopped with SIGTERM and started
//! again, one at a time, while a client keeps submitting tasks through the reflex layer. The
//! client does what real clients do: an idempotency key per submission, and the same request
//! again when the connection itself fails (the reflex layer restarting). No submission gets an
//! error answer, and every accepted task completes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;
use octollm_test_support::postgres as pg;
use octollm_test_support::redis as redis_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, get, poll};

/// A service that can be restarted on its port.
struct Service {
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Service {
    fn new(dir: &Path, args: &[&str], env: Vec<(String, String)>) -> Service {
        let mut s = Service {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            dir: dir.to_owned(),
            port: free_port(),
            child: None,
        };
        s.start();
        s
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = self
            .dir
            .join(format!("{}-{}.log", self.args.join("-"), self.port));
        let child = Command::new(env!("CARGO_BIN_EXE_octollm"))
            .args(&self.args)
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env(
                "OCTOLLM_DATA_DIR",
                self.dir.join(format!("data-{}", self.port)),
            )
            .env("OCTOLLM_LLM_PROVIDER", "scripted")
            .env("OCTOLLM_LLM_SCRIPT", self.dir.join("script.json"))
            // The retriever's service is ready only with its embedding model.
            .envs(common::model_dir())
            .env("OCTOLLM__ORCHESTRATOR__POLL_INTERVAL_MS", "50")
            .env("OCTOLLM__SERVER__SHUTDOWN_GRACE_SECONDS", "10")
            .env("LOG_LEVEL", "info")
            // The load below comes from one address, far above any sane limit.
            .env("RATE_LIMIT_ENABLED", "false")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
        self.child = Some(child);
        let base = self.base();
        poll(
            &format!("{:?} to be ready", self.args),
            Duration::from_secs(30),
            || get(&format!("{base}/ready")).filter(|(s, _)| *s == 200),
        );
    }

    /// SIGTERM, wait for a clean exit, start again on the same port.
    fn restart(&mut self) {
        let mut child = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = poll(
            &format!("{:?} to exit", self.args),
            Duration::from_secs(30),
            || child.try_wait().unwrap(),
        );
        assert!(status.success(), "{:?} exited with {status:?}", self.args);
        self.start();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn every_service_restarts_under_load_without_losing_a_task() {
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

    let names = [
        "planner",
        "coder",
        "executor",
        "retriever",
        "judge",
        "guardian",
    ];
    let mut services: Vec<Service> = Vec::new();
    let mut arm_env = Vec::new();
    for name in names {
        let a = Service::new(dir.path(), &["serve", "arm", name], vec![]);
        let b = Service::new(dir.path(), &["serve", "arm", name], vec![]);
        arm_env.push((
            format!("OCTOLLM_ARM_{}_URLS", name.to_uppercase()),
            format!("{},{}", a.base(), b.base()),
        ));
        services.push(a);
        services.push(b);
    }
    let mut orchestrator_env = arm_env;
    orchestrator_env.push(("DATABASE_URL".into(), url));
    orchestrator_env.push(("REDIS_URL".into(), redis.url()));
    orchestrator_env.push(("OCTOLLM_WORKERS".into(), "2".into()));
    orchestrator_env.push(("OCTOLLM_LEASE_SECONDS".into(), "5".into()));
    orchestrator_env.push((
        "OCTOLLM__ARMS__BREAKER_COOL_DOWN_SECONDS".into(),
        "1".into(),
    ));
    let first = Service::new(dir.path(), &["serve"], orchestrator_env.clone());
    let second = Service::new(dir.path(), &["serve"], orchestrator_env);
    let upstreams = format!("{},{}", first.base(), second.base());
    services.push(first);
    services.push(second);
    let reflex = Service::new(
        dir.path(),
        &["serve", "reflex"],
        vec![
            ("OCTOLLM_ORCHESTRATOR_URL".into(), upstreams),
            ("RATE_LIMIT_ENABLED".into(), "false".into()),
        ],
    );
    let reflex_base = reflex.base();
    services.push(reflex);

    // The load: a submission every 100 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused_at_door = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (stop, accepted, failures) = (stop.clone(), accepted.clone(), failures.clone());
        let refused = refused_at_door.clone();
        let base = reflex_base.clone();
        std::thread::spawn(move || {
            let rt = common::runtime();
            let client = rt.block_on(async { reqwest::Client::new() });
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                // Like a real client: an idempotency key, and the same request again when the
                // connection itself fails (the reflex layer restarting); a retried submission
                // that was taken the first time answers with the same task.
                let key = format!("load-{n}");
                let mut outcome = Err("never sent".to_owned());
                for _ in 0..50 {
                    let sent = rt.block_on(async {
                        client
                            .post(format!("{base}/tasks"))
                            .header("idempotency-key", &key)
                            .json(&serde_json::json!({"goal": format!("Write program number {n} in Python")}))
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await
                    });
                    match sent {
                        Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => {
                            let body: serde_json::Value = rt.block_on(r.json()).unwrap();
                            outcome = Ok(body["task_id"].as_str().unwrap().to_owned());
                            break;
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = rt.block_on(r.text()).unwrap_or_default();
                            outcome = Err(format!("{status}: {body}"));
                            break;
                        }
                        Err(e) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            outcome = Err(format!("connection kept failing: {e}"));
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
                match outcome {
                    Ok(id) => accepted.lock().unwrap().push(id),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    std::thread::sleep(Duration::from_secs(1));
    // One at a time, with load running between and during the restarts.
    for service in &mut services {
        service.restart();
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed submissions: {failures:?}");
    let accepted = accepted.lock().unwrap().clone();
    let refused = refused_at_door.load(Ordering::SeqCst);
    assert!(
        accepted.len() >= services.len(),
        "too little load: {} accepted, {refused} refused at the door",
        accepted.len()
    );
    for id in &accepted {
        let task = poll(
            "every accepted task to finish",
            Duration::from_secs(120),
            || {
                let (_, t) = get(&format!("{reflex_base}/tasks/{id}"))?;
                matches!(
                    t["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
                .then_some(t)
            },
        );
        assert_eq!(task["status"], "completed", "{task}");
    }
}
