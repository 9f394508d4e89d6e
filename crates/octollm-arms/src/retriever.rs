//! The retriever arm: ingests documents (chunked, embedded, indexed) and searches them by
//! keyword (BM25), vector (cosine) or both fused by reciprocal rank.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use octollm_llm::Embedder;
use octollm_store::{ChunkHit, KnowledgeStore, NewChunk};
use serde::{Deserialize, Serialize};

use crate::context::{ArmError, ArmOutcome, CallContext};
use crate::contract::{ArmStatus, Handler, Health};
use crate::{Ingest, Search};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMethod {
    Vector,
    Keyword,
    Hybrid,
}

/// `POST /search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[schemars(length(min = 1, max = QUERY_MAX_CHARS), pattern(octollm_core::task::NOT_BLANK_PATTERN))]
    pub query: String,
    #[serde(default = "default_method")]
    pub method: SearchMethod,
    #[serde(
        default = "default_max_results",
        deserialize_with = "octollm_core::wire::whole"
    )]
    #[schemars(range(min = 1, max = MAX_RESULTS))]
    pub max_results: u32,
    /// Results scoring below this (0..1) are left out.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_score: f64,
    /// Metadata equality filters: every key must match.
    #[serde(default)]
    pub filters: Option<serde_json::Map<String, serde_json::Value>>,
}

fn default_method() -> SearchMethod {
    SearchMethod::Hybrid
}

fn default_max_results() -> u32 {
    10
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchResult {
    pub result_id: String,
    pub content: String,
    /// 0..1, higher is better.
    pub score: f64,
    pub source: String,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
    pub query: String,
    pub method_used: SearchMethod,
    pub total_results: u32,
    pub citations: Vec<String>,
}

/// `POST /documents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRequest {
    /// The text; chunked, embedded and indexed.
    #[schemars(length(min = 1), pattern(octollm_core::task::NOT_BLANK_PATTERN))]
    pub content: String,
    /// Where it came from (shown with every result).
    #[schemars(length(min = 1, max = SOURCE_MAX_CHARS), pattern(octollm_core::task::NOT_BLANK_PATTERN))]
    pub source: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DocumentResponse {
    pub document_id: i64,
    pub chunks: u32,
}

pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;
pub const QUERY_MAX_CHARS: usize = 500;
pub const MAX_RESULTS: u32 = 100;
pub const SOURCE_MAX_CHARS: usize = 1000;
const CHUNK_CHARS: usize = 800;
const CHUNK_OVERLAP: usize = 100;
/// Reciprocal rank fusion constant from Cormack et al. (2009).
const RRF_K: f64 = 60.0;

pub struct Retriever {
    store: Arc<dyn KnowledgeStore>,
    embedder: Arc<dyn Embedder>,
}

impl Retriever {
    pub fn new(store: Arc<dyn KnowledgeStore>, embedder: Arc<dyn Embedder>) -> Self {
        Self { store, embedder }
    }
}

/// Splits text into chunks of about [`CHUNK_CHARS`] characters on paragraph, then sentence,
/// then word boundaries, with [`CHUNK_OVERLAP`] characters carried over for context.
pub fn chunk(text: &str) -> Vec<String> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let hard_end = (start + CHUNK_CHARS).min(chars.len());
        let mut end = hard_end;
        if hard_end < chars.len() {
            let window: String = chars[start..hard_end].iter().collect();
            let cut = window
                .rfind("\n\n")
                .or_else(|| window.rfind(". "))
                .or_else(|| window.rfind(' '))
                .filter(|&i| i > CHUNK_CHARS / 3);
            if let Some(byte_idx) = cut {
                end = start + window[..byte_idx].chars().count() + 1;
            }
        }
        let piece: String = chars[start..end].iter().collect();
        if !piece.trim().is_empty() {
            chunks.push(piece.trim().to_owned());
        }
        if end >= chars.len() {
            break;
        }
        start = end.saturating_sub(CHUNK_OVERLAP).max(start + 1);
    }
    chunks
}

fn matches_filters(
    hit: &ChunkHit,
    filters: &Option<serde_json::Map<String, serde_json::Value>>,
) -> bool {
    filters
        .as_ref()
        .is_none_or(|f| f.iter().all(|(k, v)| hit.metadata.get(k) == Some(v)))
}

/// A missing or unloadable embedding model is the deployment's fault, and says what to do
/// (503 with the model's message), not an internal error.
fn embedder_err(e: octollm_llm::LlmError) -> ArmError {
    match e {
        octollm_llm::LlmError::Config(message) => {
            ArmError::Unavailable(format!("the embedding model is unavailable: {message}"))
        }
        other => ArmError::Llm(other),
    }
}

impl Retriever {
    /// Keyword search works without the embedding model; vector and hybrid search do not.
    fn health(&self) -> ArmStatus {
        ArmStatus::in_process(match self.embedder.available() {
            Ok(()) => Health::Healthy,
            Err(reason) => Health::Degraded(format!(
                "only keyword search works: the embedding model is unavailable ({reason})"
            )),
        })
    }
}

#[async_trait]
impl Handler<Search> for Retriever {
    fn status(&self) -> ArmStatus {
        self.health()
    }

    async fn handle(
        &self,
        request: SearchRequest,
        _ctx: CallContext,
    ) -> Result<ArmOutcome<SearchResponse>, ArmError> {
        if octollm_core::task::is_blank(&request.query)
            || request.query.chars().count() > QUERY_MAX_CHARS
        {
            return Err(ArmError::InvalidRequest(format!(
                "query must be 1 to {QUERY_MAX_CHARS} characters, not blank"
            )));
        }
        let q = request.query.trim();
        if !(1..=MAX_RESULTS).contains(&request.max_results) {
            return Err(ArmError::InvalidRequest(format!(
                "max_results must be 1 to {MAX_RESULTS}"
            )));
        }
        if !(0.0..=1.0).contains(&request.min_score) {
            return Err(ArmError::InvalidRequest("min_score must be 0 to 1".into()));
        }
        // Fetch extra candidates so fusion and filters still leave enough.
        let candidates = (request.max_results * 3).min(300);
        let store_err =
            |e: octollm_store::StoreError| ArmError::Unavailable(format!("knowledge store: {e}"));
        let keyword = if request.method != SearchMethod::Vector {
            self.store
                .keyword_search(q, candidates)
                .await
                .map_err(store_err)?
        } else {
            Vec::new()
        };
        let vector = if request.method != SearchMethod::Keyword {
            let embedding = self
                .embedder
                .embed(&[q.to_owned()])
                .await
                .map_err(embedder_err)?;
            let embedding = embedding
                .into_iter()
                .next()
                .ok_or_else(|| ArmError::Internal("embedder returned nothing".into()))?;
            self.store
                .vector_search(&embedding, candidates)
                .await
                .map_err(store_err)?
        } else {
            Vec::new()
        };
        let keyword: Vec<ChunkHit> = keyword
            .into_iter()
            .filter(|h| matches_filters(h, &request.filters))
            .collect();
        let vector: Vec<ChunkHit> = vector
            .into_iter()
            .filter(|h| matches_filters(h, &request.filters))
            .collect();
        let mut scored: Vec<(ChunkHit, f64)> = match request.method {
            SearchMethod::Vector => vector
                .into_iter()
                .map(|h| {
                    let s = h.score.clamp(0.0, 1.0);
                    (h, s)
                })
                .collect(),
            SearchMethod::Keyword => {
                // BM25 is unbounded: scale by the best hit so scores are 0..1 within a query.
                let best = keyword.iter().map(|h| h.score).fold(0.0_f64, f64::max);
                keyword
                    .into_iter()
                    .map(|h| {
                        let s = if best > 0.0 { h.score / best } else { 0.0 };
                        (h, s)
                    })
                    .collect()
            }
            SearchMethod::Hybrid => {
                let mut fused: HashMap<i64, (ChunkHit, f64)> = HashMap::new();
                for list in [keyword, vector] {
                    for (rank, hit) in list.into_iter().enumerate() {
                        let add = 1.0 / (RRF_K + rank as f64 + 1.0);
                        fused
                            .entry(hit.chunk_id)
                            .and_modify(|e| e.1 += add)
                            .or_insert((hit, add));
                    }
                }
                // Normalise by the best possible score (rank 1 in both lists).
                let max = 2.0 / (RRF_K + 1.0);
                fused
                    .into_values()
                    .map(|(h, s)| (h, (s / max).min(1.0)))
                    .collect()
            }
        };
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.chunk_id.cmp(&b.0.chunk_id)));
        let results: Vec<SearchResult> = scored
            .into_iter()
            .filter(|(_, s)| *s >= request.min_score)
            .take(request.max_results as usize)
            .map(|(h, score)| SearchResult {
                result_id: format!("chunk_{}", h.chunk_id),
                content: h.content,
                score,
                source: h.source,
                metadata: h.metadata,
            })
            .collect();
        let mut citations: Vec<String> = results.iter().map(|r| r.source.clone()).collect();
        citations.dedup();
        Ok(ArmOutcome::free(SearchResponse {
            total_results: u32::try_from(results.len()).unwrap_or(u32::MAX),
            results,
            query: request.query,
            method_used: request.method,
            citations,
        }))
    }
}

#[async_trait]
impl Handler<Ingest> for Retriever {
    fn status(&self) -> ArmStatus {
        self.health()
    }

    async fn handle(
        &self,
        request: DocumentRequest,
        _ctx: CallContext,
    ) -> Result<ArmOutcome<DocumentResponse>, ArmError> {
        if octollm_core::task::is_blank(&request.content)
            || request.content.len() > MAX_DOCUMENT_BYTES
        {
            return Err(ArmError::InvalidRequest(format!(
                "content must be 1 byte to {MAX_DOCUMENT_BYTES} bytes, not blank"
            )));
        }
        if octollm_core::task::is_blank(&request.source)
            || request.source.chars().count() > SOURCE_MAX_CHARS
        {
            return Err(ArmError::InvalidRequest(format!(
                "source must be 1 to {SOURCE_MAX_CHARS} characters, not blank"
            )));
        }
        let pieces = chunk(&request.content);
        let embeddings = self.embedder.embed(&pieces).await.map_err(embedder_err)?;
        if embeddings.len() != pieces.len() {
            return Err(ArmError::Internal(
                "embedder returned a different number of vectors".into(),
            ));
        }
        let chunks: Vec<NewChunk> = pieces
            .into_iter()
            .zip(embeddings)
            .map(|(content, embedding)| NewChunk { content, embedding })
            .collect();
        let n = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        let document_id = self
            .store
            .add_document(
                &request.source,
                serde_json::Value::Object(request.metadata),
                chunks,
            )
            .await
            .map_err(|e| ArmError::Unavailable(format!("knowledge store: {e}")))?;
        Ok(ArmOutcome::free(DocumentResponse {
            document_id,
            chunks: n,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunk("  hello world  "), vec!["hello world".to_owned()]);
        assert!(chunk("   ").is_empty());
    }

    proptest! {
        #[test]
        fn chunks_cover_the_text_and_stay_bounded(words in proptest::collection::vec("[a-z]{1,12}", 1..600)) {
            let text = words.join(" ");
            let chunks = chunk(&text);
            prop_assert!(!chunks.is_empty());
            for c in &chunks {
                prop_assert!(c.chars().count() <= CHUNK_CHARS);
            }
            // Every word appears in some chunk.
            for w in &words {
                prop_assert!(chunks.iter().any(|c| c.contains(w.as_str())));
            }
        }
    }
}
