//! Redis backends of the reflex layer's rate limiter and cache, shared by every replica.
//! The token bucket is one Lua script, so taking a token is atomic across replicas and uses
//! Redis's clock. The connection is made on first use and re-made after an outage, so a
//! service recovers without a restart; while Redis is down every call fails fast with
//! `StoreError::Unavailable`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::cache::{CacheStats, ResponseCache};
use crate::error::StoreError;
use crate::ratelimit::{Decision, RateLimiter, Tier};

const TOKEN_BUCKET: &str = r"
local capacity = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
local rate = capacity / window_ms
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], window_ms * 2)
local retry_ms = 0
if allowed == 0 then retry_ms = math.ceil((1 - tokens) / rate) end
return {allowed, math.floor(tokens), math.ceil((capacity - tokens) / rate), retry_ms}
";

pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {}", e.category()))
}

/// One lazily made, self-healing connection.
pub(crate) struct Connection {
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
}

impl Connection {
    pub(crate) fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {}", e.category())))?;
        Ok(Self {
            client,
            manager: Mutex::new(None),
        })
    }

    pub(crate) async fn get(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(unavailable)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }
}

pub struct RedisRateLimiter {
    connection: Connection,
    script: redis::Script,
    prefix: String,
}

impl RedisRateLimiter {
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Connection::new(url)?,
            script: redis::Script::new(TOKEN_BUCKET),
            prefix: prefix.to_owned(),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, identity: &str, tier: Tier) -> Result<Decision, StoreError> {
        let mut conn = self.connection.get().await?;
        let window_ms = u64::from(tier.window_seconds.max(1)) * 1000;
        let (allowed, remaining, reset_ms, retry_ms): (i64, i64, i64, i64) = self
            .script
            .key(format!("{}:rl:{identity}", self.prefix))
            .arg(tier.capacity)
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let seconds = |ms: i64| u64::try_from(ms).unwrap_or(0).div_ceil(1000);
        Ok(Decision {
            allowed: allowed == 1,
            limit: tier.capacity,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_seconds: seconds(reset_ms),
            retry_after_seconds: seconds(retry_ms),
        })
    }
}

pub struct RedisCache {
    connection: Connection,
    prefix: String,
    ttl: Duration,
    hits: AtomicU64,
    lookups: AtomicU64,
}

impl RedisCache {
    pub fn new(url: &str, prefix: &str, ttl: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Connection::new(url)?,
            prefix: format!("{prefix}:cache:"),
            ttl,
            hits: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        })
    }

    async fn keys(&self, conn: &mut ConnectionManager) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

fn info_field(info: &str, field: &str) -> Option<f64> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

#[async_trait]
impl ResponseCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        let mut conn = self.connection.get().await?;
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let value = raw.map(bytes::Bytes::from);
        if value.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(value)
    }

    async fn put(&self, key: &str, value: bytes::Bytes) -> Result<(), StoreError> {
        let mut conn = self.connection.get().await?;
        redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(value.as_ref())
            .arg("EX")
            .arg(self.ttl.as_secs().max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn stats(&self) -> Result<CacheStats, StoreError> {
        let mut conn = self.connection.get().await?;
        let entries = self.keys(&mut conn).await?.len() as u64;
        let info: String = redis::cmd("INFO")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let lookups = self.lookups.load(Ordering::Relaxed);
        Ok(CacheStats {
            total_entries: entries,
            hit_rate: if lookups == 0 {
                0.0
            } else {
                self.hits.load(Ordering::Relaxed) as f64 / lookups as f64
            },
            memory_usage_mb: info_field(&info, "used_memory").unwrap_or(0.0) / (1024.0 * 1024.0),
            eviction_count: info_field(&info, "evicted_keys").unwrap_or(0.0) as u64,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection.get().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let mut conn = self.connection.get().await?;
        for chunk in self.keys(&mut conn).await?.chunks(500) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
