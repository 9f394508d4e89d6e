//! The log writer: every formatted log line passes the reflex layer's PII and secret detectors
//! before it reaches stderr, so a value that ended up in a log field (a prompt quoted in an
//! error, a URL with a password, a key in a header dump) is replaced by its typed placeholder
//! (`[EMAIL_1]`, `[OPENAI_KEY_1]`) whatever code logged it.
//!
//! Addresses stay readable (IPv4, IPv6, MAC): logs need them to be operable, and they are
//! the service's own and its peers', not users' data.

use std::io::{self, Write};

use octollm_reflex::{Finding, Redactor, ScanOptions, Scanner};
use tracing_subscriber::fmt::MakeWriter;

/// Types a log line keeps as they are.
const KEPT: [&str; 3] = ["ipv4", "ipv6", "mac_address"];

#[derive(Debug, Default, Clone, Copy)]
pub struct RedactingStderr;

/// One log event: buffered while the formatter writes it, redacted and written when dropped
/// (the formatter makes one writer per event).
pub struct LineRedactor {
    line: Vec<u8>,
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = LineRedactor;

    fn make_writer(&'a self) -> Self::Writer {
        LineRedactor {
            line: Vec::with_capacity(256),
        }
    }
}

impl Write for LineRedactor {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineRedactor {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let clean = redact(&text);
        // Nowhere to report a failed write to stderr.
        let _ = io::stderr().lock().write_all(clean.as_bytes());
    }
}

/// `line` with every PII and secret value but addresses replaced by its placeholder.
pub fn redact(line: &str) -> String {
    let report = Scanner::new().scan(
        line,
        ScanOptions {
            detect_pii: true,
            detect_injection: false,
        },
    );
    let findings: Vec<Finding> = report
        .findings
        .into_iter()
        .filter(|f| !KEPT.contains(&f.label))
        .collect();
    if findings.is_empty() {
        return line.to_owned();
    }
    Redactor::new().redact(line, &findings)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn values_in_log_fields_are_replaced_and_addresses_kept() {
        let line = r#"{"level":"WARN","message":"provider refused","body":"contact jane.doe@example.com, key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd","peer":"10.1.2.3:5432"}"#;
        let clean = redact(line);
        assert!(!clean.contains("jane.doe@example.com"), "{clean}");
        assert!(!clean.contains("sk-proj-AbCdEf"), "{clean}");
        assert!(clean.contains("[EMAIL_1]"), "{clean}");
        assert!(clean.contains("10.1.2.3:5432"), "{clean}");
        // Still one JSON object.
        serde_json::from_str::<serde_json::Value>(&clean)
            .unwrap_or_else(|e| panic!("{e}: {clean}"));
    }

    #[test]
    fn ordinary_lines_pass_unchanged() {
        for line in [
            r#"{"timestamp":"2026-11-30T04:25:45.123456Z","level":"INFO","message":"task accepted","task_id":"task_w25P3Zy527BSj2k1","request_id":"req_01JDXYZ","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
            "2026-11-30T04:25:45Z  INFO listening addr=127.0.0.1:8000",
            r#"{"message":"step finished","duration_ms":1234567,"tokens":4096,"attempt":2}"#,
        ] {
            assert_eq!(redact(line), line);
        }
    }
}
