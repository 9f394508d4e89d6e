//! The orchestrator's public API (SPEC §4) and probes (SPEC §3). Handlers extract and
//! delegate to the orchestrator; what each route needs is in [`ROUTES`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use octollm_arms::{ArmInfo, ArmStatus};
use octollm_core::{ArmKind, Principal, Scope, TaskId, TaskStatus, TaskSubmission};
use octollm_orchestrator::{Orchestrator, Origin};
use octollm_store::TaskEvent;
use serde::{Deserialize, Serialize};

use crate::auth::{Access, Auth, Gate, Route};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::observe;
use crate::openapi::{Document, Operation};
use crate::views::{Accepted, TaskList, TaskView};

/// Every route of the orchestrator's API, what it needs, and its OpenAPI entry.
pub const ROUTES: &[Route] = &[
    Route::new(
        Method::POST,
        "/tasks",
        Access::Scope(Scope::TasksSubmit),
        doc_submit,
    ),
    Route::new(
        Method::GET,
        "/tasks",
        Access::Scope(Scope::TasksRead),
        doc_list,
    ),
    Route::new(
        Method::GET,
        "/tasks/{id}",
        Access::Scope(Scope::TasksRead),
        doc_get,
    ),
    Route::new(
        Method::DELETE,
        "/tasks/{id}",
        Access::Scope(Scope::TasksCancel),
        doc_cancel,
    ),
    Route::new(
        Method::GET,
        "/tasks/{id}/events",
        Access::Scope(Scope::TasksRead),
        doc_events,
    ),
    Route::new(
        Method::GET,
        "/capabilities",
        Access::AnyKey,
        doc_capabilities,
    ),
    Route::new(
        Method::GET,
        "/audit",
        Access::Scope(Scope::Admin),
        doc_audit,
    ),
    Route::new(
        Method::POST,
        "/documents",
        Access::Scope(Scope::Admin),
        doc_ingest,
    ),
    Route::new(
        Method::POST,
        "/search",
        Access::Scope(Scope::TasksRead),
        doc_search,
    ),
    Route::new(Method::GET, "/auth/whoami", Access::AnyKey, doc_whoami),
    Route::new(Method::GET, "/openapi.json", Access::Open, doc_openapi),
    Route::new(Method::GET, "/health", Access::Open, doc_health),
    Route::new(Method::GET, "/health/live", Access::Open, doc_live),
    Route::new(Method::GET, "/ready", Access::Open, doc_ready),
    Route::new(Method::GET, "/health/ready", Access::Open, doc_ready),
    // Prometheus scrapes the metrics port without a key; here it takes any key.
    Route::new(Method::GET, "/metrics", Access::AnyKey, doc_metrics),
];

/// The arm registry's routes: there only when it is on, and they check its own token.
pub const REGISTRY_ROUTES: &[Route] = &[
    Route::new(
        Method::GET,
        "/registry",
        Access::Open,
        crate::registry::doc_list,
    ),
    Route::new(
        Method::POST,
        "/registry",
        Access::Open,
        crate::registry::doc_register,
    ),
    Route::new(
        Method::DELETE,
        "/registry",
        Access::Open,
        crate::registry::doc_deregister,
    ),
    Route::new(
        Method::POST,
        "/registry/audit",
        Access::Open,
        crate::registry::doc_record_audit,
    ),
];

/// The orchestrator's routes in this configuration.
fn routes(registry: bool) -> &'static [Route] {
    static WITH_REGISTRY: std::sync::LazyLock<Vec<Route>> =
        std::sync::LazyLock::new(|| ROUTES.iter().chain(REGISTRY_ROUTES).cloned().collect());
    if registry { &WITH_REGISTRY } else { ROUTES }
}

/// The orchestrator's OpenAPI document, as it runs: its routes (the registry's only when on),
/// with the security it applies (keys required or optional).
pub fn document(keys_required: bool, registry: bool) -> serde_json::Value {
    let mut doc = Document::new(
        "OctoLLM orchestrator API",
        "Tasks (submit, follow, cancel), the arms, the audit log, probes. A cancelled task is \
         deleted: not found by id afterwards.",
        keys_required,
    );
    for route in routes(registry) {
        route.document(&mut doc);
    }
    doc.finish()
}

fn task_id_param(op: Operation) -> Operation {
    op.param(
        "path",
        "id",
        true,
        crate::openapi::pattern(octollm_core::ids::TASK_ID_PATTERN),
        "The task's id",
    )
}

fn doc_submit(doc: &mut Document, access: Access) -> Operation {
    let body = doc.schema::<TaskSubmission>();
    let accepted = doc.schema::<Accepted>();
    Operation::new("Submit a task", access)
        .json_body(doc, body)
        .param(
            "header",
            "Idempotency-Key",
            false,
            serde_json::json!({"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}),
            "Within 24 hours the same key returns the first task (200) instead of a new one",
        )
        .json(202, "Accepted: stored and queued", accepted.clone())
        .headers(
            202,
            &[(
                "Location",
                serde_json::json!({"type": "string"}),
                "The task's URL",
            )],
        )
        .json(
            200,
            "The task an earlier request with the same idempotency key made",
            accepted,
        )
        .error(
            doc,
            409,
            "The Idempotency-Key header and the idempotency_key field differ",
        )
}

fn doc_list(doc: &mut Document, access: Access) -> Operation {
    let status = doc.schema::<TaskStatus>();
    let list = doc.schema::<TaskList>();
    Operation::new("List tasks, newest first", access)
        .param(
            "query",
            "status",
            false,
            status,
            "Only tasks with this status",
        )
        .param(
            "query",
            "limit",
            false,
            crate::openapi::integer(1, 100),
            "Page size (default 20)",
        )
        .param(
            "query",
            "cursor",
            false,
            crate::openapi::pattern(CURSOR_PATTERN),
            "`next_cursor` of the previous page",
        )
        .json(200, "A page of tasks", list)
        .error(doc, 400, "A query parameter is invalid")
}

fn doc_get(doc: &mut Document, access: Access) -> Operation {
    let view = doc.schema::<TaskView>();
    task_id_param(Operation::new("A task with its steps", access))
        .json(200, "The task", view)
        .error(doc, 404, "No such task for this key (or it was cancelled)")
}

fn doc_cancel(doc: &mut Document, access: Access) -> Operation {
    let view = doc.schema::<TaskView>();
    task_id_param(Operation::new(
        "Cancel a task (and delete it): running steps stop at their next await point",
        access,
    ))
    .json(200, "The task as cancelled", view)
    .error(
        doc,
        404,
        "No such task for this key (or it was cancelled already)",
    )
    .error(
        doc,
        409,
        "The task has finished; there is nothing to cancel",
    )
}

fn doc_events(doc: &mut Document, access: Access) -> Operation {
    task_id_param(Operation::new(
        "The task's events as server-sent events: stored ones, then live, until the final status",
        access,
    ))
    .param(
        "header",
        "Last-Event-ID",
        false,
        crate::openapi::pattern(crate::arm_service::WHOLE_HEADER_PATTERN),
        "Resume after this event",
    )
    .content(
        200,
        "`event:` the kind (status, phase, plan, step_started, step_completed, step_failed, screening), \
         `id:` its sequence number, `data:` {task_id, data, at}",
        "text/event-stream",
        serde_json::json!({"type": "string"}),
    )
    .error(doc, 400, "Last-Event-ID is not an event sequence number")
    .error(doc, 404, "No such task for this key (or it was cancelled)")
}

fn doc_capabilities(doc: &mut Document, access: Access) -> Operation {
    let caps = doc.schema::<Capabilities>();
    Operation::new(
        "The arms: capabilities, cost tiers, where they run, health",
        access,
    )
    .json(200, "Every arm", caps)
}

/// `POST /documents` and `POST /search`: the retriever arm's operations, relayed.
fn doc_knowledge<O: octollm_arms::Operation>(doc: &mut Document, access: Access) -> Operation {
    let body = doc.schema::<O::Request>();
    let answer = doc.schema::<O::Response>();
    Operation::new(O::SUMMARY, access)
        .json_body(doc, body)
        .json(200, "The retriever's answer", answer)
        .error(
            doc,
            400,
            "The request breaks the schema or the retriever's limits",
        )
        .error(doc, 409, "The default task budget would be exceeded")
        .error(doc, 502, "The retriever failed")
        .error(doc, 503, "The retriever (or what it needs) is unavailable")
        .error(doc, 504, "The retriever ran out of time")
}

fn doc_ingest(doc: &mut Document, access: Access) -> Operation {
    doc_knowledge::<octollm_arms::Ingest>(doc, access)
}

fn doc_search(doc: &mut Document, access: Access) -> Operation {
    doc_knowledge::<octollm_arms::Search>(doc, access)
}

fn doc_audit(doc: &mut Document, access: Access) -> Operation {
    let kind = doc.schema::<octollm_store::AuditKind>();
    let page = doc.schema::<AuditPage>();
    Operation::new("The audit log, newest first (admin keys)", access)
        .param("query", "kind", false, kind, "Only entries of this kind")
        .param(
            "query",
            "limit",
            false,
            crate::openapi::integer(1, 1000),
            "Page size (default 100)",
        )
        .param(
            "query",
            "before",
            false,
            crate::openapi::integer(i64::MIN, i64::MAX),
            "Entries before this `seq` (the previous page's `next_before`)",
        )
        .json(200, "A page of entries", page)
        .error(doc, 400, "A query parameter is invalid")
}

fn doc_whoami(doc: &mut Document, access: Access) -> Operation {
    let who = doc.schema::<WhoAmI>();
    Operation::new("Who the request acts as: the key and its scopes", access)
        .json(200, "The key", who)
}

pub(crate) fn doc_openapi(_doc: &mut Document, access: Access) -> Operation {
    Operation::new("This document", access).json(
        200,
        "The OpenAPI document",
        serde_json::json!({"type": "object"}),
    )
}

pub(crate) fn doc_health(doc: &mut Document, access: Access) -> Operation {
    let health = doc.schema::<HealthView>();
    Operation::new("Health: status, version, uptime, components", access)
        .json(200, "Health", health)
}

fn doc_live(doc: &mut Document, access: Access) -> Operation {
    let alive = doc.schema::<Alive>();
    Operation::new(
        "Liveness: the process is up (no dependency is checked)",
        access,
    )
    .json(200, "Alive", alive)
}

pub(crate) fn doc_ready(doc: &mut Document, access: Access) -> Operation {
    let ready = doc.schema::<Ready>();
    Operation::new("Readiness: the dependencies it needs answer", access)
        .json(200, "Ready", ready)
        .error(doc, 503, "A dependency it needs is down")
}

pub(crate) fn doc_metrics(doc: &mut Document, access: Access) -> Operation {
    Operation::new("Prometheus metrics", access)
        .content(
            200,
            "The metrics in Prometheus' text format",
            "text/plain",
            serde_json::json!({"type": "string"}),
        )
        .error(doc, 503, "No metrics recorder")
}

/// An `Idempotency-Key` header: printable ASCII without spaces, 1 to 255 characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// A list cursor: `<created_at ms>.<task id>`.
pub const CURSOR_PATTERN: &str = "^[0-9]{1,18}\\.task_[A-Za-z0-9]{16}$";

#[derive(Clone)]
pub struct ApiState {
    pub orchestrator: Arc<Orchestrator>,
    pub started: Instant,
    pub version: &'static str,
    /// The arm registry, when enabled.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// API keys: who each request acts as.
    pub auth: Auth,
}

pub fn router(state: ApiState, body_limit: usize) -> Router {
    let document =
        crate::openapi::prepared(&document(state.auth.required(), state.registry.is_some()));
    let gate = Gate {
        auth: state.auth.clone(),
        routes: routes(state.registry.is_some()),
    };
    let routes = Router::new()
        .route("/tasks", get(list_tasks).post(submit_task))
        .route("/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/tasks/{id}/events", get(task_events))
        .route("/capabilities", get(capabilities))
        .route("/audit", get(audit_entries))
        .route("/documents", post(ingest_document))
        .route("/search", post(search_knowledge))
        .route("/auth/whoami", get(whoami))
        .route(
            "/registry",
            get(crate::registry::list)
                .post(crate::registry::register)
                .delete(crate::registry::deregister),
        )
        .route("/registry/audit", post(crate::registry::record_audit))
        .route(
            "/openapi.json",
            get(move || crate::openapi::serve(document.clone())),
        )
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/ready", get(ready))
        .route("/health/ready", get(ready))
        .route("/metrics", get(observe::render))
        .fallback(crate::no_route)
        .layer(axum::middleware::from_fn_with_state(
            gate,
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

fn origin(principal: &Principal) -> Origin<'_> {
    Origin {
        principal,
        trace: crate::request_id::trace(),
        request_id: crate::request_id::current(),
    }
}

async fn submit_task(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(mut submission): ApiJson<TaskSubmission>,
) -> Result<Response, ApiError> {
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .ok()
            .filter(|k| {
                (1..=255).contains(&k.len()) && k.bytes().all(|b| (b'!'..=b'~').contains(&b))
            })
            .ok_or_else(|| {
                ApiError::validation(
                    "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
                )
            })?;
        match &submission.idempotency_key {
            Some(body_key) if body_key != key => {
                return Err(ApiError::Conflict(
                    "the Idempotency-Key header and the idempotency_key field differ".into(),
                ));
            }
            _ => submission.idempotency_key = Some(key.to_owned()),
        }
    }
    let submitted = state
        .orchestrator
        .submit(submission, origin(&principal))
        .await?;
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
    let detail = state.orchestrator.task(&principal, &parse_id(&id)?).await?;
    Ok(Json(TaskView::detailed(&detail)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    #[serde(default, deserialize_with = "octollm_core::wire::whole_in_text")]
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_tasks(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
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
        .tasks(&principal, status, limit, query.cursor)
        .await?;
    Ok(Json(TaskList {
        tasks: page.tasks.iter().map(TaskView::of).collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn cancel_task(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state
        .orchestrator
        .cancel(&principal, &parse_id(&id)?)
        .await?;
    Ok(Json(TaskView::of(&task)))
}

fn sse_event(event: &TaskEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.as_str())
        .data(serde_json::json!({"task_id": event.task_id, "data": event.data, "at": event.created_at}).to_string())
}

/// Stored events after `Last-Event-ID`, then live ones, ending after the final status.
async fn task_events(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after: i64 = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .filter(|v| (1..=18).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::validation("Last-Event-ID must be an event's sequence number")
            })?,
    };
    let events = state
        .orchestrator
        .events(&principal, &parse_id(&id)?, after)
        .await?;
    Ok(Sse::new(events.map(|e| Ok(sse_event(&e))))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /auth/whoami`: who the request acts as.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhoAmI {
    /// The API key's id; none without a key.
    pub key_id: Option<String>,
    pub scopes: Vec<Scope>,
}

/// Who the request acts as: the key id (none without a key) and its scopes. The reflex layer
/// asks this to authorise its own admin routes.
async fn whoami(Extension(principal): Extension<Principal>) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: principal.key_id.clone(),
        scopes: principal.scopes.iter().collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    kind: Option<String>,
    #[serde(default, deserialize_with = "octollm_core::wire::whole_in_text")]
    limit: Option<u32>,
    #[serde(default, deserialize_with = "octollm_core::wire::whole_in_text")]
    before: Option<i64>,
}

/// `GET /audit`: a page of the audit log, newest first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AuditPage {
    pub entries: Vec<octollm_store::AuditRecord>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_before: Option<i64>,
}

/// The audit log, newest first, for admin keys; `before` pages back from an entry's `seq`.
async fn audit_entries(
    State(state): State<ApiState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
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
        .orchestrator
        .audit_entries(&octollm_store::AuditFilter {
            kind,
            before: query.before,
            limit,
        })
        .await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}

/// One arm in `GET /capabilities`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArmCapability {
    pub arm_id: ArmKind,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub cost_tier: u8,
    /// `in-process`, or the first instance's base URL.
    pub endpoint: String,
    /// Every instance (`in-process` for an arm in this process).
    pub endpoints: Vec<String>,
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Capabilities {
    pub arms: Vec<ArmCapability>,
}

impl ArmCapability {
    fn of(arm: ArmKind, status: ArmStatus) -> Self {
        let info = ArmInfo::of(arm);
        Self {
            arm_id: arm,
            name: info.name,
            description: info.description,
            capabilities: info.capabilities,
            cost_tier: info.cost_tier,
            endpoint: status.endpoints.first().cloned().unwrap_or_default(),
            endpoints: status.endpoints,
            status: status.health.as_str().to_owned(),
        }
    }
}

async fn ingest_document(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<octollm_arms::retriever::DocumentRequest>,
) -> Result<Json<octollm_arms::retriever::DocumentResponse>, ApiError> {
    let request_id = crate::request_id::current().unwrap_or_default();
    Ok(Json(state.orchestrator.ingest(request, request_id).await?))
}

async fn search_knowledge(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<octollm_arms::retriever::SearchRequest>,
) -> Result<Json<octollm_arms::retriever::SearchResponse>, ApiError> {
    let request_id = crate::request_id::current().unwrap_or_default();
    Ok(Json(state.orchestrator.search(request, request_id).await?))
}

async fn capabilities(State(state): State<ApiState>) -> Json<Capabilities> {
    Json(Capabilities {
        arms: state
            .orchestrator
            .capabilities()
            .into_iter()
            .map(|(arm, status)| ArmCapability::of(arm, status))
            .collect(),
    })
}

/// `/health/live`: the process is up.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Alive {
    pub status: String,
}

async fn live() -> Json<Alive> {
    Json(Alive {
        status: "alive".into(),
    })
}

/// `/health` of every service (SPEC §3).
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthView {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// Each part's state: `healthy`, or what is wrong with it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub components: std::collections::BTreeMap<String, String>,
}

/// `/health`: the database is essential (without it nothing runs: unhealthy); an arm that
/// cannot work or a Redis outage only degrade the service (tasks still run; the events of
/// tasks that other replicas run reach this replica's streams late, from the table).
async fn health(State(state): State<ApiState>) -> Json<HealthView> {
    let report = state.orchestrator.health().await;
    let mut components = std::collections::BTreeMap::new();
    components.insert(
        "database".to_owned(),
        match &report.database {
            Ok(()) => "healthy".to_owned(),
            Err(_) => "unhealthy".to_owned(),
        },
    );
    if let Some(connected) = report.shared_events {
        components.insert(
            "redis".to_owned(),
            if connected {
                "healthy".to_owned()
            } else {
                "unavailable: live events of tasks run by other replicas are delayed".to_owned()
            },
        );
    }
    for (arm, status) in &report.arms {
        let state = match status.health.reason() {
            None => status.health.as_str().to_owned(),
            Some(reason) => format!("{}: {reason}", status.health.as_str()),
        };
        components.insert(arm.id().to_owned(), state);
    }
    let status = match report.health() {
        octollm_arms::Health::Healthy => "healthy",
        octollm_arms::Health::Degraded(_) => "degraded",
        octollm_arms::Health::Unavailable(_) => "unhealthy",
    };
    Json(HealthView {
        status: status.to_owned(),
        version: state.version.to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        components,
    })
}

/// `/ready`: `{status: "ready"}`, or 503 naming what is down.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ready {
    pub status: String,
}

pub(crate) fn ready_answer() -> Json<Ready> {
    Json(Ready {
        status: "ready".into(),
    })
}

async fn ready(State(state): State<ApiState>) -> Result<Json<Ready>, ApiError> {
    state
        .orchestrator
        .ready()
        .await
        .map_err(|e| ApiError::DependencyDown {
            dependency: "database",
            cause: e.to_string(),
        })?;
    Ok(ready_answer())
}
