//! The task store's contract: queue semantics, lease fencing, idempotency, events,
//! pagination and pruning, one function per property, run against every backend by
//! `task_store_contract!`.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use octollm_core::budget::{Budget, Usage};
use octollm_core::{ArmKind, Provenance, TaskId, TaskStatus, TaskSubmission};
use octollm_store::{
    ApiKeyRecord, ApiKeyStore, ArmRegistry, AuditEntry, AuditFilter, AuditKind, AuditLog,
    Registration,
};
use octollm_store::{
    CreateOutcome, Finish, LeaseState, ListFilter, NewTask, Progress, StepRecord, StepStatus,
    StoreError, TaskEventKind, TaskResult, TaskStore, UnitDone, VectorStore,
};

pub fn new_task(key: Option<&str>) -> NewTask {
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
        trace: None,
        owner: None,
    }
}

/// The submitting request's trace context comes back with the task, on every read.
pub async fn the_trace_context_is_kept(s: &dyn TaskStore) {
    let trace = octollm_core::TraceContext::root();
    let CreateOutcome::Created(created) = s
        .create_task(NewTask {
            trace: Some(trace),
            ..new_task(None)
        })
        .await
        .unwrap()
    else {
        panic!("expected a new task");
    };
    assert_eq!(created.trace, Some(trace));
    let read = s.get_task(&created.id).await.unwrap().unwrap();
    assert_eq!(read.trace, Some(trace));
    let claimed = s
        .claim_next("w1", LEASE, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.trace, Some(trace));
    let CreateOutcome::Created(untraced) = s.create_task(new_task(None)).await.unwrap() else {
        panic!("expected a new task");
    };
    assert_eq!(untraced.trace, None);
}

pub fn step(key: &str) -> StepRecord {
    StepRecord {
        unit: key.parse().unwrap(),
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

pub const LEASE: Duration = Duration::from_secs(30);

fn done<'a>(record: &'a StepRecord, arms: &'a [ArmKind], progress: &'a Progress) -> UnitDone<'a> {
    UnitDone {
        record,
        usage: Usage::default(),
        arms_used: arms,
        progress,
        screening: &[],
    }
}

fn completed() -> Finish {
    Finish::Completed(TaskResult {
        output: "done".into(),
        confidence: 0.9,
        validation_passed: true,
    })
}

/// The store applies the task state machine: a status changes only along an edge
/// `TaskStatus::can_become` allows, whatever the caller asks.
pub async fn status_changes_follow_the_state_machine(s: &dyn TaskStore) {
    let now = Utc::now();
    let CreateOutcome::Created(t) = s.create_task(new_task(None)).await.unwrap() else {
        panic!("expected a new task")
    };
    // queued → completed is not an edge: no worker holds it, nothing changes.
    assert!(matches!(
        s.finish(&t.id, "w1", completed(), Usage::default(), now)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(
        s.get_task(&t.id).await.unwrap().unwrap().status,
        TaskStatus::Queued
    );
    let claimed = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    assert_eq!(claimed.status, TaskStatus::Processing);
    s.finish(&t.id, "w1", completed(), Usage::default(), now)
        .await
        .unwrap();
    // A finished task stays finished: no second finish, no cancel, no claim, no writes.
    assert!(matches!(
        s.finish(&t.id, "w1", completed(), Usage::default(), now)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let after_cancel = s.cancel(&t.id, now).await.unwrap().unwrap();
    assert_eq!(after_cancel.status, TaskStatus::Completed);
    assert!(
        s.claim_next("w2", LEASE, now + TimeDelta::hours(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.set_phase(&t.id, "w1", octollm_core::Phase::Planning, now)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(
        s.heartbeat(&t.id, "w1", LEASE, now).await.unwrap(),
        LeaseState::Lost
    );
    // Every status a stored task ever had is a path the state machine allows.
    let statuses: Vec<TaskStatus> = s
        .events_since(&t.id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == TaskEventKind::Status)
        .map(|e| e.data["status"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            TaskStatus::Queued,
            TaskStatus::Processing,
            TaskStatus::Completed
        ]
    );
    assert!(statuses.windows(2).all(|w| w[0].can_become(w[1])));
}

/// A unit's start is recorded (the task's current unit, a `step_started` event) while the
/// lease is held; a plan unit's save publishes the plan's shape, stored once in the unit.
pub async fn units_start_and_plans_are_kept_in_their_unit(s: &dyn TaskStore) {
    let now = Utc::now();
    s.create_task(new_task(None)).await.unwrap();
    let t = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    let plan_unit: octollm_core::UnitKey = "plan".parse().unwrap();
    s.start_unit(&t.id, "w1", &plan_unit, ArmKind::Planner, 1, now)
        .await
        .unwrap();
    let running = s.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(running.progress.current_unit, Some(plan_unit.clone()));
    assert!(matches!(
        s.start_unit(&t.id, "w2", &plan_unit, ArmKind::Planner, 1, now)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let plan = serde_json::json!({"steps": [{"step_id": "s1", "description": "Write it",
        "arm_id": "coder", "dependencies": [], "input_mapping": {}}]});
    let record = StepRecord {
        unit: plan_unit,
        arm_id: ArmKind::Planner,
        output: plan.clone(),
        ..step("s1")
    };
    let progress = Progress {
        current_unit: Some(record.unit.clone()),
        completed_steps: 1,
        total_steps: 3,
    };
    s.save_unit(
        &t.id,
        "w1",
        done(&record, &[ArmKind::Planner], &progress),
        now,
    )
    .await
    .unwrap();
    let units = s.units(&t.id).await.unwrap();
    assert_eq!(units[0].output, plan);
    let kinds: Vec<TaskEventKind> = s
        .events_since(&t.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            TaskEventKind::Status,
            TaskEventKind::Status,
            TaskEventKind::StepStarted,
            TaskEventKind::StepCompleted,
            TaskEventKind::Plan
        ]
    );
    let task = s.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(
        (task.progress.completed_steps, task.progress.total_steps),
        (1, 3)
    );
}

pub async fn idempotency_key_returns_the_first_task(s: &dyn TaskStore) {
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

pub async fn a_lease_fences_out_the_previous_owner(s: &dyn TaskStore) {
    s.create_task(new_task(None)).await.unwrap();
    let now = Utc::now();
    let task = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Processing);
    assert!(
        s.claim_next("w2", LEASE, now).await.unwrap().is_none(),
        "leased task claimed twice"
    );
    let progress = Progress::default();
    s.save_unit(
        &task.id,
        "w1",
        done(&step("s1"), &[ArmKind::Coder], &progress),
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
        .save_unit(&task.id, "w1", done(&step("s2"), &[], &progress), later)
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
    let steps = s.units(&task.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].unit.to_string(), "s1");
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

pub async fn released_tasks_are_claimable_at_once(s: &dyn TaskStore) {
    s.create_task(new_task(None)).await.unwrap();
    let now = Utc::now();
    let t = s.claim_next("w1", LEASE, now).await.unwrap().unwrap();
    s.release(&t.id, "w1").await.unwrap();
    assert_eq!(
        s.claim_next("w2", LEASE, now).await.unwrap().unwrap().id,
        t.id
    );
}

pub async fn cancel_stops_the_owner_and_is_final(s: &dyn TaskStore) {
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
        .finish(&t.id, "w1", completed(), Usage::default(), now)
        .await;
    assert!(matches!(err, Err(StoreError::LeaseLost(_))));
    assert_eq!(
        s.get_task(&t.id).await.unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
}

pub async fn priority_then_age_decides_the_claim_order(s: &dyn TaskStore) {
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

pub async fn listing_pages_through_everything_once(s: &dyn TaskStore) {
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
                owner: None,
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
            owner: None,
        })
        .await
        .unwrap();
    assert!(queued.tasks.is_empty());
    assert!(matches!(
        s.list_tasks(ListFilter {
            status: None,
            limit: 3,
            cursor: Some("garbage".into()),
            owner: None,
        })
        .await,
        Err(StoreError::InvalidCursor)
    ));
}

pub async fn events_are_stored_in_order_and_broadcast(s: &dyn TaskStore) {
    let mut live = s.subscribe();
    let t = new_task(None);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    // Below the millisecond, which the store does not keep.
    let now = chrono::Timelike::with_nanosecond(&Utc::now(), 123_456_789).unwrap();
    s.claim_next("w", LEASE, now).await.unwrap();
    let events = s.events_since(&id, 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["status", "status"]
    );
    assert!(events[0].seq < events[1].seq);
    // What subscribers hear is what a later reader gets back, to the millisecond.
    for stored in &events {
        let heard = live.recv().await.unwrap();
        assert_eq!(
            (heard.seq, heard.kind, &heard.data, heard.created_at),
            (stored.seq, stored.kind, &stored.data, stored.created_at)
        );
    }
    assert_eq!(events[0].data["status"], "queued");
    assert_eq!(events[1].data["status"], "processing");
    assert_eq!(s.events_since(&id, events[0].seq).await.unwrap().len(), 1);
}

pub async fn pruning_removes_only_old_finished_tasks(s: &dyn TaskStore) {
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

/// The vector index's contract, on collections named `{prefix}-…` (a shared server keeps
/// other runs' collections): upsert replaces, collections are separate, nearest first,
/// payloads round-trip, delete says whether the point was there, empty collections answer.
pub async fn vector_store_contract(s: &dyn VectorStore, prefix: &str) {
    let plans = format!("{prefix}-plans");
    let other = format!("{prefix}-other");
    assert!(s.search(&plans, &[1.0, 0.0], 5).await.unwrap().is_empty());
    assert!(!s.delete(&plans, "a").await.unwrap());
    s.upsert(&plans, "a", &[1.0, 0.0], serde_json::json!({"n": 1}))
        .await
        .unwrap();
    s.upsert(&plans, "b", &[0.0, 1.0], serde_json::json!({"n": 2}))
        .await
        .unwrap();
    s.upsert(
        &plans,
        "a",
        &[0.6, 0.8],
        serde_json::json!({"n": 3, "tags": ["x"]}),
    )
    .await
    .unwrap();
    s.upsert(&other, "c", &[0.0, 1.0], serde_json::json!({}))
        .await
        .unwrap();
    let hits = s.search(&plans, &[0.0, 1.0], 10).await.unwrap();
    assert_eq!(
        hits.len(),
        2,
        "upsert replaced, collections separate: {hits:?}"
    );
    assert_eq!(hits[0].id, "b");
    assert!(hits[0].score > 0.99, "{hits:?}");
    assert_eq!(hits[1].id, "a");
    assert_eq!(hits[1].payload, serde_json::json!({"n": 3, "tags": ["x"]}));
    assert!((hits[1].score - 0.8).abs() < 1e-3, "cosine: {hits:?}");
    assert_eq!(s.search(&plans, &[0.0, 1.0], 1).await.unwrap().len(), 1);
    assert!(s.delete(&plans, "b").await.unwrap());
    assert!(!s.delete(&plans, "b").await.unwrap());
    assert_eq!(
        s.search(&plans, &[0.0, 1.0], 10)
            .await
            .unwrap()
            .iter()
            .map(|h| h.id.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
}

/// Registrations: renewed in place, lapsed ones gone (and deleted), deregistration at once.
pub async fn arm_registry_keeps_live_registrations(s: &dyn ArmRegistry) {
    let t0 = Utc::now();
    let ttl = Duration::from_secs(30);
    s.register(ArmKind::Coder, "http://10.0.0.2:8102", ttl, t0)
        .await
        .unwrap();
    s.register(ArmKind::Coder, "http://10.0.0.1:8102", ttl, t0)
        .await
        .unwrap();
    s.register(ArmKind::Judge, "http://10.0.0.3:8103", ttl, t0)
        .await
        .unwrap();
    let live = s.registered(t0).await.unwrap();
    let urls: Vec<(ArmKind, &str)> = live.iter().map(|r| (r.arm, r.url.as_str())).collect();
    assert_eq!(
        urls,
        [
            (ArmKind::Coder, "http://10.0.0.1:8102"),
            (ArmKind::Coder, "http://10.0.0.2:8102"),
            (ArmKind::Judge, "http://10.0.0.3:8103"),
        ]
    );
    // The first coder renews 20 s later; at 40 s only it is left.
    let t20 = t0 + TimeDelta::seconds(20);
    s.register(ArmKind::Coder, "http://10.0.0.1:8102", ttl, t20)
        .await
        .unwrap();
    let t40 = t0 + TimeDelta::seconds(40);
    let live = s.registered(t40).await.unwrap();
    assert_eq!(
        live,
        [Registration {
            arm: ArmKind::Coder,
            url: "http://10.0.0.1:8102".into(),
            expires_at: live[0].expires_at,
        }]
    );
    assert_eq!(
        live[0].expires_at.timestamp_millis(),
        (t20 + TimeDelta::seconds(30)).timestamp_millis()
    );
    // Lapsed registrations were deleted, not just hidden.
    assert!(s.registered(t0).await.unwrap().len() == 1);
    // Deregistration takes effect at once; a second one finds nothing.
    assert!(
        s.deregister(ArmKind::Coder, "http://10.0.0.1:8102")
            .await
            .unwrap()
    );
    assert!(
        !s.deregister(ArmKind::Coder, "http://10.0.0.1:8102")
            .await
            .unwrap()
    );
    assert!(s.registered(t20).await.unwrap().is_empty());
}

/// The knowledge base: keyword search (any of the query's words, the best match first,
/// query syntax treated as text), vector search (nearest first, cosine), counts.
pub async fn knowledge_store_contract(s: &dyn octollm_store::KnowledgeStore) {
    use octollm_store::NewChunk;
    assert_eq!(s.document_count().await.unwrap(), 0);
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
    s.add_document(
        "b.md",
        serde_json::json!({}),
        vec![NewChunk {
            content: "Pods restart when the liveness probe of a Kubernetes node fails.".into(),
            embedding: vec![0.0, 0.7, 0.7],
        }],
    )
    .await
    .unwrap();
    let hits = s.keyword_search("fibonacci sequence?", 5).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].content.contains("Fibonacci"));
    assert_eq!(hits[0].source, "a.md");
    assert_eq!(hits[0].metadata, serde_json::json!({"lang": "en"}));
    assert!(hits[0].score > 0.0);
    // Any word is enough; the chunk with more of the words ranks first.
    let hits = s
        .keyword_search("liveness probe zebra kubernetes", 5)
        .await
        .unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].source, "b.md");
    assert!(hits[0].score > hits[1].score);
    // Query syntax of the engine is just text.
    assert!(s.keyword_search("\"*:(", 5).await.unwrap().is_empty());
    assert!(
        s.keyword_search("x & !y | z:*", 5)
            .await
            .unwrap()
            .is_empty()
    );
    let hits = s.vector_search(&[0.1, 0.9, 0.0], 2).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits[0].content.contains("Kubernetes schedules"));
    assert!(hits[0].score > 0.9);
    assert!(hits[0].score >= hits[1].score);
    assert_eq!(hits[1].source, "b.md");
    assert_eq!(s.document_count().await.unwrap(), 2);
}

pub async fn api_keys_are_stored_hashed_and_revoked_once(s: &dyn ApiKeyStore) {
    let made = octollm_core::auth::NewApiKey::generate();
    let created = Utc::now() - TimeDelta::seconds(5);
    let record = ApiKeyRecord {
        id: made.id.clone(),
        name: "ci".into(),
        key_hash: made.hash.clone(),
        scopes: "tasks:submit,tasks:read".parse().unwrap(),
        created_at: created,
        revoked_at: None,
    };
    s.create_key(&record).await.unwrap();
    // The same id twice is refused, not overwritten.
    assert!(s.create_key(&record).await.is_err());
    let found = s.find_key(&made.id).await.unwrap().unwrap();
    assert_eq!(found.key_hash, made.hash);
    assert_eq!(found.scopes, record.scopes);
    assert_eq!(
        found.created_at.timestamp_millis(),
        created.timestamp_millis()
    );
    assert!(found.revoked_at.is_none());
    assert!(octollm_core::auth::key_matches(
        made.key.expose(),
        &found.key_hash
    ));
    assert!(s.find_key("nosuchkey000").await.unwrap().is_none());

    let now = Utc::now();
    assert!(s.revoke_key(&made.id, now).await.unwrap());
    assert!(!s.revoke_key(&made.id, now).await.unwrap(), "revoked twice");
    assert!(!s.revoke_key("nosuchkey000", now).await.unwrap());
    let listed = s.list_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].revoked_at.map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
}

pub async fn the_audit_log_keeps_entries_newest_first_by_kind(s: &dyn AuditLog) {
    let at = Utc::now();
    for (n, kind) in [
        AuditKind::AuthFailure,
        AuditKind::KeyCreated,
        AuditKind::AuthFailure,
        AuditKind::InputBlocked,
    ]
    .into_iter()
    .enumerate()
    {
        s.record(&AuditEntry {
            at,
            kind,
            request_id: Some(format!("req_{n}")),
            key_id: (n % 2 == 1).then(|| "aaaaaaaaaaaa".to_owned()),
            detail: serde_json::json!({"n": n}),
        })
        .await
        .unwrap();
    }
    let all = s
        .audit_entries(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let order: Vec<_> = all
        .iter()
        .map(|e| e.detail["n"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [3, 2, 1, 0]);
    assert_eq!(all[0].kind, AuditKind::InputBlocked);
    assert_eq!(all[2].key_id.as_deref(), Some("aaaaaaaaaaaa"));
    assert_eq!(all[3].request_id.as_deref(), Some("req_0"));
    assert_eq!(all[3].at.timestamp_millis(), at.timestamp_millis());
    let failures = s
        .audit_entries(&AuditFilter {
            kind: Some(AuditKind::AuthFailure),
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(failures.len(), 2);
    let older = s
        .audit_entries(&AuditFilter {
            kind: None,
            before: Some(all[1].seq),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].seq, all[2].seq);
}

pub async fn tasks_keep_their_owner_and_list_by_it(s: &dyn TaskStore) {
    let mut ids = Vec::new();
    for owner in [
        Some("aaaaaaaaaaaa"),
        Some("bbbbbbbbbbbb"),
        None,
        Some("aaaaaaaaaaaa"),
    ] {
        let CreateOutcome::Created(task) = s
            .create_task(NewTask {
                owner: owner.map(str::to_owned),
                ..new_task(None)
            })
            .await
            .unwrap()
        else {
            panic!("expected a new task");
        };
        assert_eq!(task.owner.as_deref(), owner);
        ids.push(task.id);
    }
    let mine = s
        .list_tasks(ListFilter {
            limit: 10,
            owner: Some("aaaaaaaaaaaa".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut mine: Vec<_> = mine.tasks.into_iter().map(|t| t.id).collect();
    mine.sort();
    let mut expected = vec![ids[0].clone(), ids[3].clone()];
    expected.sort();
    assert_eq!(mine, expected);
    let all = s
        .list_tasks(ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.tasks.len(), 4);
    let got = s.get_task(&ids[1]).await.unwrap().unwrap();
    assert_eq!(got.owner.as_deref(), Some("bbbbbbbbbbbb"));

    // One idempotency key used by two owners names two tasks; each owner gets its own back.
    let submit = |owner: &str| NewTask {
        owner: Some(owner.to_owned()),
        ..new_task(Some("shared-idempotency-key"))
    };
    let CreateOutcome::Created(a) = s.create_task(submit("aaaaaaaaaaaa")).await.unwrap() else {
        panic!("expected a new task");
    };
    let CreateOutcome::Created(b) = s.create_task(submit("bbbbbbbbbbbb")).await.unwrap() else {
        panic!("another owner's idempotency key returned its task");
    };
    assert_ne!(a.id, b.id);
    let CreateOutcome::Existing(again) = s.create_task(submit("aaaaaaaaaaaa")).await.unwrap()
    else {
        panic!("expected the first task again");
    };
    assert_eq!(again.id, a.id);
}

/// One `#[tokio::test]` per contract property, each on a fresh store made by `$make`
/// (an async expression giving `(guard, store)`; the guard lives until the test ends).
#[allow(unused_macros, reason = "not every test binary runs the contract")]
macro_rules! task_store_contract {
    ($make:expr) => {
        #[tokio::test]
        async fn idempotency_key_returns_the_first_task() {
            let (_guard, store) = $make.await;
            crate::common::contract::idempotency_key_returns_the_first_task(&store).await;
        }
        #[tokio::test]
        async fn a_lease_fences_out_the_previous_owner() {
            let (_guard, store) = $make.await;
            crate::common::contract::a_lease_fences_out_the_previous_owner(&store).await;
        }
        #[tokio::test]
        async fn released_tasks_are_claimable_at_once() {
            let (_guard, store) = $make.await;
            crate::common::contract::released_tasks_are_claimable_at_once(&store).await;
        }
        #[tokio::test]
        async fn cancel_stops_the_owner_and_is_final() {
            let (_guard, store) = $make.await;
            crate::common::contract::cancel_stops_the_owner_and_is_final(&store).await;
        }
        #[tokio::test]
        async fn priority_then_age_decides_the_claim_order() {
            let (_guard, store) = $make.await;
            crate::common::contract::priority_then_age_decides_the_claim_order(&store).await;
        }
        #[tokio::test]
        async fn listing_pages_through_everything_once() {
            let (_guard, store) = $make.await;
            crate::common::contract::listing_pages_through_everything_once(&store).await;
        }
        #[tokio::test]
        async fn events_are_stored_in_order_and_broadcast() {
            let (_guard, store) = $make.await;
            crate::common::contract::events_are_stored_in_order_and_broadcast(&store).await;
        }
        #[tokio::test]
        async fn pruning_removes_only_old_finished_tasks() {
            let (_guard, store) = $make.await;
            crate::common::contract::pruning_removes_only_old_finished_tasks(&store).await;
        }
        #[tokio::test]
        async fn the_trace_context_is_kept() {
            let (_guard, store) = $make.await;
            crate::common::contract::the_trace_context_is_kept(&store).await;
        }
        #[tokio::test]
        async fn api_keys_are_stored_hashed_and_revoked_once() {
            let (_guard, store) = $make.await;
            crate::common::contract::api_keys_are_stored_hashed_and_revoked_once(&store).await;
        }
        #[tokio::test]
        async fn the_audit_log_keeps_entries_newest_first_by_kind() {
            let (_guard, store) = $make.await;
            crate::common::contract::the_audit_log_keeps_entries_newest_first_by_kind(&store).await;
        }
        #[tokio::test]
        async fn tasks_keep_their_owner_and_list_by_it() {
            let (_guard, store) = $make.await;
            crate::common::contract::tasks_keep_their_owner_and_list_by_it(&store).await;
        }
        #[tokio::test]
        async fn status_changes_follow_the_state_machine() {
            let (_guard, store) = $make.await;
            crate::common::contract::status_changes_follow_the_state_machine(&store).await;
        }
        #[tokio::test]
        async fn units_start_and_plans_are_kept_in_their_unit() {
            let (_guard, store) = $make.await;
            crate::common::contract::units_start_and_plans_are_kept_in_their_unit(&store).await;
        }
        #[tokio::test]
        async fn arm_registry_keeps_live_registrations() {
            let (_guard, store) = $make.await;
            crate::common::contract::arm_registry_keeps_live_registrations(&store).await;
        }
    };
}
