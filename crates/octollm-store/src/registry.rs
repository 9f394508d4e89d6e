//! The arm registry: arm instances that announce themselves (`ARM_REGISTRY_URL`) and renew
//! their registration before it lapses. Kept in the task store's database, so every
//! orchestrator replica sees every registration, whichever replica received it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use octollm_core::ArmKind;
use sqlx::Row;

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::rows::ms;
use crate::sqlite::SqliteStore;

/// One live registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub arm: ArmKind,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait ArmRegistry: Send + Sync {
    /// Records (or renews) `url` as an instance of `arm` until `now + ttl`.
    async fn register(
        &self,
        arm: ArmKind,
        url: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Forgets an instance (it is shutting down); false when it was not registered.
    async fn deregister(&self, arm: ArmKind, url: &str) -> Result<bool, StoreError>;

    /// Registrations that have not lapsed at `now`, by arm then URL; lapsed ones are deleted.
    async fn registered(&self, now: DateTime<Utc>) -> Result<Vec<Registration>, StoreError>;
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn decode(rows: Vec<(String, String, i64)>) -> Vec<Registration> {
    rows.into_iter()
        .filter_map(|(arm, url, expires)| {
            // A row for an arm this version does not know is skipped, not an error.
            let arm = arm.parse::<ArmKind>().ok()?;
            let expires_at = DateTime::from_timestamp_millis(expires)?;
            Some(Registration {
                arm,
                url,
                expires_at,
            })
        })
        .collect()
}

const UPSERT: &str = "INSERT INTO arm_instances (arm, url, registered_at, expires_at) \
                      VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (arm, url) DO UPDATE SET expires_at = excluded.expires_at";
const DELETE: &str = "DELETE FROM arm_instances WHERE arm = $1 AND url = $2";
const PRUNE: &str = "DELETE FROM arm_instances WHERE expires_at <= $1";
const SELECT: &str =
    "SELECT arm, url, expires_at FROM arm_instances WHERE expires_at > $1 ORDER BY arm, url";

/// One implementation, expanded for each backend (the statements suit both).
macro_rules! registry_impl {
    ($store:ty) => {
        #[async_trait]
        impl ArmRegistry for $store {
            async fn register(
                &self,
                arm: ArmKind,
                url: &str,
                ttl: Duration,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let now = ms(now);
                sqlx::query(UPSERT)
                    .bind(arm.id())
                    .bind(url)
                    .bind(now)
                    .bind(now.saturating_add(ttl_ms(ttl)))
                    .execute(self.pool())
                    .await?;
                Ok(())
            }

            async fn deregister(&self, arm: ArmKind, url: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(DELETE)
                    .bind(arm.id())
                    .bind(url)
                    .execute(self.pool())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn registered(
                &self,
                now: DateTime<Utc>,
            ) -> Result<Vec<Registration>, StoreError> {
                let now = ms(now);
                sqlx::query(PRUNE).bind(now).execute(self.pool()).await?;
                let rows = sqlx::query(SELECT).bind(now).fetch_all(self.pool()).await?;
                let rows = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                Ok(decode(rows))
            }
        }
    };
}

registry_impl!(SqliteStore);
registry_impl!(PostgresStore);
