//! Identifiers. Parsed once; the inner string is guaranteed well-formed.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const TASK_PREFIX: &str = "task_";
const TASK_SUFFIX_LEN: usize = 16;

/// `task_` followed by 16 characters from `[A-Za-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// A fresh random id (about 95 bits of entropy).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id = String::with_capacity(TASK_PREFIX.len() + TASK_SUFFIX_LEN);
        id.push_str(TASK_PREFIX);
        for _ in 0..TASK_SUFFIX_LEN {
            let index = rng.random_range(0..ID_ALPHABET.len());
            id.push(char::from(ID_ALPHABET[index]));
        }
        Self(id)
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let suffix = raw
            .strip_prefix(TASK_PREFIX)
            .ok_or_else(|| InvalidId::new(raw, "must start with `task_`"))?;
        if suffix.len() != TASK_SUFFIX_LEN || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(InvalidId::new(
                raw,
                "must be `task_` followed by 16 letters or digits",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TaskId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.0
    }
}

/// A step id inside a plan: 1..=64 characters from `[A-Za-z0-9_-]`, neither `plan` nor
/// `replan`. Dots are kept out so a unit key (`r1.p2.s1`, [`crate::UnitKey`]) parses one way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StepId(String);

impl StepId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            return Err(InvalidId::new(
                raw,
                "must be 1-64 characters from [A-Za-z0-9_-]",
            ));
        }
        if matches!(raw, "plan" | "replan") {
            return Err(InvalidId::new(
                raw,
                "`plan` and `replan` name the plans themselves",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StepId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<StepId> for String {
    fn from(id: StepId) -> Self {
        id.0
    }
}

/// The JSON Schema of a task id.
pub const TASK_ID_PATTERN: &str = "^task_[A-Za-z0-9]{16}$";

impl schemars::JsonSchema for TaskId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TaskId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": TASK_ID_PATTERN,
            "description": "`task_` and 16 letters or digits",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {value:?}: {reason}")]
pub struct InvalidId {
    pub value: String,
    pub reason: &'static str,
}

impl InvalidId {
    pub(crate) fn new(value: &str, reason: &'static str) -> Self {
        // Ids come from the outside; never echo an unbounded string back.
        let value = value.chars().take(80).collect();
        Self { value, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_parse() {
        for _ in 0..100 {
            let id = TaskId::generate();
            assert_eq!(TaskId::parse(id.as_str()), Ok(id.clone()));
            assert_eq!(id.as_str().len(), 21);
        }
    }

    #[test]
    fn rejects_malformed_task_ids() {
        for bad in [
            "",
            "task_",
            "task_abc",
            "TASK_aaaaaaaaaaaaaaaa",
            "task_aaaaaaaaaaaaaaa!",
            "task_aaaaaaaaaaaaaaaaa",
        ] {
            assert!(TaskId::parse(bad).is_err(), "{bad} accepted");
        }
    }

    proptest! {
        #[test]
        fn task_id_parse_accepts_exactly_the_format(s in "\\PC{0,30}") {
            let valid = s.starts_with("task_") && s.len() == 21 && s[5..].bytes().all(|b| b.is_ascii_alphanumeric());
            prop_assert_eq!(TaskId::parse(&s).is_ok(), valid);
        }

        #[test]
        fn step_ids_round_trip_through_json(s in "[A-Za-z0-9_-]{1,64}") {
            prop_assume!(s != "plan" && s != "replan");
            let id = StepId::parse(&s).unwrap();
            let json = serde_json::to_string(&id).unwrap();
            let back: StepId = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, id);
        }
    }
}
