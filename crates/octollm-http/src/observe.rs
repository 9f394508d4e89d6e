//! Request metrics by matched route, and the process-wide Prometheus recorder.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "octollm_http_requests_total";
pub const HTTP_DURATION: &str = "octollm_http_request_duration_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// The process's recorder, installed on first use. `None` if another recorder was installed
/// first (then metrics go there and `/metrics` says so).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status.");
            metrics::describe_histogram!(
                HTTP_DURATION,
                metrics::Unit::Seconds,
                "HTTP request latency by route and method."
            );
            Some(handle)
        })
        .as_ref()
}

/// The label of a matched route, shared rather than copied per request. Routes come from the
/// routers' definitions, so the set is small and fixed.
fn route_label(request: &Request) -> SharedString {
    static ROUTES: OnceLock<RwLock<HashMap<String, Arc<str>>>> = OnceLock::new();
    let Some(path) = request.extensions().get::<MatchedPath>() else {
        return SharedString::const_str("unmatched");
    };
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(known) = routes
        .read()
        .ok()
        .and_then(|r| r.get(path.as_str()).cloned())
    {
        return SharedString::from(known);
    }
    let label: Arc<str> = Arc::from(path.as_str());
    if let Ok(mut w) = routes.write() {
        w.insert(path.as_str().to_owned(), label.clone());
    }
    SharedString::from(label)
}

fn method_label(method: &http::Method) -> SharedString {
    use http::Method;
    SharedString::const_str(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return SharedString::from(method.as_str().to_owned()),
    })
}

fn status_label(status: http::StatusCode) -> SharedString {
    SharedString::const_str(match status.as_u16() {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    })
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let route = route_label(&request);
    let method = method_label(request.method());
    let clock = Instant::now();
    let response = next.run(request).await;
    let status = status_label(response.status());
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method)
        .record(clock.elapsed().as_secs_f64());
    response
}

pub async fn render() -> Response {
    use axum::response::IntoResponse;
    match prometheus() {
        Some(handle) => (
            [(
                http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
            .into_response(),
    }
}
