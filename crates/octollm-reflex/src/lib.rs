//! The reflex layer's detectors: pure, synchronous, no I/O.
//!
//! This is the first level of the layer: normalisation, PII and secret detection with
//! validators, injection detection by family, and redaction with stable typed placeholders.
//!
//! # Layout
//! - [`normalize`]: NFKC, zero-width and bidi removal, confusable folding, letter-spaced words
//!   joined, with a map from normalised bytes back to the original text.
//! - [`decode`]: base64, hex (plain, `0x`, `\x`, spaced), percent-encoded segments and HTML
//!   character references decoded for a second look; ROT13.
//! - [`pii`]: PII and secret patterns behind a one-pass keyword and digit-cluster prefilter.
//! - [`validate`]: validators (Luhn, SSN rules, IBAN mod-97, E.164 digit counts, IPv4/IPv6
//!   parsing, dates, entropy of secrets).
//! - [`injection`]: prompt-injection detection by family, with context handling; its `rules`
//!   submodule holds the rules and their prefilter anchors.
//! - [`redact`]: typed placeholders (`[EMAIL_1]`) stable within one task.
//! - [`scan`]: [`Scanner`], which runs them all and decides the verdict.
//!
//! Every finding's `start..end` is a byte span of the text that was scanned, on char
//! boundaries, also for injections found in normalised or decoded text (an injection inside
//! an encoded segment is reported as `encoded_payload` over the encoded span).

mod bits;
pub mod classifier;
pub mod decode;
pub mod injection;
mod keywords;
pub mod normalize;
pub mod pii;
pub mod redact;
pub mod scan;
pub mod smuggle;
pub mod validate;

pub use classifier::{Classifier, Featurizer};
pub use redact::Redactor;
pub use scan::{ClassifierScore, Finding, FindingKind, ScanOptions, ScanReport, Scanner, Severity};
