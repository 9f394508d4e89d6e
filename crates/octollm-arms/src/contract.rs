//! The arm contract: an arm's operations, each a route with a request and a response type,
//! and the handler that answers it in process or over HTTP.
//!
//! Everything that serves or calls arms is written once over [`Operation`]: the arm services'
//! routes, the HTTP clients, the OpenAPI documents, the capability-token checks. The
//! operations themselves are listed in one table (`operations!` in `lib.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use octollm_core::ArmKind;
use octollm_core::token::ExecutorGrant;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Arms;
use crate::context::{ArmError, ArmOutcome, CallContext};

/// One operation of one arm: `POST <ROUTE>` with a [`Operation::Request`] body answers a
/// [`Operation::Response`].
pub trait Operation: Send + Sync + Sized + 'static {
    const ARM: ArmKind;
    /// The route on the arm's service, e.g. `/plan`; also the action a capability token names.
    const ROUTE: &'static str;
    /// One line on what it does (the OpenAPI summary).
    const SUMMARY: &'static str;
    type Request: Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static;
    type Response: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;

    /// The handler of this operation among `arms`.
    fn handler(arms: &Arms) -> &Arc<dyn Handler<Self>>;

    /// Puts `handler` in place of the current one (an HTTP client for an in-process arm).
    fn replace(arms: &mut Arms, handler: Arc<dyn Handler<Self>>);

    /// What a capability token must grant for this request to run.
    fn grant(_request: &Self::Request) -> ExecutorGrant {
        ExecutorGrant::default()
    }

    /// The capability token's action: the route without its slash.
    fn action() -> &'static str {
        Self::ROUTE.trim_start_matches('/')
    }
}

/// Answers one operation: an arm in this process, or a client of the arm's service.
#[async_trait]
pub trait Handler<O: Operation>: Send + Sync {
    async fn handle(
        &self,
        request: O::Request,
        ctx: CallContext,
    ) -> Result<ArmOutcome<O::Response>, ArmError>;

    /// Where it runs and whether it can work now.
    fn status(&self) -> ArmStatus;
}

/// Whether an arm can do its work (SPEC §4 `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Working, with something missing (some instances down, an optional part unusable).
    Degraded(String),
    Unavailable(String),
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded(_) => "degraded",
            Health::Unavailable(_) => "unavailable",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Healthy => None,
            Health::Degraded(r) | Health::Unavailable(r) => Some(r),
        }
    }
}

/// Where an arm runs and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmStatus {
    /// `in-process`, or the base URLs of its instances.
    pub endpoints: Vec<String>,
    pub health: Health,
}

impl ArmStatus {
    pub const IN_PROCESS: &'static str = "in-process";

    pub fn in_process(health: Health) -> Self {
        Self {
            endpoints: vec![Self::IN_PROCESS.to_owned()],
            health,
        }
    }
}

/// Something that wants to see every operation with its types (routes, clients, documents).
pub trait OperationVisitor {
    fn visit<O: Operation>(&mut self);
}
