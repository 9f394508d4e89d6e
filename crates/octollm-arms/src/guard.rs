//! Who may call an arm service (SPEC §8), knowing nothing of HTTP.
//!
//! With token public keys configured, the orchestrator's calls carry a capability token it
//! signed for this arm and operation: [`ArmGuard::verify`] checks signature, expiry, audience,
//! arm, action and revocation, and [`ArmGuard::check_grant`] that the token grants what the
//! request would do (the executor's program and network use). Every refusal is counted and
//! audited. Direct callers present API keys instead; the HTTP adapter checks those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use octollm_core::Secret;
use octollm_core::token::{Claims, TokenError, TokenVerifier};
use octollm_store::{AuditEntry, AuditKind, AuditLog};

use crate::contract::Operation;

/// Why a call was refused: no valid credentials (401) or not allowed this (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub unauthenticated: bool,
    /// The metric label and the audit entry's reason.
    pub reason: &'static str,
    pub message: String,
}

/// The token check of an arm service.
#[derive(Clone, Default)]
pub struct ArmGuard {
    verifier: Option<TokenVerifier>,
    /// The shared registry token: it also authorises revocations.
    admin_token: Option<Secret>,
    audit: Option<Arc<dyn AuditLog>>,
    /// Revoked token ids until they expire (Unix seconds).
    revoked: Arc<Mutex<HashMap<String, i64>>>,
}

impl ArmGuard {
    /// Takes calls without tokens (an arm on loopback, or tests).
    pub fn open() -> Self {
        Self::default()
    }

    pub fn new(
        verifier: Option<TokenVerifier>,
        admin_token: Option<Secret>,
        audit: Option<Arc<dyn AuditLog>>,
    ) -> Self {
        ArmGuard {
            verifier,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            audit,
            revoked: Arc::default(),
        }
    }

    /// Whether the orchestrator's calls must carry capability tokens.
    pub fn requires_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    /// The claims of `token` for operation `O`, or the refusal (counted and audited).
    pub async fn verify<O: Operation>(
        &self,
        token: Option<&str>,
        now_unix: i64,
        request_id: Option<&str>,
    ) -> Result<Claims, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Err(Refusal {
                unauthenticated: true,
                reason: "invalid",
                message: "this arm takes no capability tokens".into(),
            });
        };
        let checked = match token {
            None => Err(TokenError::Missing),
            Some(token) => verifier
                .verify(token, O::ARM, O::action(), now_unix)
                .and_then(|claims| {
                    if self.is_revoked(&claims.jti) {
                        Err(TokenError::Revoked)
                    } else {
                        Ok(claims)
                    }
                }),
        };
        match checked {
            Ok(claims) => Ok(claims),
            Err(e) => {
                let refusal = Refusal {
                    unauthenticated: e.is_unauthenticated(),
                    reason: e.reason(),
                    message: e.to_string(),
                };
                self.refused(
                    AuditKind::TokenRefused,
                    &refusal,
                    request_id,
                    serde_json::json!({"reason": e.reason(), "arm": O::ARM, "action": O::action()}),
                )
                .await;
                Err(refusal)
            }
        }
    }

    /// A call that brings neither a capability token nor an API key, to an arm that takes
    /// tokens: refused (401), counted and audited like a missing token.
    pub async fn missing<O: Operation>(&self, request_id: Option<&str>) -> Refusal {
        let refusal = Refusal {
            unauthenticated: true,
            reason: TokenError::Missing.reason(),
            message: "a capability token (or an API key) is required".into(),
        };
        self.refused(
            AuditKind::TokenRefused,
            &refusal,
            request_id,
            serde_json::json!({"reason": refusal.reason, "arm": O::ARM, "action": O::action()}),
        )
        .await;
        refusal
    }

    /// The request does only what `claims` grant (the executor's program and network use);
    /// otherwise the refusal, counted and audited as an executor denial.
    pub async fn check_grant<O: Operation>(
        &self,
        claims: &Claims,
        request: &O::Request,
        request_id: Option<&str>,
    ) -> Result<(), Refusal> {
        let wanted = O::grant(request);
        let denial = if let Some(program) = wanted
            .programs
            .iter()
            .find(|p| !claims.programs.contains(p))
        {
            Some((
                "program_not_granted",
                format!("the capability token does not grant running `{program}`"),
                program.clone(),
            ))
        } else if wanted.network && !claims.network {
            Some((
                "network_not_granted",
                "the capability token does not grant network access".to_owned(),
                wanted.programs.first().cloned().unwrap_or_default(),
            ))
        } else {
            None
        };
        let Some((reason, message, program)) = denial else {
            return Ok(());
        };
        let refusal = Refusal {
            unauthenticated: false,
            reason,
            message,
        };
        self.refused(
            AuditKind::ExecutorDenied,
            &refusal,
            request_id,
            serde_json::json!({"reason": reason, "program": loggable(&program), "task_id": claims.task_id}),
        )
        .await;
        Err(refusal)
    }

    /// The executor's own policy refused `program` (allowlist, flags, paths, environment).
    pub async fn policy_refused(&self, program: &str, request_id: Option<&str>) {
        self.audit(
            AuditKind::ExecutorDenied,
            request_id,
            serde_json::json!({"reason": "policy", "program": loggable(program)}),
        )
        .await;
    }

    /// Refuses token id `jti` until it expires at `exp` (Unix seconds); `presented` must be
    /// the registry token.
    pub fn revoke(
        &self,
        presented: Option<&str>,
        jti: String,
        exp: i64,
        now_unix: i64,
    ) -> Result<(), Refusal> {
        let allowed = match (&self.admin_token, presented) {
            (Some(expected), Some(given)) => octollm_core::auth::key_matches(
                given,
                &octollm_core::auth::hash_key(expected.expose()),
            ),
            _ => false,
        };
        if !allowed {
            return Err(Refusal {
                unauthenticated: true,
                reason: "invalid",
                message: "revocations need the registry token".into(),
            });
        }
        if let Ok(mut set) = self.revoked.lock() {
            set.retain(|_, until| *until >= now_unix);
            set.insert(jti, exp);
        }
        Ok(())
    }

    fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .lock()
            .map(|set| set.contains_key(jti))
            .unwrap_or(true)
    }

    async fn refused(
        &self,
        kind: AuditKind,
        refusal: &Refusal,
        request_id: Option<&str>,
        detail: serde_json::Value,
    ) {
        metrics::counter!("octollm_arm_token_refusals_total", "reason" => refusal.reason)
            .increment(1);
        self.audit(kind, request_id, detail).await;
    }

    async fn audit(&self, kind: AuditKind, request_id: Option<&str>, detail: serde_json::Value) {
        let Some(audit) = &self.audit else { return };
        let entry = AuditEntry {
            at: chrono::Utc::now(),
            kind,
            request_id: request_id.map(str::to_owned),
            key_id: None,
            detail,
        };
        if let Err(e) = audit.record(&entry).await {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }
}

/// A program name fit for the audit log: a bare name, else a marker (a refused `command` may
/// be any text the model wrote).
fn loggable(program: &str) -> &str {
    let bare = !program.is_empty()
        && program.len() <= 64
        && program
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if bare {
        program
    } else {
        "(not a program name)"
    }
}
