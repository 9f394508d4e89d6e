//! The arm services as public APIs (SPEC §6): `octollm serve arm <arm>` answers a caller that
//! is not the orchestrator: no budget headers (the arm's configured direct-call budget
//! applies, and headers may only lower it), API keys exactly as on the orchestrator, and the
//! planner, coder and judge answering with the real local model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::path::Path;

use common::{Process, make_api_key, runtime, spawn};

/// `POST base+path` with `headers`: status, the `X-Usage-*` and `X-Model` headers, JSON body.
fn call(
    base: &str,
    path: &str,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    runtime().block_on(async {
        let mut request = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    })
}

fn arm(dir: &Path, name: &str, env: &[(&str, String)]) -> Process {
    let mut env = env.to_vec();
    // One database for the CLI's keys and the service.
    env.push(("OCTOLLM_DATA_DIR", dir.join("data").display().to_string()));
    spawn(dir, &["serve", "arm", name], &env)
}

fn echo_hello() -> serde_json::Value {
    serde_json::json!({"command": "echo", "command_type": "shell", "args": ["hello"]})
}

#[test]
fn the_executor_runs_a_direct_call_without_budget_headers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.json"), r#"{"responses": []}"#).unwrap();
    let executor = arm(dir.path(), "executor", &[]);
    let (status, _, body) = call(&executor.base, "/execute", echo_hello(), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["stdout"], "hello\n", "{body}");

    // A header may lower the direct budget: a deadline already passed ends the call.
    let (status, _, body) = call(
        &executor.base,
        "/execute",
        echo_hello(),
        &[("X-Budget-Deadline-Ms", "1")],
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "budget_exceeded", "{body}");
    // A malformed one is the caller's mistake, not a missing header.
    let (status, _, body) = call(
        &executor.base,
        "/execute",
        echo_hello(),
        &[("X-Budget-Tokens", "lots")],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "validation_error", "{body}");
}

#[test]
fn api_keys_apply_to_direct_callers_as_on_the_orchestrator() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.json"),
        serde_json::json!({"responses": [
            {"purpose": "coder", "content": "```python\nprint(1)\n```", "repeat": true}
        ]})
        .to_string(),
    )
    .unwrap();
    let submitter = make_api_key(dir.path(), "tasks:submit");
    let reader = make_api_key(dir.path(), "tasks:read");
    let required = [("OCTOLLM_REQUIRE_API_KEYS", "true".to_owned())];
    let executor = arm(dir.path(), "executor", &required);

    let (status, _, body) = call(&executor.base, "/execute", echo_hello(), &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized", "{body}");
    let (status, _, body) = call(
        &executor.base,
        "/execute",
        echo_hello(),
        &[("X-API-Key", "octo_not-a-key")],
    );
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = call(
        &executor.base,
        "/execute",
        echo_hello(),
        &[("X-API-Key", &reader)],
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let (status, _, body) = call(
        &executor.base,
        "/execute",
        echo_hello(),
        &[("X-API-Key", &submitter)],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stdout"], "hello\n", "{body}");
    // The probes and the document stay open.
    let (status, _) = common::get(&format!("{}/health", executor.base)).unwrap();
    assert_eq!(status, 200);
    let (status, doc) = common::get(&format!("{}/openapi.json", executor.base)).unwrap();
    assert_eq!(status, 200);
    assert!(doc["paths"]["/execute"]["post"].is_object(), "{doc}");

    // The configured direct budget binds a keyed caller: 100 tokens (the least a budget
    // may be) are fewer than this prompt.
    let mut tight = required.to_vec();
    tight.push((
        "OCTOLLM__ARMS__DIRECT_BUDGET__CODER__MAX_TOKENS",
        "100".to_owned(),
    ));
    let coder = arm(dir.path(), "coder", &tight);
    let prompt = "Print the number one, then stop. ".repeat(40);
    let code = serde_json::json!({"operation": "generate", "prompt": prompt, "language": "python"});
    let (status, _, body) = call(
        &coder.base,
        "/code",
        code.clone(),
        &[("X-API-Key", &submitter)],
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "budget_exceeded", "{body}");
    // ...and a budget header cannot raise it.
    let (status, _, body) = call(
        &coder.base,
        "/code",
        code,
        &[("X-API-Key", &submitter), ("X-Budget-Tokens", "100000")],
    );
    assert_eq!(status, 409, "{body}");
}

#[test]
fn the_planner_coder_and_judge_answer_direct_calls_with_the_local_model() {
    let model_dir = common::local_model_dir();
    let dir = tempfile::tempdir().unwrap();
    let local = [
        ("OCTOLLM_LLM_PROVIDER", "local".to_owned()),
        ("OCTOLLM_MODEL_DIR", model_dir.display().to_string()),
    ];
    // One arm at a time: each loads the model, and two cores run one model well.
    {
        let planner = arm(dir.path(), "planner", &local);
        let (status, headers, body) = call(
            &planner.base,
            "/plan",
            serde_json::json!({"goal": "Write a Python function that adds two numbers and print add(2, 3)"}),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        let steps = body["steps"].as_array().unwrap();
        assert!(!steps.is_empty(), "{body}");
        assert!(steps.iter().all(|s| s["arm_id"].is_string()), "{body}");
        assert_local_model_answered(&headers);
    }
    {
        let coder = arm(dir.path(), "coder", &local);
        let (status, headers, body) = call(
            &coder.base,
            "/code",
            serde_json::json!({"operation": "generate", "prompt": "A Python function that adds two numbers", "language": "python"}),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["language"], "python", "{body}");
        assert!(!body["code"].as_str().unwrap().trim().is_empty(), "{body}");
        assert_local_model_answered(&headers);
    }
    {
        let judge = arm(dir.path(), "judge", &local);
        // A criterion no rule decides, so the model judges it.
        let (status, headers, body) = call(
            &judge.base,
            "/validate",
            serde_json::json!({
                "output": "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
                "acceptance_criteria": ["The function is named add"]
            }),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        assert!(body["valid"].is_boolean(), "{body}");
        let decided = body["passed_criteria"].as_array().unwrap().len()
            + body["failed_criteria"].as_array().unwrap().len();
        assert_eq!(decided, 1, "{body}");
        assert_local_model_answered(&headers);
    }
}

fn assert_local_model_answered(headers: &reqwest::header::HeaderMap) {
    let model = headers["x-model"].to_str().unwrap();
    assert!(model.contains("SmolLM2"), "{model}");
    let tokens: u64 = headers["x-usage-completion-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tokens > 0, "{headers:?}");
}
