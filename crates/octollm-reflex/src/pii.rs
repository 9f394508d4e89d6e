//! PII and secret detection on the original text, behind a one-pass prefilter.
//!
//! Regexes never scan the whole text blindly. One Aho-Corasick pass over the text finds
//! trigger keywords (key prefixes such as `sk-`, `AKIA`, `eyJ`; key names such as
//! `password`; context words such as `passport` or `date of birth`), and each pattern runs
//! only when its trigger occurs: keyed patterns over the text (they start with literals, so
//! the regex engine skips quickly), context patterns in a short window after the context word,
//! numeric patterns (phone, card, SSN, IBAN, IP, MAC) only in windows around digit clusters,
//! and email only around `@`. Each match then goes through a validator ([`crate::validate`]).

use std::sync::OnceLock;

use regex_automata::Input;
use regex_automata::meta::Regex;

use crate::keywords::{self, Hit};
use crate::scan::{Finding, FindingKind, Severity};
use crate::validate::{self as v, Verdict};

/// When a pattern runs.
#[derive(Clone, Copy)]
enum Gate {
    /// Over the whole text when a trigger of this group occurs.
    Keyed(u32),
    /// In a window around each occurrence of a trigger of this group: from a little before it
    /// (the key name the trigger sits in, such as `client_secret` or a URL scheme) to the end
    /// of the value after it.
    Near(u32),
    /// In a window after each occurrence of a context word of this group.
    Context(u32, usize),
    /// In windows around digit clusters.
    Numeric,
    /// In windows around each `@`.
    At,
}

struct Pattern {
    label: &'static str,
    kind: FindingKind,
    severity: Severity,
    gate: Gate,
    regex: Regex,
    /// Capture group whose span is reported (0: the whole match).
    group: usize,
    validate: fn(&str, usize, usize) -> Verdict,
}

// Trigger groups.
const SK: u32 = 1;
const STRIPE: u32 = 1 << 1;
const AWS: u32 = 1 << 2;
const GITHUB: u32 = 1 << 3;
const SLACK: u32 = 1 << 4;
const GOOGLE: u32 = 1 << 5;
const JWT: u32 = 1 << 6;
const PEM: u32 = 1 << 7;
const CRED: u32 = 1 << 8;
const URL_CRED: u32 = 1 << 9;
const DOB: u32 = 1 << 10;
const PASSPORT: u32 = 1 << 11;
const LICENSE: u32 = 1 << 12;
const SSN_CTX: u32 = 1 << 13;

// Shapes of a digit cluster.
const LONG: u8 = 1;
const SEPARATED: u8 = 1 << 1;
const DOTTED: u8 = 1 << 2;

/// Trigger words, their group, and whether they must stand as whole words.
const TRIGGERS: &[(&str, u32, bool)] = &[
    ("sk-", SK, false),
    ("sk_live", STRIPE, false),
    ("sk_test", STRIPE, false),
    ("rk_live", STRIPE, false),
    ("rk_test", STRIPE, false),
    ("pk_live", STRIPE, false),
    ("pk_test", STRIPE, false),
    ("whsec_", STRIPE, false),
    ("akia", AWS, false),
    ("asia", AWS, false),
    ("abia", AWS, false),
    ("acca", AWS, false),
    ("agpa", AWS, false),
    ("aida", AWS, false),
    ("aroa", AWS, false),
    ("aipa", AWS, false),
    ("anpa", AWS, false),
    ("anva", AWS, false),
    ("apka", AWS, false),
    ("ghp_", GITHUB, false),
    ("gho_", GITHUB, false),
    ("ghu_", GITHUB, false),
    ("ghs_", GITHUB, false),
    ("ghr_", GITHUB, false),
    ("github_pat_", GITHUB, false),
    ("xox", SLACK, false),
    ("xapp-", SLACK, false),
    ("hooks.slack.com", SLACK, false),
    ("aiza", GOOGLE, false),
    ("eyj", JWT, false),
    ("-----begin", PEM, false),
    ("key", CRED, false),
    ("token", CRED, false),
    ("secret", CRED, false),
    ("pass", CRED, false),
    ("pwd", CRED, false),
    ("bearer", CRED, false),
    ("credential", CRED, false),
    ("://", URL_CRED, false),
    ("dob", DOB, true),
    ("d.o.b", DOB, true),
    ("birth", DOB, false),
    ("born", DOB, true),
    ("geburtsdatum", DOB, false),
    ("geboren", DOB, true),
    ("fecha de nacimiento", DOB, false),
    ("nacido", DOB, true),
    ("nacida", DOB, true),
    ("date de naissance", DOB, false),
    ("data di nascita", DOB, false),
    ("data de nascimento", DOB, false),
    ("reisepass", PASSPORT, false),
    ("pasaporte", PASSPORT, false),
    ("passeport", PASSPORT, false),
    ("passaporto", PASSPORT, false),
    ("passaporte", PASSPORT, false),
    ("f\u{fc}hrerschein", LICENSE, false),
    ("permis de conduire", LICENSE, false),
    ("licencia de conducir", LICENSE, false),
    ("passport", PASSPORT, false),
    ("driver's licen", LICENSE, false),
    ("driver\u{2019}s licen", LICENSE, false),
    ("drivers licen", LICENSE, false),
    ("driver licen", LICENSE, false),
    ("driving licen", LICENSE, false),
    ("license no", LICENSE, false),
    ("licence no", LICENSE, false),
    ("license number", LICENSE, false),
    ("licence number", LICENSE, false),
    ("license #", LICENSE, false),
    ("dl#", LICENSE, true),
    ("dl #", LICENSE, true),
    ("dl no", LICENSE, true),
    ("dl number", LICENSE, true),
    ("dl:", LICENSE, true),
    ("ssn", SSN_CTX, true),
    ("social security", SSN_CTX, false),
];

/// `\b` means an ASCII word boundary here, so the lazy DFA works on any input.
pub(crate) fn compile(pattern: &str) -> Result<Regex, Box<regex_automata::meta::BuildError>> {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).map_err(Box::new)
}

/// label, kind, severity, gate, pattern, reported capture group, validator.
type PatternSpec = (
    &'static str,
    FindingKind,
    Severity,
    Gate,
    &'static str,
    usize,
    fn(&str, usize, usize) -> Verdict,
);

const PATTERN_SPECS: &[PatternSpec] = {
    use FindingKind::{Pii, Secret};
    use Severity::{Critical, High, Medium};
    &[
        (
            "private_key",
            Secret,
            Critical,
            Gate::Keyed(PEM),
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)",
            0,
            v::always,
        ),
        (
            "anthropic_key",
            Secret,
            Critical,
            Gate::Keyed(SK),
            r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
            0,
            v::always,
        ),
        (
            "openai_key",
            Secret,
            Critical,
            Gate::Keyed(SK),
            r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}",
            0,
            v::always,
        ),
        (
            "aws_access_key",
            Secret,
            Critical,
            Gate::Keyed(AWS),
            r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}\b",
            0,
            v::always,
        ),
        (
            "github_token",
            Secret,
            Critical,
            Gate::Keyed(GITHUB),
            r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})",
            0,
            v::always,
        ),
        (
            "slack_token",
            Secret,
            Critical,
            Gate::Keyed(SLACK),
            r"\b(?:xox[abposre]-[A-Za-z0-9\-]{10,}|xapp-[0-9]-[A-Za-z0-9\-]{10,})|https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,}",
            0,
            v::always,
        ),
        (
            "stripe_key",
            Secret,
            Critical,
            Gate::Keyed(STRIPE),
            r"\b(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,})",
            0,
            v::always,
        ),
        (
            "google_api_key",
            Secret,
            Critical,
            Gate::Keyed(GOOGLE),
            r"\bAIza[0-9A-Za-z_\-]{35}",
            0,
            v::always,
        ),
        (
            "jwt",
            Secret,
            High,
            Gate::Keyed(JWT),
            r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
            0,
            v::always,
        ),
        (
            "credential",
            Secret,
            High,
            Gate::Near(CRED),
            r#"(?i)(?:api[_\-. ]?key|apikey|access[_\-]?key(?:[_\-]?id)?|secret|client[_\-]?secret|auth[_\-]?token|access[_\-]?token|refresh[_\-]?token|token|password|passwd|pass|pwd|passphrase|credentials?|\bkey)[a-z0-9_.\-]*["']?\s*(?:=|:|=>|:=)\s*["'`]?([^\s"'`,;<>]{6,})"#,
            1,
            v::credential,
        ),
        (
            "credential",
            Secret,
            High,
            Gate::Near(CRED),
            r"(?i)\b[a-z0-9_]*(?:secret|token|password|passwd|api_?key|access_?key)[a-z0-9_]*\s+[\x22']?([A-Za-z0-9/+=_\-]{16,})",
            1,
            v::credential,
        ),
        (
            "credential",
            Secret,
            High,
            Gate::Near(CRED),
            r"(?i)\bbearer\s+([A-Za-z0-9._~+/\-]{16,}=*)",
            1,
            v::credential,
        ),
        (
            "credential",
            Secret,
            High,
            Gate::Near(CRED),
            r#"(?i)\b(?:password|passphrase|passcode)\s+(?:is|was|=)\s+["'`]?([^\s"'`,;]{6,})"#,
            1,
            v::credential,
        ),
        (
            "credential",
            Secret,
            High,
            Gate::Near(URL_CRED),
            r"(?i)\b[a-z][a-z0-9+.\-]{1,20}://[^\s:/@]{1,64}:([^\s@/]{4,128})@",
            1,
            v::url_password,
        ),
        (
            "email",
            FindingKind::Pii,
            Medium,
            Gate::At,
            r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b",
            0,
            v::always,
        ),
        (
            "iban",
            Pii,
            High,
            Gate::Numeric,
            r"\b[A-Za-z]{2}[0-9]{2}(?: ?[A-Z0-9]{1,4}){3,8}",
            0,
            v::iban,
        ),
        (
            "credit_card",
            Pii,
            High,
            Gate::Numeric,
            r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
            0,
            v::credit_card,
        ),
        (
            "ssn",
            Pii,
            High,
            Gate::Numeric,
            r"\b[0-9]{3}[\- ][0-9]{2}[\- ][0-9]{4}\b",
            0,
            v::ssn,
        ),
        (
            "ssn",
            Pii,
            High,
            Gate::Context(SSN_CTX, 40),
            r"\b[0-9]{9}\b",
            0,
            v::ssn,
        ),
        (
            "phone",
            Pii,
            Medium,
            Gate::Numeric,
            r"\b1[ .\-]\(?[0-9]{3}\)?[ .\-][0-9]{3}[ .\-][0-9]{4}\b|\+[0-9]{1,3}[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,5}(?:[ .\-]?[0-9]{1,5}){0,5}\b|(?:\([0-9]{3}\)[ .\-]?|\b[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}\b|\b0[0-9]{2,4}[ .\-/]?[0-9]{3,4}[ .\-]?[0-9]{3,4}\b|\b0[1-9](?:[ .][0-9]{2}){4}\b",
            0,
            v::phone,
        ),
        (
            "ipv6",
            Pii,
            Medium,
            Gate::Numeric,
            r"(?i)(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,6}(?::[0-9a-f]{1,4}){1,6}|(?:[0-9a-f]{1,4}:){1,7}:|::(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4}",
            0,
            v::ipv6,
        ),
        (
            "mac_address",
            Pii,
            Medium,
            Gate::Numeric,
            r"(?i)\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b|\b[0-9a-f]{2}(?:-[0-9a-f]{2}){5}\b|\b[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\b",
            0,
            v::mac,
        ),
        (
            "ipv4",
            Pii,
            Medium,
            Gate::Numeric,
            r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b",
            0,
            v::ipv4,
        ),
        (
            "date_of_birth",
            Pii,
            High,
            Gate::Context(DOB, 40),
            r"(?i)\b(?:[0-9]{1,2}[/.\-][0-9]{1,2}[/.\-](?:19|20)?[0-9]{2}|(?:19|20)[0-9]{2}[/.\-][0-9]{1,2}[/.\-][0-9]{1,2}|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+[0-9]{1,2}(?:st|nd|rd|th)?,?\s+(?:19|20)[0-9]{2}|[0-9]{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?,?\s+(?:19|20)[0-9]{2})\b",
            0,
            v::date,
        ),
        (
            "passport",
            Pii,
            High,
            Gate::Context(PASSPORT, 40),
            r"\b[A-Z0-9]{6,9}\b",
            0,
            v::document_number,
        ),
        (
            "drivers_license",
            Pii,
            High,
            Gate::Context(LICENSE, 40),
            r"\b[A-Z0-9]{1,18}(?:[ \-][A-Z0-9]{2,9}){0,3}\b",
            0,
            v::document_number,
        ),
    ]
};

struct Detectors {
    patterns: Vec<Pattern>,
    /// Finds digit clusters that may hold a number-shaped PII value. A dense DFA, built once:
    /// hex letters keep it changing state through ordinary words, where the lazy DFA's cache
    /// checks cost a third of the clean-text scan.
    numeric: regex_automata::dfa::regex::Regex,
}

fn detectors() -> Option<&'static Detectors> {
    static D: OnceLock<Option<Detectors>> = OnceLock::new();
    D.get_or_init(|| {
        let patterns = PATTERN_SPECS
            .iter()
            .map(|&(label, kind, severity, gate, re, group, validate)| {
                compile(re).ok().map(|regex| Pattern { label, kind, severity, gate, regex, group, validate })
            })
            .collect::<Option<Vec<_>>>()?;
        let numeric = regex_automata::dfa::regex::Regex::new(r"(?:[0-9A-Fa-f]{1,4}[:.\-]){2,}[0-9A-Fa-f]{1,4}|[+(]?[0-9][0-9 ().\-/]{4,}[0-9]|::[0-9A-Fa-f]")
            .ok()?;
        Some(Detectors { patterns, numeric })
    })
    .as_ref()
}

/// How far before a credential trigger its key name may start, and how far after it the
/// value is looked for (extended to the end of the value).
const NEAR_BEFORE: usize = 64;
const NEAR_AFTER: usize = 256;
/// A URL's scheme (with the word boundary before it) and its `user:password@` part, as long
/// as the URL-credential pattern lets them be.
const URL_SCHEME_MAX: usize = 22;
const URL_USERINFO_MAX: usize = 64 + 1 + 128 + 1;
/// A value longer than this after its key is cut here (it is still redacted up to the cut).
const VALUE_MAX: usize = 8 * 1024;

/// The first whitespace at or after `from` (at most [`VALUE_MAX`] further), on a char boundary.
fn value_end(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let from = from.min(bytes.len());
    let limit = (from + VALUE_MAX).min(bytes.len());
    let end = bytes[from..limit]
        .iter()
        .position(u8::is_ascii_whitespace)
        .map_or(limit, |k| from + k);
    ceil_boundary(text, end)
}

/// Digits and colons seed the numeric patterns (every number-shaped value has one, and
/// `::` or `aa:bb:…` carry the colon). Windows reach [`DIGIT_RADIUS`] around runs of seeds
/// no more than that apart, so the cluster regex never scans long stretches of prose. The
/// longest seedless stretch of a value is a dashed MAC address whose only digit comes last
/// (`aa-bb-cc-dd-ee-f1`: 16 bytes), so 24 leaves a margin.
const DIGIT_RADIUS: usize = 24;

fn digit_windows(text: &str) -> Vec<(usize, usize)> {
    // Digits and colons (`:` follows `9`).
    let seeds = crate::bits::Bits::of(text.as_bytes(), |b| b.wrapping_sub(b'0') <= 10);
    let next = |from: usize| seeds.next_one(from);
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while let Some(first) = next(at) {
        let mut last = first;
        while let Some(k) = next(last + 1) {
            if k > last + DIGIT_RADIUS {
                break;
            }
            last = k;
        }
        out.push((
            floor_boundary(text, first.saturating_sub(DIGIT_RADIUS)),
            ceil_boundary(text, last + 1 + DIGIT_RADIUS),
        ));
        at = last + 1;
    }
    merge(out)
}

/// "born" marks a date of birth only with a person as subject (`I was born`, `he was born`,
/// `Name: …, born`), not `the project was born`.
fn personal_subject(text: &str, at: usize) -> bool {
    let from = floor_boundary(text, at.saturating_sub(32));
    let before = text[from..at].to_ascii_lowercase();
    let before = before.trim_end();
    if before.is_empty() || before.ends_with(',') || before.ends_with(';') || before.ends_with('(')
    {
        return true;
    }
    let words: Vec<&str> = before
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().rev().take(4).any(|w| {
        matches!(
            *w,
            "i" | "i'm"
                | "he"
                | "she"
                | "they"
                | "we"
                | "you"
                | "my"
                | "his"
                | "her"
                | "their"
                | "our"
                | "your"
                | "son"
                | "daughter"
                | "baby"
                | "child"
                | "patient"
                | "mother"
                | "father"
                | "wife"
                | "husband"
        )
    })
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Sorted, merged windows.
fn merge(mut windows: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    windows.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(windows.len());
    for (s, e) in windows {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Every PII and secret finding in `text`, non-overlapping (secrets and earlier patterns win),
/// sorted by start.
pub fn detect(text: &str) -> Vec<Finding> {
    detect_with(text, &keywords::find(text))
}

/// The trigger words, their group and whether they must stand alone, for the shared keyword
/// automaton ([`crate::keywords`]).
pub(crate) fn triggers() -> &'static [(&'static str, u32, bool)] {
    TRIGGERS
}

/// [`detect`] with the keyword hits of `text` already found.
pub(crate) fn detect_with(text: &str, hits: &[Hit]) -> Vec<Finding> {
    let Some(d) = detectors() else {
        return Vec::new();
    };
    let bytes = text.as_bytes();
    let mut groups = 0u32;
    let mut contexts: Vec<(u32, usize)> = Vec::new();
    let mut near: Vec<(u32, usize, usize)> = Vec::new();
    for m in hits {
        let group = m.meaning.pii_groups;
        if group == 0 {
            continue;
        }
        if let Some(&(word, _, whole)) = m.meaning.trigger.and_then(|t| TRIGGERS.get(t)) {
            if whole {
                let before = m.start.checked_sub(1).map(|i| bytes[i]);
                let after = bytes.get(m.end).copied();
                let alpha = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphabetic());
                if alpha(before) || alpha(after) {
                    continue;
                }
            }
            if word.eq_ignore_ascii_case("born") && !personal_subject(text, m.start) {
                continue;
            }
        }
        groups |= group;
        if group & (DOB | PASSPORT | LICENSE | SSN_CTX) != 0 {
            contexts.push((group, m.end));
        }
        if group & CRED != 0 {
            near.push((
                group,
                floor_boundary(text, m.start.saturating_sub(NEAR_BEFORE)),
                value_end(text, m.end + NEAR_AFTER),
            ));
        } else if group & URL_CRED != 0 {
            // `scheme://user:password@`: the scheme just before `://`, no space after it.
            near.push((
                group,
                floor_boundary(text, m.start.saturating_sub(URL_SCHEME_MAX)),
                value_end(text, m.end).min(ceil_boundary(text, m.end + URL_USERINFO_MAX)),
            ));
        }
    }
    // Windows around digit clusters, with what the cluster looks like, so that each numeric
    // pattern runs only where its shape can occur.
    let mut numeric: Vec<(usize, usize, u8)> = Vec::new();
    for (ws, we) in digit_windows(text) {
        for m in d.numeric.find_iter(Input::new(text).range(ws..we)) {
            let c = &bytes[m.start()..m.end()];
            let digits = c.iter().filter(|b| b.is_ascii_digit()).count();
            let mut shape = 0u8;
            if digits >= 8 {
                shape |= LONG;
            }
            if c.contains(&b':') || c.contains(&b'-') || c.contains(&b'.') {
                shape |= SEPARATED;
            }
            if c.iter().filter(|&&b| b == b'.').count() >= 3 {
                shape |= DOTTED;
            }
            numeric.push((
                floor_boundary(text, m.start().saturating_sub(24)),
                ceil_boundary(text, m.end() + 8),
                shape,
            ));
        }
    }
    let at_windows = merge(
        memchr::memchr_iter(b'@', bytes)
            .map(|i| {
                (
                    floor_boundary(text, i.saturating_sub(64)),
                    ceil_boundary(text, i + 256),
                )
            })
            .collect(),
    );

    let mut candidates: Vec<(usize, Finding)> = Vec::new();
    for (rank, p) in d.patterns.iter().enumerate() {
        let windows: Vec<(usize, usize)> = match p.gate {
            Gate::Keyed(g) if groups & g != 0 => vec![(0, text.len())],
            Gate::Keyed(_) => continue,
            Gate::Near(g) if groups & g != 0 => merge(
                near.iter()
                    .filter(|w| w.0 & g != 0)
                    .map(|w| (w.1, w.2))
                    .collect(),
            ),
            Gate::Near(_) => continue,
            Gate::Context(g, width) => merge(
                contexts
                    .iter()
                    .filter(|c| c.0 & g != 0)
                    .map(|c| (c.1, ceil_boundary(text, c.1 + width)))
                    .collect(),
            ),
            Gate::Numeric => {
                let need = match p.label {
                    "ipv4" => DOTTED,
                    "ipv6" | "mac_address" => SEPARATED,
                    _ => LONG,
                };
                merge(
                    numeric
                        .iter()
                        .filter(|w| w.2 & need != 0)
                        .map(|w| (w.0, w.1))
                        .collect(),
                )
            }
            Gate::At => at_windows.clone(),
        };
        for (ws, we) in windows {
            let input = Input::new(text).range(ws..we);
            if p.group == 0 {
                // A validator may narrow a match (IBAN); the search resumes after the reported
                // span, so a value swallowed by a greedy match is still found.
                let mut at = ws;
                while at < we {
                    let Some(m) = p.regex.search(&input.clone().range(at..we)) else {
                        break;
                    };
                    let next =
                        push(&mut candidates, rank, p, text, m.start(), m.end()).unwrap_or(m.end());
                    at = ceil_boundary(text, if next > at { next } else { at + 1 });
                }
            } else {
                let mut caps = p.regex.create_captures();
                let mut at = ws;
                while at < we {
                    p.regex
                        .search_captures(&Input::new(text).range(at..we), &mut caps);
                    let Some(whole) = caps.get_match() else { break };
                    if let Some(span) = caps.get_group(p.group) {
                        let _ = push(&mut candidates, rank, p, text, span.start, span.end);
                    }
                    at = if whole.end() > at {
                        whole.end()
                    } else {
                        at + 1
                    };
                    at = ceil_boundary(text, at);
                }
            }
        }
    }
    // Earlier patterns (secrets first) win; within a pattern, earlier matches.
    candidates.sort_by_key(|(rank, f)| (*rank, f.start));
    let mut findings: Vec<Finding> = Vec::with_capacity(candidates.len());
    for (_, f) in candidates {
        if !findings.iter().any(|g| f.start < g.end && g.start < f.end) {
            findings.push(f);
        }
    }
    findings.sort_by_key(|f| f.start);
    findings
}

/// Validates a match and records it; returns the end of the reported span.
fn push(
    out: &mut Vec<(usize, Finding)>,
    rank: usize,
    p: &Pattern,
    text: &str,
    start: usize,
    end: usize,
) -> Option<usize> {
    if start >= end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return None;
    }
    let (s, e, confidence) = (p.validate)(text, start, end)?;
    if s >= e || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
        return None;
    }
    out.push((
        rank,
        Finding {
            kind: p.kind,
            label: p.label,
            start: s,
            end: e,
            severity: p.severity,
            confidence,
        },
    ));
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Vec<&'static str> {
        detect(text).into_iter().map(|f| f.label).collect()
    }

    fn found(text: &str) -> Vec<(&'static str, &str)> {
        detect(text)
            .into_iter()
            .map(|f| (f.label, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn every_pattern_compiles() {
        for spec in PATTERN_SPECS {
            assert!(compile(spec.4).is_ok(), "{}", spec.0);
        }
        assert!(detectors().is_some());
    }

    #[test]
    fn finds_each_pii_type() {
        assert_eq!(labels("mail me at jane.doe@example.com"), ["email"]);
        assert_eq!(labels("card 4111 1111 1111 1111 ok"), ["credit_card"]);
        assert_eq!(labels("amex 3782-822463-10005"), ["credit_card"]);
        assert_eq!(labels("ssn 123-45-6789"), ["ssn"]);
        assert_eq!(labels("SSN: 123456789"), ["ssn"]);
        assert_eq!(labels("call +1 415 555 2671"), ["phone"]);
        assert_eq!(labels("call +44 20 7946 0958 now"), ["phone"]);
        assert_eq!(labels("call (415) 555-2671"), ["phone"]);
        assert_eq!(labels("call 415-555-2671"), ["phone"]);
        assert_eq!(labels("ring 020 7946 0958"), ["phone"]);
        assert_eq!(labels("host 192.168.1.20 down"), ["ipv4"]);
        assert_eq!(labels("host 2001:db8::8a2e:370:7334 down"), ["ipv6"]);
        assert_eq!(labels("mac 00:1A:2B:3C:4D:5E"), ["mac_address"]);
        // The seed (the only digit) is the last byte: the digit window must reach back over
        // the whole value, in prose that gives no other seed.
        assert_eq!(
            found("the lab printer answers at aa-bb-cc-dd-ee-f1 since the move"),
            [("mac_address", "aa-bb-cc-dd-ee-f1")]
        );
        assert_eq!(labels("iban DE89 3704 0044 0532 0130 00 thanks"), ["iban"]);
        assert_eq!(found("DOB: 1985-03-14"), [("date_of_birth", "1985-03-14")]);
        assert_eq!(
            found("I was born on March 14, 1985."),
            [("date_of_birth", "March 14, 1985")]
        );
        assert_eq!(
            found("passport number X1234567"),
            [("passport", "X1234567")]
        );
        assert_eq!(
            found("driver's license: D1234567"),
            [("drivers_license", "D1234567")]
        );
        assert_eq!(
            found("license no: 7392 5108 (VIC)"),
            [("drivers_license", "7392 5108")]
        );
        assert_eq!(
            found("Driving licence number MORGA753116SM9IJ, UK"),
            [("drivers_license", "MORGA753116SM9IJ")]
        );
        assert_eq!(
            found("Fax 1-800-555-0199 is"),
            [("phone", "1-800-555-0199")]
        );
        assert_eq!(
            found("mobile +4915112345678 ok"),
            [("phone", "+4915112345678")]
        );
    }

    #[test]
    fn finds_each_secret_type() {
        assert_eq!(
            labels("key sk-proj-abcdefghijklmnopqrstuvwx"),
            ["openai_key"]
        );
        assert_eq!(
            labels("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123"),
            ["anthropic_key"]
        );
        assert_eq!(labels("AKIAIOSFODNN7EXAMPLE"), ["aws_access_key"]);
        assert_eq!(
            labels("ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            ["github_token"]
        );
        assert_eq!(labels("xoxb-123456789012-abcdefghij"), ["slack_token"]);
        assert_eq!(labels("sk_live_abcdefghijklmnop1234"), ["stripe_key"]);
        assert_eq!(
            labels("AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"),
            ["google_api_key"]
        );
        assert_eq!(
            labels("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijk"),
            ["jwt"]
        );
        assert_eq!(
            labels("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"),
            ["private_key"]
        );
        assert_eq!(labels("password=Xk9#mQ2$vL7pR4"), ["credential"]);
        assert_eq!(
            found("db postgres://app:S3cr3tPw@db:5432/x"),
            [("credential", "S3cr3tPw")]
        );
        // The longest scheme and user parts the pattern allows still fall in the window
        // around `://`.
        let scheme = format!("a{}", "b".repeat(20));
        let user = "u".repeat(64);
        let password = "p".repeat(120);
        let url = format!("see {scheme}://{user}:{password}@host/x now");
        assert_eq!(found(&url), [("credential", password.as_str())]);
        assert_eq!(
            found("export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx1234"),
            [("openai_key", "sk-abcdefghijklmnopqrstuvwx1234")]
        );
    }

    #[test]
    fn multibyte_text_before_a_number_does_not_panic() {
        // Found by the fuzz target: the word before a card-like number was sliced by bytes.
        let _ = detect("\u{9a244}9999999999999999999\r");
        let _ = detect("é1 4111 1111 1111 1111");
    }

    #[test]
    fn validators_cut_false_positives() {
        for text in [
            "order 4111 1111 1111 1112",
            "ssn 000-12-3456",
            "ssn 666-12-3456",
            "order number 123456789",
            "version 1.02.03.4",
            "upgrade to version 1.2.3.4 today",
            "password=aaaaaaaaaaaa",
            "max_tokens=4096",
            "the token = self.token",
            "born to run",
            "The project was born on 3 May 2019.",
            "upgraded from 1.2.3.4 to 1.2.4.0",
            "IMEI 490154203237518",
            "my passport is blue",
            "meet at 10:30:45",
            "std::vector<int> v;",
            "the MIT license 2.0",
            "adobe photoshop 2024-01-15",
            "call me at 555-5555",
        ] {
            assert!(labels(text).is_empty(), "{text}: {:?}", labels(text));
        }
    }

    #[test]
    fn credential_span_is_the_value_only() {
        let text = "token=Xk9mQ2vL7pR4zT";
        let f = &detect(text)[0];
        assert_eq!(&text[f.start..f.end], "Xk9mQ2vL7pR4zT");
    }
}
