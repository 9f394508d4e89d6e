//! The arm registry (`ARM_REGISTRY_URL`, `http://orchestrator:8000/registry`): arm instances
//! announce themselves with `POST /registry`, renew before their registration lapses and
//! leave with `DELETE /registry` when they shut down. Registrations live in the database, so
//! every orchestrator replica learns of every instance ([`Registry::refresh`]); each replica
//! also polls every instance's `/ready` ([`watch_arms`]).
//!
//! A registration sends that instance the tasks' text, so the registry requires a shared
//! token (`OCTOLLM_ARM_REGISTRY_TOKEN`, `Authorization: Bearer …`) and is off without one.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use octollm_core::ArmKind;
use octollm_store::{ArmRegistry, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::arm_client::{ArmClient, Origin, check_endpoint};
use crate::auth::Access;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::openapi::{Document, Operation};

/// Longest instance URL accepted.
const MAX_URL_LEN: usize = 512;

/// The orchestrator's side of the registry.
pub struct Registry {
    store: Arc<dyn ArmRegistry>,
    token: String,
    ttl: Duration,
    clients: Vec<Arc<ArmClient>>,
}

/// `POST /registry` and `DELETE /registry`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    pub arm: ArmKind,
    /// The instance's base URL as the orchestrators reach it (`http://10.1.2.3:8102`).
    #[schemars(length(max = MAX_URL_LEN), pattern(ENDPOINT_PATTERN))]
    pub url: String,
}

/// An instance URL: http(s), a host, an optional path; no credentials, query or fragment.
const ENDPOINT_PATTERN: &str = "^https?://[A-Za-z0-9.:\\[\\]_-]+(/[^\\s?#]*)?$";

/// The answer to a registration: renew well before `ttl_seconds` pass.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Registered {
    pub arm: ArmKind,
    pub url: String,
    pub ttl_seconds: u64,
}

impl Registry {
    /// `clients`: the HTTP client of every arm whose instances may come from the registry.
    pub fn new(
        store: Arc<dyn ArmRegistry>,
        token: String,
        ttl: Duration,
        clients: Vec<Arc<ArmClient>>,
    ) -> Self {
        Self {
            store,
            token,
            ttl,
            clients,
        }
    }

    /// Loads the live registrations into the arm clients.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let live = self.store.registered(chrono::Utc::now()).await?;
        for client in &self.clients {
            let urls: Vec<String> = live
                .iter()
                .filter(|r| r.arm == client.arm())
                .map(|r| r.url.clone())
                .collect();
            client.set_registered(&urls);
        }
        Ok(())
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(
                "the arm registry needs its token: Authorization: Bearer <OCTOLLM_ARM_REGISTRY_TOKEN>"
                    .into(),
            ))
        }
    }
}

/// Until `shutdown`: every `every`, refresh the registrations (when the registry is on)
/// and poll the readiness of every instance of `clients` (each poll waits at most
/// `poll_timeout`).
pub async fn watch_arms(
    registry: Option<Arc<Registry>>,
    clients: Vec<Arc<ArmClient>>,
    every: Duration,
    poll_timeout: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Some(registry) = &registry
            && let Err(e) = registry.refresh().await
        {
            tracing::warn!(error = %e, "arm registry: cannot read registrations");
        }
        futures::future::join_all(clients.iter().map(|c| c.poll_health(poll_timeout))).await;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn enabled(state: &ApiState) -> Result<&Arc<Registry>, ApiError> {
    state.registry.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "the arm registry (it is off on this orchestrator: set OCTOLLM_ARM_REGISTRY_TOKEN)"
                .into(),
        )
    })
}

fn check(request: &RegistrationRequest) -> Result<(), ApiError> {
    if request.url.len() > MAX_URL_LEN {
        return Err(ApiError::validation(format!(
            "url: at most {MAX_URL_LEN} characters"
        )));
    }
    check_endpoint(request.arm, &request.url).map_err(ApiError::validation)
}

/// `POST /registry`: registers or renews an instance.
pub async fn register(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegistrationRequest>,
) -> Result<Response, ApiError> {
    let registry = enabled(&state)?;
    registry.authorize(&headers)?;
    check(&request)?;
    let url = request.url.trim_end_matches('/').to_owned();
    registry
        .store
        .register(request.arm, &url, registry.ttl, chrono::Utc::now())
        .await?;
    // This replica uses it at once; the others at their next refresh.
    registry.refresh().await?;
    metrics::counter!("octollm_arm_registrations_total", "arm" => request.arm.id()).increment(1);
    Ok(Json(Registered {
        arm: request.arm,
        url,
        ttl_seconds: registry.ttl.as_secs(),
    })
    .into_response())
}

/// `DELETE /registry`: an instance leaves (it is shutting down).
pub async fn deregister(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegistrationRequest>,
) -> Result<Response, ApiError> {
    let registry = enabled(&state)?;
    registry.authorize(&headers)?;
    check(&request)?;
    let url = request.url.trim_end_matches('/');
    if !registry.store.deregister(request.arm, url).await? {
        return Err(ApiError::NotFound(format!(
            "registration of {} at {url}",
            request.arm.id()
        )));
    }
    registry.refresh().await?;
    tracing::info!(arm = request.arm.id(), instance = %url, "arm instance deregistered");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /registry/audit`: an entry of an arm instance's audit trail (its token refusals and
/// executor denials), written to the orchestrators' shared audit log so it outlives the pod
/// and shows in `GET /audit`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmAuditEntry {
    pub arm: ArmKind,
    /// What the arm refused: `token_refused` or `executor_denied` only.
    pub kind: octollm_store::AuditKind,
    #[schemars(length(max = 128))]
    pub request_id: Option<String>,
    /// Reasons and names only (the arm writes no input text or key material).
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// Largest `detail` accepted, in bytes of JSON.
const MAX_AUDIT_DETAIL_BYTES: usize = 4096;

/// `POST /registry/audit`: records an arm instance's audit entry (with the registry token).
pub async fn record_audit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(entry): ApiJson<ArmAuditEntry>,
) -> Result<Response, ApiError> {
    let registry = enabled(&state)?;
    registry.authorize(&headers)?;
    use octollm_store::AuditKind;
    if !matches!(
        entry.kind,
        AuditKind::TokenRefused | AuditKind::ExecutorDenied
    ) {
        return Err(ApiError::validation(format!(
            "an arm records only token_refused and executor_denied entries, not {}",
            entry.kind
        )));
    }
    if entry.request_id.as_ref().is_some_and(|r| r.len() > 128) {
        return Err(ApiError::validation("request_id is over 128 characters"));
    }
    let mut detail = entry.detail;
    if serde_json::to_vec(&detail).map_or(true, |b| b.len() > MAX_AUDIT_DETAIL_BYTES) {
        return Err(ApiError::validation(format!(
            "detail is over {MAX_AUDIT_DETAIL_BYTES} bytes"
        )));
    }
    detail.insert("arm".into(), serde_json::Value::from(entry.arm.id()));
    state
        .orchestrator
        .record_audit(&octollm_store::AuditEntry {
            at: chrono::Utc::now(),
            kind: entry.kind,
            request_id: entry.request_id,
            key_id: None,
            detail: serde_json::Value::Object(detail),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One instance this replica calls.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceView {
    pub arm: ArmKind,
    pub url: String,
    /// `configured` or `registered`.
    pub origin: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
}

/// `GET /registry`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Instances {
    pub instances: Vec<InstanceView>,
}

/// `GET /registry`: every instance this replica calls, with its origin and breaker state.
pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Instances>, ApiError> {
    let registry = enabled(&state)?;
    registry.authorize(&headers)?;
    let instances = registry
        .clients
        .iter()
        .flat_map(|client| {
            client
                .instances()
                .into_iter()
                .map(move |(url, origin, breaker)| InstanceView {
                    arm: client.arm(),
                    url,
                    origin: match origin {
                        Origin::Configured => "configured",
                        Origin::Registered => "registered",
                    }
                    .to_owned(),
                    breaker: breaker.as_str().to_owned(),
                })
        })
        .collect();
    Ok(Json(Instances { instances }))
}

fn registry_operation(summary: &str) -> Operation {
    // The registry checks its own token, not an API key.
    Operation::new(summary, Access::Open).with("security", serde_json::json!([{"Bearer": []}]))
}

pub(crate) fn doc_list(doc: &mut Document, _: Access) -> Operation {
    let list = doc.schema::<Instances>();
    registry_operation("Every arm instance this replica calls")
        .json(200, "The instances", list)
        .error(doc, 401, "Without the registry token")
}

pub(crate) fn doc_register(doc: &mut Document, _: Access) -> Operation {
    let body = doc.schema::<RegistrationRequest>();
    let registered = doc.schema::<Registered>();
    registry_operation("Register (or renew) an arm instance")
        .json_body(doc, body)
        .json(200, "Registered until its TTL passes", registered)
        .error(doc, 401, "Without the registry token")
        .error(doc, 503, "The database is unavailable")
}

pub(crate) fn doc_deregister(doc: &mut Document, _: Access) -> Operation {
    let body = doc.schema::<RegistrationRequest>();
    registry_operation("Deregister an arm instance (it is shutting down)")
        .json_body(doc, body)
        .empty(204, "Deregistered")
        .error(doc, 401, "Without the registry token")
        .error(doc, 404, "No such registration")
        .error(doc, 503, "The database is unavailable")
}

pub(crate) fn doc_record_audit(doc: &mut Document, _: Access) -> Operation {
    let body = doc.schema::<ArmAuditEntry>();
    registry_operation("Record an arm instance's audit entry in the shared audit log")
        .json_body(doc, body)
        .empty(204, "Recorded")
        .error(doc, 401, "Without the registry token")
        .error(doc, 503, "The database is unavailable")
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokex"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b"s3cret-token"));
    }
}
