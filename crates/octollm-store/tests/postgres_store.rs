//! The PostgreSQL store against a real server that each test starts (tests/common/postgres.rs):
//! the task store contract shared with SQLite, claims by concurrent replicas, migrations run
//! twice, and recovery after the server restarts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

#[macro_use]
mod common;

use std::collections::HashSet;

use chrono::Utc;
use common::contract::{LEASE, new_task};
use common::postgres::PgServer;
use octollm_store::{PostgresStore, TaskStore};

async fn store() -> (PgServer, PostgresStore) {
    let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let url = server.database("octollm");
    let store = PostgresStore::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    (server, store)
}

task_store_contract!(store());

#[tokio::test]
async fn replicas_claim_every_task_exactly_once() {
    let (server, first) = store().await;
    // A second replica: its own pool on the same database.
    let url = format!("postgres://postgres@127.0.0.1:{}/octollm", server.port());
    let second = PostgresStore::connect(&url, 4).await.unwrap();
    let mut created = HashSet::new();
    for _ in 0..60 {
        let t = new_task(None);
        created.insert(t.id.clone());
        first.create_task(t).await.unwrap();
    }
    let claimers: Vec<_> = [first.clone(), second.clone(), first, second]
        .into_iter()
        .enumerate()
        .map(|(n, s)| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(t) = s
                    .claim_next(&format!("w{n}"), LEASE, Utc::now())
                    .await
                    .unwrap()
                {
                    mine.push(t.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await.unwrap());
    }
    assert_eq!(claimed.len(), 60, "every task claimed exactly once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), created);
}

#[tokio::test]
async fn migrating_twice_is_harmless() {
    let (_server, s) = store().await;
    s.migrate().await.unwrap();
    s.create_task(new_task(None)).await.unwrap();
    assert_eq!(s.queue_depth().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_without_losing_tasks() {
    let (mut server, s) = store().await;
    let t = new_task(None);
    s.create_task(t.clone()).await.unwrap();
    tokio::task::block_in_place(|| server.stop());
    // While it is down, calls fail with an error instead of hanging.
    let down = tokio::time::timeout(std::time::Duration::from_secs(30), s.ping()).await;
    assert!(
        matches!(down, Ok(Err(_))),
        "ping with the server down: {down:?}"
    );
    tokio::task::block_in_place(|| server.restart());
    let mut reconnected = false;
    for _ in 0..50 {
        if s.ping().await.is_ok() {
            reconnected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reconnected, "the pool did not reconnect");
    assert_eq!(s.get_task(&t.id).await.unwrap().unwrap().id, t.id);
}
