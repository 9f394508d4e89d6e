//! HTTP adapters. Handlers extract, delegate to the orchestrator and map errors; they hold
//! no business logic.
//!
//! # Layout
//! - [`error`]: [`ApiError`], the one mapping from errors to statuses and the error body.
//! - [`extract`]: [`ApiJson`], the JSON extractor that answers in our error shape.
//! - [`request_id`]: `X-Request-ID` accepted or generated, echoed, and in every span.
//! - [`observe`]: per-route request metrics and the Prometheus endpoint.
//! - [`arm_service`]: one arm as its own HTTP service, and the wire conventions.
//! - [`arm_client`]: the arms over HTTP behind their traits, with failover and breakers.
//! - [`auth`]: API keys: the principal of a request, scopes, the open-route allowlist.
//! - [`api`]: the orchestrator's public API (`/tasks…`, `/capabilities`, probes).
//! - [`reflex`]: the reflex service (`/preprocess`, cache, rate limits, forwarding of `/tasks…`).
//! - [`registry`]: the arm registry (`/registry`): self-registration, refresh, health polls.
//! - [`views`]: the wire shapes of tasks and steps.
//! - [`server`]: `serve(listener, router, shutdown)`.

pub mod api;
pub mod arm_client;
pub mod arm_service;
pub mod auth;
pub mod error;
pub mod extract;
pub mod observe;
pub mod reflex;
pub mod registry;
pub mod request_id;
pub mod server;
pub mod views;

pub use error::ApiError;
pub use extract::ApiJson;

/// What every service's router carries: request ids, per-route metrics, the body limit.
pub(crate) fn common_layers<S>(router: axum::Router<S>, body_limit: usize) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Install the recorder before the first request so no metric is lost.
    let _ = observe::prometheus();
    router
        .layer(axum::middleware::from_fn(observe::middleware))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(extract::BodyLimit(body_limit)))
}
