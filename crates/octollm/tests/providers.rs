//! SPEC §9 providers with stand-ins on loopback: each arm that calls a model can have its own
//! provider and model. Here the planner talks to an Anthropic Messages stand-in, the coder
//! to an Azure OpenAI stand-in (its `api-key` header and `api-version`), and the judge to the
//! scripted provider of `[llm]`; the task completes and each server saw only its own arm.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::HeaderMap;
use axum::routing::post;
use common::{Server, free_port, get, poll};

type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

/// Serves `app` on a loopback port in its own thread; its base URL.
fn serve(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        common::runtime().block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    base
}

fn stand_in_anthropic(seen: Seen) -> String {
    serve(axum::Router::new().route(
        "/v1/messages",
        post(move |headers: HeaderMap, Json(body): Json<serde_json::Value>| {
            let seen = seen.clone();
            async move {
                assert_eq!(headers["x-api-key"], "sk-ant-planner");
                assert!(headers.get("anthropic-version").is_some());
                seen.lock().unwrap().push(body.clone());
                Json(serde_json::json!({
                    "model": body["model"],
                    "content": [{"type": "tool_use", "id": "t1", "name": "answer", "input": {"steps": [
                        {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}
                    ]}}],
                    "stop_reason": "tool_use",
                    "usage": {"input_tokens": 100, "output_tokens": 20}
                }))
            }
        }),
    ))
}

fn stand_in_azure(seen: Seen) -> String {
    let base = serve(axum::Router::new().route(
        "/openai/deployments/coder/chat/completions",
        post(
            move |headers: HeaderMap,
                  axum::extract::Query(query): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >,
                  Json(body): Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    assert_eq!(headers["api-key"], "azure-coder-key");
                    assert_eq!(query["api-version"], "2024-06-01");
                    seen.lock().unwrap().push(body);
                    Json(serde_json::json!({
                        "choices": [{"message": {"content": "```python\nprint('hi')\n```"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 10}
                    }))
                }
            },
        ),
    ));
    format!("{base}/openai/deployments/coder")
}

#[test]
fn each_model_arm_uses_its_own_provider_and_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.json"),
        serde_json::json!({"responses": [
            {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"}
        ]})
        .to_string(),
    )
    .unwrap();
    let (planner_calls, coder_calls): (Seen, Seen) = Default::default();
    let anthropic = stand_in_anthropic(planner_calls.clone());
    let azure = stand_in_azure(coder_calls.clone());
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[
            ("OCTOLLM_LLM_PLANNER_PROVIDER", "anthropic".into()),
            (
                "OCTOLLM_LLM_PLANNER_MODEL",
                "claude-3-5-haiku-latest".into(),
            ),
            ("OCTOLLM_LLM_PLANNER_BASE_URL", anthropic),
            ("OCTOLLM_LLM_PLANNER_API_KEY", "sk-ant-planner".into()),
            ("OCTOLLM_LLM_CODER_PROVIDER", "openai".into()),
            ("OCTOLLM_LLM_CODER_MODEL", "gpt-4o".into()),
            ("OCTOLLM_LLM_CODER_BASE_URL", azure),
            ("OCTOLLM_LLM_CODER_API_KEY", "azure-coder-key".into()),
            ("OCTOLLM_LLM_CODER_API_VERSION", "2024-06-01".into()),
        ],
    );
    let (status, accepted) = common::post(
        &format!("{}/tasks", server.base),
        serde_json::json!({"goal": "Write a Python program that says hi",
                           "acceptance_criteria": ["It prints hi"]}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(60), || {
        let (_, task) = get(&format!("{}/tasks/{id}", server.base))?;
        ["completed", "failed"]
            .contains(&task["status"].as_str()?)
            .then_some(task)
    });
    assert_eq!(task["status"], "completed", "{task}");
    let planner_calls = planner_calls.lock().unwrap();
    assert_eq!(planner_calls.len(), 1, "{planner_calls:?}");
    assert_eq!(planner_calls[0]["model"], "claude-3-5-haiku-latest");
    let coder_calls = coder_calls.lock().unwrap();
    assert_eq!(coder_calls.len(), 1, "{coder_calls:?}");
    assert_eq!(coder_calls[0]["model"], "gpt-4o");
    let models: Vec<&str> = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["provenance"]["model"].as_str())
        .collect();
    assert!(models.contains(&"gpt-4o"), "{task}");
    // Both list prices apply, so the task cost something.
    assert!(
        task["metadata"]["cost_dollars"].as_f64().unwrap() > 0.0,
        "{task}"
    );
}

#[test]
fn arm_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (env, message) in [
        (vec![("OCTOLLM_LLM_EXECUTOR_MODEL", "gpt-4o")], ""),
        (
            vec![("OCTOLLM__LLM__ARMS__EXECUTOR__MODEL", "gpt-4o")],
            "calls no model",
        ),
        (
            vec![("OCTOLLM_LLM_PLANNER_PROVIDER", "anthropic")],
            "a model",
        ),
        (vec![("ENVIRONMENT", "prod")], "ENVIRONMENT"),
        (
            vec![
                ("ENVIRONMENT", "production"),
                ("OCTOLLM_LLM_PROVIDER", "scripted"),
                ("OCTOLLM_LLM_SCRIPT", "/dev/null"),
            ],
            "scripted provider is for tests",
        ),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_octollm"));
        command
            .arg("check-config")
            .env("OCTOLLM_DATA_DIR", dir.path().join("data"))
            .env_remove("OCTOLLM_LLM_PROVIDER");
        for (k, v) in &env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if message.is_empty() {
            // Not a setting of a model arm: the name means nothing and is ignored.
            assert!(out.status.success(), "{env:?}: {stderr}");
        } else {
            assert!(!out.status.success(), "{env:?} was accepted");
            assert!(stderr.contains(message), "{env:?}: {stderr}");
        }
    }
}
