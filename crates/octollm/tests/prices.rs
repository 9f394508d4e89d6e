//! Costs under the shipped configuration: a model with a list price (here `gpt-4o-mini`,
//! served by a stand-in for the OpenAI API on loopback) makes a task's `max_cost_dollars`
//! bind, and the cost metric counts dollars.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::time::Duration;

use axum::Json;
use axum::routing::post;
use common::{Server, free_port, get, poll, text};

/// An OpenAI-compatible endpoint answering as `gpt-4o-mini`: a plan when JSON is asked for,
/// code otherwise, with the usage the real API reports.
fn stand_in_openai() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        common::runtime().block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().route(
                "/v1/chat/completions",
                post(|Json(body): Json<serde_json::Value>| async move {
                    let content = if body.get("response_format").is_some() {
                        serde_json::json!({"steps": [{"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}]}).to_string()
                    } else {
                        "```python\nprint('hello')\n```".to_owned()
                    };
                    Json(serde_json::json!({
                        "model": "gpt-4o-mini-2024-07-18",
                        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 600, "completion_tokens": 60}
                    }))
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    base
}

fn finished(base: &str, id: &str) -> serde_json::Value {
    poll(&format!("{id} to finish"), Duration::from_secs(30), || {
        let (_, task) = get(&format!("{base}/tasks/{id}"))?;
        ["completed", "failed"]
            .contains(&task["status"].as_str()?)
            .then_some(task)
    })
}

#[test]
fn a_listed_model_s_price_makes_max_cost_bind_and_the_metric_counts_dollars() {
    let dir = tempfile::tempdir().unwrap();
    let openai = stand_in_openai();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[
            ("OCTOLLM_LLM_PROVIDER", "openai".into()),
            ("OCTOLLM_LLM_BASE_URL", openai),
            ("OCTOLLM_LLM_MODEL", "gpt-4o-mini".into()),
            ("LLM_API_KEY", "sk-test".into()),
        ],
    );
    let base = &server.base;
    let submit = |cost: f64| {
        let (status, body) = common::post(
            &format!("{base}/tasks"),
            serde_json::json!({"goal": "Write a Python program that prints hello",
                               "budget": {"max_cost_dollars": cost}}),
        );
        assert_eq!(status, 202, "{body}");
        body["task_id"].as_str().unwrap().to_owned()
    };

    // A hundredth of a cent cannot pay for the planner's call at gpt-4o-mini's list price.
    let poor = finished(base, &submit(0.0001));
    assert_eq!(poor["status"], "failed", "{poor}");
    assert_eq!(poor["error"]["type"], "budget_exceeded", "{poor}");

    // With a dollar it completes, and what it cost is counted in dollars.
    let rich = finished(base, &submit(1.0));
    assert_eq!(rich["status"], "completed", "{rich}");
    let cost = rich["metadata"]["cost_dollars"].as_f64().unwrap();
    // Two calls of 600 + 60 tokens: 2 × (600 × $0.15 + 60 × $0.60) / 1M = $0.000252.
    assert!((cost - 0.000252).abs() < 1e-9, "{rich}");
    let metric: f64 = text(&format!("{base}/metrics"))
        .lines()
        .find(|l| l.starts_with("octollm_llm_cost_dollars_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    // Both tasks' spending: the poor one's planner call fitted the estimate, then cost more.
    let spent = cost + poor["metadata"]["cost_dollars"].as_f64().unwrap();
    assert!(
        (metric - spent).abs() < 1e-9,
        "metric {metric}, tasks {spent}"
    );
}
