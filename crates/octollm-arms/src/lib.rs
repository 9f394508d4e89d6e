//! The six specialist arms. Each has one client trait, implemented in process here and over
//! HTTP by `octollm-http`, so the orchestrator never knows which one it talks to.
//!
//! # Layout
//! - [`context`]: the call context (task, step, budget share), outcomes and errors shared by all arms.
//! - [`executor`]: runs allowlisted programs, argv only, inside bubblewrap.

pub mod context;
pub mod executor;

pub use context::{ArmError, ArmInfo, ArmOutcome, CallContext};
