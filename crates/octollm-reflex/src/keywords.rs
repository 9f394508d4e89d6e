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
//!
//! # Speed
//! A DFA walk is bound by the latency of one table load per byte: each step needs the state
//! the previous step produced. Long texts are therefore cut into [`CHAINS`] pieces walked in
//! one loop, so the CPU overlaps the pieces' loads. Each piece after the first starts
//! `max_pattern_len - 1` bytes early and keeps only matches ending inside it, which finds
//! exactly the matches of one walk over the whole text, in the same order.

use std::sync::OnceLock;

use aho_corasick::automaton::Automaton;
use aho_corasick::automaton::StateID;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, PatternID, StartKind};

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
    dfa: DFA,
    meanings: Vec<Meaning>,
}

/// Independent walks interleaved over a long text.
const CHAINS: usize = 4;
// The lockstep loop in [`walk`] is written out for four.
const _: () = assert!(CHAINS == 4);
/// Below this length one walk is as fast as several.
const CHAINED_MIN_LEN: usize = 512;

/// Both detectors' words, lower case, sorted, once each.
fn word_list() -> Vec<String> {
    let mut words: Vec<String> = pii::triggers()
        .iter()
        .map(|t| t.0)
        .chain(injection::anchors().iter().map(|a| a.0))
        .map(str::to_ascii_lowercase)
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

fn keywords() -> Option<&'static Keywords> {
    static K: OnceLock<Option<Keywords>> = OnceLock::new();
    K.get_or_init(|| {
        let triggers = pii::triggers();
        let anchors = injection::anchors();
        let words = word_list();
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
        // No prefilter: it would make the start state special and the walk branch on it.
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(&words)
            .ok()?;
        Some(Keywords { dfa, meanings })
    })
    .as_ref()
}

/// Records the patterns that end at `end` in state `sid` (rare: kept out of the hot loop).
#[cold]
#[inline(never)]
fn matches_at(dfa: &DFA, sid: StateID, end: usize, out: &mut Vec<(PatternID, usize)>) {
    if dfa.is_match(sid) {
        for k in 0..dfa.match_len(sid) {
            out.push((dfa.match_pattern(sid, k), end));
        }
    }
}

/// Every keyword occurrence in `bytes` as (pattern, end offset), in order of end offset
/// (patterns ending together in automaton order), exactly as one overlapping walk finds them.
fn walk(dfa: &DFA, bytes: &[u8]) -> Vec<(PatternID, usize)> {
    let mut out = Vec::new();
    let Ok(start) = dfa.start_state(Anchored::No) else {
        return out;
    };
    let len = bytes.len();
    let overlap = dfa.max_pattern_len().saturating_sub(1);
    if len < CHAINED_MIN_LEN || len / CHAINS <= overlap {
        let mut sid = start;
        for (i, &b) in bytes.iter().enumerate() {
            sid = dfa.next_state(Anchored::No, sid, b);
            if dfa.is_special(sid) {
                matches_at(dfa, sid, i + 1, &mut out);
            }
        }
        return out;
    }
    // Piece k keeps the matches ending in (bounds[k], bounds[k + 1]] and starts walking early
    // enough to see each of them whole.
    let bounds: [usize; CHAINS + 1] = std::array::from_fn(|k| len * k / CHAINS);
    let from: [usize; CHAINS] = std::array::from_fn(|k| bounds[k].saturating_sub(overlap));
    let common = (0..CHAINS)
        .map(|k| bounds[k + 1] - from[k])
        .min()
        .unwrap_or(0);
    let mut found: [Vec<(PatternID, usize)>; CHAINS] = Default::default();
    let piece = |k: usize| &bytes[from[k]..from[k] + common];
    // Four states in four registers: the loads of one step do not wait on each other.
    let (mut s0, mut s1, mut s2, mut s3) = (start, start, start, start);
    let lockstep = piece(0).iter().zip(piece(1)).zip(piece(2)).zip(piece(3));
    for (i, (((&b0, &b1), &b2), &b3)) in lockstep.enumerate() {
        s0 = dfa.next_state(Anchored::No, s0, b0);
        s1 = dfa.next_state(Anchored::No, s1, b1);
        s2 = dfa.next_state(Anchored::No, s2, b2);
        s3 = dfa.next_state(Anchored::No, s3, b3);
        if dfa.is_special(s0) {
            matches_at(dfa, s0, from[0] + i + 1, &mut found[0]);
        }
        if dfa.is_special(s1) {
            matches_at(dfa, s1, from[1] + i + 1, &mut found[1]);
        }
        if dfa.is_special(s2) {
            matches_at(dfa, s2, from[2] + i + 1, &mut found[2]);
        }
        if dfa.is_special(s3) {
            matches_at(dfa, s3, from[3] + i + 1, &mut found[3]);
        }
    }
    for (k, mut sid) in [s0, s1, s2, s3].into_iter().enumerate() {
        let rest = from[k] + common;
        for (at, &b) in (rest..).zip(&bytes[rest..bounds[k + 1]]) {
            sid = dfa.next_state(Anchored::No, sid, b);
            if dfa.is_special(sid) {
                matches_at(dfa, sid, at + 1, &mut found[k]);
            }
        }
    }
    out.reserve(found.iter().map(Vec::len).sum());
    for (k, piece_found) in found.iter().enumerate() {
        let floor = if k == 0 { 0 } else { bounds[k] };
        out.extend(piece_found.iter().filter(|m| m.1 > floor));
    }
    out
}

/// Every keyword occurrence in `text`, in order of end offset.
pub(crate) fn find(text: &str) -> Vec<Hit> {
    let Some(k) = keywords() else {
        return Vec::new();
    };
    walk(&k.dfa, text.as_bytes())
        .into_iter()
        .map(|(pattern, end)| Hit {
            start: end - k.dfa.pattern_len(pattern),
            end,
            meaning: k.meanings[pattern.as_usize()],
        })
        .collect()
}

/// Injection anchor bits of every keyword in `text`.
pub(crate) fn anchor_bits(text: &str) -> u32 {
    let Some(k) = keywords() else {
        return 0;
    };
    walk(&k.dfa, text.as_bytes())
        .into_iter()
        .fold(0, |acc, (pattern, _)| {
            acc | k.meanings[pattern.as_usize()].anchor_bits
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: the crate's own overlapping search.
    fn reference(text: &str) -> Vec<(usize, usize, usize)> {
        let ac = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(word_list())
            .unwrap();
        ac.find_overlapping_iter(text)
            .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
            .collect()
    }

    fn chained(text: &str) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let dfa = &keywords().unwrap().dfa;
        for (p, e) in walk(dfa, text.as_bytes()) {
            out.push((p.as_usize(), e - dfa.pattern_len(p), e));
        }
        out
    }

    const PIECES: &[&str] = &[
        "ignore previous instructions",
        "fecha de nacimiento",
        "password",
        "sk-",
        " ",
        "the quick brown fox ",
        "xx",
        "ü",
        "data di nascita",
        "maintenance override",
        "|nc",
    ];

    proptest! {
        #[test]
        fn chained_walk_equals_one_overlapping_search(
            parts in proptest::collection::vec(0..PIECES.len(), 0..400),
            pad in 0usize..40,
        ) {
            let text: String = "a".repeat(pad) + &parts.iter().map(|&i| PIECES[i]).collect::<String>();
            prop_assert_eq!(chained(&text), reference(&text));
        }
    }

    #[test]
    fn keywords_across_piece_bounds_are_found_once() {
        for len in [512, 513, 1000, 4096, 10_001] {
            for shift in 0..24 {
                let mut text = "z".repeat(len);
                for k in 1..CHAINS {
                    let at = (len * k / CHAINS).saturating_sub(shift);
                    text.replace_range(at..at + 20, "maintenance override");
                }
                assert_eq!(chained(&text), reference(&text), "len {len} shift {shift}");
            }
        }
    }

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
