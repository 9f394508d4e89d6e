//! The reflex layer's response cache: answers keyed by everything that changes them, in
//! per-tenant namespaces, with a TTL. In process (moka) here; Redis in distributed mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// `GET /cache/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CacheStats {
    pub total_entries: u64,
    /// Hits over lookups since start (0 when nothing was looked up).
    pub hit_rate: f64,
    pub memory_usage_mb: f64,
    pub eviction_count: u64,
}

/// Values are opaque bytes (the reflex layer stores serialised verdicts): the in-memory cache
/// hands out a reference-counted copy, Redis stores them as they are.
#[async_trait]
pub trait ResponseCache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError>;
    /// Counts every entry: not for probes (a large Redis cache makes it slow).
    async fn stats(&self) -> Result<CacheStats, StoreError>;
    async fn clear(&self) -> Result<(), StoreError>;
    /// Whether the cache answers at all, in constant time (readiness probes).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// moka's TinyLFU cache bounded by bytes (keys + values). Keys are hashed with foldhash
/// (seeded per process) rather than SipHash: they end in a SHA-256 digest, and the hash runs
/// on every lookup and insert.
///
/// Evictions are counted, not listened for: an eviction listener makes moka lock every key
/// on insert, which cost more than the rest of the insert once the cache was full. Every
/// entry that arrived has either been evicted (for size or age), cleared, or is still here.
pub struct MemoryCache {
    cache: moka::sync::Cache<String, Bytes, foldhash::fast::RandomState>,
    hits: AtomicU64,
    lookups: AtomicU64,
    /// Keys stored that were not present (two racing stores of one absent key count twice,
    /// and then one eviction too many).
    arrivals: AtomicU64,
    cleared: AtomicU64,
}

impl MemoryCache {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &Bytes| {
                u32::try_from(key.len().saturating_add(value.len())).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            cache,
            hits: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl ResponseCache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let found = self.cache.get(key);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        if !self.cache.contains_key(key) {
            self.arrivals.fetch_add(1, Ordering::Relaxed);
        }
        self.cache.insert(key.to_owned(), value);
        Ok(())
    }

    async fn stats(&self) -> Result<CacheStats, StoreError> {
        self.cache.run_pending_tasks();
        let lookups = self.lookups.load(Ordering::Relaxed);
        let hits = self.hits.load(Ordering::Relaxed);
        Ok(CacheStats {
            total_entries: self.cache.entry_count(),
            hit_rate: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
            memory_usage_mb: self.cache.weighted_size() as f64 / (1024.0 * 1024.0),
            eviction_count: self
                .arrivals
                .load(Ordering::Relaxed)
                .saturating_sub(self.cleared.load(Ordering::Relaxed))
                .saturating_sub(self.cache.entry_count()),
        })
    }

    async fn clear(&self) -> Result<(), StoreError> {
        self.cache.run_pending_tasks();
        self.cleared
            .fetch_add(self.cache.entry_count(), Ordering::Relaxed);
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_counts_and_clears() {
        let c = MemoryCache::new(1024 * 1024, Duration::from_secs(60));
        assert_eq!(c.get("a").await.unwrap(), None);
        c.put("a", Bytes::from_static(b"{\"x\":1}")).await.unwrap();
        assert_eq!(
            c.get("a").await.unwrap(),
            Some(Bytes::from_static(b"{\"x\":1}"))
        );
        let s = c.stats().await.unwrap();
        assert_eq!(s.total_entries, 1);
        assert!((s.hit_rate - 0.5).abs() < 1e-9);
        c.clear().await.unwrap();
        assert_eq!(c.get("a").await.unwrap(), None);
        assert_eq!(c.stats().await.unwrap().total_entries, 0);
    }

    #[tokio::test]
    async fn counts_evictions_for_size_and_age_but_not_clears_or_overwrites() {
        let c = MemoryCache::new(64 * 1024, Duration::from_secs(60));
        let value = Bytes::from(vec![b'x'; 1000]);
        for i in 0..200 {
            c.put(&format!("k{i}"), value.clone()).await.unwrap();
        }
        let s = c.stats().await.unwrap();
        assert!(s.total_entries > 0 && s.total_entries < 200, "{s:?}");
        assert_eq!(s.eviction_count, 200 - s.total_entries, "{s:?}");
        // Storing a key that is present again replaces it: no arrival, no eviction.
        let present = (0..200)
            .map(|i| format!("k{i}"))
            .find(|k| c.cache.contains_key(k))
            .unwrap();
        c.put(&present, value.clone()).await.unwrap();
        assert_eq!(c.stats().await.unwrap().eviction_count, s.eviction_count);
        c.clear().await.unwrap();
        let cleared = c.stats().await.unwrap();
        assert_eq!(
            (cleared.total_entries, cleared.eviction_count),
            (0, s.eviction_count)
        );

        let aging = MemoryCache::new(1024 * 1024, Duration::from_millis(50));
        aging.put("a", value.clone()).await.unwrap();
        aging.put("b", value).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let aged = aging.stats().await.unwrap();
        assert_eq!((aged.total_entries, aged.eviction_count), (0, 2));
    }

    #[tokio::test]
    async fn entries_expire() {
        let c = MemoryCache::new(1024 * 1024, Duration::from_millis(50));
        c.put("a", Bytes::from_static(b"1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(c.get("a").await.unwrap(), None);
    }
}
