//! The reflex layer's detectors: pure, synchronous, no I/O.
//!
//! This is the first level of the layer: normalisation, PII and secret detection with
//! validators, injection detection by family, and redaction with stable typed placeholders.
//!
//! # Layout
//! - [`normalize`]: NFKC, zero-width removal, confusable folding, letter-spaced words joined.
//! - [`pii`]: PII and secret patterns with validators (Luhn, SSN rules, IPv4 parsing, key formats).
//! - [`injection`]: prompt-injection patterns by family.
//! - [`redact`]: typed placeholders (`[EMAIL_1]`) stable within one task.
//! - [`scan`]: [`Scanner`], which runs them all and decides the verdict.

pub mod injection;
pub mod normalize;
pub mod pii;
pub mod redact;
pub mod scan;

pub use redact::Redactor;
pub use scan::{Finding, FindingKind, ScanOptions, ScanReport, Scanner, Severity};
