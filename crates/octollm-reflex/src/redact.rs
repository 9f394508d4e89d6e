//! Redaction with typed placeholders that are stable within one task: the same value gets the
//! same placeholder every time it appears, so replies can be re-identified inside the system.

use std::collections::HashMap;

use crate::scan::Finding;

#[derive(Debug, Default, Clone)]
pub struct Redactor {
    by_value: HashMap<String, String>,
    counters: HashMap<&'static str, usize>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// `text` with every PII and secret finding replaced. Injection findings are not redacted
    /// (they are blocked or kept as evidence).
    pub fn redact(&mut self, text: &str, findings: &[Finding]) -> String {
        let mut spans: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.kind.is_entity())
            .filter(|f| f.start < f.end && f.end <= text.len())
            .filter(|f| text.is_char_boundary(f.start) && text.is_char_boundary(f.end))
            .collect();
        spans.sort_by_key(|f| f.start);
        let mut out = String::with_capacity(text.len());
        let mut cursor = 0;
        for f in spans {
            if f.start < cursor {
                continue;
            }
            out.push_str(&text[cursor..f.start]);
            out.push_str(&self.placeholder(f.label, &text[f.start..f.end]));
            cursor = f.end;
        }
        out.push_str(&text[cursor..]);
        out
    }

    fn placeholder(&mut self, label: &'static str, value: &str) -> String {
        if let Some(existing) = self.by_value.get(value) {
            return existing.clone();
        }
        let n = self.counters.entry(label).or_insert(0);
        *n += 1;
        let placeholder = format!("[{}_{}]", label.to_ascii_uppercase(), n);
        self.by_value.insert(value.to_owned(), placeholder.clone());
        placeholder
    }
}
