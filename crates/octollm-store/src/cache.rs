//! The reflex layer's response cache: answers keyed by everything that changes them, in
//! per-tenant namespaces, with a TTL. In process (moka) here; Redis in distributed mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    async fn stats(&self) -> Result<CacheStats, StoreError>;
    async fn clear(&self) -> Result<(), StoreError>;
}

/// moka's TinyLFU cache bounded by bytes (keys + values). Keys are hashed with foldhash
/// (seeded per process) rather than SipHash: they end in a SHA-256 digest, and the hash runs
/// on every lookup and insert.
pub struct MemoryCache {
    cache: moka::sync::Cache<String, Bytes, foldhash::fast::RandomState>,
    hits: AtomicU64,
    lookups: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl MemoryCache {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        // Room for the entries a full cache holds (about 1 KiB each), so the table does not
        // rehash as it fills; bounded, since the bound is a guess.
        let expected_entries = usize::try_from(max_bytes / 1024)
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .initial_capacity(expected_entries)
            .weigher(|key: &String, value: &Bytes| {
                u32::try_from(key.len().saturating_add(value.len())).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            cache,
            hits: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            evictions,
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
            eviction_count: self.evictions.load(Ordering::Relaxed),
        })
    }

    async fn clear(&self) -> Result<(), StoreError> {
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
    async fn entries_expire() {
        let c = MemoryCache::new(1024 * 1024, Duration::from_millis(50));
        c.put("a", Bytes::from_static(b"1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(c.get("a").await.unwrap(), None);
    }
}
