//! Who produced a step result.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::arm::ArmKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Provenance {
    pub arm_id: ArmKind,
    /// The arm instance that answered (`in-process`, or an endpoint in distributed mode).
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub tokens: u64,
    pub cost: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub attempt: u32,
}
