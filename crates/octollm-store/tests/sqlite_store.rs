//! The embedded store: the task store contract (tests/common/contract.rs) on SQLite, and the
//! knowledge base and vector index, which only the embedded backend has so far.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

#[macro_use]
mod common;

use octollm_store::{SqliteStore, VectorStore};

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    (dir, store)
}

task_store_contract!(store());

#[tokio::test]
async fn knowledge_store_contract() {
    let (_d, s) = store().await;
    common::contract::knowledge_store_contract(&s).await;
}

#[tokio::test]
async fn vector_store_contract() {
    let (dir, s) = store().await;
    common::contract::vector_store_contract(&s, "t").await;
    // Durable: a fresh handle on the same file sees the same vectors.
    let reopened = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    let hits = reopened.search("t-plans", &[0.0, 1.0], 10).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}
