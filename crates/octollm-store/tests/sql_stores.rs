//! The two SQL stores against one contract (tests/common/contract.rs): SQLite, the embedded
//! backend, with its knowledge base and vector index; PostgreSQL against a real server each
//! test starts, with claims by concurrent replicas, migrations run twice, and recovery after
//! the server restarts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

#[macro_use]
mod common;

mod sqlite {
    use crate::common;
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
}

mod postgres {
    use crate::common;
    use std::collections::HashSet;

    use chrono::Utc;
    use common::contract::{LEASE, new_task};
    use octollm_store::{PostgresStore, TaskStore};
    use octollm_test_support::postgres::PgServer;

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

    /// Events of `id` that arrive on `live` within `window`.
    async fn collect(
        live: &mut tokio::sync::broadcast::Receiver<octollm_store::TaskEvent>,
        id: &octollm_core::TaskId,
        window: std::time::Duration,
    ) -> Vec<octollm_store::TaskEvent> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, live.recv()).await {
            if &e.task_id == id {
                got.push(e);
            }
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_see_each_others_live_events_through_redis() {
        let (server, _migrated) = store().await;
        let redis = octollm_test_support::redis::Redis::start();
        let url = format!("postgres://postgres@127.0.0.1:{}/octollm", server.port());
        let bus = |name: &str| octollm_store::RedisEvents::new(&redis.url(), name).unwrap();
        let a = PostgresStore::connect(&url, 2)
            .await
            .unwrap()
            .with_events(&bus("t"));
        let b = PostgresStore::connect(&url, 2)
            .await
            .unwrap()
            .with_events(&bus("t"));
        let mut on_a = a.subscribe();
        let mut on_b = b.subscribe();
        // Pub/sub drops what is published before a subscription exists: wait until B's relay
        // is subscribed by sending probes from A.
        let mut subscribed = false;
        for _ in 0..100 {
            let probe = new_task(None);
            let id = probe.id.clone();
            a.create_task(probe).await.unwrap();
            if !collect(&mut on_b, &id, std::time::Duration::from_millis(100))
                .await
                .is_empty()
            {
                subscribed = true;
                break;
            }
        }
        assert!(subscribed, "B never received A's events");
        while on_a.try_recv().is_ok() {}

        let t = new_task(None);
        let id = t.id.clone();
        a.create_task(t).await.unwrap();
        a.claim_next("wa", LEASE, Utc::now()).await.unwrap();
        let seen_by_b = collect(&mut on_b, &id, std::time::Duration::from_secs(2)).await;
        let statuses: Vec<&str> = seen_by_b
            .iter()
            .map(|e| e.data["status"].as_str().unwrap_or(""))
            .collect();
        // Claims take the oldest queued task first: the probes are claimed before `t`, so
        // only the queued event of `t` is certain; every event B sees is A's stored one.
        assert_eq!(statuses.first(), Some(&"queued"), "{seen_by_b:?}");
        let stored = a.events_since(&id, 0).await.unwrap();
        assert_eq!(
            seen_by_b.iter().map(|e| e.seq).collect::<Vec<_>>(),
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            "B saw exactly the stored events, in order"
        );
        // A delivered its own events once: its relay skips what it published.
        let seen_by_a = collect(&mut on_a, &id, std::time::Duration::from_millis(500)).await;
        assert_eq!(seen_by_a.len(), stored.len(), "{seen_by_a:?}");
    }

    /// A knowledge base handle with its own pool on the database at `url`.
    async fn knowledge(url: &str) -> octollm_store::PostgresKnowledge {
        let store = PostgresStore::connect(url, 4).await.unwrap();
        store.migrate().await.unwrap();
        octollm_store::PostgresKnowledge::new(store.pool().clone(), None)
    }

    #[tokio::test]
    async fn knowledge_store_contract_with_vectors_in_postgres() {
        let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
        common::contract::knowledge_store_contract(&knowledge(&server.database("octollm")).await)
            .await;
    }

    #[tokio::test]
    async fn knowledge_store_contract_with_vectors_in_a_vector_store() {
        let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
        let store = PostgresStore::connect(&server.database("octollm"), 4)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        // The embedded index stands in for Qdrant: the same trait, the same contract.
        let dir = tempfile::tempdir().unwrap();
        let index = std::sync::Arc::new(
            octollm_store::SqliteStore::open(&dir.path().join("vectors.db"))
                .await
                .unwrap(),
        );
        let shared =
            octollm_store::PostgresKnowledge::new(store.pool().clone(), Some(index.clone()));
        common::contract::knowledge_store_contract(&shared).await;
        // The chunks' vectors went to the index, in the knowledge base's collection.
        use octollm_store::VectorStore as _;
        let hits = index
            .search(
                octollm_store::pg_knowledge::KNOWLEDGE_COLLECTION,
                &[1.0, 0.0, 0.0],
                1,
            )
            .await
            .unwrap();
        assert!(hits[0].score > 0.99, "{hits:?}");
    }

    #[tokio::test]
    async fn retriever_instances_share_one_knowledge_base() {
        use octollm_store::{KnowledgeStore as _, NewChunk};
        let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
        let url = server.database("octollm");
        let first = knowledge(&url).await;
        let second = knowledge(&url).await;
        // The second searches (and caches the embeddings) before the first adds anything.
        assert!(
            second
                .vector_search(&[1.0, 0.0], 5)
                .await
                .unwrap()
                .is_empty()
        );
        first
            .add_document(
                "cephalopods.md",
                serde_json::json!({}),
                vec![NewChunk {
                    content: "An octopus changes colour to hide from predators.".into(),
                    embedding: vec![1.0, 0.0],
                }],
            )
            .await
            .unwrap();
        let hits = second.vector_search(&[0.9, 0.1], 5).await.unwrap();
        assert_eq!(hits.len(), 1, "the other instance's chunk was not seen");
        assert_eq!(hits[0].source, "cephalopods.md");
        let hits = second.keyword_search("octopus", 5).await.unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(second.document_count().await.unwrap(), 1);
    }
}
