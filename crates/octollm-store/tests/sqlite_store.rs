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

use octollm_store::{KnowledgeStore, NewChunk, SqliteStore, VectorStore};

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    (dir, store)
}

task_store_contract!(store());

#[tokio::test]
async fn keyword_and_vector_search_find_the_right_chunk() {
    let (_d, s) = store().await;
    s.add_document(
        "a.md",
        serde_json::json!({"lang": "en"}),
        vec![
            NewChunk {
                content: "The Fibonacci sequence starts 0, 1, 1, 2, 3.".into(),
                embedding: vec![1.0, 0.0, 0.0],
            },
            NewChunk {
                content: "Kubernetes schedules pods onto nodes.".into(),
                embedding: vec![0.0, 1.0, 0.0],
            },
        ],
    )
    .await
    .unwrap();
    let hits = s.keyword_search("fibonacci sequence?", 5).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].content.contains("Fibonacci"));
    assert_eq!(hits[0].source, "a.md");
    let hits = s.vector_search(&[0.1, 0.9, 0.0], 1).await.unwrap();
    assert!(hits[0].content.contains("Kubernetes"));
    assert!(hits[0].score > 0.9);
    assert!(s.keyword_search("\"*:(", 5).await.unwrap().is_empty());
    assert_eq!(s.document_count().await.unwrap(), 1);
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
