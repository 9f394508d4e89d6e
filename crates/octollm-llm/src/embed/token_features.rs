//! The injection classifier's features: all-MiniLM-L6-v2's own token embeddings (the model's
//! first layer, read from `model.safetensors`), mean- and max-pooled over the text's WordPiece
//! tokens (768 numbers), four numbers about the text's shape ([`SHAPE`]), and which of
//! [`GRAM_BUCKETS`] hashed buckets the text's lowercased words and word pairs fall in ([`grams`]).
//!
//! The word pairs are the only context the features see: pooled token vectors cannot tell
//! "ignore my previous email" from "ignore previous instructions", a pair can. The buckets
//! are 0 or 1, so the network's first layer adds one column per bucket present.
//!
//! Why not the whole sentence embedding: the six transformer layers cost milliseconds per
//! 500 bytes on one core, which the reflex layer's latency budget (p99 ≤ 5 ms at 5,000
//! requests/s on two cores) cannot pay on every request; a table lookup per token costs
//! microseconds. Max pooling keeps the signal of a short attack inside a long benign text,
//! which a mean alone would wash out. The same code computes the features for training
//! (`examples/token_features.rs`, driven by `scripts/reflex-train.py`) and in service, so
//! the two cannot drift apart.

use std::path::Path;

use candle_core::{DType, Device};

use crate::embed::wordpiece::WordPiece;
use crate::provider::LlmError;

/// The name the classifier's weights record for these features.
pub const FEATURES: &str = "minilm-l6-token-mean-max-shape-grams2048-v2";

/// Hashed buckets for words and word pairs.
pub const GRAM_BUCKETS: usize = 2048;

/// Numbers about the text itself, after the pooled vectors: log of its length in chars, and
/// the shares of chars outside ASCII, of uppercase letters and of digits (keys, tokens and
/// other scripts look unlike prose, and attacks shout).
pub const SHAPE: usize = 4;

fn shape(text: &str) -> [f32; SHAPE] {
    let (mut chars, mut wide, mut upper, mut digits) = (0usize, 0usize, 0usize, 0usize);
    for c in text.chars() {
        chars += 1;
        wide += usize::from(!c.is_ascii());
        upper += usize::from(c.is_uppercase());
        digits += usize::from(c.is_ascii_digit());
    }
    let share = |n: usize| {
        if chars == 0 {
            0.0
        } else {
            n as f32 / chars as f32
        }
    };
    [
        (1.0 + chars as f32).ln(),
        share(wide),
        share(upper),
        share(digits),
    ]
}

/// FNV-1a, 64 bits: stable across builds and platforms, which the trained weights rely on.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            h ^= u64::from(b' ');
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Sets `out[bucket] = 1` for every lowercased word (a run of alphanumeric chars) and every
/// pair of neighbouring words of `text`.
pub fn grams(text: &str, out: &mut [f32]) {
    let buckets = out.len() as u64;
    if buckets == 0 {
        return;
    }
    let lower = text.to_lowercase();
    let mut previous: Option<&str> = None;
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out[(fnv1a(&[word]) % buckets) as usize] = 1.0;
        if let Some(p) = previous {
            out[(fnv1a(&[p, word]) % buckets) as usize] = 1.0;
        }
        previous = Some(word);
    }
}

pub struct TokenFeatures {
    tokenizer: WordPiece,
    /// `vocab × dim`, row-major.
    table: Vec<f32>,
    dim: usize,
}

impl TokenFeatures {
    /// Loads the tokenizer and the token embedding table from the model directory (what
    /// `octollm model pull` puts in `<model dir>/all-MiniLM-L6-v2`). Blocking.
    pub fn load(dir: &Path) -> Result<Self, LlmError> {
        crate::embed::minilm::MiniLmEmbedder::check_files(dir)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = std::fs::read_to_string(&tokenizer_path)
            .map_err(|e| e.to_string())
            .and_then(|json| WordPiece::from_tokenizer_json(&json))
            .map_err(|e| {
                LlmError::Config(format!("cannot read {}: {e}", tokenizer_path.display()))
            })?;
        let weights_path = dir.join("model.safetensors");
        let cannot = |e: &dyn std::fmt::Display| {
            LlmError::Config(format!("cannot load {}: {e}", weights_path.display()))
        };
        let tensors =
            candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| cannot(&e))?;
        let (_, table) = tensors
            .iter()
            .find(|(name, _)| name.ends_with("word_embeddings.weight"))
            .ok_or_else(|| cannot(&"no word_embeddings.weight tensor"))?;
        let (_, dim) = table.dims2().map_err(|e| cannot(&e))?;
        let table = table
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| cannot(&e))?;
        Ok(Self {
            tokenizer,
            table,
            dim,
        })
    }

    pub fn dimensions(&self) -> usize {
        2 * self.dim + SHAPE + GRAM_BUCKETS
    }

    /// Mean then max of the token vectors (zeros for a text without tokens), then the shape,
    /// then the word buckets.
    pub fn features(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        self.tokenizer.encode(text, &mut ids);
        let mut out = vec![0.0f32; self.dimensions()];
        let pooled = 2 * self.dim;
        out[pooled..pooled + SHAPE].copy_from_slice(&shape(text));
        grams(text, &mut out[pooled + SHAPE..]);
        if ids.is_empty() {
            return Ok(out);
        }
        let (mean, rest) = out.split_at_mut(self.dim);
        let max = &mut rest[..self.dim];
        max.fill(f32::NEG_INFINITY);
        for &id in &ids {
            let start = id as usize * self.dim;
            let Some(row) = self.table.get(start..start + self.dim) else {
                return Err(format!("token id {id} outside the embedding table"));
            };
            for ((m, x), v) in mean.iter_mut().zip(max.iter_mut()).zip(row) {
                *m += v;
                *x = x.max(*v);
            }
        }
        let n = ids.len() as f32;
        mean.iter_mut().for_each(|m| *m /= n);
        Ok(out)
    }
}

impl octollm_reflex::Featurizer for TokenFeatures {
    fn name(&self) -> &str {
        FEATURES
    }

    fn features(&self, text: &str) -> Result<Vec<f32>, String> {
        TokenFeatures::features(self, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(text: &str) -> Vec<usize> {
        let mut out = vec![0.0; GRAM_BUCKETS];
        grams(text, &mut out);
        out.iter()
            .enumerate()
            .filter(|(_, v)| **v == 1.0)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn word_pairs_tell_apart_what_the_words_alone_cannot() {
        // Same words, other order: the single words agree, the pairs do not.
        let a = buckets("ignore previous instructions");
        let b = buckets("instructions previous ignore");
        assert_eq!(a.len(), 5, "{a:?}");
        assert_ne!(a, b);
        // Case and punctuation do not matter; the hash is fixed (the weights depend on it).
        assert_eq!(a, buckets("Ignore, PREVIOUS instructions!"));
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert!(buckets("").is_empty() && buckets("—…").is_empty());
    }
}
