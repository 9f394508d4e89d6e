//! OTLP trace export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the server sends its spans to
//! the collector (here a minimal OTLP/HTTP receiver that keeps the request bodies), and a
//! task submitted inside a caller's trace is one trace: the request span is the caller's
//! child, and the task's run and steps, which happen later on a worker, carry the same trace
//! id.

#![cfg(feature = "otlp")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, free_port, get, poll, write_script};

/// Accepts OTLP/HTTP exports on a free port; every body received is kept.
fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    if line.starts_with("POST /v1/traces") {
                        kept.lock().unwrap().push(body);
                    }
                    // An empty protobuf message is a valid ExportTraceServiceResponse.
                    reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (base, bodies)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_task_s_spans_reach_the_collector_as_one_trace() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path());
    let (endpoint, bodies) = collector();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
        ],
    );
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let (_, accepted) = common::post_with(
        &format!("{}/tasks", server.base),
        serde_json::json!({"goal": "Write a two part Python program"}),
        &[("traceparent", format!("00-{trace_id}-{caller_span}-01"))],
    );
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    let task = poll("the task to finish", Duration::from_secs(60), || {
        let (_, t) = get(&format!("{}/tasks/{id}", server.base))?;
        matches!(t["status"].as_str(), Some("completed" | "failed")).then_some(t)
    });
    assert_eq!(task["status"], "completed", "{task}");
    let trace = hex(trace_id);
    let caller = hex(caller_span);
    // The request span, the submission, the task's run and its steps (three units and the
    // run itself at least) all carry the caller's trace id; the request span names the
    // caller's span as its parent; the service is named.
    let exported = poll("the spans to be exported", Duration::from_secs(30), || {
        let all: Vec<u8> = bodies.lock().unwrap().concat();
        (count(&all, &trace) >= 6 && count(&all, b"step") >= 3).then_some(all)
    });
    assert!(count(&exported, &caller) >= 1, "the request span's parent");
    assert!(
        count(&exported, b"octollm-orchestrator") >= 1,
        "service.name"
    );
    assert!(count(&exported, b"task") >= 1);
}
