//! What the project's tests share, so no harness is copied between crates.
//!
//! # Layout
//! - [`postgres`]: a throwaway PostgreSQL server (Debian's binaries).
//! - [`redis`]: a throwaway redis-server.
//! - [`qdrant`]: a throwaway Qdrant server, where the workplace's build of it is found.
//! - [`harness`]: the in-process arms on the scripted model, and an embedder that refuses.
//! - this file: free ports, closed ports and polling with a deadline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

use std::time::{Duration, Instant};

pub mod harness;
pub mod postgres;
pub mod qdrant;
pub mod redis;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port held without listening: connections to it are refused (an instance that
/// is down), and no other socket gets the port meanwhile, so it can come back on it.
pub struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        Self(socket)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Starts listening on the port (inside a Tokio runtime).
    pub fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(1024).unwrap()
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// `f` until it answers, or a panic naming `what` after `within`.
pub fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
