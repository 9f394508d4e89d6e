//! One pass for both detectors' prefilter words.
//!
//! The PII detector's trigger words (key prefixes, key names, context words) and the
//! injection detector's anchor words share one case-insensitive Aho-Corasick automaton, so a
//! prompt is walked once for both instead of once per detector (the walk is the largest part
//! of scanning clean text).
//!
//! The search reports overlapping matches: with leftmost-longest matches a word of one list
//! would hide an overlapping word of the other (` ai` hid the `AIza` of a Google key), and
//! words inside words (`pass` in `password`) are reported on their own.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use crate::injection;
use crate::pii;

/// What one word of the automaton means to each detector.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Meaning {
    /// The PII trigger this word is exactly, if any (its whole-word rule applies).
    pub trigger: Option<usize>,
    /// PII trigger group of the word (0 when it is only an anchor).
    pub pii_groups: u32,
    /// Injection anchor bits of the word (0 when it is only a trigger).
    pub anchor_bits: u32,
}

/// A keyword occurrence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub meaning: Meaning,
}

struct Keywords {
    automaton: AhoCorasick,
    meanings: Vec<Meaning>,
}

fn keywords() -> Option<&'static Keywords> {
    static K: OnceLock<Option<Keywords>> = OnceLock::new();
    K.get_or_init(|| {
        let triggers = pii::triggers();
        let anchors = injection::anchors();
        let mut words: Vec<String> = triggers
            .iter()
            .map(|t| t.0)
            .chain(anchors.iter().map(|a| a.0))
            .map(str::to_ascii_lowercase)
            .collect();
        words.sort_unstable();
        words.dedup();
        let meanings = words
            .iter()
            .map(|word| {
                let trigger = triggers.iter().position(|t| t.0.eq_ignore_ascii_case(word));
                let pii_groups = trigger.map_or(0, |i| triggers[i].1);
                // An anchor may be listed more than once, with different bits.
                let anchor_bits = anchors
                    .iter()
                    .filter(|(anchor, _)| anchor.eq_ignore_ascii_case(word))
                    .fold(0, |acc, a| acc | a.1);
                Meaning {
                    trigger,
                    pii_groups,
                    anchor_bits,
                }
            })
            .collect();
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&words)
            .ok()?;
        Some(Keywords {
            automaton,
            meanings,
        })
    })
    .as_ref()
}

/// Every keyword occurrence in `text`, in order.
pub(crate) fn find(text: &str) -> Vec<Hit> {
    let Some(k) = keywords() else {
        return Vec::new();
    };
    k.automaton
        .find_overlapping_iter(text)
        .map(|m| Hit {
            start: m.start(),
            end: m.end(),
            meaning: k.meanings[m.pattern().as_usize()],
        })
        .collect()
}

/// Injection anchor bits of every keyword in `text`.
pub(crate) fn anchor_bits(text: &str) -> u32 {
    let Some(k) = keywords() else {
        return 0;
    };
    k.automaton.find_overlapping_iter(text).fold(0, |acc, m| {
        acc | k.meanings[m.pattern().as_usize()].anchor_bits
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_carries_inner_meanings() {
        assert!(keywords().is_some());
        let hits = find("my password and social security");
        let at = |start: usize, len: usize| {
            hits.iter()
                .find(|h| h.start == start && h.end == start + len)
                .map(|h| h.meaning)
        };
        // `pass` (a trigger) inside `password` (an anchor).
        assert!(at(3, 4).is_some_and(|m| m.trigger.is_some() && m.anchor_bits == 0));
        assert!(at(3, 8).is_some_and(|m| m.trigger.is_none() && m.anchor_bits != 0));
        // `security` (an anchor) inside `social security` (a trigger).
        assert!(at(16, 15).is_some_and(|m| m.trigger.is_some()));
        assert!(at(23, 8).is_some_and(|m| m.anchor_bits != 0));
        // An anchor that starts earlier does not hide an overlapping trigger.
        let hits = find("key AIzaSyA-abcdefghijklmnopqrstuvwxyz01234");
        assert!(
            hits.iter()
                .any(|h| h.start == 4 && h.meaning.pii_groups != 0)
        );
    }
}
