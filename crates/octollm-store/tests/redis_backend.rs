//! The Redis rate limiter and cache against a real redis-server that each test starts on a
//! free port: token buckets shared by two replicas, fast 503-able failures while Redis is
//! down, recovery without a restart when it returns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::time::{Duration, Instant};

use octollm_store::{RateLimiter, RedisCache, RedisRateLimiter, ResponseCache, StoreError, Tier};

use octollm_test_support::redis::Redis;

#[tokio::test]
async fn replicas_share_one_atomic_bucket() {
    let redis = Redis::start();
    let a = RedisRateLimiter::new(&redis.url(), "t1").unwrap();
    let b = RedisRateLimiter::new(&redis.url(), "t1").unwrap();
    let tier = Tier {
        capacity: 4,
        window_seconds: 60,
    };
    let mut allowed = 0;
    for i in 0..6 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let d = limiter.check("ip:10.0.0.1", tier).await.unwrap();
        assert_eq!(d.limit, 4);
        if d.allowed {
            allowed += 1;
        } else {
            assert!(d.retry_after_seconds >= 1);
        }
    }
    assert_eq!(allowed, 4, "two replicas together get one bucket's worth");
    assert!(
        a.check("ip:10.0.0.2", tier).await.unwrap().allowed,
        "buckets are per identity"
    );
}

#[tokio::test]
async fn outages_fail_fast_and_recover_without_a_restart() {
    let mut redis = Redis::start();
    let port = redis.port;
    let limiter = RedisRateLimiter::new(&redis.url(), "t2").unwrap();
    let tier = Tier {
        capacity: 100,
        window_seconds: 60,
    };
    assert!(limiter.check("k", tier).await.unwrap().allowed);
    redis.stop();
    let clock = Instant::now();
    let err = limiter.check("k", tier).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "took {:?}",
        clock.elapsed()
    );
    let _back = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if limiter.check("k", tier).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cache_round_trips_expires_and_clears_only_its_namespace() {
    let redis = Redis::start();
    let cache = RedisCache::new(&redis.url(), "t3", Duration::from_secs(1)).unwrap();
    let other = RedisCache::new(&redis.url(), "other", Duration::from_secs(60)).unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
    cache
        .put("a", bytes::Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();
    other
        .put("a", bytes::Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    assert_eq!(
        cache.get("a").await.unwrap(),
        Some(bytes::Bytes::from_static(b"{\"v\":1}"))
    );
    let stats = cache.stats().await.unwrap();
    assert_eq!(stats.total_entries, 1);
    assert!((stats.hit_rate - 0.5).abs() < 1e-9);
    cache.clear().await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
    assert_eq!(
        other.get("a").await.unwrap(),
        Some(bytes::Bytes::from_static(b"{\"v\":2}")),
        "another namespace survives"
    );
    cache
        .put("b", bytes::Bytes::from_static(b"1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(cache.get("b").await.unwrap(), None, "entries expire");
}

#[tokio::test]
async fn the_cache_ping_answers_without_counting_entries_and_fails_when_redis_is_down() {
    let mut redis = Redis::start();
    let cache = RedisCache::new(&redis.url(), "t4", Duration::from_secs(60)).unwrap();
    cache.ping().await.unwrap();
    redis.stop();
    let err = cache.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
