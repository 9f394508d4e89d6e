//! Writes all-MiniLM-L6-v2 sentence embeddings (the retriever's, 384 numbers, normalised) for
//! research on the injection classifier: how far a contextual encoder would get where the
//! token-table features fail (`docs/reflex.md`, "Where it stands"). Reads JSON lines with a
//! `text` field on stdin, writes one little-endian f32 vector per line to stdout. Too slow for
//! the reflex layer's hot path (tens of milliseconds per 500 B on one core).
//!
//!     cargo run --release -p octollm-llm --no-default-features --features embed \
//!         --example sentence_features -- MODEL_DIR < texts.jsonl > embeddings.f32

use std::io::{BufRead, Write};
use std::path::PathBuf;

use octollm_llm::embed::minilm::MiniLmEmbedder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: sentence_features MODEL_DIR < texts.jsonl > embeddings.f32")?;
    let embedder = MiniLmEmbedder::load(&dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let value: serde_json::Value =
            serde_json::from_str(&line?).map_err(|e| format!("line {}: {e}", n + 1))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| format!("line {}: no text field", n + 1))?;
        for vector in embedder.embed_blocking(vec![text.to_owned()])? {
            for x in vector {
                out.write_all(&x.to_le_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
