//! Token-bucket rate limiting per identity (API key, client IP). In process here; an atomic
//! Redis Lua script in distributed mode implements the same trait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// A bucket of `capacity` tokens refilled at `capacity / window` per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub capacity: u32,
    pub window_seconds: u32,
}

impl Tier {
    fn refill_per_second(&self) -> f64 {
        f64::from(self.capacity) / f64::from(self.window_seconds.max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// Seconds until one request would be allowed (0 when allowed).
    pub retry_after_seconds: u64,
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one token from `identity`'s bucket if there is one.
    async fn check(&self, identity: &str, tier: Tier) -> Result<Decision, StoreError>;
}

#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets idle for this long are forgotten (they would be full anyway).
const IDLE_FORGET: Duration = Duration::from_secs(3600);

impl MemoryRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check_at(&self, identity: &str, tier: Tier, now: Instant) -> Decision {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < IDLE_FORGET);
        }
        let capacity = f64::from(tier.capacity);
        let rate = tier.refill_per_second();
        let (tokens, at) = buckets
            .entry(identity.to_owned())
            .or_insert((capacity, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(capacity);
        *at = now;
        let allowed = *tokens >= 1.0;
        if allowed {
            *tokens -= 1.0;
        }
        let missing_for_one = if allowed { 0.0 } else { 1.0 - *tokens };
        Decision {
            allowed,
            limit: tier.capacity,
            remaining: tokens.floor().max(0.0) as u32,
            reset_seconds: ((capacity - *tokens) / rate).ceil().max(0.0) as u64,
            retry_after_seconds: (missing_for_one / rate).ceil() as u64,
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, identity: &str, tier: Tier) -> Result<Decision, StoreError> {
        Ok(self.check_at(identity, tier, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_then_refills() {
        let l = MemoryRateLimiter::new();
        let tier = Tier {
            capacity: 3,
            window_seconds: 3,
        };
        let t0 = Instant::now();
        for remaining in [2, 1, 0] {
            let d = l.check_at("k", tier, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let denied = l.check_at("k", tier, t0);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_seconds, 1);
        assert!(
            l.check_at("other", tier, t0).allowed,
            "buckets are per identity"
        );
        assert!(
            l.check_at("k", tier, t0 + Duration::from_millis(1000))
                .allowed
        );
        assert!(
            !l.check_at("k", tier, t0 + Duration::from_millis(1000))
                .allowed
        );
    }
}
