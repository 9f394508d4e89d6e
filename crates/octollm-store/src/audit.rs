//! The audit trail (SPEC §8): authentication failures, key changes, blocked inputs and other
//! refusals, each with the request id and the API key id, in the task store's database (both
//! backends), readable by admin keys through `GET /audit`.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::rows::{from_ms, ms};
use crate::sqlite::SqliteStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A request without a valid key (missing, malformed, unknown, wrong secret, revoked).
    AuthFailure,
    /// A valid key without the scope a route needs.
    ScopeDenied,
    KeyCreated,
    KeyRevoked,
    /// A submission the reflex checks blocked as a likely prompt injection.
    InputBlocked,
    /// An arm refused a call's capability token (missing, forged, expired, revoked, or for
    /// another audience, arm or action).
    TokenRefused,
    /// The executor refused a command its token did not grant (program, network).
    ExecutorDenied,
    /// Screening found a prompt injection in untrusted content a task's unit produced
    /// (a retrieved document, command output, an arm's answer); the detail says what the
    /// policy did with it.
    UntrustedContent,
}

impl AuditKind {
    pub const ALL: [AuditKind; 8] = [
        AuditKind::AuthFailure,
        AuditKind::ScopeDenied,
        AuditKind::KeyCreated,
        AuditKind::KeyRevoked,
        AuditKind::InputBlocked,
        AuditKind::TokenRefused,
        AuditKind::ExecutorDenied,
        AuditKind::UntrustedContent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AuthFailure => "auth_failure",
            AuditKind::ScopeDenied => "scope_denied",
            AuditKind::KeyCreated => "key_created",
            AuditKind::KeyRevoked => "key_revoked",
            AuditKind::InputBlocked => "input_blocked",
            AuditKind::TokenRefused => "token_refused",
            AuditKind::ExecutorDenied => "executor_denied",
            AuditKind::UntrustedContent => "untrusted_content",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown audit kind (expected one of {})", known.join(", "))
            })
    }
}

/// One entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub request_id: Option<String>,
    pub key_id: Option<String>,
    /// Reasons and types only: never key material or input text.
    pub detail: serde_json::Value,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub request_id: Option<String>,
    pub key_id: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub kind: Option<AuditKind>,
    /// Entries before this sequence number (the previous page's last).
    pub before: Option<i64>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Newest first.
    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
}

type AuditColumns = (i64, i64, String, Option<String>, Option<String>, String);

fn decode(
    (seq, at, kind, request_id, key_id, detail): AuditColumns,
) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq,
        at: from_ms(at)?,
        kind: kind
            .parse()
            .map_err(|e: String| StoreError::Corrupt(format!("audit entry {seq}: {e}")))?,
        request_id,
        key_id,
        detail: serde_json::from_str(&detail)?,
    })
}

const INSERT: &str =
    "INSERT INTO audit_log (at, kind, request_id, key_id, detail) VALUES ($1, $2, $3, $4, $5)";
const SELECT: &str = "SELECT seq, at, kind, request_id, key_id, detail FROM audit_log \
     WHERE (CAST($1 AS TEXT) IS NULL OR kind = $1) AND (CAST($2 AS BIGINT) IS NULL OR seq < $2) \
     ORDER BY seq DESC LIMIT $3";

/// One implementation, expanded for each backend (the statements suit both).
macro_rules! audit_impl {
    ($store:ty) => {
        #[async_trait]
        impl AuditLog for $store {
            async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
                sqlx::query(INSERT)
                    .bind(ms(entry.at))
                    .bind(entry.kind.as_str())
                    .bind(entry.request_id.as_deref())
                    .bind(entry.key_id.as_deref())
                    .bind(entry.detail.to_string())
                    .execute(self.pool())
                    .await?;
                Ok(())
            }

            async fn audit_entries(
                &self,
                filter: &AuditFilter,
            ) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = sqlx::query(SELECT)
                    .bind(filter.kind.map(AuditKind::as_str))
                    .bind(filter.before)
                    .bind(i64::from(filter.limit.clamp(1, 1000)))
                    .fetch_all(self.pool())
                    .await?;
                rows.iter()
                    .map(|r| {
                        decode((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            r.try_get(4)?,
                            r.try_get(5)?,
                        ))
                    })
                    .collect()
            }
        }
    };
}

audit_impl!(SqliteStore);
audit_impl!(PostgresStore);
