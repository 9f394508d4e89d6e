//! The reflex service (SPEC §7), the public entry of the distributed deployment: screens
//! input at memory speed with no LLM call, caches verdicts, rate-limits per verified API key
//! and per client address, and forwards every route it does not serve itself to the
//! orchestrator (a task submission after screening). The decisions are [`ReflexService`]'s;
//! this module is their HTTP side.
//!
//! # Layout
//! - [`service`]: verdicts, the verdict cache, rate limits, screening (no HTTP).
//! - [`client`]: the client's address behind trusted proxies.
//! - [`keys`]: who holds the API keys (the orchestrator, or this process).
//! - this file: the routes, the answers, forwarding to the orchestrator.

pub mod client;
pub mod keys;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

pub use service::{
    FailMode, INPUT_MAX_CHARS, PreprocessRequest, RateLimitSettings, ReflexError, ReflexService,
    Tenant,
};

use crate::api::{HealthView, Ready};
use crate::auth::{Access, Route};
use crate::error::ApiError;
use crate::extract::{ApiJson, BodyLimit};
use crate::openapi::{Document, Operation};
use crate::{observe, request_id};

/// The reflex service's own routes and what they need, checked with whoever holds the keys
/// ([`keys::Keys`]). Every other route is forwarded and the orchestrator checks the key,
/// except `/registry` (arms register from inside the deployment, never through its entry).
pub const ROUTES: &[Route] = &[
    Route::new(Method::POST, "/preprocess", Access::AnyKey, doc_preprocess),
    Route::new(
        Method::GET,
        "/cache/stats",
        Access::Scope(octollm_core::Scope::Admin),
        doc_cache_stats,
    ),
    Route::new(
        Method::POST,
        "/cache/clear",
        Access::Scope(octollm_core::Scope::Admin),
        doc_cache_clear,
    ),
    Route::new(
        Method::GET,
        "/openapi.json",
        Access::Open,
        crate::api::doc_openapi,
    ),
    Route::new(Method::GET, "/health", Access::Open, crate::api::doc_health),
    Route::new(
        Method::GET,
        "/health/live",
        Access::Open,
        crate::api::doc_health,
    ),
    Route::new(Method::GET, "/ready", Access::Open, crate::api::doc_ready),
    Route::new(
        Method::GET,
        "/health/ready",
        Access::Open,
        crate::api::doc_ready,
    ),
    // Prometheus scrapes the metrics port without a key; here it takes any key.
    Route::new(
        Method::GET,
        "/metrics",
        Access::AnyKey,
        crate::api::doc_metrics,
    ),
];

/// Paths the reflex layer never forwards.
fn internal(path: &str) -> bool {
    path == "/registry" || path.starts_with("/registry/")
}

/// Whether `path` is one the reflex layer serves itself.
fn own(path: &str) -> bool {
    ROUTES.iter().any(|r| r.path == path)
}

/// The answer to `POST /preprocess` (written straight from the cached verdict's bytes; this
/// type is its schema).
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PreprocessAnswer {
    #[serde(flatten)]
    pub verdict: service::Verdict,
    pub cache_hit: bool,
    pub request_id: String,
    pub processing_time_us: u64,
}

fn rate_limit_headers() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    let count = crate::openapi::pattern("^[0-9]+$");
    vec![
        ("X-RateLimit-Limit", count.clone(), "The bucket's size"),
        (
            "X-RateLimit-Remaining",
            count.clone(),
            "Requests left in it",
        ),
        ("X-RateLimit-Reset", count, "Seconds until it is full again"),
    ]
}

fn doc_preprocess(doc: &mut Document, access: Access) -> Operation {
    let body = doc.schema::<PreprocessRequest>();
    let answer = doc.schema::<PreprocessAnswer>();
    Operation::new(
        "Screen a text: PII and secrets, injections, the verdict cached",
        access,
    )
    .json_body(doc, body)
    .json(200, "The verdict", answer)
    .headers(200, &rate_limit_headers())
    .error(doc, 429, "Over the rate limit")
    .headers(429, &rate_limit_headers())
    .error(doc, 503, "The rate-limit store is unavailable")
}

fn doc_cache_stats(doc: &mut Document, access: Access) -> Operation {
    let stats = doc.schema::<octollm_store::CacheStats>();
    Operation::new("The verdict cache's size and hit rate (admin keys)", access)
        .json(200, "The statistics", stats)
        .error(
            doc,
            503,
            "The cache, or the orchestrator that checks keys, is unavailable",
        )
}

fn doc_cache_clear(doc: &mut Document, access: Access) -> Operation {
    let cleared = doc.schema::<Cleared>();
    Operation::new("Empty the verdict cache (admin keys)", access)
        .json(200, "Emptied", cleared)
        .error(
            doc,
            503,
            "The cache, or the orchestrator that checks keys, is unavailable",
        )
}

/// The reflex service's document: its own routes, and the orchestrator's routes it forwards,
/// as the orchestrator describes them (`upstream`, its document), with what the
/// reflex layer adds to them (rate limits; a forwarded request to an orchestrator that is
/// down answers 503). Keys are required where the orchestrator requires them.
pub fn document(upstream: Option<&serde_json::Value>) -> serde_json::Value {
    let keys_required = upstream
        .and_then(|d| d.pointer("/paths/~1auth~1whoami/get/security"))
        .and_then(|s| s.as_array())
        .is_some_and(|alternatives| {
            !alternatives
                .iter()
                .any(|a| a.as_object().is_some_and(|o| o.is_empty()))
        });
    let mut doc = Document::new(
        "OctoLLM reflex layer",
        "Screening (PII and secrets, injections) at memory speed, a verdict cache, rate limits \
         per client and per key, and the public entry: `/tasks…` is screened and forwarded to \
         the orchestrator.",
        keys_required,
    );
    for route in ROUTES {
        route.document(&mut doc);
    }
    if let Some(upstream) = upstream {
        let error = serde_json::json!({"$ref": "#/components/schemas/ErrorBody"});
        let forwarded = |p: &str| !own(p) && !internal(p);
        doc.merge(upstream, forwarded, |op| {
            if let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) {
                responses.entry("429").or_insert_with(|| {
                    serde_json::json!({"description": "Over the rate limit",
                        "content": {"application/json": {"schema": error.clone()}}})
                });
                responses.entry("503").or_insert_with(|| {
                    serde_json::json!({"description": "The orchestrator is unavailable",
                        "content": {"application/json": {"schema": error.clone()}}})
                });
            }
        });
    }
    doc.finish()
}

#[derive(Clone)]
pub struct ReflexState {
    pub service: ReflexService,
    /// Who checks the API keys.
    pub keys: Arc<dyn keys::Keys>,
    /// Peers whose `X-Forwarded-For` names the client (the ingress).
    pub trusted_proxies: client::TrustedProxies,
    /// Where every route not served here is forwarded (`None`: 503): one orchestrator URL, or
    /// several separated by commas.
    pub orchestrator_url: Option<String>,
    pub client: reqwest::Client,
    pub started: Instant,
    pub version: &'static str,
}

pub fn router(state: ReflexState, body_limit: usize) -> Router {
    // Shared, not cloned per request (the state holds strings and a client).
    let state = Arc::new(state);
    let limited = Router::new()
        .route("/preprocess", post(preprocess))
        .fallback(forward)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let routes = Router::new()
        .merge(limited)
        .route("/cache/stats", get(cache_stats))
        .route("/cache/clear", post(cache_clear))
        .route("/health", get(health))
        .route("/health/live", get(health))
        .route("/ready", get(ready))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi));
    crate::common_layers(routes, body_limit).with_state(state)
}

/// The embedded mode (`octollm serve`, one process): the reflex layer's own routes
/// (`/preprocess`, `/cache/*`) and rate limits in front of the orchestrator's API, which
/// answers every other route in process (it screens submissions itself). One document
/// describes both. `state.keys` should be the API's own keys.
pub fn in_front(api: Router, state: ReflexState, body_limit: usize) -> Router {
    let state = Arc::new(state);
    let api_for_document = api.clone();
    let routes = Router::new()
        .route("/preprocess", post(preprocess))
        .route("/cache/stats", get(cache_stats))
        .route("/cache/clear", post(cache_clear))
        .with_state(state.clone());
    let routes = crate::common_layers(routes, body_limit);
    Router::new()
        .merge(routes)
        .route(
            "/openapi.json",
            get(move || in_process_document(api_for_document.clone())),
        )
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(state, rate_limit))
}

/// The API's document with the reflex layer's routes added.
async fn in_process_document(api: Router) -> Response {
    use tower::ServiceExt as _;
    let request = Request::get("/openapi.json")
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    let upstream = match api.oneshot(request).await {
        Ok(r) if r.status().is_success() => axum::body::to_bytes(r.into_body(), 16 * 1024 * 1024)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()),
        _ => None,
    };
    let Some(upstream) = upstream else {
        return ApiError::Internal("the API's document could not be read".into()).into_response();
    };
    // The merged document of the public entry, under the API's title; the probes, metrics
    // and this document are the API's own here.
    let mut merged = document(Some(&upstream));
    if let Some(info) = upstream.get("info") {
        merged["info"] = info.clone();
    }
    for path in [
        "/health",
        "/health/live",
        "/ready",
        "/health/ready",
        "/metrics",
        "/openapi.json",
    ] {
        let pointer = format!("/paths/{}", path.replace('~', "~0").replace('/', "~1"));
        if let (Some(theirs), Some(slot)) =
            (upstream.pointer(&pointer), merged.pointer_mut(&pointer))
        {
            *slot = theirs.clone();
        }
    }
    Json(merged).into_response()
}

impl From<ReflexError> for ApiError {
    fn from(e: ReflexError) -> Self {
        match e {
            ReflexError::InputLength(_) => ApiError::validation(e.to_string()),
            ReflexError::RateLimited(d) => ApiError::RateLimited {
                retry_after_seconds: d.retry_after_seconds.max(1),
            },
            ReflexError::LimiterDown(cause) => ApiError::DependencyDown {
                dependency: "rate-limit store",
                cause: cause.to_string(),
            },
            ReflexError::Serialise(cause) => ApiError::Internal(cause.to_string()),
            ReflexError::Store(cause) => ApiError::DependencyDown {
                dependency: "cache",
                cause: cause.to_string(),
            },
        }
    }
}

async fn preprocess(
    State(state): State<Arc<ReflexState>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PreprocessRequest>,
) -> Result<Response, ApiError> {
    let who = state.keys.admit(Access::AnyKey, &headers).await?;
    let clock = Instant::now();
    let tenant = Tenant::of(who.key_id.as_deref());
    let answer = state.service.preprocess(&tenant, &request).await?;
    let processing_time_us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
    respond(
        &answer.verdict.json,
        answer.cache_hit,
        &request_id::current().unwrap_or_default(),
        processing_time_us,
    )
}

/// The answer: the verdict object with the request's own fields appended, written once
/// rather than built as a tree and serialised again.
fn respond(
    verdict: &[u8],
    cache_hit: bool,
    request_id: &str,
    processing_time_us: u64,
) -> Result<Response, ApiError> {
    let open = &verdict[..verdict.len().saturating_sub(1)];
    let mut body = Vec::with_capacity(verdict.len() + 96);
    body.extend_from_slice(open);
    if open.len() > 1 {
        body.push(b',');
    }
    body.extend_from_slice(b"\"cache_hit\":");
    body.extend_from_slice(if cache_hit { b"true" } else { b"false" });
    body.extend_from_slice(b",\"request_id\":");
    serde_json::to_writer(&mut body, request_id)
        .map_err(|e| ApiError::Internal(format!("cannot serialise the answer: {e}")))?;
    body.extend_from_slice(b",\"processing_time_us\":");
    body.extend_from_slice(processing_time_us.to_string().as_bytes());
    body.push(b'}');
    Ok((
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// The cache routes are for admin keys, checked with whoever holds the keys.
async fn require_admin(state: &ReflexState, headers: &http::HeaderMap) -> Result<(), ApiError> {
    state
        .keys
        .admit(Access::Scope(octollm_core::Scope::Admin), headers)
        .await
        .map(|_| ())
}

/// `GET /metrics` on the service's port: any key (the metrics port needs none).
async fn metrics(
    State(state): State<Arc<ReflexState>>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    state.keys.admit(Access::AnyKey, &headers).await?;
    Ok(observe::render().await)
}

async fn cache_stats(
    State(state): State<Arc<ReflexState>>,
    headers: http::HeaderMap,
) -> Result<Json<octollm_store::CacheStats>, ApiError> {
    require_admin(&state, &headers).await?;
    Ok(Json(state.service.cache_stats().await?))
}

/// `POST /cache/clear`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cleared {
    pub cleared: bool,
}

async fn cache_clear(
    State(state): State<Arc<ReflexState>>,
    headers: http::HeaderMap,
) -> Result<Json<Cleared>, ApiError> {
    require_admin(&state, &headers).await?;
    state.service.clear_cache().await?;
    Ok(Json(Cleared { cleared: true }))
}

/// This service's document, with the forwarded routes as the orchestrator describes them now
/// (without it, only the reflex layer's own routes).
async fn openapi(State(state): State<Arc<ReflexState>>) -> Response {
    let upstream = match first_upstream(&state) {
        None => None,
        Some(base) => {
            let fetched = state
                .client
                .get(format!("{}/openapi.json", base.trim_end_matches('/')))
                .timeout(std::time::Duration::from_secs(3))
                .send()
                .await;
            match fetched {
                Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                _ => None,
            }
        }
    };
    crate::openapi::serve(crate::openapi::prepared(&document(upstream.as_ref()))).await
}

/// The first configured orchestrator, if any.
fn first_upstream(state: &ReflexState) -> Option<&str> {
    state
        .orchestrator_url
        .as_deref()?
        .split(',')
        .map(str::trim)
        .find(|u| !u.is_empty())
}

async fn health(State(state): State<Arc<ReflexState>>) -> Json<HealthView> {
    Json(HealthView {
        status: "healthy".into(),
        version: state.version.to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        components: Default::default(),
    })
}

async fn ready(State(state): State<Arc<ReflexState>>) -> Result<Json<Ready>, ApiError> {
    state.service.ready().await?;
    Ok(crate::api::ready_answer())
}

fn set_limit_headers(headers: &mut HeaderMap, d: &octollm_store::Decision) {
    for (name, value) in [
        ("x-ratelimit-limit", u64::from(d.limit)),
        ("x-ratelimit-remaining", u64::from(d.remaining)),
        ("x-ratelimit-reset", d.reset_seconds),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(name, v);
        }
    }
}

/// Token buckets per verified API key and per client address; the tighter answer wins. A key
/// that does not verify is no key: made-up keys share their client's bucket.
async fn rate_limit(
    State(state): State<Arc<ReflexState>>,
    peer: Result<ConnectInfo<SocketAddr>, axum::extract::rejection::ExtensionRejection>,
    request: Request,
    next: Next,
) -> Response {
    // Probes, metrics and the document are never limited (the kubelet and Prometheus call
    // them all the time, from one address).
    if matches!(
        request.uri().path(),
        "/health" | "/health/live" | "/ready" | "/health/ready" | "/metrics" | "/openapi.json"
    ) {
        return next.run(request).await;
    }
    let ip = match peer {
        Ok(peer) => {
            let forwarded: Vec<&str> = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            state
                .trusted_proxies
                .client(peer.0.ip(), &forwarded)
                .to_string()
        }
        Err(_) => "unknown".to_owned(),
    };
    let tenant = match state.keys.identify(request.headers()).await {
        keys::Identity::Key(id) => Tenant::of(Some(&id)),
        keys::Identity::Unverified => Tenant::of(None),
    };
    match state.service.admit(&ip, &tenant).await {
        Ok(None) => next.run(request).await,
        Ok(Some(decision)) => {
            let mut response = next.run(request).await;
            set_limit_headers(response.headers_mut(), &decision);
            response
        }
        Err(ReflexError::RateLimited(decision)) => {
            let mut response = ApiError::from(ReflexError::RateLimited(decision)).into_response();
            set_limit_headers(response.headers_mut(), &decision);
            response
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "authorization",
    "x-api-key",
    "idempotency-key",
    "last-event-id",
    "x-request-id",
    "traceparent",
];

/// Round-robin position over the configured orchestrators.
static NEXT_UPSTREAM: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Screens a task submission's text, then forwards the request to the orchestrator and
/// streams its answer back (event streams included).
async fn forward(
    State(state): State<Arc<ReflexState>>,
    request: Request,
) -> Result<Response, ApiError> {
    if internal(request.uri().path()) {
        return Err(ApiError::NotFound("route".into()));
    }
    let Some(base) = state.orchestrator_url.clone() else {
        return Err(ApiError::Unavailable(
            "no orchestrator is configured to forward to".into(),
        ));
    };
    let (parts, body) = request.into_parts();
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or(1024 * 1024);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    if parts.method == http::Method::POST
        && parts.uri.path() == "/tasks"
        && let Err(matches) = state.service.screen_submission(&bytes)
    {
        return Err(ApiError::Blocked(
            serde_json::json!({"field": "body", "matches": matches}),
        ));
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Several orchestrators (comma-separated): round-robin, and the next one when one cannot
    // be reached or answers 503 (it did not take the request, so trying another is safe).
    let upstreams: Vec<&str> = base
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let first = NEXT_UPSTREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut failure = ApiError::Unavailable("no orchestrator is configured to forward to".into());
    let mut upstream = None;
    for k in 0..upstreams.len() {
        let target = upstreams[(first + k) % upstreams.len()];
        let url = format!("{}{}", target.trim_end_matches('/'), path);
        let mut outbound = state
            .client
            .request(parts.method.clone(), url)
            .body(bytes.clone());
        for name in FORWARDED_HEADERS {
            if let Some(v) = parts.headers.get(*name) {
                outbound = outbound.header(*name, v.clone());
            }
        }
        if parts.headers.get(request_id::HEADER).is_none()
            && let Some(id) = request_id::current()
        {
            outbound = outbound.header(request_id::HEADER, id);
        }
        // This hop is the orchestrator's parent in the trace.
        if let Some(trace) = request_id::trace() {
            outbound = outbound.header(request_id::TRACEPARENT, trace.header());
        }
        match outbound.send().await {
            Ok(r)
                if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    && k + 1 < upstreams.len() =>
            {
                failure = ApiError::DependencyDown {
                    dependency: "orchestrator",
                    cause: "not ready".into(),
                };
            }
            Ok(r) => {
                upstream = Some(r);
                break;
            }
            // Not sent (connection refused): another orchestrator may take it.
            Err(e) if e.is_connect() => {
                failure = ApiError::DependencyDown {
                    dependency: "orchestrator",
                    cause: "unreachable".into(),
                };
            }
            // Sent but no answer: it may have been accepted; do not send it twice.
            Err(e) => {
                return Err(ApiError::DependencyDown {
                    dependency: "orchestrator",
                    cause: if e.is_timeout() {
                        "timed out"
                    } else {
                        "request failed"
                    }
                    .into(),
                });
            }
        }
    }
    let Some(upstream) = upstream else {
        return Err(failure);
    };
    tracing::info!(
        method = %parts.method,
        status = upstream.status().as_u16(),
        upstream = %upstream.url().origin().ascii_serialization(),
        "forwarded to the orchestrator"
    );
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder().status(status);
    for (name, value) in upstream.headers() {
        if matches!(
            name.as_str(),
            "content-type" | "location" | "retry-after" | "cache-control"
        ) {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let stream = upstream.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
