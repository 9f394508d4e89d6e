//! Writes the injection classifier's features for training: reads JSON lines with a `text`
//! field on stdin, writes one little-endian f32 vector per line to stdout.
//!
//!     cargo run --release -p octollm-llm --example token_features -- MODEL_DIR < texts.jsonl > features.f32

use std::io::{BufRead, Write};
use std::path::PathBuf;

use octollm_llm::embed::token_features::TokenFeatures;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: token_features MODEL_DIR < texts.jsonl > features.f32")?;
    let features = TokenFeatures::load(&dir)?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| format!("line {}: no text field", n + 1))?;
        for x in features.features(text)? {
            out.write_all(&x.to_le_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}
