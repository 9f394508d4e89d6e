//! Issue 6, acceptance 4: PII and secrets fed through a whole task (the goal, the
//! constraints, the acceptance criteria, the API key that submits it) appear in no log line,
//! no stored byte, no metric and no prompt sent to the model, unless
//! `OCTOLLM_STORE_RAW_INPUT=true` asks for the raw input to be kept (then it is in the
//! database, and still nowhere else).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, free_port, poll};

const EMAIL: &str = "leak.canary@example.org";
const CARD: &str = "4111 1111 1111 1111";
const PHONE: &str = "+44 20 7946 0958";
const PROVIDER_KEY: &str = "sk-proj-Zq8LmN3vR7tY1uP5wK9xB2cD4fG6hJ0aQsWeRtYuIoPl";
const AWS_KEY: &str = "AKIAQ3EGUZ7XKJ4MNV2P";

fn script(dir: &Path) {
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}
        ]}},
        {"purpose": "coder", "repeat": true, "content": "```python\nprint('hello')\n```"},
        {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"},
    ]});
    std::fs::write(dir.join("script.json"), script.to_string()).unwrap();
}

fn make_key(dir: &Path) -> String {
    common::make_api_key(dir, "tasks:submit,tasks:read")
}

/// A server that requires keys and logs everything it would log at debug level, as JSON.
fn leaky_server(dir: &Path, port: u16, extra: &[(&str, String)]) -> Server {
    let mut env = vec![
        ("OCTOLLM_REQUIRE_API_KEYS", "true".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("LOG_LEVEL", "debug".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    Server::start_with(dir, port, &env)
}

/// Submits the task through the API with `api_key`, waits for it, and returns the task as
/// the client sees it and the metrics.
fn run_task(server: &Server, api_key: &str) -> (serde_json::Value, String) {
    let body = serde_json::json!({
        "goal": format!("Write a Python script that emails {EMAIL} a summary; bill card {CARD}, call {PHONE}"),
        "constraints": [format!("Use the provider key {PROVIDER_KEY}"), format!("and AWS key {AWS_KEY}")],
        "acceptance_criteria": [format!("The summary goes to {EMAIL}")],
    });
    let client = reqwest::Client::new();
    let (status, accepted) = common::runtime().block_on(async {
        let r = client
            .post(format!("{}/tasks", server.base))
            .header("x-api-key", api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(60), || {
        let task = common::runtime().block_on(async {
            client
                .get(format!("{}/tasks/{id}", server.base))
                .header("x-api-key", api_key)
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
        })?;
        matches!(task["status"].as_str(), Some("completed" | "failed")).then_some(task)
    });
    assert_eq!(task["status"], "completed", "{task}");
    let metrics = common::runtime().block_on(async {
        client
            .get(format!("{}/metrics", server.base))
            .header("x-api-key", api_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("octollm_tasks_submitted_total"),
        "{metrics}"
    );
    (task, metrics)
}

/// Where each canary shows up among `files` (each read whole, raw bytes).
fn findings(files: &[std::path::PathBuf], canaries: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).unwrap_or_default();
        for canary in canaries {
            if bytes.windows(canary.len()).any(|w| w == canary.as_bytes()) {
                found.push(format!("{canary} in {}", path.display()));
            }
        }
    }
    found
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn canaries(api_key: &str) -> Vec<String> {
    vec![
        EMAIL.to_owned(),
        CARD.to_owned(),
        CARD.replace(' ', ""),
        PHONE.to_owned(),
        PROVIDER_KEY.to_owned(),
        AWS_KEY.to_owned(),
        // The API key's secret part (its id is not secret and is stored on purpose).
        api_key[18..].to_owned(),
    ]
}

#[test]
fn pii_and_keys_leave_no_trace_in_logs_rows_metrics_or_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    script(dir);
    let api_key = make_key(dir);
    let server = leaky_server(dir, free_port(), &[]);
    let (task, metrics) = run_task(&server, &api_key);
    drop(server); // flushes the database and the log
    // What the client gets back is redacted too.
    let shown = task.to_string();
    for value in [EMAIL, CARD, PROVIDER_KEY, AWS_KEY] {
        assert!(
            !shown.contains(value),
            "the task view shows {value}: {shown}"
        );
    }

    let canaries = canaries(&api_key);
    let canaries: Vec<&str> = canaries.iter().map(String::as_str).collect();
    let files = files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "script.json"))
        .collect::<Vec<_>>();
    // The log, the database (and its WAL), and the prompts the model was sent.
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().contains("server-"))
    );
    assert!(files.iter().any(|p| p.ends_with("calls.jsonl")));
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "db"))
    );
    assert_eq!(findings(&files, &canaries), Vec::<String>::new());
    for canary in &canaries {
        assert!(!metrics.contains(canary), "metrics hold {canary}");
    }
    // The redaction left typed placeholders where the values were.
    let prompts = std::fs::read_to_string(dir.join("calls.jsonl")).unwrap();
    assert!(prompts.contains("[EMAIL_1]"), "{prompts}");
}

#[test]
fn with_raw_input_kept_the_values_are_in_the_database_only() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    script(dir);
    let api_key = make_key(dir);
    let server = leaky_server(
        dir,
        free_port(),
        &[("OCTOLLM_STORE_RAW_INPUT", "true".into())],
    );
    run_task(&server, &api_key);
    drop(server);
    let database: Vec<_> = files_under(&dir.join("data"));
    let found = findings(&database, &[EMAIL, PROVIDER_KEY]);
    assert_eq!(found.len(), 2, "the raw input should be stored: {found:?}");
    let elsewhere: Vec<_> = files_under(dir)
        .into_iter()
        .filter(|p| {
            !p.starts_with(dir.join("data")) && p.file_name().is_some_and(|n| n != "script.json")
        })
        .collect();
    assert_eq!(
        findings(&elsewhere, &[EMAIL, PROVIDER_KEY]),
        Vec::<String>::new()
    );
}

/// The log layer end to end: with the prompt-logging debug switch on and a model that answers
/// with PII and a key, the log has the model's text with those values replaced.
#[test]
fn logged_model_text_is_redacted_by_the_log_writer() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "repeat": true, "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}
        ]}},
        {"purpose": "coder", "repeat": true,
         "content": format!("```python\nprint('send to {EMAIL} with {PROVIDER_KEY}')\n```")},
        {"purpose": "judge", "repeat": true, "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}"},
    ]});
    std::fs::write(dir.join("script.json"), script.to_string()).unwrap();
    let api_key = make_key(dir);
    let port = free_port();
    let server = leaky_server(dir, port, &[("OCTOLLM_LOG_PROMPTS", "true".into())]);
    run_task(&server, &api_key);
    drop(server);
    let log = std::fs::read_to_string(dir.join(format!("server-{port}.log"))).unwrap();
    let responses: Vec<&str> = log.lines().filter(|l| l.contains("llm response")).collect();
    assert!(!responses.is_empty(), "the switch logs model text: {log}");
    assert!(
        responses
            .iter()
            .any(|l| l.contains("[EMAIL_1]") && l.contains("[OPENAI_KEY_1]")),
        "{responses:?}"
    );
    for value in [EMAIL, PROVIDER_KEY] {
        assert!(!log.contains(value), "the log holds {value}");
    }
    // Every line is still one JSON object.
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
