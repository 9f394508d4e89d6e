//! API key authentication (SPEC §8). Every route needs a key except the ones in
//! [`OPEN_PATHS`], so a route added later is protected by default. The key comes in
//! `X-API-Key` or `Authorization: Bearer`; the request then acts as its [`Principal`], which
//! handlers check for the scope they need ([`require`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::HeaderMap;
use octollm_core::auth::{key_id, key_matches};
use octollm_core::{Principal, Scope};
use octollm_store::ApiKeyStore;

use crate::error::ApiError;

/// Routes anyone may call: the probes, the metrics, the API description, and the arm
/// registry (which checks its own token).
pub const OPEN_PATHS: &[&str] = &[
    "/health",
    "/health/live",
    "/ready",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/registry",
];

#[derive(Clone)]
pub struct Auth {
    keys: Arc<dyn ApiKeyStore>,
    /// Without it a request with no key acts as [`Principal::unauthenticated`] (a loopback
    /// bind, or a trusted gateway in front); a key that is presented is checked either way.
    required: bool,
}

impl Auth {
    pub fn new(keys: Arc<dyn ApiKeyStore>, required: bool) -> Self {
        Auth { keys, required }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// The principal of a request's headers, or why it has none.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(presented) = presented_key(headers)? else {
            if self.required {
                return Err(refuse(
                    "missing",
                    "an API key is required (X-API-Key or Authorization: Bearer)",
                ));
            }
            return Ok(Principal::unauthenticated());
        };
        let invalid = || refuse("invalid", "the API key is not valid");
        let id = key_id(presented).ok_or_else(invalid)?;
        let record = self
            .keys
            .find_key(id)
            .await
            .map_err(|e| ApiError::DependencyDown {
                dependency: "database",
                cause: e.to_string(),
            })?
            .ok_or_else(invalid)?;
        if !key_matches(presented, &record.key_hash) {
            return Err(invalid());
        }
        if record.revoked_at.is_some_and(|at| at <= Utc::now()) {
            tracing::info!(key_id = %record.id, "revoked API key refused");
            return Err(refuse("revoked", "the API key has been revoked"));
        }
        Ok(Principal {
            key_id: Some(record.id),
            scopes: record.scopes,
        })
    }
}

/// The key a request carries, if any; both headers with different keys is an error.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let api_key = headers
        .get("x-api-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| refuse("invalid", "the API key is not valid"))
        })
        .transpose()?;
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(|| refuse("invalid", "Authorization must be `Bearer <API key>`"))
        })
        .transpose()?;
    match (api_key, bearer) {
        (Some(a), Some(b)) if a != b => Err(refuse(
            "invalid",
            "X-API-Key and Authorization carry different keys",
        )),
        (Some(key), _) | (None, Some(key)) => Ok(Some(key)),
        (None, None) => Ok(None),
    }
}

fn refuse(reason: &'static str, message: &str) -> ApiError {
    metrics::counter!("octollm_auth_failures_total", "reason" => reason).increment(1);
    ApiError::Unauthorized(message.to_owned())
}

/// 403 unless the principal holds `scope`.
pub fn require(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.allows(scope) {
        return Ok(());
    }
    metrics::counter!("octollm_auth_failures_total", "reason" => "scope").increment(1);
    Err(ApiError::Forbidden(format!(
        "this API key lacks the {scope} scope"
    )))
}

/// Resolves the principal of every request outside [`OPEN_PATHS`] and hands it to the
/// handlers as an extension.
pub async fn middleware(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match auth.authenticate(request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}
