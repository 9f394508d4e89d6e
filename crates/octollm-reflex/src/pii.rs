//! PII and secret detection on the original text. Each pattern has a validator that cuts
//! false positives (a 9-digit order number is not an SSN; a version string is not an IP).

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use regex::Regex;

use crate::scan::{Finding, FindingKind, Severity};

struct Pattern {
    label: &'static str,
    kind: FindingKind,
    severity: Severity,
    regex: Regex,
    /// Checks the matched text (or a capture group 1 when present). Returns confidence.
    validate: fn(&str) -> Option<f32>,
}

fn always(_: &str) -> Option<f32> {
    Some(0.95)
}

fn luhn(digits: &str) -> Option<f32> {
    let digits: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return None;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10).then_some(0.95)
}

/// US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn ssn(text: &str) -> Option<f32> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 9 {
        return None;
    }
    let (area, group, serial) = (&digits[0..3], &digits[3..5], &digits[5..9]);
    let bad = area == "000"
        || area == "666"
        || area.starts_with('9')
        || group == "00"
        || serial == "0000";
    (!bad).then_some(0.9)
}

fn ipv4(text: &str) -> Option<f32> {
    let addr: Ipv4Addr = text.parse().ok()?;
    // Every octet must be written canonically (no leading zeros), which version strings
    // such as 1.02.3.4 are not; 0.0.0.0 and versions like 1.2.3.4 remain ambiguous but valid.
    let canonical = text.split('.').all(|o| o == "0" || !o.starts_with('0'));
    (canonical && !addr.is_unspecified()).then_some(0.8)
}

fn phone(text: &str) -> Option<f32> {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    (10..=15).contains(&digits).then_some(0.8)
}

/// Shannon entropy in bits per character: secrets after `key=` look random.
fn high_entropy(value: &str) -> Option<f32> {
    if value.len() < 12 {
        return None;
    }
    let mut counts = [0u32; 256];
    for b in value.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = value.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    (entropy >= 3.0).then_some(0.85)
}

fn patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let p = |label, kind, severity, re: &str, validate| {
            Regex::new(re).ok().map(|regex| Pattern { label, kind, severity, regex, validate })
        };
        use FindingKind::{Pii, Secret};
        use Severity::{Critical, High, Medium};
        [
            p("private_key", Secret, Critical, r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )?PRIVATE KEY-----|$)", always as fn(&str) -> Option<f32>),
            p("anthropic_key", Secret, Critical, r"\bsk-ant-[A-Za-z0-9_-]{20,}", always),
            p("openai_key", Secret, Critical, r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}", always),
            p("aws_access_key", Secret, Critical, r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", always),
            p("github_token", Secret, Critical, r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b", always),
            p("slack_token", Secret, Critical, r"\bxox[abprs]-[A-Za-z0-9-]{10,}", always),
            p("stripe_key", Secret, Critical, r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b", always),
            p("google_api_key", Secret, Critical, r"\bAIza[0-9A-Za-z_-]{35}\b", always),
            p("jwt", Secret, High, r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", always),
            p("credential", Secret, High, r#"(?i)\b(?:api[_-]?key|secret|token|password|passwd|pwd)\s*[=:]\s*["']?([^\s"']{8,})"#, high_entropy),
            p("email", Pii, Medium, r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b", always),
            p("credit_card", Pii, High, r"\b(?:\d[ -]?){12,18}\d\b", luhn),
            p("ssn", Pii, High, r"\b\d{3}[- ]\d{2}[- ]\d{4}\b", ssn),
            p("phone", Pii, Medium, r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}\b|\+\d{10,14}\b", phone),
            p("ipv4", Pii, Medium, r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", ipv4),
        ]
        .into_iter()
        .flatten()
        .collect()
    })
}

/// A number that is part of a longer run of digit groups (`4111 1111 1111 1112`, `1.2.3.4.5`)
/// is not a phone number, SSN or IP on its own.
fn isolated(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].trim_end_matches([' ', '-', '.']);
    let after = text[end..].trim_start_matches([' ', '-', '.']);
    let joined_before = before.len() + 1 >= start && before.ends_with(|c: char| c.is_ascii_digit());
    let joined_after =
        after.len() + 1 >= text.len() - end && after.starts_with(|c: char| c.is_ascii_digit());
    !joined_before && !joined_after
}

/// Every PII and secret finding in `text`, non-overlapping, earliest and most severe first.
pub fn detect(text: &str) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    for pattern in patterns() {
        for caps in pattern.regex.captures_iter(text) {
            let (Some(whole), target) = (caps.get(0), caps.get(1).or(caps.get(0))) else {
                continue;
            };
            let Some(target) = target else { continue };
            let Some(confidence) = (pattern.validate)(target.as_str()) else {
                continue;
            };
            if matches!(pattern.label, "phone" | "ssn" | "credit_card" | "ipv4")
                && !isolated(text, whole.start(), whole.end())
            {
                continue;
            }
            // Secrets after `key=` are redacted value-only, so the key name stays readable.
            let span = if pattern.label == "credential" {
                target
            } else {
                whole
            };
            let overlaps = findings
                .iter()
                .any(|f| span.start() < f.end && f.start < span.end());
            if !overlaps {
                findings.push(Finding {
                    kind: pattern.kind,
                    label: pattern.label,
                    start: span.start(),
                    end: span.end(),
                    severity: pattern.severity,
                    confidence,
                });
            }
        }
    }
    findings.sort_by_key(|f| f.start);
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Vec<&'static str> {
        detect(text).into_iter().map(|f| f.label).collect()
    }

    #[test]
    fn finds_each_type() {
        assert_eq!(labels("mail me at jane.doe@example.com"), ["email"]);
        assert_eq!(labels("card 4111 1111 1111 1111 ok"), ["credit_card"]);
        assert_eq!(labels("ssn 123-45-6789"), ["ssn"]);
        assert_eq!(labels("call +1 415 555 2671"), ["phone"]);
        assert_eq!(labels("host 192.168.1.20 down"), ["ipv4"]);
        assert_eq!(
            labels("key sk-proj-abcdefghijklmnopqrstuvwx"),
            ["openai_key"]
        );
        assert_eq!(labels("AKIAIOSFODNN7EXAMPLE"), ["aws_access_key"]);
        assert_eq!(labels("password=Xk9#mQ2$vL7pR4"), ["credential"]);
    }

    #[test]
    fn validators_cut_false_positives() {
        assert!(
            labels("order 4111 1111 1111 1112").is_empty(),
            "Luhn failure"
        );
        assert!(labels("ssn 000-12-3456").is_empty());
        assert!(labels("ssn 666-12-3456").is_empty());
        assert!(labels("order number 123456789").is_empty());
        assert!(labels("version 1.02.03.4").is_empty());
        assert!(labels("password=aaaaaaaaaaaa").is_empty(), "low entropy");
    }

    #[test]
    fn credential_span_is_the_value_only() {
        let text = "token=Xk9mQ2vL7pR4zT";
        let f = &detect(text)[0];
        assert_eq!(&text[f.start..f.end], "Xk9mQ2vL7pR4zT");
    }
}
