//! The rules' verdict on each text, for training the classifier on what the rules let
//! through: JSON lines with a `text` field on stdin, `pass` or `block` per line on stdout.

use std::io::{BufRead, Write};

use octollm_reflex::{ScanOptions, Scanner};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scanner = Scanner::new();
    let options = ScanOptions {
        detect_pii: false,
        detect_injection: true,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let value: serde_json::Value =
            serde_json::from_str(&line?).map_err(|e| format!("line {}: {e}", n + 1))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| format!("line {}: no text field", n + 1))?;
        let blocked = scanner.scan_rules(text, options).should_block;
        writeln!(out, "{}", if blocked { "block" } else { "pass" })?;
    }
    out.flush()?;
    Ok(())
}
