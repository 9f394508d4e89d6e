//! Issue 6, acceptance 2: capability tokens between the orchestrator and the arms, with real
//! processes. The happy path runs a task over coder and executor services that demand
//! tokens; then each attack on the executor service is refused (forged signature, expired,
//! wrong audience, wrong arm, program or network not granted, replay after revocation) and
//! shows up in that service's audit log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{Server, free_port, poll, spawn};
use octollm_core::ArmKind;
use octollm_core::Secret;
use octollm_core::token::{Claims, ExecutorGrant, TokenSigner};
use octollm_store::{AuditFilter, AuditKind, AuditLog, SqliteStore};

const AUDIENCE: &str = "token-test";
const REGISTRY_TOKEN: &str = "registry-token-for-revocations";

fn keygen() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(["tokens", "keygen"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    (
        value("OCTOLLM_TOKEN_SIGNING_KEY"),
        value("OCTOLLM_TOKEN_PUBLIC_KEYS"),
    )
}

/// `POST path` on an arm service with `token` (if any); the status and body.
fn call(
    base: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    common::runtime().block_on(async {
        let mut request = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .header("x-budget-tokens", "1000")
            .header("x-budget-cost-dollars", "1")
            .header(
                "x-budget-deadline-ms",
                (chrono::Utc::now().timestamp_millis() + 60_000).to_string(),
            )
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(serde_json::Value::Null),
        )
    })
}

fn python_request(source: &str) -> serde_json::Value {
    serde_json::json!({"command": source, "command_type": "python"})
}

#[test]
fn arms_take_only_the_orchestrators_tokens_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []},
            {"step_id": "s2", "arm_id": "executor", "description": "Run the program", "dependencies": ["s1"]}
        ]}},
        {"purpose": "coder", "repeat": true, "content": "```python\nprint('hello from the sandbox')\n```"},
        {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"},
    ]});
    std::fs::write(dir.join("script.json"), script.to_string()).unwrap();
    let (seed, public) = keygen();
    let arm_env = [
        ("OCTOLLM_TOKEN_PUBLIC_KEYS", public.clone()),
        ("OCTOLLM_TOKEN_AUDIENCE", AUDIENCE.to_owned()),
        ("OCTOLLM_ARM_REGISTRY_TOKEN", REGISTRY_TOKEN.to_owned()),
    ];
    let coder = spawn(dir, &["serve", "arm", "coder"], &arm_env);
    let executor = spawn(dir, &["serve", "arm", "executor"], &arm_env);

    // The happy path across services: the orchestrator signs, the arms verify.
    let server = Server::start_with(
        dir,
        free_port(),
        &[
            ("OCTOLLM_ARM_CODER_URLS", coder.base.clone()),
            ("OCTOLLM_ARM_EXECUTOR_URLS", executor.base.clone()),
            ("OCTOLLM_TOKEN_SIGNING_KEY", seed.clone()),
            ("OCTOLLM_TOKEN_AUDIENCE", AUDIENCE.to_owned()),
        ],
    );
    let (status, accepted) = common::post(
        &format!("{}/tasks", server.base),
        serde_json::json!({"goal": "Write a Python program that prints a greeting and run it"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(60), || {
        let (_, task) = common::get(&format!("{}/tasks/{id}", server.base))?;
        matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(task)
    });
    assert_eq!(task["status"], "completed", "{task}");
    let ran = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["arm_id"] == "executor")
        .unwrap();
    assert!(
        ran["output"]["stdout"]
            .as_str()
            .unwrap()
            .contains("hello from the sandbox"),
        "{ran}"
    );
    assert_eq!(common::arm_calls(&executor.base, "executor"), 1);
    drop(server);

    // Attacks on the executor, each with what it should get.
    let signer = TokenSigner::from_seed(&Secret::new(seed.clone()), AUDIENCE, 300).unwrap();
    let now = chrono::Utc::now().timestamp();
    let python_only = || ExecutorGrant {
        programs: vec!["python3".into()],
        network: false,
    };
    let good = signer.issue(ArmKind::Executor, "execute", None, python_only(), now);
    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            jti: format!("test-{}", rand_suffix()),
            task_id: None,
            arm: ArmKind::Executor,
            aud: AUDIENCE.into(),
            actions: BTreeSet::from(["execute".to_owned()]),
            programs: vec!["python3".into()],
            network: false,
            iat: now,
            exp: now + 300,
        };
        f(&mut c);
        signer.sign(&c)
    };
    let (other_seed, _) = keygen();
    let forger = TokenSigner::from_seed(&Secret::new(other_seed), AUDIENCE, 300).unwrap();
    let hello = python_request("print('hi')");
    let cases: Vec<(&str, Option<String>, serde_json::Value, u16, &str)> = vec![
        ("no token", None, hello.clone(), 401, "missing"),
        (
            "forged signature",
            Some(forger.issue(ArmKind::Executor, "execute", None, python_only(), now)),
            hello.clone(),
            401,
            "bad_signature",
        ),
        (
            "expired",
            Some(claims(&|c| {
                c.iat = now - 900;
                c.exp = now - 600;
            })),
            hello.clone(),
            401,
            "expired",
        ),
        (
            "wrong audience",
            Some(claims(&|c| c.aud = "production".into())),
            hello.clone(),
            403,
            "wrong_audience",
        ),
        (
            "wrong arm",
            Some(signer.issue(ArmKind::Coder, "execute", None, python_only(), now)),
            hello.clone(),
            403,
            "wrong_arm",
        ),
        (
            "wrong action",
            Some(claims(&|c| c.actions = BTreeSet::from(["plan".to_owned()]))),
            hello.clone(),
            403,
            "action_not_granted",
        ),
        (
            "program not granted",
            Some(good.clone()),
            serde_json::json!({"command": "echo", "command_type": "shell", "args": ["pwned"]}),
            403,
            "program_not_granted",
        ),
        (
            "network not granted",
            Some(good.clone()),
            serde_json::json!({"command": "print(1)", "command_type": "python", "allow_network": true}),
            403,
            "network_not_granted",
        ),
    ];
    for (what, token, body, status, _) in &cases {
        let (got, json) = call(&executor.base, "/execute", token.as_deref(), body.clone());
        assert_eq!(got, *status, "{what}: {json}");
        assert!(
            json["message"].is_string() && json["code"].is_string(),
            "{what}: {json}"
        );
    }
    // A good token works, until it is revoked: the replay is refused.
    let (status, json) = call(&executor.base, "/execute", Some(&good), hello.clone());
    assert_eq!(status, 200, "{json}");
    let jti = {
        use base64::Engine as _;
        let payload = good.split('.').nth(1).unwrap();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<Claims>(&json).unwrap().jti
    };
    let revoke = |token: Option<&str>| {
        common::runtime().block_on(async {
            let mut r = reqwest::Client::new()
                .post(format!("{}/tokens/revoked", executor.base))
                .json(&serde_json::json!({"jti": jti, "exp": now + 300}));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(revoke(None), 401, "revocation without the registry token");
    assert_eq!(revoke(Some("not-the-registry-token")), 401);
    assert_eq!(revoke(Some(REGISTRY_TOKEN)), 204);
    let (status, json) = call(&executor.base, "/execute", Some(&good), hello.clone());
    assert_eq!(status, 401, "replay after revocation: {json}");
    // The coder takes no executor token either.
    let (status, _) = call(
        &coder.base,
        "/code",
        Some(&good),
        serde_json::json!({"task": "x", "language": "python"}),
    );
    assert_eq!(status, 403);

    // Every refusal is in the executor service's audit log with its reason.
    let executor_db = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy() == format!("data-{}", executor.base.rsplit(':').next().unwrap())
            })
        })
        .unwrap()
        .join("octollm.db");
    let entries = common::runtime().block_on(async {
        let store = SqliteStore::open(&executor_db).await.unwrap();
        store
            .audit_entries(&AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    });
    let reasons: Vec<(AuditKind, String)> = entries
        .iter()
        .map(|e| {
            (
                e.kind,
                e.detail["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (what, _, _, _, reason) in &cases {
        let kind = if reason.ends_with("_not_granted") && !reason.starts_with("action") {
            AuditKind::ExecutorDenied
        } else {
            AuditKind::TokenRefused
        };
        assert!(
            reasons.contains(&(kind, (*reason).to_owned())),
            "{what}: {reasons:?}"
        );
    }
    assert!(
        reasons.contains(&(AuditKind::TokenRefused, "revoked".to_owned())),
        "{reasons:?}"
    );

    // A command the sandbox policy refuses is an executor denial too (program named, the
    // arguments not).
    let token = signer.issue(
        ArmKind::Executor,
        "execute",
        None,
        ExecutorGrant {
            programs: vec!["cat".into()],
            network: false,
        },
        now,
    );
    let (status, json) = call(
        &executor.base,
        "/execute",
        Some(&token),
        serde_json::json!({"command": "cat", "command_type": "shell", "args": ["../../etc/secret-arg"]}),
    );
    assert_eq!(status, 403, "{json}");
    let entries = common::runtime().block_on(async {
        let store = SqliteStore::open(&executor_db).await.unwrap();
        store
            .audit_entries(&AuditFilter {
                kind: Some(AuditKind::ExecutorDenied),
                limit: 1,
                before: None,
            })
            .await
            .unwrap()
    });
    assert_eq!(entries[0].detail["reason"], "policy");
    assert_eq!(entries[0].detail["program"], "cat");
    assert!(!entries[0].detail.to_string().contains("secret-arg"));
}

/// SPEC §8 in the distributed mode: the revocation list is in Redis, so a revocation reaches
/// every arm instance; the orchestrator revokes every token of a task when it completes or
/// is cancelled, and `octollm tokens revoke` revokes one token.
#[test]
fn revocations_reach_every_instance_and_ended_tasks_lose_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "when": "slowly", "delay_ms": 60_000, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}
        ]}},
        {"purpose": "planner", "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}
        ]}},
        {"purpose": "coder", "repeat": true, "content": "```python\nprint('hi')\n```"},
    ]});
    std::fs::write(dir.join("script.json"), script.to_string()).unwrap();
    let redis = octollm_test_support::redis::Redis::start();
    let redis_url = format!("redis://127.0.0.1:{}/", redis.port);
    let (seed, public) = keygen();
    let arm_env = [
        ("OCTOLLM_TOKEN_PUBLIC_KEYS", public.clone()),
        ("OCTOLLM_TOKEN_AUDIENCE", AUDIENCE.to_owned()),
        ("OCTOLLM_ARM_REGISTRY_TOKEN", REGISTRY_TOKEN.to_owned()),
        ("REDIS_URL", redis_url.clone()),
    ];
    let executors = [
        spawn(dir, &["serve", "arm", "executor"], &arm_env),
        spawn(dir, &["serve", "arm", "executor"], &arm_env),
    ];
    let server = Server::start_with(
        dir,
        free_port(),
        &[
            ("OCTOLLM_ARM_EXECUTOR_URLS", executors[0].base.clone()),
            ("OCTOLLM_TOKEN_SIGNING_KEY", seed.clone()),
            ("OCTOLLM_TOKEN_AUDIENCE", AUDIENCE.to_owned()),
            ("REDIS_URL", redis_url.clone()),
            ("OCTOLLM_WORKERS", "2".to_owned()),
        ],
    );
    let submit = |goal: &str| {
        let (status, accepted) = common::post(
            &format!("{}/tasks", server.base),
            serde_json::json!({"goal": goal}),
        );
        assert_eq!(status, 202, "{accepted}");
        accepted["task_id"].as_str().unwrap().to_owned()
    };
    let status_of = |id: &str| {
        common::get(&format!("{}/tasks/{id}", server.base))
            .and_then(|(_, t)| t["status"].as_str().map(str::to_owned))
    };
    let signer = TokenSigner::from_seed(&Secret::new(seed.clone()), AUDIENCE, 300).unwrap();
    let token_of = |task: &str| {
        signer.issue(
            ArmKind::Executor,
            "execute",
            Some(task),
            ExecutorGrant {
                programs: vec!["python3".into()],
                network: false,
            },
            chrono::Utc::now().timestamp(),
        )
    };
    let hello = python_request("print('hi')");
    let runs = |token: &str| -> Vec<u16> {
        executors
            .iter()
            .map(|e| call(&e.base, "/execute", Some(token), hello.clone()).0)
            .collect()
    };

    // A task that is still planning: its tokens work on every instance.
    let slow = submit("Write a Python program slowly, one careful line at a time");
    poll("the slow task to start", Duration::from_secs(30), || {
        (status_of(&slow)? == "processing").then_some(())
    });
    let slow_token = token_of(&slow);
    assert_eq!(runs(&slow_token), [200, 200]);
    // Cancelled: none of its tokens is taken any more, by any instance.
    assert_eq!(
        common::delete(&format!("{}/tasks/{slow}", server.base)).0,
        200
    );
    assert_eq!(runs(&slow_token), [401, 401], "a cancelled task's token");
    assert_eq!(runs(&token_of(&slow)), [401, 401], "even one signed later");

    // Completed: the same.
    let done = submit("Write a Python program that says hi");
    poll("the task to complete", Duration::from_secs(60), || {
        (status_of(&done)? == "completed").then_some(())
    });
    assert_eq!(
        runs(&token_of(&done)),
        [401, 401],
        "a completed task's token"
    );

    // One token by its id, from the command line.
    let other = token_of("task_AAAAAAAAAAAAAAAA");
    assert_eq!(runs(&other), [200, 200]);
    let jti = {
        use base64::Engine as _;
        let payload = other.split('.').nth(1).unwrap();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<Claims>(&json).unwrap().jti
    };
    let revoke = |args: &[&str], redis: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_octollm"));
        command
            .args(args)
            .env("OCTOLLM_DATA_DIR", dir.join("cli-data"))
            .env_remove("REDIS_URL");
        if let Some(url) = redis {
            command.env("REDIS_URL", url);
        }
        command.output().unwrap()
    };
    let without_redis = revoke(&["tokens", "revoke", &jti], None);
    assert!(!without_redis.status.success());
    assert!(String::from_utf8_lossy(&without_redis.stderr).contains("REDIS_URL"));
    let bad = revoke(
        &["tokens", "revoke", "--task", "not-a-task"],
        Some(&redis_url),
    );
    assert!(!bad.status.success());
    let revoked = revoke(&["tokens", "revoke", &jti], Some(&redis_url));
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert_eq!(runs(&other), [401, 401], "a token revoked by its id");
    assert_eq!(runs(&token_of("task_AAAAAAAAAAAAAAAA")), [200, 200]);

    // Without the revocation list an arm takes no token at all.
    drop(redis);
    let (status, json) = call(
        &executors[0].base,
        "/execute",
        Some(&token_of("task_BBBBBBBBBBBBBBBB")),
        hello.clone(),
    );
    assert_eq!(status, 503, "{json}");
}

/// The audit entries of an arm service reach the orchestrators' shared audit log (through
/// the registry) and show in `GET /audit`; in embedded mode the in-process executor's
/// refusals are audited too.
#[test]
fn arm_refusals_reach_the_shared_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "executor", "description": "Run `cat ../../etc/shadow`", "dependencies": []}
        ]}},
    ]});
    std::fs::write(dir.join("script.json"), script.to_string()).unwrap();
    let (seed, public) = keygen();
    let server = Server::start_with(
        dir,
        free_port(),
        &[
            ("OCTOLLM_TOKEN_SIGNING_KEY", seed.clone()),
            ("OCTOLLM_TOKEN_AUDIENCE", AUDIENCE.to_owned()),
            ("OCTOLLM_ARM_REGISTRY_TOKEN", REGISTRY_TOKEN.to_owned()),
        ],
    );
    let executor = spawn(
        dir,
        &["serve", "arm", "executor"],
        &[
            ("OCTOLLM_TOKEN_PUBLIC_KEYS", public.clone()),
            ("OCTOLLM_TOKEN_AUDIENCE", AUDIENCE.to_owned()),
            ("OCTOLLM_ARM_REGISTRY_TOKEN", REGISTRY_TOKEN.to_owned()),
            ("ARM_REGISTRY_URL", format!("{}/registry", server.base)),
        ],
    );
    let signer = TokenSigner::from_seed(&Secret::new(seed.clone()), AUDIENCE, 300).unwrap();
    let (other_seed, _) = keygen();
    let forger = TokenSigner::from_seed(&Secret::new(other_seed), AUDIENCE, 300).unwrap();
    let now = chrono::Utc::now().timestamp();
    let grant = |program: &str| ExecutorGrant {
        programs: vec![program.into()],
        network: false,
    };
    let hello = python_request("print('hi')");
    let forged = forger.issue(ArmKind::Executor, "execute", None, grant("python3"), now);
    assert_eq!(
        call(&executor.base, "/execute", Some(&forged), hello).0,
        401
    );
    let python_only = signer.issue(ArmKind::Executor, "execute", None, grant("python3"), now);
    let echo = serde_json::json!({"command": "echo", "command_type": "shell", "args": ["x"]});
    assert_eq!(
        call(&executor.base, "/execute", Some(&python_only), echo).0,
        403
    );
    let cat = signer.issue(ArmKind::Executor, "execute", None, grant("cat"), now);
    let traversal = serde_json::json!({"command": "cat", "command_type": "shell", "args": ["../../etc/shadow"]});
    assert_eq!(
        call(&executor.base, "/execute", Some(&cat), traversal).0,
        403
    );

    let reasons = |server: &Server| -> Vec<(String, String, String)> {
        let (status, audit) = common::get(&format!("{}/audit?limit=100", server.base)).unwrap();
        assert_eq!(status, 200, "{audit}");
        audit["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("{audit}"))
            .iter()
            .map(|e| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&e["kind"]),
                    text(&e["detail"]["reason"]),
                    text(&e["detail"]["arm"]),
                )
            })
            .collect()
    };
    let shared = reasons(&server);
    for (kind, reason) in [
        ("token_refused", "bad_signature"),
        ("executor_denied", "program_not_granted"),
        ("executor_denied", "policy"),
    ] {
        assert!(
            shared.contains(&(kind.into(), reason.into(), "executor".into())),
            "{kind}/{reason} not in the orchestrator's audit log: {shared:?}"
        );
    }
    // Written once: none of them stayed in the executor's own log.
    let executor_db = dir
        .join(format!(
            "data-{}",
            executor.base.rsplit(':').next().unwrap()
        ))
        .join("octollm.db");
    let local = common::runtime().block_on(async {
        let store = SqliteStore::open(&executor_db).await.unwrap();
        store
            .audit_entries(&AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    });
    assert!(local.is_empty(), "{local:?}");
    drop(executor);
    drop(server);

    // Embedded: the task's executor step is refused by the sandbox policy, and audited.
    let embedded_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("script.json"),
        embedded_dir.path().join("script.json"),
    )
    .unwrap();
    let embedded = Server::start(embedded_dir.path(), free_port());
    let (status, accepted) = common::post(
        &format!("{}/tasks", embedded.base),
        serde_json::json!({"goal": "Show me the contents of the shadow file"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    poll("the task to end", Duration::from_secs(60), || {
        let (_, task) = common::get(&format!("{}/tasks/{id}", embedded.base))?;
        matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(())
    });
    let (_, audit) = common::get(&format!("{}/audit?kind=executor_denied", embedded.base)).unwrap();
    let entry = &audit["entries"][0];
    assert_eq!(entry["detail"]["reason"], "policy", "{audit}");
    assert_eq!(entry["detail"]["program"], "cat", "{audit}");
    assert_eq!(entry["detail"]["task_id"], id.as_str(), "{audit}");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
