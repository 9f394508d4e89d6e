//! Revoked capability tokens (SPEC §8): by token id, or every token of a task. An arm checks
//! here before it takes a token; the orchestrator revokes a task's tokens when the task ends,
//! an operator one token with `octollm tokens revoke`. In the distributed mode the list is in
//! Redis, so every arm instance sees a revocation at once; one process keeps it in memory.
//! Entries last until the tokens they name expire anyway.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::redis_backend::{Connection, unavailable};

#[async_trait]
pub trait Revocations: Send + Sync {
    /// Refuses the token with id `jti` until `until` (Unix seconds).
    async fn revoke_token(&self, jti: &str, until: i64) -> Result<(), StoreError>;
    /// Refuses every token issued for `task_id` until `until` (Unix seconds).
    async fn revoke_task(&self, task_id: &str, until: i64) -> Result<(), StoreError>;
    /// Whether the token `jti` (of `task_id`, if it names one) is revoked at `now`.
    async fn is_revoked(
        &self,
        jti: &str,
        task_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError>;
}

fn token_key(jti: &str) -> String {
    format!("jti:{jti}")
}

fn task_key(task_id: &str) -> String {
    format!("task:{task_id}")
}

/// One process's list.
#[derive(Default)]
pub struct MemoryRevocations {
    until: Mutex<HashMap<String, i64>>,
}

impl MemoryRevocations {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&self, key: String, until: i64, now: i64) -> Result<(), StoreError> {
        let mut map = self
            .until
            .lock()
            .map_err(|_| StoreError::Unavailable("revocation list poisoned".into()))?;
        map.retain(|_, t| *t >= now);
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
        Ok(())
    }
}

#[async_trait]
impl Revocations for MemoryRevocations {
    async fn revoke_token(&self, jti: &str, until: i64) -> Result<(), StoreError> {
        self.insert(token_key(jti), until, chrono::Utc::now().timestamp())
    }

    async fn revoke_task(&self, task_id: &str, until: i64) -> Result<(), StoreError> {
        self.insert(task_key(task_id), until, chrono::Utc::now().timestamp())
    }

    async fn is_revoked(
        &self,
        jti: &str,
        task_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let map = self
            .until
            .lock()
            .map_err(|_| StoreError::Unavailable("revocation list poisoned".into()))?;
        let live = |key: String| map.get(&key).is_some_and(|t| *t >= now);
        Ok(live(token_key(jti)) || task_id.is_some_and(|t| live(task_key(t))))
    }
}

/// The list in Redis, shared by every instance: one key per entry, expiring with it.
pub struct RedisRevocations {
    connection: Connection,
    prefix: String,
}

impl RedisRevocations {
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Connection::new(url)?,
            prefix: format!("{prefix}:revoked:"),
        })
    }

    async fn set(&self, key: String, until: i64) -> Result<(), StoreError> {
        let mut conn = self.connection.get().await?;
        // Kept a little past the expiry (clock skew between the services).
        let until = until.saturating_add(60).max(1);
        redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(1)
            .arg("EXAT")
            .arg(until)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl Revocations for RedisRevocations {
    async fn revoke_token(&self, jti: &str, until: i64) -> Result<(), StoreError> {
        self.set(token_key(jti), until).await
    }

    async fn revoke_task(&self, task_id: &str, until: i64) -> Result<(), StoreError> {
        self.set(task_key(task_id), until).await
    }

    async fn is_revoked(
        &self,
        jti: &str,
        task_id: Option<&str>,
        _now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connection.get().await?;
        let mut exists = redis::cmd("EXISTS");
        exists.arg(format!("{}{}", self.prefix, token_key(jti)));
        if let Some(task_id) = task_id {
            exists.arg(format!("{}{}", self.prefix, task_key(task_id)));
        }
        let found: u32 = exists.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(found > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[tokio::test]
    async fn tokens_and_tasks_are_refused_until_they_expire() {
        let list = MemoryRevocations::new();
        let now = chrono::Utc::now().timestamp();
        list.revoke_token("jti-1", now + 60).await.unwrap();
        list.revoke_task("task_a", now + 60).await.unwrap();
        assert!(list.is_revoked("jti-1", None, now).await.unwrap());
        assert!(list.is_revoked("jti-2", Some("task_a"), now).await.unwrap());
        assert!(!list.is_revoked("jti-2", Some("task_b"), now).await.unwrap());
        assert!(!list.is_revoked("jti-2", None, now).await.unwrap());
        assert!(!list.is_revoked("jti-1", None, now + 61).await.unwrap());
    }
}
