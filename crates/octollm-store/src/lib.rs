//! Durable storage: the task store and queue, task events, the knowledge base and the
//! vector index, each behind a trait so the distributed backends (PostgreSQL, Redis, Qdrant)
//! can slot in beside the embedded ones.
//!
//! # Layout
//! - [`model`]: the records the store reads and writes.
//! - [`tasks`]: the [`TaskStore`] trait: tasks, leases, steps, events.
//! - [`knowledge`]: the [`KnowledgeStore`] trait (documents, chunks, BM25) and the [`VectorStore`] trait.
//! - [`cache`]: the reflex layer's response cache ([`MemoryCache`]).
//! - [`ratelimit`]: token buckets per identity ([`MemoryRateLimiter`]).
//! - `qdrant` (cargo feature `qdrant`): `QdrantStore`, the [`VectorStore`] on Qdrant.
//! - [`events`]: [`RedisEvents`], task events shared by replicas over Redis pub/sub.
//! - [`audit`]: the [`AuditLog`] of refusals and key changes (SQLite, PostgreSQL).
//! - [`keys`]: the [`ApiKeyStore`] of API keys, hashed (SQLite, PostgreSQL).
//! - [`registry`]: the [`ArmRegistry`] of self-registered arm instances (SQLite, PostgreSQL).
//! - [`redis_backend`]: the same cache and rate limiter on Redis, shared by replicas.
//! - [`sqlite`]: [`SqliteStore`], the embedded backend for all of them.
//! - `sql`: the task store's statements and implementation, written once for both SQL
//!   backends, with the fenced update that applies the task state machine.
//! - [`pg_knowledge`]: [`PostgresKnowledge`], the knowledge base on PostgreSQL shared by
//!   retriever instances (vectors in Qdrant or in PostgreSQL).
//! - [`postgres`]: [`PostgresStore`], the task store and queue on PostgreSQL, shared by any
//!   number of orchestrator replicas (`FOR UPDATE SKIP LOCKED` claims).
//! - [`error`]: the store error, [`StoreError`].

pub mod audit;
pub mod cache;
pub mod error;
pub mod events;
pub mod keys;
pub mod knowledge;
mod knowledge_sql;
mod migrations;
pub mod model;
pub mod pg_knowledge;
pub mod postgres;
#[cfg(feature = "qdrant")]
pub mod qdrant;
pub mod ratelimit;
pub mod redis_backend;
pub mod registry;
pub mod revocations;
mod rows;
mod sql;
pub mod sqlite;
pub mod tasks;

pub use audit::{AuditEntry, AuditFilter, AuditKind, AuditLog, AuditRecord};
pub use cache::{CacheStats, MemoryCache, ResponseCache};
pub use error::StoreError;
pub use events::RedisEvents;
pub use keys::{ApiKeyRecord, ApiKeyStore};
pub use knowledge::{ChunkHit, KnowledgeStore, NewChunk, VectorHit, VectorStore};
pub use model::{
    CreateOutcome, Finish, LeaseState, ListFilter, NewTask, Progress, StepRecord, StepStatus,
    TaskEvent, TaskEventKind, TaskPage, TaskRecord, TaskResult, UnitDone,
};
pub use pg_knowledge::PostgresKnowledge;
pub use postgres::PostgresStore;
#[cfg(feature = "qdrant")]
pub use qdrant::QdrantStore;
pub use ratelimit::{Decision, MemoryRateLimiter, RateLimiter, Tier};
pub use redis_backend::{RedisCache, RedisRateLimiter};
pub use registry::{ArmRegistry, Registration};
pub use revocations::{MemoryRevocations, RedisRevocations, Revocations};
pub use sqlite::SqliteStore;
pub use tasks::TaskStore;
