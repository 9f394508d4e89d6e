//! Units of work: what a task's run is made of, each persisted with its result, and the key
//! it is stored under. A resumed run finds the completed units by key and skips them.
//!
//! Keys are strings in the store and on the wire (`X-Step-ID`), parsed here and nowhere else:
//! - `plan`: the planner's first plan; `replan`: the replacement after a failed step;
//! - `s1`: step `s1` of the first plan; `p2.s1`: of the replacement plan;
//! - `r1.s1`, `r1.p2.s1`: the same step re-run in repair round 1;
//! - `validate.0`: the judge's check of round 0's output.
//!
//! Plan step ids have no dots ([`StepId`]) and cannot be `plan` or `replan`, so every key
//! parses one way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{InvalidId, StepId};

/// Which of a task's plans a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PlanNo {
    /// The planner's first plan.
    First,
    /// The plan that replaced it after a step failed.
    Replacement,
}

impl PlanNo {
    /// The unit that holds this plan.
    pub fn unit(self) -> UnitKey {
        match self {
            PlanNo::First => UnitKey::Plan,
            PlanNo::Replacement => UnitKey::Replan,
        }
    }
}

/// One step of one plan in one round: round 0 is the first execution, round n the n-th
/// repair round.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepUnit {
    pub plan: PlanNo,
    pub round: u32,
    pub step: StepId,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitKey {
    Plan,
    Replan,
    Step(StepUnit),
    Validation { round: u32 },
}

impl UnitKey {
    pub fn step(plan: PlanNo, round: u32, step: StepId) -> Self {
        UnitKey::Step(StepUnit { plan, round, step })
    }

    /// The same step in the previous round (its earlier attempt), if this is a repair.
    pub fn previous_attempt(&self) -> Option<UnitKey> {
        match self {
            UnitKey::Step(s) if s.round > 0 => {
                Some(UnitKey::step(s.plan, s.round - 1, s.step.clone()))
            }
            _ => None,
        }
    }

    pub fn as_step(&self) -> Option<&StepUnit> {
        match self {
            UnitKey::Step(s) => Some(s),
            _ => None,
        }
    }
}

const REPLACEMENT_PREFIX: &str = "p2";

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitKey::Plan => f.write_str("plan"),
            UnitKey::Replan => f.write_str("replan"),
            UnitKey::Validation { round } => write!(f, "validate.{round}"),
            UnitKey::Step(s) => {
                if s.round > 0 {
                    write!(f, "r{}.", s.round)?;
                }
                if s.plan == PlanNo::Replacement {
                    write!(f, "{REPLACEMENT_PREFIX}.")?;
                }
                f.write_str(s.step.as_str())
            }
        }
    }
}

fn round_of(segment: &str) -> Option<u32> {
    let digits = segment.strip_prefix('r')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl FromStr for UnitKey {
    type Err = InvalidId;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidId::new(
                raw,
                "not a unit key (plan, replan, validate.N, [rN.][p2.]STEP)",
            )
        };
        match raw {
            "plan" => return Ok(UnitKey::Plan),
            "replan" => return Ok(UnitKey::Replan),
            _ => {}
        }
        let mut segments: Vec<&str> = raw.split('.').collect();
        if let ["validate", round] = segments.as_slice() {
            let round = round.parse().map_err(|_| bad())?;
            return Ok(UnitKey::Validation { round });
        }
        let step = segments.pop().ok_or_else(bad)?;
        let mut round = 0;
        let mut plan = PlanNo::First;
        let mut rest = segments.into_iter();
        let mut next = rest.next();
        if let Some(r) = next.and_then(round_of) {
            round = r;
            next = rest.next();
        }
        if next == Some(REPLACEMENT_PREFIX) {
            plan = PlanNo::Replacement;
            next = rest.next();
        }
        if next.is_some() {
            return Err(bad());
        }
        let step = StepId::parse(step).map_err(|_| bad())?;
        Ok(UnitKey::step(plan, round, step))
    }
}

impl Serialize for UnitKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UnitKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(id: &str) -> StepId {
        StepId::parse(id).unwrap()
    }

    #[test]
    fn keys_have_one_spelling_each() {
        let cases = [
            ("plan", UnitKey::Plan),
            ("replan", UnitKey::Replan),
            ("validate.0", UnitKey::Validation { round: 0 }),
            ("validate.12", UnitKey::Validation { round: 12 }),
            ("s1", UnitKey::step(PlanNo::First, 0, step("s1"))),
            ("r1.s2", UnitKey::step(PlanNo::First, 1, step("s2"))),
            ("p2.s1", UnitKey::step(PlanNo::Replacement, 0, step("s1"))),
            (
                "r3.p2.write-code",
                UnitKey::step(PlanNo::Replacement, 3, step("write-code")),
            ),
            // A step may be named like a round or the replacement marker on its own.
            ("r1", UnitKey::step(PlanNo::First, 0, step("r1"))),
            ("p2", UnitKey::step(PlanNo::First, 0, step("p2"))),
        ];
        for (text, key) in cases {
            assert_eq!(text.parse::<UnitKey>().unwrap(), key, "{text}");
            assert_eq!(key.to_string(), text);
        }
        for bad in [
            "",
            "validate.x",
            "a.b.c.d",
            "p2.r1.s1",
            "x.s1",
            "s1.",
            "r1.plan",
        ] {
            assert!(bad.parse::<UnitKey>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn repairs_know_their_earlier_attempt() {
        let r2 = UnitKey::step(PlanNo::Replacement, 2, step("s4"));
        assert_eq!(
            r2.previous_attempt(),
            Some(UnitKey::step(PlanNo::Replacement, 1, step("s4")))
        );
        assert_eq!(
            UnitKey::step(PlanNo::First, 0, step("s4")).previous_attempt(),
            None
        );
        assert_eq!(UnitKey::Validation { round: 1 }.previous_attempt(), None);
    }

    proptest! {
        #[test]
        fn every_step_key_round_trips(id in "[A-Za-z0-9_-]{1,64}", round in 0u32..50, replacement: bool) {
            prop_assume!(id != "plan" && id != "replan");
            let plan = if replacement { PlanNo::Replacement } else { PlanNo::First };
            let key = UnitKey::step(plan, round, step(&id));
            let text = key.to_string();
            prop_assert_eq!(text.parse::<UnitKey>().unwrap(), key.clone());
            let json = serde_json::to_string(&key).unwrap();
            prop_assert_eq!(serde_json::from_str::<UnitKey>(&json).unwrap(), key);
        }
    }
}
