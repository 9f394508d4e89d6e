//! The orchestrator's public API (SPEC §4) and probes (SPEC §3).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use octollm_arms::ArmInfo;
use octollm_core::{ArmKind, Principal, Scope, TaskId, TaskStatus, TaskSubmission};
use octollm_orchestrator::Orchestrator;
use octollm_store::{ListFilter, TaskEvent, TaskStore};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::observe;
use crate::views::{Accepted, TaskView};

#[derive(Clone)]
pub struct ApiState {
    pub orchestrator: Arc<Orchestrator>,
    pub started: Instant,
    pub version: &'static str,
    /// The arms this orchestrator calls over HTTP (for `/capabilities`).
    pub remote_arms: Vec<Arc<crate::arm_client::ArmClient>>,
    /// The arm registry, when enabled.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// API keys: who each request acts as.
    pub auth: Auth,
    /// The audit log `GET /audit` reads.
    pub audit: Arc<dyn octollm_store::AuditLog>,
}

pub fn router(state: ApiState, body_limit: usize) -> Router {
    let routes = Router::new()
        .route("/tasks", get(list_tasks).post(submit_task))
        .route("/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/tasks/{id}/events", get(task_events))
        .route("/capabilities", get(capabilities))
        .route("/audit", get(audit_entries))
        .route("/auth/whoami", get(whoami))
        .route(
            "/registry",
            get(crate::registry::list)
                .post(crate::registry::register)
                .delete(crate::registry::deregister),
        )
        .route("/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/ready", get(ready))
        .route("/health/ready", get(ready))
        .route("/metrics", get(observe::render))
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            crate::auth::middleware,
        ));
    crate::common_layers(routes, body_limit).with_state(state)
}

fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    // A malformed id cannot name a task: 404 like any unknown id.
    TaskId::parse(raw).map_err(|_| {
        ApiError::NotFound(format!("task {}", raw.chars().take(40).collect::<String>()))
    })
}

/// The task, if `principal` may see it: another key's task is as unknown as a missing one
/// (404, so ids cannot be probed).
async fn visible_task(
    state: &ApiState,
    principal: &Principal,
    id: &TaskId,
) -> Result<octollm_store::TaskRecord, ApiError> {
    state
        .orchestrator
        .store()
        .get_task(id)
        .await?
        .filter(|task| principal.sees(task.owner.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("task {id}")))
}

async fn submit_task(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(mut submission): ApiJson<TaskSubmission>,
) -> Result<Response, ApiError> {
    state.auth.require(&principal, Scope::TasksSubmit).await?;
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .map_err(|_| ApiError::validation("Idempotency-Key must be ASCII"))?;
        match &submission.idempotency_key {
            Some(body_key) if body_key != key => {
                return Err(ApiError::validation(
                    "Idempotency-Key header and idempotency_key field differ",
                ));
            }
            _ => submission.idempotency_key = Some(key.to_owned()),
        }
    }
    let submitted = match state
        .orchestrator
        .submit_traced(
            submission,
            crate::request_id::trace(),
            principal.owner().map(str::to_owned),
        )
        .await
    {
        Ok(submitted) => submitted,
        Err(octollm_orchestrator::SubmitError::Blocked { field, matches }) => {
            // The audit entry names the field and the detector types, never the text.
            let types: Vec<&str> = matches.iter().map(|m| m.label).collect();
            state
                .auth
                .record(
                    octollm_store::AuditKind::InputBlocked,
                    principal.key_id.as_deref(),
                    serde_json::json!({"field": field, "types": types}),
                )
                .await;
            return Err(octollm_orchestrator::SubmitError::Blocked { field, matches }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let status = if submitted.created {
        tracing::info!(task_id = %submitted.task.id, "task accepted");
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(Accepted::of(&submitted.task))).into_response();
    if let Ok(location) = http::HeaderValue::from_str(&format!("/tasks/{}", submitted.task.id)) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    Ok(response)
}

async fn get_task(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    state.auth.require(&principal, Scope::TasksRead).await?;
    let id = parse_id(&id)?;
    let (task, steps) = state
        .orchestrator
        .get(&id)
        .await?
        .filter(|(task, _)| principal.sees(task.owner.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("task {id}")))?;
    Ok(Json(TaskView::of(&task, Some(&steps))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_tasks(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.auth.require(&principal, Scope::TasksRead).await?;
    let Query(query) = query.map_err(|e| ApiError::validation(e.body_text()))?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<TaskStatus>)
        .transpose()
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation("limit must be 1 to 100"));
    }
    let page = state
        .orchestrator
        .list(ListFilter {
            status,
            limit,
            cursor: query.cursor,
            // Admin lists every task; any other key its own.
            owner: if principal.allows(Scope::Admin) {
                None
            } else {
                principal.owner().map(str::to_owned)
            },
        })
        .await?;
    let tasks: Vec<TaskView> = page.tasks.iter().map(|t| TaskView::of(t, None)).collect();
    Ok(Json(
        serde_json::json!({"tasks": tasks, "next_cursor": page.next_cursor}),
    ))
}

async fn cancel_task(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    state.auth.require(&principal, Scope::TasksCancel).await?;
    let id = parse_id(&id)?;
    visible_task(&state, &principal, &id).await?;
    let task = state
        .orchestrator
        .cancel(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id}")))?;
    Ok(Json(TaskView::of(&task, None)))
}

fn sse_event(event: &TaskEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.clone())
        .data(serde_json::json!({"task_id": event.task_id, "data": event.data, "at": event.created_at}).to_string())
}

fn is_final(event: &TaskEvent) -> bool {
    event.kind == "status"
        && matches!(
            event.data.get("status").and_then(|s| s.as_str()),
            Some("completed" | "failed" | "cancelled")
        )
}

/// How often a stream reads the table while the live feed cannot be trusted (Redis down).
const EVENT_POLL: Duration = Duration::from_secs(1);

/// The task's events after `last_seq` as they happen: from the live feed, and from the table
/// when the feed missed some (a slow reader) or cannot carry them (the Redis relay between
/// replicas is down), so a stream never stalls on a task another replica runs.
fn live_events(
    store: Arc<dyn TaskStore>,
    id: TaskId,
    live: broadcast::Receiver<TaskEvent>,
    last_seq: i64,
) -> impl Stream<Item = TaskEvent> {
    struct Feed {
        store: Arc<dyn TaskStore>,
        id: TaskId,
        live: broadcast::Receiver<TaskEvent>,
        tick: tokio::time::Interval,
        last_seq: i64,
        pending: std::collections::VecDeque<TaskEvent>,
    }
    impl Feed {
        /// Queues what the table holds beyond `last_seq`; false when the store fails.
        async fn catch_up(&mut self) -> bool {
            match self.store.events_since(&self.id, self.last_seq).await {
                Ok(events) => {
                    self.pending.extend(events);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, task_id = %self.id, "event stream cannot read the table");
                    false
                }
            }
        }
    }
    let mut tick = tokio::time::interval(EVENT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        store,
        id,
        live,
        tick,
        last_seq,
        pending: Default::default(),
    };
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.pending.pop_front() {
                if event.seq > feed.last_seq {
                    feed.last_seq = event.seq;
                    return Some((event, feed));
                }
                continue;
            }
            tokio::select! {
                received = feed.live.recv() => match received {
                    Ok(e) if e.task_id == feed.id => feed.pending.push_back(e),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // The missed events are in the table.
                        if !feed.catch_up().await {
                            return None;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = feed.tick.tick() => {
                    if feed.store.shared_events_connected() == Some(false) {
                        feed.catch_up().await;
                    }
                }
            }
        }
    })
}

/// Stored events after `Last-Event-ID`, then live ones, ending after the final status.
async fn task_events(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state.auth.require(&principal, Scope::TasksRead).await?;
    let id = parse_id(&id)?;
    let store = state.orchestrator.store().clone();
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Subscribe before reading history so nothing falls between the two.
    let live = store.subscribe();
    let task = visible_task(&state, &principal, &id).await?;
    let history = store.events_since(&id, after).await?;
    let last_seq = history.last().map(|e| e.seq).unwrap_or(after);
    let done = task.status.is_terminal() || history.iter().any(is_final);
    let replay = futures::stream::iter(history);
    let live = if done {
        futures::stream::empty().boxed()
    } else {
        live_events(store, id, live, last_seq).boxed()
    };
    // End right after the final status: a sentinel follows it, so the stream closes without
    // waiting for another event that will never come.
    let stream = replay
        .chain(live)
        .flat_map(|e| {
            let last = is_final(&e);
            futures::stream::iter([Some(e)].into_iter().chain(last.then_some(None)))
        })
        .take_while(|e| futures::future::ready(e.is_some()))
        .filter_map(futures::future::ready);
    Ok(Sse::new(stream.map(|e| Ok(sse_event(&e))))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Who the request acts as: the key id (none without a key) and its scopes. The reflex layer
/// asks this to authorise its own admin routes.
async fn whoami(Extension(principal): Extension<Principal>) -> Json<serde_json::Value> {
    let scopes: Vec<&str> = principal.scopes.iter().map(Scope::as_str).collect();
    Json(serde_json::json!({"key_id": principal.key_id, "scopes": scopes}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    kind: Option<String>,
    limit: Option<u32>,
    before: Option<i64>,
}

/// The audit log, newest first, for admin keys; `before` pages back from an entry's `seq`.
async fn audit_entries(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.auth.require(&principal, Scope::Admin).await?;
    let Query(query) = query.map_err(|e| ApiError::validation(e.body_text()))?;
    let kind = query
        .kind
        .as_deref()
        .map(str::parse::<octollm_store::AuditKind>)
        .transpose()
        .map_err(ApiError::validation)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be 1 to 1000"));
    }
    let entries = state
        .audit
        .audit_entries(&octollm_store::AuditFilter {
            kind,
            before: query.before,
            limit,
        })
        .await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(
        serde_json::json!({"entries": entries, "next_before": next_before}),
    ))
}

async fn capabilities(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let executor_down = state.orchestrator.arms().executor.unavailable_reason();
    let arms: Vec<serde_json::Value> = ArmKind::ALL
        .iter()
        .map(|&arm| {
            let info = ArmInfo::of(arm);
            let remote = state.remote_arms.iter().find(|c| c.arm() == arm);
            let (endpoint, status) = match remote {
                None => (
                    serde_json::Value::from("in-process"),
                    if arm == ArmKind::Executor && executor_down.is_some() {
                        "unavailable"
                    } else {
                        "healthy"
                    },
                ),
                Some(client) => {
                    let instances = client.breakers();
                    let closed = instances
                        .iter()
                        .filter(|(_, b)| *b == crate::arm_client::BreakerState::Closed)
                        .count();
                    let status = if closed == instances.len() && closed > 0 {
                        "healthy"
                    } else if closed > 0 {
                        "degraded"
                    } else {
                        "unavailable"
                    };
                    let urls: Vec<String> = instances.into_iter().map(|(u, _)| u).collect();
                    (serde_json::Value::from(urls), status)
                }
            };
            serde_json::json!({
                "arm_id": info.arm_id,
                "name": info.name,
                "description": info.description,
                "capabilities": info.capabilities,
                "cost_tier": info.cost_tier,
                "endpoint": endpoint,
                "status": status,
            })
        })
        .collect();
    Json(serde_json::json!({"arms": arms}))
}

async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "alive"}))
}

/// `/health`: the database is essential (without it nothing runs: unhealthy); a missing
/// sandbox or a Redis outage only degrade the service (tasks still run; the events of tasks
/// that other replicas run reach this replica's streams late, from the table).
async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let store = state.orchestrator.store();
    let database = store.ping().await.is_ok();
    let executor = state.orchestrator.arms().executor.unavailable_reason();
    let redis = store.shared_events_connected();
    let degraded = executor.is_some() || redis == Some(false);
    let status = match (database, degraded) {
        (true, false) => "healthy",
        (true, true) => "degraded",
        (false, _) => "unhealthy",
    };
    let mut components = serde_json::json!({
        "database": if database { "healthy" } else { "unhealthy" },
        "executor": match &executor { None => "healthy".to_owned(), Some(reason) => format!("unavailable: {reason}") },
    });
    if let Some(connected) = redis {
        components["redis"] = serde_json::Value::from(if connected {
            "healthy"
        } else {
            "unavailable: live events of tasks run by other replicas are delayed"
        });
    }
    Json(serde_json::json!({
        "status": status,
        "version": state.version,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "components": components,
    }))
}

async fn ready(State(state): State<ApiState>) -> Response {
    match state.orchestrator.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::DependencyDown {
            dependency: "database",
            cause: e.to_string(),
        }
        .into_response(),
    }
}
