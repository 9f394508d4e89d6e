//! `octollm_queue_depth` follows a backlog while every worker is busy, which is when the
//! backlog alert and the dashboard need it (it used to be measured only by an idle worker).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::time::Duration;

use common::{Server, free_port, poll, post, text};

fn queue_depth(base: &str) -> Option<u64> {
    text(&format!("{base}/metrics"))
        .lines()
        .find(|l| l.starts_with("octollm_queue_depth "))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_queue_depth_metric_follows_a_backlog_while_the_workers_are_busy() {
    let dir = tempfile::tempdir().unwrap();
    let plan = serde_json::json!({"steps": [{"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}]});
    let script = serde_json::json!({"responses": [
        // Each plan takes a while, so the only worker stays busy with one task at a time.
        {"purpose": "planner", "json": plan, "delay_ms": 1500, "repeat": true},
        {"purpose": "coder", "content": "```python\nprint(1)\n```", "repeat": true},
    ]});
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let server = Server::start(dir.path(), free_port());
    let base = &server.base;
    for n in 0..4 {
        let (status, body) = post(
            &format!("{base}/tasks"),
            serde_json::json!({"goal": format!("Write program number {n} in Python")}),
        );
        assert_eq!(status, 202, "{body}");
    }
    // One task runs; three wait. The gauge says so while the worker is still busy.
    poll(
        "the gauge to show the backlog",
        Duration::from_secs(10),
        || (queue_depth(base)? == 3).then_some(()),
    );
    // And it drains with the queue.
    poll("the gauge to drain", Duration::from_secs(30), || {
        (queue_depth(base)? == 0).then_some(())
    });
}
