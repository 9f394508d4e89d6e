//! The Qdrant vector index (cargo feature `qdrant`) under the same vector-store contract as
//! the embedded index, against a real Qdrant server: one named by `QDRANT_URL`, or one this
//! test starts from `OCTOLLM_QDRANT_BIN` (`scripts/env.sh` sets it when the workplace's build
//! of Qdrant is found). Without either the test is ignored, and says so.
//!   . scripts/env.sh && cargo test -p octollm-store --features qdrant --test qdrant_store

#![cfg(feature = "qdrant")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use octollm_store::QdrantStore;
use octollm_test_support::qdrant::{self, Qdrant};

#[tokio::test]
#[cfg_attr(
    not(qdrant_server),
    ignore = "no Qdrant server: set QDRANT_URL, or OCTOLLM_QDRANT_BIN to a Qdrant binary"
)]
async fn qdrant_meets_the_vector_store_contract() {
    let source = qdrant::source().expect("QDRANT_URL or OCTOLLM_QDRANT_BIN is set");
    let server = tokio::task::spawn_blocking(move || Qdrant::start(&source))
        .await
        .unwrap();
    let store = QdrantStore::connect(&server.url, std::env::var("QDRANT_API_KEY").ok()).unwrap();
    store.ping().await.unwrap();
    let prefix = format!("octollm-test-{}", octollm_core::TaskId::generate().as_str());
    common::contract::vector_store_contract(&store, &prefix.to_lowercase()).await;
}
