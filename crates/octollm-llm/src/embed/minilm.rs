//! all-MiniLM-L6-v2 sentence embeddings through candle (CPU, f32): BERT, mean pooling over
//! the attention mask, L2 normalisation, as sentence-transformers does it.
//!
//! The packaged `tokenizer.json` pads every input to 128 tokens; that padding is turned off and
//! each batch is padded only to its longest member (texts are grouped by length first), so a
//! short sentence costs little and gets the same vector alone or beside a long one.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::embed::Embedder;
use crate::provider::LlmError;

pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Longer texts are cut here (the model was trained on 256-token inputs).
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass.
pub const BATCH_SIZE: usize = 32;

const MODEL_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

pub struct MiniLmEmbedder {
    inner: Arc<MiniLm>,
}

struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    dimensions: usize,
}

impl MiniLmEmbedder {
    /// Loads the model from a directory holding `model.safetensors`, `tokenizer.json` and
    /// `config.json` (what `octollm model pull` puts in `<model dir>/all-MiniLM-L6-v2`). Blocking.
    /// Whether the model's files are in `dir` (without loading them).
    pub fn check_files(dir: &Path) -> Result<(), LlmError> {
        if MODEL_FILES.iter().any(|file| !dir.join(file).is_file()) {
            return Err(LlmError::ModelMissing {
                path: dir.display().to_string(),
            });
        }
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<Self, LlmError> {
        Self::check_files(dir)?;
        let config_path = dir.join("config.json");
        let config: Config = std::fs::read_to_string(&config_path)
            .map_err(|e| e.to_string())
            .and_then(|raw| serde_json::from_str(&raw).map_err(|e| e.to_string()))
            .map_err(|e| LlmError::Config(format!("cannot read {}: {e}", config_path.display())))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            LlmError::Config(format!("cannot read {}: {e}", tokenizer_path.display()))
        })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| LlmError::Config(format!("cannot set tokenizer truncation: {e}")))?;

        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        let model = std::fs::read(&weights_path)
            .map_err(candle_core::Error::wrap)
            .and_then(|bytes| VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device))
            .and_then(|vb| BertModel::load(vb, &config))
            .map_err(|e| {
                LlmError::Config(format!("cannot load {}: {e}", weights_path.display()))
            })?;

        let pad_id = u32::try_from(config.pad_token_id)
            .map_err(|_| LlmError::Config("pad_token_id out of range".into()))?;
        let inner = MiniLm {
            model,
            tokenizer,
            device,
            pad_id,
            dimensions: config.hidden_size,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

impl MiniLmEmbedder {
    /// [`Embedder::embed`] on the calling thread (for benchmarks and tools; the service uses
    /// the async form, which moves the work off the runtime).
    pub fn embed_blocking(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, LlmError> {
        self.inner.embed(texts)
    }
}

impl MiniLm {
    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, LlmError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| LlmError::Inference(format!("tokenization failed: {e}")))?;
        // Batch texts of similar length together so little padding is computed.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        for chunk in order.chunks(BATCH_SIZE) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let embedded = self
                .forward(&batch)
                .map_err(|e| LlmError::Inference(format!("embedding failed: {e}")))?;
            for (&i, vector) in chunk.iter().zip(embedded) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    /// One batch, padded to its longest member.
    fn forward(&self, batch: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let width = batch
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Vec::with_capacity(batch.len() * width);
        let mut mask = Vec::with_capacity(batch.len() * width);
        for encoding in batch {
            let pad = width - encoding.get_ids().len();
            ids.extend_from_slice(encoding.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            mask.extend_from_slice(encoding.get_attention_mask());
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let shape = (batch.len(), width);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?; // (batch, width, dim)

        // Mean over real tokens only, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (batch, width, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (batch, dim)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (batch, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

#[async_trait]
impl Embedder for MiniLmEmbedder {
    fn model(&self) -> &str {
        MODEL_NAME
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || inner.embed(texts))
            .await
            .map_err(|e| LlmError::Inference(format!("embedding task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::models::{default_model_dir, embedding_path};

    /// The pulled model; fails (never skips) when it is absent.
    fn embedder() -> &'static MiniLmEmbedder {
        static EMBEDDER: OnceLock<MiniLmEmbedder> = OnceLock::new();
        EMBEDDER.get_or_init(|| {
            let dir = embedding_path(&default_model_dir());
            assert!(
                dir.join("model.safetensors").is_file(),
                "embedding model missing at {}: run `octollm model pull` (or set OCTOLLM_MODEL_DIR)",
                dir.display()
            );
            MiniLmEmbedder::load(&dir).unwrap()
        })
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "vectors differ by {worst}");
    }

    #[test]
    fn a_missing_directory_is_model_missing() {
        let err = MiniLmEmbedder::load(Path::new("/nonexistent/minilm"))
            .err()
            .unwrap();
        assert_eq!(
            err,
            LlmError::ModelMissing {
                path: "/nonexistent/minilm".into()
            }
        );
    }

    #[tokio::test]
    async fn vectors_are_384_dimensional_unit_vectors() {
        let e = embedder();
        assert_eq!(e.model(), "all-MiniLM-L6-v2");
        assert_eq!(e.dimensions(), 384);
        let v = e
            .embed(&strings(&["The quick brown fox.", ""]))
            .await
            .unwrap();
        assert_eq!(v.len(), 2);
        for vector in &v {
            assert_eq!(vector.len(), 384);
            let norm = cosine(vector, vector).sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
        assert!(e.embed(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn paraphrases_are_closer_than_unrelated_text() {
        let v = embedder()
            .embed(&strings(&[
                "How do I reset my password?",
                "What are the steps to change my login password?",
                "The recipe calls for two cups of flour.",
            ]))
            .await
            .unwrap();
        let paraphrase = cosine(&v[0], &v[1]);
        let unrelated = cosine(&v[0], &v[2]);
        assert!(paraphrase > unrelated + 0.3, "{paraphrase} vs {unrelated}");
    }

    #[tokio::test]
    async fn batches_match_single_texts() {
        let e = embedder();
        // More than one batch, with lengths that interleave when sorted.
        let texts: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    "Sentence number {i} {}",
                    "with some more words ".repeat(i % 7)
                )
            })
            .collect();
        let batched = e.embed(&texts).await.unwrap();
        for i in [0, 5, 17, 31, 39] {
            let single = e.embed(&texts[i..=i]).await.unwrap();
            assert_close(&batched[i], &single[0]);
        }
    }

    #[tokio::test]
    async fn padding_does_not_change_a_short_sentence() {
        let e = embedder();
        let short = "Cats sleep a lot.".to_string();
        let long = "A considerably longer sentence that goes on and on about many unrelated \
                    things, so that the short one beside it must be padded a great deal."
            .to_string();
        let alone = e.embed(std::slice::from_ref(&short)).await.unwrap();
        let together = e.embed(&[long, short]).await.unwrap();
        assert_close(&alone[0], &together[1]);
    }

    #[tokio::test]
    async fn long_texts_are_truncated_not_refused() {
        let long = "word ".repeat(2000);
        let v = embedder().embed(&[long]).await.unwrap();
        assert_eq!(v[0].len(), 384);
    }
}
