//! Shared by the store's integration tests.

#![allow(dead_code, reason = "each test binary uses a part")]

#[macro_use]
pub mod contract;
