//! Who may call an arm service (SPEC §8), knowing nothing of HTTP.
//!
//! With token public keys configured, the orchestrator's calls carry a capability token it
//! signed for this arm and operation: [`ArmGuard::verify`] checks signature, expiry, audience,
//! arm, action and revocation, and [`ArmGuard::check_grant`] that the token grants what the
//! request would do (the executor's program and network use). Every refusal is counted and
//! audited. Direct callers present API keys instead; the HTTP adapter checks those.

use std::sync::Arc;

use octollm_core::Secret;
use octollm_core::token::{Claims, TokenError, TokenVerifier};
use octollm_store::{AuditEntry, AuditKind, AuditLog, MemoryRevocations, Revocations};

use crate::contract::Operation;

/// Why a call was refused: no valid credentials (401), not allowed this (403), or the
/// revocation list cannot be read (503: a token is never taken unchecked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub unauthenticated: bool,
    pub unavailable: bool,
    /// The metric label and the audit entry's reason.
    pub reason: &'static str,
    pub message: String,
}

/// The token check of an arm service.
#[derive(Clone)]
pub struct ArmGuard {
    verifier: Option<TokenVerifier>,
    /// The shared registry token: it also authorises revocations.
    admin_token: Option<Secret>,
    audit: Option<Arc<dyn AuditLog>>,
    /// Revoked tokens and tasks (shared through Redis in the distributed mode).
    revocations: Arc<dyn Revocations>,
}

impl ArmGuard {
    /// Takes calls without tokens (an arm on loopback, or tests).
    pub fn open() -> Self {
        Self::new(None, None, None, Arc::new(MemoryRevocations::new()))
    }

    pub fn new(
        verifier: Option<TokenVerifier>,
        admin_token: Option<Secret>,
        audit: Option<Arc<dyn AuditLog>>,
        revocations: Arc<dyn Revocations>,
    ) -> Self {
        ArmGuard {
            verifier,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            audit,
            revocations,
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
                unavailable: false,
                reason: "invalid",
                message: "this arm takes no capability tokens".into(),
            });
        };
        let checked = match token {
            None => Err(TokenError::Missing),
            Some(token) => verifier.verify(token, O::ARM, O::action(), now_unix),
        };
        let checked = match checked {
            Ok(claims) => match self
                .revocations
                .is_revoked(&claims.jti, claims.task_id.as_deref(), now_unix)
                .await
            {
                Ok(false) => Ok(claims),
                Ok(true) => Err(TokenError::Revoked),
                Err(e) => {
                    tracing::warn!(error = %e, "the revocation list cannot be read; refusing the token");
                    metrics::counter!("octollm_arm_token_refusals_total", "reason" => "revocations_unavailable")
                        .increment(1);
                    return Err(Refusal {
                        unauthenticated: false,
                        unavailable: true,
                        reason: "revocations_unavailable",
                        message: format!("the revocation list cannot be read: {e}"),
                    });
                }
            },
            Err(e) => Err(e),
        };
        match checked {
            Ok(claims) => Ok(claims),
            Err(e) => {
                let refusal = Refusal {
                    unauthenticated: e.is_unauthenticated(),
                    unavailable: false,
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
            unavailable: false,
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
            unavailable: false,
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

    /// Refuses token id `jti` until it expires at `exp` (Unix seconds); `presented` must be
    /// the registry token.
    pub async fn revoke(
        &self,
        presented: Option<&str>,
        jti: &str,
        exp: i64,
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
                unavailable: false,
                reason: "invalid",
                message: "revocations need the registry token".into(),
            });
        }
        self.revocations
            .revoke_token(jti, exp)
            .await
            .map_err(|e| Refusal {
                unauthenticated: false,
                unavailable: true,
                reason: "revocations_unavailable",
                message: format!("the revocation list cannot be written: {e}"),
            })
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

/// The in-process executor with its policy refusals audited: wherever it runs (the embedded
/// orchestrator or the executor's service), a command its sandbox policy refuses is an
/// `executor_denied` entry with the program and the task.
pub struct AuditedExecutor {
    inner: Arc<dyn crate::Handler<crate::Execute>>,
    audit: Arc<dyn AuditLog>,
}

impl AuditedExecutor {
    /// Wraps the executor of `arms`.
    pub fn wrap(arms: &mut crate::Arms, audit: Arc<dyn AuditLog>) {
        let inner = crate::Execute::handler(arms).clone();
        crate::Execute::replace(arms, Arc::new(Self { inner, audit }));
    }
}

#[async_trait::async_trait]
impl crate::Handler<crate::Execute> for AuditedExecutor {
    async fn handle(
        &self,
        request: crate::executor::ExecuteRequest,
        ctx: crate::CallContext,
    ) -> Result<crate::ArmOutcome<crate::executor::ExecuteResponse>, crate::ArmError> {
        let program = request
            .grant()
            .programs
            .into_iter()
            .next()
            .unwrap_or_default();
        let (request_id, task_id) = (ctx.request_id.clone(), ctx.task_id.clone());
        // The plan's grant bounds the request in every mode, before the sandbox policy.
        if let Some(granted) = &ctx.grant
            && let Err(denied) = granted.covers(&request.grant())
        {
            metrics::counter!("octollm_arm_token_refusals_total", "reason" => denied.reason())
                .increment(1);
            let entry = AuditEntry {
                at: chrono::Utc::now(),
                kind: AuditKind::ExecutorDenied,
                request_id: Some(request_id).filter(|r| !r.is_empty()),
                key_id: None,
                detail: serde_json::json!({
                    "reason": denied.reason(),
                    "program": loggable(&program),
                    "task_id": task_id,
                    "granted_by": "plan",
                }),
            };
            if let Err(e) = self.audit.record(&entry).await {
                tracing::warn!(error = %e, "audit entry not written");
            }
            return Err(crate::ArmError::Refused(format!(
                "{denied}: the plan grants this step {}",
                if granted.programs.is_empty() {
                    "no program".to_owned()
                } else {
                    granted.programs.join(", ")
                }
            )));
        }
        let result = self.inner.handle(request, ctx).await;
        if let Err(crate::ArmError::Refused(_)) = &result {
            let entry = AuditEntry {
                at: chrono::Utc::now(),
                kind: AuditKind::ExecutorDenied,
                request_id: Some(request_id).filter(|r| !r.is_empty()),
                key_id: None,
                detail: serde_json::json!({
                    "reason": "policy",
                    "program": loggable(&program),
                    "task_id": task_id,
                }),
            };
            if let Err(e) = self.audit.record(&entry).await {
                tracing::warn!(error = %e, "audit entry not written");
            }
        }
        result
    }

    fn status(&self) -> crate::ArmStatus {
        self.inner.status()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test")]

    use std::sync::Mutex;

    use octollm_core::token::ExecutorGrant;
    use octollm_core::{Budget, BudgetTracker, Usage};

    use super::*;
    use crate::executor::{ExecuteRequest, ExecuteResponse};
    use crate::{ArmError, ArmOutcome, ArmStatus, CallContext, Handler, Health};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<AuditEntry>>);

    #[async_trait::async_trait]
    impl AuditLog for Recorded {
        async fn record(&self, entry: &AuditEntry) -> Result<(), octollm_store::StoreError> {
            self.0.lock().unwrap().push(entry.clone());
            Ok(())
        }

        async fn audit_entries(
            &self,
            _filter: &octollm_store::AuditFilter,
        ) -> Result<Vec<octollm_store::AuditRecord>, octollm_store::StoreError> {
            Ok(Vec::new())
        }
    }

    /// Counts the requests that got past the guard.
    #[derive(Default)]
    struct Counting(Mutex<u32>);

    #[async_trait::async_trait]
    impl Handler<crate::Execute> for Counting {
        async fn handle(
            &self,
            _request: ExecuteRequest,
            _ctx: CallContext,
        ) -> Result<ArmOutcome<ExecuteResponse>, ArmError> {
            *self.0.lock().unwrap() += 1;
            Err(ArmError::Internal("not run in this test".into()))
        }

        fn status(&self) -> ArmStatus {
            ArmStatus::in_process(Health::Healthy)
        }
    }

    fn ctx(grant: Option<ExecutorGrant>) -> CallContext {
        let mut ctx = CallContext::standalone(
            "req-grant",
            BudgetTracker::new(&Budget::default(), 0, Usage::default()),
        );
        ctx.grant = grant;
        ctx
    }

    #[tokio::test]
    async fn a_command_the_plan_did_not_grant_is_refused_and_audited() {
        let inner = Arc::new(Counting::default());
        let audit = Arc::new(Recorded::default());
        let executor = AuditedExecutor {
            inner: inner.clone(),
            audit: audit.clone(),
        };
        let python_only = ExecutorGrant {
            programs: vec!["python3".into()],
            network: false,
        };
        let curl = ExecuteRequest::shell("curl", vec!["https://attacker.example".into()]);
        let err = executor
            .handle(curl, ctx(Some(python_only.clone())))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ArmError::Refused(m) if m.contains("running `curl` was not granted")),
            "{err}"
        );
        let mut online = ExecuteRequest::python("print(1)");
        online.allow_network = true;
        let err = executor
            .handle(online, ctx(Some(python_only.clone())))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ArmError::Refused(m) if m.contains("network")),
            "{err}"
        );
        assert_eq!(
            *inner.0.lock().unwrap(),
            0,
            "a refused request reached the executor"
        );
        let entries = audit.0.lock().unwrap().clone();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].kind, AuditKind::ExecutorDenied);
        assert_eq!(entries[0].detail["reason"], "program_not_granted");
        assert_eq!(entries[0].detail["program"], "curl");
        assert_eq!(entries[0].detail["granted_by"], "plan");
        assert_eq!(entries[1].detail["reason"], "network_not_granted");

        // Within the grant, or outside any plan, the request goes on to the executor.
        let _ = executor
            .handle(ExecuteRequest::python("print(1)"), ctx(Some(python_only)))
            .await;
        let _ = executor
            .handle(ExecuteRequest::shell("ls", vec![]), ctx(None))
            .await;
        assert_eq!(*inner.0.lock().unwrap(), 2);
    }
}
