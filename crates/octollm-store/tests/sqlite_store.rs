//! The embedded store's contract: queue semantics, lease fencing, idempotency, events,
//! pagination, knowledge search.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use octollm_core::budget::{Budget, Usage};
use octollm_core::{ArmKind, Provenance, TaskId, TaskStatus, TaskSubmission};
use octollm_store::{
    CreateOutcome, Finish, KnowledgeStore, LeaseState, ListFilter, NewChunk, NewTask, Progress,
    SqliteStore, StepRecord, StepStatus, StoreError, TaskResult, TaskStore, VectorStore,
};

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    (dir, store)
}

fn new_task(key: Option<&str>) -> NewTask {
    let spec = TaskSubmission {
        goal: "write a fibonacci function".into(),
        idempotency_key: key.map(str::to_owned),
        ..Default::default()
    }
    .validate(&Budget::default())
    .unwrap();
    NewTask {
        id: TaskId::generate(),
        spec,
        raw_input: None,
        created_at: Utc::now(),
    }
}

fn step(key: &str) -> StepRecord {
    StepRecord {
        step_key: key.into(),
        arm_id: ArmKind::Coder,
        status: StepStatus::Completed,
        output: serde_json::json!({"code": "print(1)"}),
        provenance: Provenance {
            arm_id: ArmKind::Coder,
            instance: "in-process".into(),
            started_at: Utc::now(),
            duration_ms: 3,
            tokens: 10,
            cost: 0.0,
            model: None,
            attempt: 1,
        },
        error: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn idempotency_key_returns_the_first_task() {
    let (_d, s) = store().await;
    let CreateOutcome::Created(first) = s.create_task(new_task(Some("k1"))).await.unwrap() else {
        panic!()
    };
    let CreateOutcome::Existing(again) = s.create_task(new_task(Some("k1"))).await.unwrap() else {
        panic!()
    };
    assert_eq!(first.id, again.id);
    // After 24 hours the key is free again.
    let mut later = new_task(Some("k1"));
    later.created_at = Utc::now() + TimeDelta::hours(25);
    assert!(matches!(
        s.create_task(later).await.unwrap(),
        CreateOutcome::Created(_)
    ));
}

#[tokio::test]
async fn a_lease_fences_out_the_previous_owner() {
    let (_d, s) = store().await;
    s.create_task(new_task(None)).await.unwrap();
    let now = Utc::now();
    let task = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Processing);
    assert!(
        s.claim_next("w2", LEASE, now).await.unwrap().is_none(),
        "leased task claimed twice"
    );
    let progress = Progress::default();
    s.save_step(
        &task.id,
        "w1",
        &step("s1"),
        Usage::default(),
        &[ArmKind::Coder],
        &progress,
        now,
    )
    .await
    .unwrap();
    // w1 dies; after expiry w2 takes over and w1 can no longer write.
    let later = now + TimeDelta::seconds(31);
    let resumed = s.claim_next("w2", LEASE, later).await.unwrap().unwrap();
    assert_eq!(resumed.id, task.id);
    assert_eq!(resumed.attempts, 2);
    let err = s
        .save_step(
            &task.id,
            "w1",
            &step("s2"),
            Usage::default(),
            &[],
            &progress,
            later,
        )
        .await;
    assert!(matches!(err, Err(StoreError::LeaseLost(_))));
    assert_eq!(
        s.heartbeat(&task.id, "w1", LEASE, later).await.unwrap(),
        LeaseState::Lost
    );
    assert_eq!(
        s.heartbeat(&task.id, "w2", LEASE, later).await.unwrap(),
        LeaseState::Held
    );
    // The completed step survived for the new owner.
    let steps = s.steps(&task.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].step_key, "s1");
    s.finish(
        &task.id,
        "w2",
        Finish::Completed(TaskResult {
            output: "done".into(),
            confidence: 0.9,
            validation_passed: true,
        }),
        Usage::default(),
        later,
    )
    .await
    .unwrap();
    let done = s.get_task(&task.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert!(
        s.claim_next("w3", LEASE, later + TimeDelta::hours(1))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn released_tasks_are_claimable_at_once() {
    let (_d, s) = store().await;
    s.create_task(new_task(None)).await.unwrap();
    let now = Utc::now();
    let t = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    s.release(&t.id, "w1").await.unwrap();
    assert_eq!(
        s.claim_next("w2", LEASE, now).await.unwrap().unwrap().id,
        t.id
    );
}

#[tokio::test]
async fn cancel_stops_the_owner_and_is_final() {
    let (_d, s) = store().await;
    s.create_task(new_task(None)).await.unwrap();
    let now = Utc::now();
    let t = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    let cancelled = s.cancel(&t.id, now).await.unwrap().unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(
        s.heartbeat(&t.id, "w1", LEASE, now).await.unwrap(),
        LeaseState::Cancelled
    );
    let err = s
        .finish(
            &t.id,
            "w1",
            Finish::Completed(TaskResult {
                output: String::new(),
                confidence: 0.0,
                validation_passed: false,
            }),
            Usage::default(),
            now,
        )
        .await;
    assert!(matches!(err, Err(StoreError::LeaseLost(_))));
    assert_eq!(
        s.get_task(&t.id).await.unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn priority_then_age_decides_the_claim_order() {
    let (_d, s) = store().await;
    let low = new_task(None);
    s.create_task(low.clone()).await.unwrap();
    let mut urgent = new_task(None);
    urgent.spec.priority = octollm_core::Priority::Critical;
    s.create_task(urgent.clone()).await.unwrap();
    let now = Utc::now();
    assert_eq!(
        s.claim_next("w", LEASE, now).await.unwrap().unwrap().id,
        urgent.id
    );
    assert_eq!(
        s.claim_next("w", LEASE, now).await.unwrap().unwrap().id,
        low.id
    );
}

#[tokio::test]
async fn listing_pages_through_everything_once() {
    let (_d, s) = store().await;
    let base = Utc::now();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut t = new_task(None);
        t.created_at = base + TimeDelta::milliseconds(i / 2); // ties on purpose
        ids.push(t.id.clone());
        s.create_task(t).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list_tasks(ListFilter {
                status: None,
                limit: 3,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let queued = s
        .list_tasks(ListFilter {
            status: Some(TaskStatus::Completed),
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    assert!(queued.tasks.is_empty());
    assert!(matches!(
        s.list_tasks(ListFilter {
            status: None,
            limit: 3,
            cursor: Some("garbage".into())
        })
        .await,
        Err(StoreError::InvalidCursor)
    ));
}

#[tokio::test]
async fn events_are_stored_in_order_and_broadcast() {
    let (_d, s) = store().await;
    let mut live = s.subscribe();
    let t = new_task(None);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let now = Utc::now();
    s.claim_next("w", LEASE, now).await.unwrap();
    let events = s.events_since(&id, 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["status", "status"]
    );
    assert!(events[0].seq < events[1].seq);
    assert_eq!(live.recv().await.unwrap().data["status"], "queued");
    assert_eq!(live.recv().await.unwrap().data["status"], "processing");
    assert_eq!(s.events_since(&id, events[0].seq).await.unwrap().len(), 1);
}

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
    s.upsert("plans", "a", &[1.0, 0.0], serde_json::json!({"n": 1}))
        .await
        .unwrap();
    s.upsert("plans", "b", &[0.0, 1.0], serde_json::json!({"n": 2}))
        .await
        .unwrap();
    s.upsert("plans", "a", &[0.6, 0.8], serde_json::json!({"n": 3}))
        .await
        .unwrap();
    s.upsert("other", "c", &[0.0, 1.0], serde_json::json!({}))
        .await
        .unwrap();
    let hits = s.search("plans", &[0.0, 1.0], 10).await.unwrap();
    assert_eq!(hits.len(), 2, "upsert replaced, collections separate");
    assert_eq!(hits[0].id, "b");
    assert_eq!(hits[1].payload["n"], 3);
    assert!(s.delete("plans", "b").await.unwrap());
    assert!(!s.delete("plans", "b").await.unwrap());
    // Durable: a fresh handle on the same file sees the same vectors.
    let reopened = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    let hits = reopened.search("plans", &[0.0, 1.0], 10).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

#[tokio::test]
async fn pruning_removes_only_old_finished_tasks() {
    let (_d, s) = store().await;
    s.create_task(new_task(None)).await.unwrap();
    let queued = new_task(None);
    s.create_task(queued.clone()).await.unwrap();
    let now = Utc::now();
    let t = s.claim_next("w", LEASE, now).await.unwrap().unwrap();
    s.finish(
        &t.id,
        "w",
        Finish::Completed(TaskResult {
            output: "x".into(),
            confidence: 1.0,
            validation_passed: true,
        }),
        Usage::default(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        s.prune_finished(now + TimeDelta::days(31)).await.unwrap(),
        1
    );
    assert!(s.get_task(&t.id).await.unwrap().is_none());
    assert!(s.get_task(&queued.id).await.unwrap().is_some());
}
