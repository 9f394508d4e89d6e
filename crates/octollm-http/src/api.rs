//! The orchestrator's public API (SPEC §4) and probes (SPEC §3).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use octollm_arms::ArmInfo;
use octollm_core::{ArmKind, TaskId, TaskStatus, TaskSubmission};
use octollm_orchestrator::Orchestrator;
use octollm_store::ListFilter;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::observe;
use crate::views::{Accepted, TaskView};

#[derive(Clone)]
pub struct ApiState {
    pub orchestrator: Arc<Orchestrator>,
    pub started: Instant,
    pub version: &'static str,
}

pub fn router(state: ApiState, body_limit: usize) -> Router {
    let routes = Router::new()
        .route("/tasks", get(list_tasks).post(submit_task))
        .route("/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/tasks/{id}/events", get(task_events))
        .route("/capabilities", get(capabilities))
        .route("/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/ready", get(ready))
        .route("/health/ready", get(ready))
        .route("/metrics", get(observe::render));
    crate::common_layers(routes, body_limit).with_state(state)
}

fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    // A malformed id cannot name a task: 404 like any unknown id.
    TaskId::parse(raw).map_err(|_| {
        ApiError::NotFound(format!("task {}", raw.chars().take(40).collect::<String>()))
    })
}

async fn submit_task(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(mut submission): ApiJson<TaskSubmission>,
) -> Result<Response, ApiError> {
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
    let submitted = state.orchestrator.submit(submission).await?;
    let status = if submitted.created {
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
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse_id(&id)?;
    let (task, steps) = state
        .orchestrator
        .get(&id)
        .await?
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
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
        })
        .await?;
    let tasks: Vec<TaskView> = page.tasks.iter().map(|t| TaskView::of(t, None)).collect();
    Ok(Json(
        serde_json::json!({"tasks": tasks, "next_cursor": page.next_cursor}),
    ))
}

async fn cancel_task(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse_id(&id)?;
    let task = state
        .orchestrator
        .cancel(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id}")))?;
    Ok(Json(TaskView::of(&task, None)))
}

fn sse_event(event: &octollm_store::TaskEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.clone())
        .data(serde_json::json!({"task_id": event.task_id, "data": event.data, "at": event.created_at}).to_string())
}

fn is_final(event: &octollm_store::TaskEvent) -> bool {
    event.kind == "status"
        && matches!(
            event.data.get("status").and_then(|s| s.as_str()),
            Some("completed" | "failed" | "cancelled")
        )
}

/// Stored events after `Last-Event-ID`, then live ones, ending after the final status.
async fn task_events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    let store = state.orchestrator.store().clone();
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Subscribe before reading history so nothing falls between the two.
    let live = BroadcastStream::new(store.subscribe());
    let task = store
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id}")))?;
    let history = store.events_since(&id, after).await?;
    let mut last_seq = history.last().map(|e| e.seq).unwrap_or(after);
    let done = task.status.is_terminal() || history.iter().any(is_final);
    let replay = futures::stream::iter(history);
    let live_id = id.clone();
    let live = live
        .filter_map(move |item| {
            let keep = match item {
                Ok(e) if e.task_id == live_id && e.seq > last_seq => {
                    last_seq = e.seq;
                    Some(e)
                }
                // A slow reader missed events: they are in the store; end so the client reconnects
                // with Last-Event-ID and replays them.
                Err(_) => None,
                Ok(_) => None,
            };
            futures::future::ready(keep)
        })
        .boxed();
    let live = if done {
        futures::stream::empty().boxed()
    } else {
        live
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

async fn capabilities(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let executor_down = state.orchestrator.arms().executor.unavailable_reason();
    let arms: Vec<serde_json::Value> = ArmKind::ALL
        .iter()
        .map(|&arm| {
            let info = ArmInfo::of(arm);
            let status = if arm == ArmKind::Executor && executor_down.is_some() {
                "unavailable"
            } else {
                "healthy"
            };
            serde_json::json!({
                "arm_id": info.arm_id,
                "name": info.name,
                "description": info.description,
                "capabilities": info.capabilities,
                "cost_tier": info.cost_tier,
                "endpoint": "in-process",
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

async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let database = state.orchestrator.store().ping().await.is_ok();
    let executor = state.orchestrator.arms().executor.unavailable_reason();
    let status = match (database, executor.is_none()) {
        (true, true) => "healthy",
        (true, false) => "degraded",
        (false, _) => "unhealthy",
    };
    Json(serde_json::json!({
        "status": status,
        "version": state.version,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "components": {
            "database": if database { "healthy" } else { "unhealthy" },
            "executor": match &executor { None => "healthy".to_owned(), Some(reason) => format!("unavailable: {reason}") },
        },
    }))
}

async fn ready(State(state): State<ApiState>) -> Response {
    match state.orchestrator.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::Unavailable(format!("database: {e}")).into_response(),
    }
}
