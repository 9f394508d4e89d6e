//! API key authentication (SPEC §8). Each service declares what each of its routes needs in
//! one table ([`Route`]); the middleware applies it, and the OpenAPI document's security
//! requirements are read from the same table. A route missing from the table needs a valid
//! key, so a route added later is protected by default. The key comes in `X-API-Key` or
//! `Authorization: Bearer`; the request then acts as its [`Principal`]. Every refusal is
//! counted and written to the audit log, with the request id and the key id when there is one.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::{HeaderMap, Method};
use octollm_core::auth::{key_id, key_matches};
use octollm_core::{Principal, Scope};
use octollm_store::{ApiKeyStore, AuditEntry, AuditKind, AuditLog};

use crate::error::ApiError;
use crate::openapi::{Document, Operation};

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, the API description, routes that check a token of their own.
    Open,
    /// Any valid key.
    AnyKey,
    /// A key with this scope (admin implies every scope).
    Scope(Scope),
}

/// One route of a service: what it needs, and its entry in the service's OpenAPI document.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub describe: fn(&mut Document, Access) -> Operation,
}

impl Route {
    pub const fn new(
        method: Method,
        path: &'static str,
        access: Access,
        describe: fn(&mut Document, Access) -> Operation,
    ) -> Self {
        Route {
            method,
            path,
            access,
            describe,
        }
    }

    /// Adds the route's entry to `doc`.
    pub fn document(&self, doc: &mut Document) {
        let operation = (self.describe)(doc, self.access);
        doc.add(&self.method, self.path, operation);
    }
}

/// What `method path` (the matched route) needs: from the table, else a valid key.
pub fn access(routes: &[Route], method: &Method, path: Option<&str>) -> Access {
    path.and_then(|path| {
        routes
            .iter()
            .find(|r| r.path == path && r.method == *method)
    })
    .map_or(Access::AnyKey, |r| r.access)
}

const INVALID: &str = "the API key is not valid";

#[derive(Clone)]
pub struct Auth {
    keys: Arc<dyn ApiKeyStore>,
    audit: Arc<dyn AuditLog>,
    /// Without it a request with no key acts as [`Principal::unauthenticated`] (a loopback
    /// bind, or a trusted gateway in front); a key that is presented is checked either way.
    required: bool,
}

/// Why a request has no principal.
enum Refusal {
    Key {
        /// The metric label and the audit entry's reason.
        reason: &'static str,
        message: &'static str,
        /// Set once the presented key's id names a real key (ids are not secret).
        key_id: Option<String>,
    },
    /// The key store could not answer: 503, not a refusal of the key.
    Store(ApiError),
}

impl Refusal {
    fn key(reason: &'static str, message: &'static str) -> Self {
        Refusal::Key {
            reason,
            message,
            key_id: None,
        }
    }
}

impl Auth {
    pub fn new(keys: Arc<dyn ApiKeyStore>, audit: Arc<dyn AuditLog>, required: bool) -> Self {
        Auth {
            keys,
            audit,
            required,
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Writes an audit entry for the current request. A failure to write is logged, never
    /// turned into a failure of the request (the refusal it records stands either way).
    async fn record(&self, kind: AuditKind, key_id: Option<&str>, detail: serde_json::Value) {
        let entry = AuditEntry {
            at: Utc::now(),
            kind,
            request_id: crate::request_id::current(),
            key_id: key_id.map(str::to_owned),
            detail,
        };
        if let Err(e) = self.audit.record(&entry).await {
            tracing::warn!(error = %e, kind = %kind, "audit entry not written");
        }
    }

    /// 403 unless the principal holds `scope`; the refusal is counted and audited.
    pub async fn require(&self, principal: &Principal, scope: Scope) -> Result<(), ApiError> {
        if principal.allows(scope) {
            return Ok(());
        }
        metrics::counter!("octollm_auth_failures_total", "reason" => "scope").increment(1);
        self.record(
            AuditKind::ScopeDenied,
            principal.key_id.as_deref(),
            serde_json::json!({"scope": scope.as_str()}),
        )
        .await;
        Err(ApiError::Forbidden(format!(
            "this API key lacks the {scope} scope"
        )))
    }

    /// The principal of a request's headers, or why it has none (counted and audited).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        match self.check(headers).await {
            Ok(principal) => Ok(principal),
            Err(Refusal::Store(e)) => Err(e),
            Err(Refusal::Key {
                reason,
                message,
                key_id,
            }) => {
                metrics::counter!("octollm_auth_failures_total", "reason" => reason).increment(1);
                self.record(
                    AuditKind::AuthFailure,
                    key_id.as_deref(),
                    serde_json::json!({"reason": reason}),
                )
                .await;
                Err(ApiError::Unauthorized(message.to_owned()))
            }
        }
    }

    /// The id of the request's key when it verifies; records nothing (the per-key rate limit
    /// asks this of every request; the route's own check records refusals).
    pub async fn identify(&self, headers: &HeaderMap) -> Option<String> {
        match self.check(headers).await {
            Ok(principal) => principal.key_id,
            Err(_) => None,
        }
    }

    /// The principal a request acts as when its route needs `access`.
    pub async fn admit(&self, access: Access, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let principal = self.authenticate(headers).await?;
        if let Access::Scope(scope) = access {
            self.require(&principal, scope).await?;
        }
        Ok(principal)
    }

    async fn check(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let Some(presented) = presented_key(headers)? else {
            if self.required {
                return Err(Refusal::key(
                    "missing",
                    "an API key is required (X-API-Key or Authorization: Bearer)",
                ));
            }
            return Ok(Principal::unauthenticated());
        };
        let invalid = || Refusal::key("invalid", INVALID);
        let id = key_id(presented).ok_or_else(invalid)?;
        let record = self
            .keys
            .find_key(id)
            .await
            .map_err(|e| {
                Refusal::Store(ApiError::DependencyDown {
                    dependency: "database",
                    cause: e.to_string(),
                })
            })?
            .ok_or_else(invalid)?;
        let refused = |reason, message| Refusal::Key {
            reason,
            message,
            key_id: Some(record.id.clone()),
        };
        if !key_matches(presented, &record.key_hash) {
            return Err(refused("invalid", INVALID));
        }
        if record.revoked_at.is_some_and(|at| at <= Utc::now()) {
            return Err(refused("revoked", "the API key has been revoked"));
        }
        Ok(Principal {
            key_id: Some(record.id),
            scopes: record.scopes,
        })
    }
}

/// The bearer credential of a request, when it sends `Authorization: Bearer …`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The key a request carries, if any; both headers with different keys is an error.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let api_key = headers
        .get("x-api-key")
        .map(|v| v.to_str().map_err(|_| Refusal::key("invalid", INVALID)))
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
                .ok_or_else(|| Refusal::key("invalid", "Authorization must be `Bearer <API key>`"))
        })
        .transpose()?;
    match (api_key, bearer) {
        (Some(a), Some(b)) if a != b => Err(Refusal::key(
            "invalid",
            "X-API-Key and Authorization carry different keys",
        )),
        (Some(key), _) | (None, Some(key)) => Ok(Some(key)),
        (None, None) => Ok(None),
    }
}

/// What the middleware needs: the keys and the service's route table.
#[derive(Clone)]
pub struct Gate {
    pub auth: Auth,
    pub routes: &'static [Route],
}

/// Admits every request its route allows and hands its [`Principal`] to the handler as an
/// extension (open routes have none: their handlers act for nobody).
pub async fn middleware(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let access = access(gate.routes, request.method(), path.as_deref());
    if access == Access::Open {
        return next.run(request).await;
    }
    match gate.auth.admit(access, request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}
