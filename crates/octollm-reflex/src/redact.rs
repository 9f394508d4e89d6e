//! Redaction with typed placeholders that are stable within one task: the same value gets the
//! same placeholder every time it appears, so replies can be re-identified inside the system.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::scan::Finding;

#[derive(Debug, Default, Clone)]
pub struct Redactor {
    by_value: HashMap<String, String>,
    counters: HashMap<&'static str, usize>,
    /// With a key, placeholders are derived from it and the value (`[EMAIL_3fa91c2e]`), so
    /// they are the same in every process and every run of a task without any stored state,
    /// and differ between tasks: nothing outside the task can map one back to its value.
    key: Option<String>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Placeholders keyed by `key` (a task id): stable across processes and restarts.
    pub fn keyed(key: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            ..Self::default()
        }
    }

    /// `text` with every PII and secret finding replaced. Injection findings are not redacted
    /// (they are blocked or kept as evidence).
    pub fn redact(&mut self, text: &str, findings: &[Finding]) -> String {
        self.redact_with(text, findings, &[])
    }

    /// [`Redactor::redact`], also replacing each of `extra` (byte spans with a fixed
    /// replacement, such as a policy rule's `[REDACTED:rule]`). Overlaps keep the earlier span.
    pub fn redact_with(
        &mut self,
        text: &str,
        findings: &[Finding],
        extra: &[(usize, usize, String)],
    ) -> String {
        let valid = |start: usize, end: usize| {
            start < end
                && end <= text.len()
                && text.is_char_boundary(start)
                && text.is_char_boundary(end)
        };
        let mut spans: Vec<(usize, usize, Option<&'static str>, Option<&str>)> = findings
            .iter()
            .filter(|f| f.kind.is_entity() && valid(f.start, f.end))
            .map(|f| (f.start, f.end, Some(f.label), None))
            .chain(
                extra
                    .iter()
                    .filter(|(s, e, _)| valid(*s, *e))
                    .map(|(s, e, r)| (*s, *e, None, Some(r.as_str()))),
            )
            .collect();
        spans.sort_by_key(|s| s.0);
        let mut out = String::with_capacity(text.len());
        let mut cursor = 0;
        for (start, end, label, fixed) in spans {
            if start < cursor {
                continue;
            }
            out.push_str(&text[cursor..start]);
            match (label, fixed) {
                (Some(label), _) => {
                    let placeholder = self.placeholder(label, &text[start..end]);
                    out.push_str(&placeholder);
                }
                (None, Some(fixed)) => out.push_str(fixed),
                (None, None) => {}
            }
            cursor = end;
        }
        out.push_str(&text[cursor..]);
        out
    }

    fn placeholder(&mut self, label: &'static str, value: &str) -> String {
        if let Some(existing) = self.by_value.get(value) {
            return existing.clone();
        }
        let placeholder = match &self.key {
            Some(key) => {
                let digest = Sha256::new()
                    .chain_update(key.as_bytes())
                    .chain_update([0u8])
                    .chain_update(value.as_bytes())
                    .finalize();
                let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                format!("[{}_{tag}]", label.to_ascii_uppercase())
            }
            None => {
                let n = self.counters.entry(label).or_insert(0);
                *n += 1;
                format!("[{}_{}]", label.to_ascii_uppercase(), n)
            }
        };
        self.by_value.insert(value.to_owned(), placeholder.clone());
        placeholder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ScanOptions, Scanner};

    fn redact(redactor: &mut Redactor, text: &str) -> String {
        let report = Scanner::new().scan(text, ScanOptions::default());
        redactor.redact(text, &report.findings)
    }

    #[test]
    fn keyed_placeholders_are_stable_in_a_task_and_differ_between_tasks() {
        let text = "Write to jane.doe@example.com, then again to jane.doe@example.com.";
        let first = redact(&mut Redactor::keyed("task_a"), text);
        assert!(!first.contains("jane.doe"), "{first}");
        let placeholder = &first[first.find("[EMAIL_").unwrap()..][..16];
        assert_eq!(first.matches(placeholder).count(), 2, "{first}");
        // Another process, the same task: the same placeholder, with no shared state.
        assert_eq!(redact(&mut Redactor::keyed("task_a"), text), first);
        // Another task: another placeholder for the same value.
        assert!(!redact(&mut Redactor::keyed("task_b"), text).contains(placeholder));
    }
}
