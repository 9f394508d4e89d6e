//! The reflex service (SPEC §7), the public entry of the distributed deployment: screens
//! input at memory speed with no LLM call, caches verdicts, rate-limits per API key and per
//! client IP, and forwards `/tasks…` to the orchestrator after screening.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use octollm_reflex::{Finding, FindingKind, Redactor, ScanOptions, Scanner};
use octollm_store::{RateLimiter, ResponseCache, Tier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::extract::{ApiJson, BodyLimit};
use crate::{observe, request_id};

pub const INPUT_MAX_CHARS: usize = 50_000;
pub const DETECTIONS: &str = "octollm_reflex_detections_total";
pub const VERDICTS: &str = "octollm_reflex_verdicts_total";
pub const CACHE_LOOKUPS: &str = "octollm_reflex_cache_lookups_total";
pub const RATE_LIMITED: &str = "octollm_reflex_rate_limited_total";
pub const SCAN_SECONDS: &str = "octollm_reflex_scan_duration_seconds";

/// What happens when the rate-limit store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Refuse with a clear 503 (never a misleading 429).
    Closed,
    /// Let the request through and log it.
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_key: Tier,
    pub per_ip: Tier,
    pub on_store_error: FailMode,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_key: Tier {
                capacity: 600,
                window_seconds: 60,
            },
            per_ip: Tier {
                capacity: 300,
                window_seconds: 60,
            },
            on_store_error: FailMode::Closed,
        }
    }
}

#[derive(Clone)]
pub struct ReflexState {
    pub scanner: Scanner,
    pub cache: Arc<dyn ResponseCache>,
    pub limiter: Arc<dyn RateLimiter>,
    pub limits: RateLimitSettings,
    /// Where `/tasks…` is forwarded (`None`: not forwarded, 503): one orchestrator URL, or
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
        .route("/tasks", any(forward))
        .route("/tasks/{*rest}", any(forward))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let routes = Router::new()
        .merge(limited)
        .route("/cache/stats", get(cache_stats))
        .route("/cache/clear", post(cache_clear))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(observe::render));
    crate::common_layers(routes, body_limit).with_state(state)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessRequest {
    pub input_text: String,
    #[serde(default = "yes")]
    pub check_cache: bool,
    #[serde(default = "yes")]
    pub detect_pii: bool,
    #[serde(default = "yes")]
    pub detect_injection: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Match {
    pub kind: FindingKind,
    #[serde(rename = "type")]
    pub label: String,
    pub start: usize,
    pub end: usize,
    pub severity: octollm_reflex::Severity,
    pub confidence: f32,
}

/// The part of the answer that depends only on the input and the options: what is cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Verdict {
    pii_detected: bool,
    pii_types: Vec<String>,
    injection_detected: bool,
    risk_score: f32,
    sanitized_input: String,
    should_proceed: bool,
    matches: Vec<Match>,
}

/// Who is asking: the API key (hashed, never stored as given) or nobody. Cache entries live
/// in this namespace, so one tenant's inputs never answer another's lookups.
fn tenant(headers: &HeaderMap) -> String {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match key {
        Some(k) => format!("key:{}", &hex(&Sha256::digest(k.as_bytes()))[..16]),
        None => "anonymous".to_owned(),
    }
}

/// Lower-case hex, written straight into one string (this runs on every request).
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// The cache key covers the tenant, the detector version and every option that changes the
/// answer, and the exact input: offsets and the sanitised text depend on the exact bytes, so
/// two inputs that only normalise alike must not share an answer.
fn cache_key(tenant: &str, request: &PreprocessRequest) -> String {
    let digest = Sha256::digest(request.input_text.as_bytes());
    let mut key = String::with_capacity(48 + tenant.len() + 2 * digest.len());
    key.push_str("reflex:v1:");
    key.push_str(tenant);
    key.push_str(if request.detect_pii {
        ":pii=1"
    } else {
        ":pii=0"
    });
    key.push_str(if request.detect_injection {
        ":inj=1:"
    } else {
        ":inj=0:"
    });
    push_hex(&mut key, &digest);
    key
}

fn verdict(scanner: &Scanner, text: &str, options: ScanOptions) -> Verdict {
    let report = scanner.scan(text, options);
    for f in &report.findings {
        metrics::counter!(DETECTIONS, "kind" => kind_label(f.kind), "type" => f.label).increment(1);
    }
    let matches = report.findings.iter().map(to_match).collect();
    let sanitized_input = if report.pii_detected {
        Redactor::new().redact(text, &report.findings)
    } else {
        text.to_owned()
    };
    Verdict {
        pii_detected: report.pii_detected,
        pii_types: report.pii_types().into_iter().map(str::to_owned).collect(),
        injection_detected: report.injection_detected,
        risk_score: report.risk_score,
        sanitized_input,
        should_proceed: !report.should_block,
        matches,
    }
}

fn kind_label(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Pii => "pii",
        FindingKind::Secret => "secret",
        FindingKind::Injection => "injection",
    }
}

fn to_match(f: &Finding) -> Match {
    Match {
        kind: f.kind,
        label: f.label.to_owned(),
        start: f.start,
        end: f.end,
        severity: f.severity,
        confidence: f.confidence,
    }
}

async fn preprocess(
    State(state): State<Arc<ReflexState>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PreprocessRequest>,
) -> Result<Response, ApiError> {
    let clock = Instant::now();
    let chars = request.input_text.chars().count();
    if chars == 0 || chars > INPUT_MAX_CHARS {
        return Err(ApiError::validation(format!(
            "input_text must be 1 to {INPUT_MAX_CHARS} characters, got {chars}"
        )));
    }
    let key = cache_key(&tenant(&headers), &request);
    let cached = if request.check_cache {
        let hit = state.cache.get(&key).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cache lookup failed; computing");
            None
        });
        metrics::counter!(CACHE_LOOKUPS, "result" => if hit.is_some() { "hit" } else { "miss" })
            .increment(1);
        hit.and_then(|bytes| match CachedVerdict::check(bytes) {
            Ok(cached) => Some(cached),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable cache entry; computing");
                None
            }
        })
    } else {
        None
    };
    let cache_hit = cached.is_some();
    let cached = match cached {
        Some(v) => v,
        None => {
            let options = ScanOptions {
                detect_pii: request.detect_pii,
                detect_injection: request.detect_injection,
            };
            let scan_clock = Instant::now();
            let v = verdict(&state.scanner, &request.input_text, options);
            metrics::histogram!(SCAN_SECONDS).record(scan_clock.elapsed().as_secs_f64());
            let cached = CachedVerdict::serialise(&v)?;
            if let Err(e) = state.cache.put(&key, cached.json.clone()).await {
                tracing::warn!(error = %e, "cache store failed");
            }
            cached
        }
    };
    metrics::counter!(VERDICTS, "verdict" => if cached.should_proceed { "proceed" } else { "block" }).increment(1);
    let processing_time_us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
    cached.respond(
        cache_hit,
        &request_id::current().unwrap_or_default(),
        processing_time_us,
    )
}

/// A verdict as JSON bytes: what the cache holds, and the start of the answer.
struct CachedVerdict {
    /// A JSON object (`{…}`) with the fields of [`Verdict`].
    json: bytes::Bytes,
    should_proceed: bool,
}

impl CachedVerdict {
    fn serialise(verdict: &Verdict) -> Result<Self, ApiError> {
        let json = serde_json::to_vec(verdict)
            .map_err(|e| ApiError::Internal(format!("cannot serialise the verdict: {e}")))?;
        Ok(Self {
            json: json.into(),
            should_proceed: verdict.should_proceed,
        })
    }

    /// Accepts cached bytes only when they read back as a whole verdict object (a Redis entry
    /// may come from another version or have been written by hand).
    fn check(json: bytes::Bytes) -> Result<Self, serde_json::Error> {
        let verdict: Verdict = serde_json::from_slice(&json)?;
        if json.first() != Some(&b'{') || json.last() != Some(&b'}') {
            return Err(serde::de::Error::custom("not a compact JSON object"));
        }
        Ok(Self {
            json,
            should_proceed: verdict.should_proceed,
        })
    }

    /// The answer: the verdict object with the request's own fields appended, written once
    /// rather than built as a tree and serialised again.
    fn respond(
        &self,
        cache_hit: bool,
        request_id: &str,
        processing_time_us: u64,
    ) -> Result<Response, ApiError> {
        let verdict = &self.json[..self.json.len().saturating_sub(1)];
        let mut body = Vec::with_capacity(self.json.len() + 96);
        body.extend_from_slice(verdict);
        if verdict.len() > 1 {
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
}

/// The cache routes are for admin keys. The reflex layer holds no keys: it asks the
/// orchestrator who the presented key is (`GET /auth/whoami`). Without an orchestrator (a
/// reflex service alone, which only starts on loopback or when told its network
/// authenticates) they are open.
async fn require_admin(state: &ReflexState, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(base) = state.orchestrator_url.as_deref() else {
        return Ok(());
    };
    let Some(target) = base.split(',').map(str::trim).find(|u| !u.is_empty()) else {
        return Ok(());
    };
    let mut ask = state
        .client
        .get(format!("{}/auth/whoami", target.trim_end_matches('/')))
        .timeout(std::time::Duration::from_secs(5));
    for name in ["authorization", "x-api-key"] {
        if let Some(v) = headers.get(name) {
            ask = ask.header(name, v.clone());
        }
    }
    let answer = ask.send().await.map_err(|e| ApiError::DependencyDown {
        dependency: "orchestrator",
        cause: e.to_string(),
    })?;
    match answer.status().as_u16() {
        200 => {}
        401 => {
            return Err(ApiError::Unauthorized(
                "a valid admin API key is required".into(),
            ));
        }
        status => {
            return Err(ApiError::DependencyDown {
                dependency: "orchestrator",
                cause: format!("whoami answered {status}"),
            });
        }
    }
    let principal: serde_json::Value =
        answer.json().await.map_err(|e| ApiError::DependencyDown {
            dependency: "orchestrator",
            cause: e.to_string(),
        })?;
    let admin = principal["scopes"]
        .as_array()
        .is_some_and(|scopes| scopes.iter().any(|s| s == "admin"));
    if admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this API key lacks the admin scope".into(),
        ))
    }
}

async fn cache_stats(
    State(state): State<Arc<ReflexState>>,
    headers: http::HeaderMap,
) -> Result<Json<octollm_store::CacheStats>, ApiError> {
    require_admin(&state, &headers).await?;
    Ok(Json(state.cache.stats().await?))
}

async fn cache_clear(
    State(state): State<Arc<ReflexState>>,
    headers: http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers).await?;
    state.cache.clear().await?;
    Ok(Json(serde_json::json!({"cleared": true})))
}

async fn health(State(state): State<Arc<ReflexState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "healthy",
        "version": state.version,
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

async fn ready(State(state): State<Arc<ReflexState>>) -> Response {
    match state.cache.stats().await {
        Ok(_) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::DependencyDown {
            dependency: "cache",
            cause: e.to_string(),
        }
        .into_response(),
    }
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

/// Token buckets per API key (when one is sent) and per client IP; the tighter answer wins.
async fn rate_limit(
    State(state): State<Arc<ReflexState>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.limits.enabled {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let tenant = tenant(request.headers());
    let mut checks = vec![(format!("ip:{ip}"), state.limits.per_ip)];
    if tenant != "anonymous" {
        checks.push((tenant, state.limits.per_key));
    }
    let mut tightest: Option<octollm_store::Decision> = None;
    for (identity, tier) in checks {
        match state.limiter.check(&identity, tier).await {
            Ok(d) => {
                let tighter = tightest.is_none_or(|t| {
                    (!d.allowed && t.allowed)
                        || (d.allowed == t.allowed && d.remaining < t.remaining)
                });
                if tighter {
                    tightest = Some(d);
                }
            }
            Err(e) => match state.limits.on_store_error {
                FailMode::Closed => {
                    return ApiError::DependencyDown {
                        dependency: "rate-limit store",
                        cause: e.to_string(),
                    }
                    .into_response();
                }
                FailMode::Open => tracing::warn!(error = %e, "rate-limit store down; failing open"),
            },
        }
    }
    let Some(decision) = tightest else {
        return next.run(request).await;
    };
    if !decision.allowed {
        metrics::counter!(RATE_LIMITED).increment(1);
        let mut response = ApiError::RateLimited {
            retry_after_seconds: decision.retry_after_seconds.max(1),
        }
        .into_response();
        set_limit_headers(response.headers_mut(), &decision);
        return response;
    }
    let mut response = next.run(request).await;
    set_limit_headers(response.headers_mut(), &decision);
    response
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

/// Screens a task submission's text, then forwards any `/tasks…` request to the orchestrator
/// and streams its answer back (event streams included).
async fn forward(
    State(state): State<Arc<ReflexState>>,
    request: Request,
) -> Result<Response, ApiError> {
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
    if parts.method == http::Method::POST && !bytes.is_empty() {
        // Screen every string in the submission; the orchestrator redacts PII itself.
        let text = String::from_utf8_lossy(&bytes);
        let report = state.scanner.scan(
            &text,
            ScanOptions {
                detect_pii: false,
                detect_injection: true,
            },
        );
        if report.should_block {
            metrics::counter!(VERDICTS, "verdict" => "block").increment(1);
            let matches: Vec<Match> = report.injections().map(to_match).collect();
            return Err(ApiError::Blocked(
                serde_json::json!({"field": "body", "matches": matches}),
            ));
        }
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
