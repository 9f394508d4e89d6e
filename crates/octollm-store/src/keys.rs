//! API keys (SPEC §8), kept in the task store's database so every replica checks the same
//! keys. Only each key's SHA-256 is stored; revoking keeps the record (for the audit trail)
//! and refuses the key from then on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use octollm_core::Scopes;
use sqlx::Row;

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::rows::{from_ms, ms};
use crate::sqlite::SqliteStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the whole key.
    pub key_hash: String,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn create_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Every key, revoked ones included, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    async fn find_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Marks the key revoked at `now`; false when no such key exists or it was revoked already.
    async fn revoke_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

type KeyColumns = (String, String, String, String, i64, Option<i64>);

fn decode(
    (id, name, key_hash, scopes, created, revoked): KeyColumns,
) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        scopes: scopes
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("api key {id}: {e}")))?,
        id,
        name,
        key_hash,
        created_at: from_ms(created)?,
        revoked_at: revoked.map(from_ms).transpose()?,
    })
}

const INSERT: &str =
    "INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)";
const SELECT_ALL: &str = "SELECT id, name, key_hash, scopes, created_at, revoked_at FROM api_keys \
                          ORDER BY created_at, id";
const SELECT_ONE: &str =
    "SELECT id, name, key_hash, scopes, created_at, revoked_at FROM api_keys WHERE id = $1";
const REVOKE: &str = "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

/// One implementation, expanded for each backend (the statements suit both).
macro_rules! keys_impl {
    ($store:ty, $row:ty) => {
        impl $store {
            fn api_key_from_row(r: &$row) -> Result<ApiKeyRecord, StoreError> {
                decode((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                ))
            }
        }

        #[async_trait]
        impl ApiKeyStore for $store {
            async fn create_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
                sqlx::query(INSERT)
                    .bind(&key.id)
                    .bind(&key.name)
                    .bind(&key.key_hash)
                    .bind(key.scopes.to_string())
                    .bind(ms(key.created_at))
                    .execute(self.pool())
                    .await?;
                Ok(())
            }

            async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
                let rows = sqlx::query(SELECT_ALL).fetch_all(self.pool()).await?;
                rows.iter().map(Self::api_key_from_row).collect()
            }

            async fn find_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
                let row = sqlx::query(SELECT_ONE)
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await?;
                row.as_ref().map(Self::api_key_from_row).transpose()
            }

            async fn revoke_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
                let done = sqlx::query(REVOKE)
                    .bind(id)
                    .bind(ms(now))
                    .execute(self.pool())
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

keys_impl!(SqliteStore, sqlx::sqlite::SqliteRow);
keys_impl!(PostgresStore, sqlx::postgres::PgRow);
