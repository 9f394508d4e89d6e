//! Arm discovery by self-registration: two orchestrator replicas with the registry on (one
//! database), every arm a `serve arm …` process that registers with the first replica
//! (`ARM_REGISTRY_URL`); the second learns of them from the database. Tasks run over the
//! registered instances; an instance stopped with SIGTERM deregisters at once; one that is
//! SIGKILLed is marked down by the health polls and leaves when its registration lapses;
//! a new instance is used as soon as it registers. The registry refuses callers without
//! its token and bad registrations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Process, Server, free_port, get, poll, post, spawn};

const TOKEN: &str = "registry-token-0123456789";

fn registry(base: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    common::runtime().block_on(async {
        let mut request = reqwest::Client::new().get(format!("{base}/registry"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

fn register(base: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    common::runtime().block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/registry"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

/// The registered instances `base` knows of: (arm, url, breaker).
fn registered(base: &str) -> Vec<(String, String, String)> {
    let (status, body) = registry(base, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["origin"] == "registered")
        .map(|i| {
            (
                i["arm"].as_str().unwrap().to_owned(),
                i["url"].as_str().unwrap().to_owned(),
                i["breaker"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn has(instances: &[(String, String, String)], url: &str) -> bool {
    instances.iter().any(|(_, u, _)| u == url)
}

fn arm(dir: &std::path::Path, name: &str, registry_url: &str) -> Process {
    spawn(
        dir,
        &["serve", "arm", name],
        &[
            ("ARM_REGISTRY_URL", registry_url.to_owned()),
            ("OCTOLLM_ARM_REGISTRY_TOKEN", TOKEN.to_owned()),
        ],
    )
}

fn run_task(base: &str) -> serde_json::Value {
    let (status, accepted) = post(
        &format!("{base}/tasks"),
        serde_json::json!({"goal": "Write a small Python program"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    poll("the task to finish", Duration::from_secs(60), || {
        let (_, t) = get(&format!("{base}/tasks/{id}"))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    })
}

#[test]
fn arms_register_themselves_and_leave_when_stopped_or_dead() {
    let dir = tempfile::tempdir().unwrap();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}
        ]}},
        {"purpose": "coder", "repeat": true, "content": "```python\nprint('hello')\n```"},
        {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    // Registrations live 12 s (renewed every 4 s); each replica polls every second.
    let env = [
        ("OCTOLLM_ARM_REGISTRY_TOKEN", TOKEN.to_owned()),
        ("OCTOLLM_ARM_REGISTRY_TTL_SECONDS", "12".to_owned()),
        ("OCTOLLM_ARM_HEALTH_POLL_SECONDS", "1".to_owned()),
    ];
    // Both replicas on the same database (the SQLite file in the shared data directory).
    let first = Server::start_with(dir.path(), free_port(), &env);
    let second = Server::start_with(dir.path(), free_port(), &env);

    // Refusals: no token, a wrong token, bad registrations.
    let (status, body) = registry(&first.base, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert_eq!(
        registry(&first.base, Some("registry-token-wrong-000")).0,
        401
    );
    for bad in [
        serde_json::json!({"arm": "coder", "url": "ftp://10.0.0.1:8102"}),
        serde_json::json!({"arm": "coder", "url": "http://user:pw@10.0.0.1:8102"}),
        serde_json::json!({"arm": "coder", "url": "not a url"}),
        serde_json::json!({"arm": "painter", "url": "http://10.0.0.1:8102"}),
        serde_json::json!({"arm": "coder", "url": "http://10.0.0.1:8102", "weight": 3}),
    ] {
        let (status, body) = register(&first.base, bad.clone());
        assert_eq!(status, 400, "{bad} -> {body}");
        assert_eq!(body["code"], "validation_error", "{body}");
    }
    assert!(registered(&first.base).is_empty());

    // Every arm registers with the first replica; the second reads them from the database.
    let registry_url = format!("{}/registry", first.base);
    let others: Vec<Process> = ["planner", "executor", "retriever", "judge", "guardian"]
        .into_iter()
        .map(|name| arm(dir.path(), name, &registry_url))
        .collect();
    let coder_a = arm(dir.path(), "coder", &registry_url);
    let coder_b = arm(dir.path(), "coder", &registry_url);
    let all = poll(
        "the second replica to learn every instance",
        Duration::from_secs(30),
        || {
            let seen = registered(&second.base);
            (seen.len() == 7).then_some(seen)
        },
    );
    assert!(
        has(&all, &coder_a.base) && has(&all, &coder_b.base),
        "{all:?}"
    );
    for p in &others {
        assert!(has(&all, &p.base), "{all:?}");
    }
    let (_, capabilities) = get(&format!("{}/capabilities", second.base)).unwrap();
    let coder = capabilities["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arm_id"] == "coder")
        .unwrap()
        .clone();
    // Every instance in `endpoints`; `endpoint`, a string for clients that want one, is one
    // of them.
    let endpoints = coder["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{coder}");
    assert!(endpoints.contains(&coder["endpoint"]), "{coder}");
    assert_eq!(coder["status"], "healthy", "{coder}");

    // Tasks run over the registered instances, from either replica.
    for base in [&first.base, &second.base] {
        let task = run_task(base);
        assert_eq!(task["status"], "completed", "{task}");
    }
    assert!(
        common::arm_calls(&coder_a.base, "coder") + common::arm_calls(&coder_b.base, "coder") >= 2
    );

    // SIGTERM: the instance deregisters on its way out (it says so), and is gone at once.
    let mut coder_a = coder_a;
    let sent = Command::new("kill")
        .args(["-TERM", &coder_a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = poll("coder A to exit", Duration::from_secs(30), || {
        coder_a.child.try_wait().unwrap()
    });
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy()
                == format!(
                    "serve-arm-coder-{}.log",
                    coder_a.base.rsplit(':').next().unwrap()
                )
        })
        .unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("deregistered from the arm registry"), "{log}");
    let left = registered(&first.base);
    assert!(!has(&left, &coder_a.base), "{left:?}");
    assert!(has(&left, &coder_b.base), "{left:?}");

    // SIGKILL: no goodbye. The health polls mark it down, then its registration lapses.
    let mut coder_b = coder_b;
    coder_b.child.kill().unwrap();
    coder_b.child.wait().unwrap();
    poll(
        "the polls to open its breaker",
        Duration::from_secs(10),
        || {
            registered(&second.base)
                .iter()
                .any(|(_, u, b)| *u == coder_b.base && b == "open")
                .then_some(())
        },
    );
    poll("its registration to lapse", Duration::from_secs(30), || {
        (!has(&registered(&second.base), &coder_b.base)).then_some(())
    });
    let (_, capabilities) = get(&format!("{}/capabilities", second.base)).unwrap();
    let coder = capabilities["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arm_id"] == "coder")
        .unwrap()
        .clone();
    assert_eq!(coder["status"], "unavailable", "{coder}");

    // A new instance is used as soon as it registers.
    let coder_c = arm(dir.path(), "coder", &registry_url);
    poll("the new coder to be known", Duration::from_secs(30), || {
        has(&registered(&second.base), &coder_c.base).then_some(())
    });
    let task = run_task(&second.base);
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(common::arm_calls(&coder_c.base, "coder"), 1);
    drop(others);
}
