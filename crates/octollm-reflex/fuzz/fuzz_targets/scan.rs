//! Fuzz the normaliser and every detector: no panics, and every finding is a non-empty span of
//! the input on char boundaries; redaction never panics either.
//!
//! `cargo +nightly fuzz run scan` from `crates/octollm-reflex`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use octollm_reflex::{Redactor, ScanOptions, Scanner, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let n = normalize::normalize_mapped(text);
    let len = n.as_str().len();
    let (s, e) = n.original_span(text, 0, len);
    assert!(s <= e && e <= text.len());
    let report = Scanner::new().scan(text, ScanOptions::default());
    for f in &report.findings {
        assert!(f.start < f.end && f.end <= text.len(), "{f:?}");
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end), "{f:?}");
    }
    let _ = Redactor::new().redact(text, &report.findings);
});
