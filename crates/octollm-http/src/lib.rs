//! HTTP adapters. Handlers extract, delegate (to the orchestrator, an arm, the reflex
//! service) and map errors; they hold no business logic.
//!
//! # Layout
//! - [`error`]: [`ApiError`], the one error body of every service, its mapping from errors
//!   to codes and statuses, and the inverse for arm clients.
//! - [`extract`]: [`ApiJson`], the JSON extractor that answers in our error shape.
//! - [`request_id`]: `X-Request-ID` accepted or generated, echoed, and in every span.
//! - [`observe`]: per-route request metrics and the Prometheus endpoint.
//! - [`openapi`]: the OpenAPI documents, generated from the types and the route tables.
//! - [`arm_service`]: one arm as its own HTTP service, built from the operation table, and
//!   the wire conventions.
//! - [`arm_client`]: the arms over HTTP behind their handler traits, with failover and breakers.
//! - [`auth`]: API keys: the principal of a request, and each service's route table of what
//!   every route needs.
//! - [`api`]: the orchestrator's public API (`/tasks…`, `/capabilities`, probes).
//! - [`reflex`]: the reflex service (`/preprocess`, cache, rate limits, forwarding of `/tasks…`).
//! - [`registry`]: the arm registry (`/registry`): self-registration, refresh, health polls.
//! - [`views`]: the wire shapes of tasks and steps.
//! - [`server`]: `serve(listener, router, shutdown)`.

pub mod api;
pub mod arm_client;
pub mod arm_service;
pub mod audit_relay;
pub mod auth;
pub mod error;
pub mod extract;
pub mod observe;
pub mod openapi;
pub mod reflex;
pub mod registry;
pub mod request_id;
pub mod server;
pub mod views;

pub use error::ApiError;
pub use extract::ApiJson;

/// What every service's router carries: request ids, per-route metrics, the body limit, and
/// the error body for the router's own 405s.
pub(crate) fn common_layers<S>(router: axum::Router<S>, body_limit: usize) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Install the recorder before the first request so no metric is lost.
    let _ = observe::prometheus();
    router
        .layer(axum::middleware::map_response(bare_method_not_allowed))
        .layer(axum::middleware::from_fn(observe::middleware))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(extract::BodyLimit(body_limit)))
}

/// The answer for a path no route serves (each router adds it before its authentication,
/// so an unknown path is refused to a caller without a key like any other).
pub(crate) async fn no_route() -> ApiError {
    ApiError::NotFound("route".into())
}

/// The router's own 405 (no body) in our error shape, keeping its `Allow` header.
async fn bare_method_not_allowed(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    if response.status() != http::StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(http::header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(http::header::ALLOW).cloned();
    let mut shaped = ApiError::MethodNotAllowed.into_response();
    if let Some(allow) = allow {
        shaped.headers_mut().insert(http::header::ALLOW, allow);
    }
    shaped
}
