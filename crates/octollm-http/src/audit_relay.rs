//! An arm service's audit trail in the distributed mode: its entries (token refusals,
//! executor denials) go to the orchestrators' shared audit log through the registry
//! (`POST /registry/audit`, with the registry token), so they outlive the pod and show in
//! `GET /audit`. An entry the orchestrator cannot take after a few tries is kept in the
//! instance's own log and counted, never dropped silently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use octollm_core::{ArmKind, Secret};
use octollm_store::{AuditEntry, AuditFilter, AuditLog, AuditRecord, StoreError};

use crate::registry::ArmAuditEntry;

const ATTEMPTS: u32 = 3;

pub struct RelayedAudit {
    /// `{ARM_REGISTRY_URL}/audit`.
    url: String,
    token: Secret,
    arm: ArmKind,
    client: reqwest::Client,
    local: Arc<dyn AuditLog>,
}

impl RelayedAudit {
    /// `registry_url`: the arm's `ARM_REGISTRY_URL` (`http://orchestrator:8000/registry`).
    pub fn new(
        registry_url: &str,
        token: Secret,
        arm: ArmKind,
        client: reqwest::Client,
        local: Arc<dyn AuditLog>,
    ) -> Self {
        Self {
            url: format!("{}/audit", registry_url.trim_end_matches('/')),
            token,
            arm,
            client,
            local,
        }
    }

    async fn send(&self, body: &ArmAuditEntry) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            match self
                .client
                .post(&self.url)
                .bearer_auth(self.token.expose())
                .timeout(Duration::from_secs(5))
                .json(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                // Refused as it is: trying again changes nothing.
                Ok(r) if r.status().is_client_error() => {
                    return Err(format!("the orchestrator answered {}", r.status()));
                }
                Ok(r) => last = format!("the orchestrator answered {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

#[async_trait]
impl AuditLog for RelayedAudit {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let body = ArmAuditEntry {
            arm: self.arm,
            kind: entry.kind,
            request_id: entry.request_id.clone(),
            detail: entry.detail.as_object().cloned().unwrap_or_default(),
        };
        match self.send(&body).await {
            Ok(()) => Ok(()),
            Err(cause) => {
                metrics::counter!("octollm_audit_relay_failures_total").increment(1);
                tracing::warn!(%cause, url = %self.url, "audit entry kept in this instance's own log");
                self.local.record(entry).await
            }
        }
    }

    /// This instance's own entries (those the orchestrator did not take).
    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.local.audit_entries(filter).await
    }
}
