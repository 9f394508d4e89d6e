//! `GET /tasks/{id}/events` over a real socket: a client that drops the stream mid-task and
//! reconnects with `Last-Event-ID` gets every later event once, and nothing it already had;
//! a bad `Last-Event-ID` is refused with the error body. (The stream is the one route the
//! schemathesis run leaves out, so this is its contract test.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::time::Duration;

use common::{Server, free_port, post, runtime};
use futures::StreamExt;

/// One server-sent event: its id (the sequence number) and kind.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: i64,
    kind: String,
    data: serde_json::Value,
}

/// The complete events in `text` (blocks ended by a blank line); keep-alive comments skipped.
fn parse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some(Sse {
                id: id?,
                kind: kind?,
                data: data?,
            })
        })
        .collect()
}

fn is_final(event: &Sse) -> bool {
    event.kind == "status"
        && ["completed", "failed", "cancelled"]
            .contains(&event.data["data"]["status"].as_str().unwrap_or_default())
}

/// Reads the stream until `enough` holds for the events so far, then drops the connection.
async fn read_until(
    url: &str,
    last_event_id: Option<i64>,
    enough: impl Fn(&[Sse]) -> bool,
) -> Vec<Sse> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if enough(&parse(&text)) {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream stalled after: {text}"));
    parse(&text)
}

#[test]
fn a_stream_resumed_with_last_event_id_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let script = serde_json::json!({"responses": [
        {"purpose": "planner", "json": {"steps": [
            {"step_id": "s1", "arm_id": "coder", "description": "Write part one", "dependencies": []},
            {"step_id": "s2", "arm_id": "coder", "description": "Write part two", "dependencies": ["s1"]}
        ]}},
        {"purpose": "coder", "when": "part one", "content": "```python\nprint('one')\n```"},
        // Long enough that the first connection is dropped while the task still runs.
        {"purpose": "coder", "when": "part two", "content": "```python\nprint('two')\n```", "delay_ms": 1500},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let server = Server::start(dir.path(), free_port());
    let base = &server.base;
    let (status, accepted) = post(
        &format!("{base}/tasks"),
        serde_json::json!({"goal": "Write a program in two parts"}),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["task_id"].as_str().unwrap();
    let url = format!("{base}/tasks/{id}/events");

    runtime().block_on(async {
        // First connection: up to the start of the slow step, then gone.
        let first = read_until(&url, None, |events| {
            events
                .iter()
                .any(|e| e.kind == "step_started" && e.data["data"]["step_id"] == "s2")
        })
        .await;
        assert!(!first.iter().any(is_final), "{first:?}");
        let last = first.last().unwrap().id;

        // Second connection, resumed: only what came after, to the end.
        let rest = read_until(&url, Some(last), |events| events.iter().any(is_final)).await;
        assert!(
            rest.first().is_some_and(|e| e.id > last),
            "resumed at {last}: {rest:?}"
        );
        assert!(is_final(rest.last().unwrap()), "{rest:?}");
        assert_eq!(rest.last().unwrap().data["data"]["status"], "completed");

        // Together they are the whole history, in order, each event once.
        let whole = read_until(&url, None, |events| events.iter().any(is_final)).await;
        let joined: Vec<Sse> = first.iter().chain(&rest).cloned().collect();
        assert_eq!(joined, whole);
        assert!(whole.windows(2).all(|w| w[0].id < w[1].id), "{whole:?}");

        // Resumed after the final event, the stream ends at once and empty.
        let after_end = reqwest::Client::new()
            .get(&url)
            .header("Last-Event-ID", whole.last().unwrap().id.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(parse(&after_end).is_empty(), "{after_end}");

        // Anything but a sequence number is refused, with the error body.
        for bad in ["abc", "-1", "1.5", "7x", "1234567890123456789"] {
            let response = reqwest::Client::new()
                .get(&url)
                .header("Last-Event-ID", bad)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{bad:?}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["code"], "validation_error", "{bad:?}: {body}");
            assert!(
                body["message"].as_str().unwrap().contains("Last-Event-ID"),
                "{body}"
            );
        }
    });
}
