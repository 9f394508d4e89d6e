//! `X-Request-ID`: taken from the request when it is sane, generated otherwise, echoed on
//! every response, recorded on the request span, and readable by error bodies.
//!
//! W3C `traceparent`: the request's trace is continued (a new span id under the caller's)
//! or started, recorded on the request span as `trace_id`, and readable by [`trace`] so
//! calls made on the request's behalf carry it on ([`TRACEPARENT`]).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use octollm_core::TraceContext;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static REQUEST_ID: String;
    static TRACE: TraceContext;
}

/// The trace context of the request being served (its own span), if called inside one.
pub fn trace() -> Option<TraceContext> {
    TRACE.try_with(|t| *t).ok()
}

/// The caller's trace context, when it sent a valid one.
fn caller_trace(headers: &http::HeaderMap) -> Option<TraceContext> {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
}

/// The id of the request being served, if called inside one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub fn generate() -> String {
    format!("req_{}", &octollm_core::TaskId::generate().as_str()[5..])
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        request_id = %id,
        trace_id = tracing::field::Empty
    );
    // This hop: a child of the caller's context, or a new trace.
    let trace = octollm_orchestrator::trace_link::attach(&span, caller_trace(request.headers()));
    // Formatting the id costs more than the rest of the span; skip it when nobody listens.
    if !span.is_disabled() {
        span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    }
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            TRACE.scope(trace, next.run(request).instrument(span)),
        )
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
