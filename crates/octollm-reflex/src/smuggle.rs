//! Invisible and look-alike text: Unicode tag characters, variation-selector byte smuggling,
//! bidi overrides and homoglyph words.
//!
//! Each is an evasion in itself (ordinary prompts do not hide text), so each yields a
//! `unicode_evasion` finding over its span of the original text; what tag characters and
//! variation selectors spell is decoded so the injection rules can read it.
//!
//! - **Tag characters** (U+E0020..U+E007E) shadow printable ASCII and render as nothing. A
//!   subdivision flag (🏴 followed by a few tag letters and U+E007F) is the one ordinary use
//!   and is left alone.
//! - **Variation selectors** carry one byte each when strung together after a visible char
//!   (U+FE00..U+FE0F for 0..15, U+E0100..U+E01EF for 16..255). Ordinary text has at most one
//!   after a char (emoji presentation, an ideographic variant).
//! - **Bidi overrides** (U+202D, U+202E) reorder what the reader sees ("trojan source",
//!   `invoice_\u{202E}fdp.exe`); the embedding and isolate controls RTL text uses are not flagged.
//! - **Homoglyph words** mix Latin letters with Cyrillic or Greek ones that look the same
//!   (`sеcret` with a Cyrillic `е`); text written in those scripts has no Latin inside a word.

use crate::normalize::fold_confusable;
use crate::scan::{Finding, FindingKind, Severity};

pub const LABEL: &str = "unicode_evasion";

/// A hidden run of the original text and, when it spells something, what.
#[derive(Debug, Clone, PartialEq)]
pub struct Smuggled {
    pub start: usize,
    pub end: usize,
    pub decoded: String,
}

/// Variation selectors in a row that count as smuggling.
const MIN_SELECTORS: usize = 3;
/// Mixed-script words that block (one alone is reported at medium severity).
const MIN_HOMOGLYPH_WORDS: usize = 2;

/// Whether `text` may hold any of these: all of them are outside ASCII.
fn may_hold(text: &str) -> bool {
    !text.is_ascii()
}

fn tag_char(c: char) -> bool {
    ('\u{E0000}'..='\u{E007F}').contains(&c)
}

fn selector_byte(c: char) -> Option<u8> {
    match c {
        '\u{FE00}'..='\u{FE0F}' => u8::try_from(c as u32 - 0xFE00).ok(),
        '\u{E0100}'..='\u{E01EF}' => u8::try_from(c as u32 - 0xE0100 + 16).ok(),
        _ => None,
    }
}

/// Runs of tag characters and of variation selectors, with what they decode to.
pub fn hidden_runs(text: &str) -> Vec<Smuggled> {
    let mut out = Vec::new();
    if !may_hold(text) {
        return out;
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (start, c) = chars[k];
        if tag_char(c) {
            let first = k;
            while k < chars.len() && tag_char(chars[k].1) {
                k += 1;
            }
            let end = chars.get(k).map_or(text.len(), |x| x.0);
            let run = &chars[first..k];
            let flag = first > 0
                && chars[first - 1].1 == '\u{1F3F4}'
                && run.len() <= 7
                && run.last().is_some_and(|x| x.1 == '\u{E007F}');
            if !flag {
                let decoded = run
                    .iter()
                    .filter_map(|&(_, t)| {
                        let ascii = t as u32 - 0xE0000;
                        (0x20..0x7F)
                            .contains(&ascii)
                            .then(|| char::from_u32(ascii))
                            .flatten()
                    })
                    .collect();
                out.push(Smuggled {
                    start,
                    end,
                    decoded,
                });
            }
            continue;
        }
        if selector_byte(c).is_some() {
            let first = k;
            let mut bytes = Vec::new();
            while let Some(b) = chars.get(k).and_then(|x| selector_byte(x.1)) {
                bytes.push(b);
                k += 1;
            }
            if k - first >= MIN_SELECTORS {
                let end = chars.get(k).map_or(text.len(), |x| x.0);
                let decoded = String::from_utf8(bytes).unwrap_or_default();
                out.push(Smuggled {
                    start: chars[first].0,
                    end,
                    decoded,
                });
            }
            continue;
        }
        k += 1;
    }
    out
}

fn evasion(start: usize, end: usize, severity: Severity, confidence: f32) -> Finding {
    Finding {
        kind: FindingKind::Injection,
        label: LABEL,
        start,
        end,
        severity,
        confidence,
    }
}

/// Latin letters beside Cyrillic, Greek or Armenian look-alikes inside one word.
fn mixed_script(word: &str) -> bool {
    let mut latin = false;
    let mut lookalike = false;
    for c in word.chars() {
        if c.is_ascii_alphabetic() {
            latin = true;
        } else if matches!(c as u32, 0x0370..=0x03FF | 0x0400..=0x04FF | 0x0530..=0x058F)
            && fold_confusable(c).is_ascii()
        {
            lookalike = true;
        }
    }
    latin && lookalike
}

/// The `unicode_evasion` findings of `text` (hidden runs, bidi overrides, homoglyph words).
pub fn findings(text: &str, runs: &[Smuggled]) -> Vec<Finding> {
    let mut out: Vec<Finding> = runs
        .iter()
        .map(|r| evasion(r.start, r.end, Severity::High, 0.9))
        .collect();
    if !may_hold(text) {
        return out;
    }
    for (i, c) in text.char_indices() {
        if matches!(c, '\u{202D}' | '\u{202E}') {
            out.push(evasion(i, i + c.len_utf8(), Severity::High, 0.85));
        }
    }
    let mut mixed: Vec<(usize, usize)> = Vec::new();
    let mut word_start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphabetic(), word_start) {
            (true, None) => word_start = Some(i),
            (false, Some(s)) => {
                if mixed_script(&text[s..i]) {
                    mixed.push((s, i));
                }
                word_start = None;
            }
            _ => {}
        }
    }
    if let (Some(first), Some(last)) = (mixed.first(), mixed.last()) {
        let (severity, confidence) = if mixed.len() >= MIN_HOMOGLYPH_WORDS {
            (Severity::High, 0.85)
        } else {
            (Severity::Medium, 0.5)
        };
        out.push(evasion(first.0, last.1, severity, confidence));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_runs_decode_to_ascii() {
        let hidden: String = "hi there"
            .chars()
            .map(|c| char::from_u32(0xE0000 + c as u32).unwrap())
            .collect();
        let text = format!("a{hidden}b");
        let runs = hidden_runs(&text);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].decoded, "hi there");
        assert_eq!(&text[runs[0].start..runs[0].end], hidden);
    }

    #[test]
    fn plain_text_has_no_runs() {
        assert!(hidden_runs("hello world").is_empty());
        assert!(findings("hello world", &[]).is_empty());
    }
}
