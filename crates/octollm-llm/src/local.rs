//! llama.cpp in process through `llama-cpp-2`: a GGUF chat model (by default SmolLM2-135M-Instruct)
//! prompted in ChatML, one generation at a time, with optional GBNF-constrained output.
//!
//! Each request gets a fresh llama.cpp context sized to what it needs (prompt plus `max_tokens`,
//! capped at [`LocalConfig::context_tokens`]); the model itself is loaded once and shared.
//! llama.cpp's own log lines go to `tracing` under the target `llama-cpp-2` (mostly `info` at
//! load time: filter it with `llama-cpp-2=warn` to keep service logs quiet).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::{LogOptions, send_logs_to_tracing};

use crate::provider::{
    Completion, CompletionRequest, FinishReason, LlmError, LlmProvider, Message, OutputFormat,
    Role, estimate_tokens,
};

/// GBNF for "any JSON object", used when a request asks for JSON without its own grammar.
/// Whitespace is bounded so a small model cannot pad forever, and nothing may follow the
/// closing brace, so the grammar ends the generation there.
pub const JSON_OBJECT_GBNF: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// Seed for temperature sampling, so a given request and model give the same answer.
const SAMPLING_SEED: u32 = 0x0C70_11AA;
/// Prompt tokens fed to llama.cpp per decode call.
const PROMPT_BATCH: usize = 512;
/// End-of-turn marker of ChatML, also checked as text in case it arrives split into pieces.
const IM_END: &str = "<|im_end|>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub model_path: PathBuf,
    /// CPU threads for llama.cpp. One is as fast as two on a small machine and does not
    /// collapse under contention with the rest of the service.
    pub threads: u32,
    /// Upper bound on prompt plus completion tokens (also capped by the model's training context).
    pub context_tokens: u32,
}

impl LocalConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            threads: 1,
            context_tokens: 4096,
        }
    }
}

/// A local GGUF model served in process.
pub struct LocalLlm {
    inner: Arc<Engine>,
    name: String,
}

struct Engine {
    model: LlamaModel,
    backend: &'static LlamaBackend,
    threads: i32,
    context_tokens: u32,
    /// The `<|im_end|>` token, when the vocabulary has it as one token.
    im_end: Option<LlamaToken>,
    /// llama.cpp contexts must not be created concurrently from one model, and two generations
    /// at once would only fight over the same cores: one generation at a time.
    generation: Mutex<()>,
}

/// The process-wide llama.cpp backend. `LlamaBackend::init` fails when called twice, so every
/// model shares this one.
fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            send_logs_to_tracing(LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlmError::Config(format!("cannot initialise llama.cpp: {e}")))
}

impl LocalLlm {
    /// Loads the model (blocking: call it at startup or inside `spawn_blocking`).
    pub fn load(config: LocalConfig) -> Result<Self, LlmError> {
        let path = &config.model_path;
        if !path.is_file() {
            return Err(LlmError::ModelMissing {
                path: path.display().to_string(),
            });
        }
        if config.threads == 0 {
            return Err(LlmError::Config(
                "local model threads must be at least 1".into(),
            ));
        }
        if config.context_tokens < 16 {
            return Err(LlmError::Config(
                "local model context_tokens must be at least 16".into(),
            ));
        }
        let threads = i32::try_from(config.threads)
            .map_err(|_| LlmError::Config("local model threads is too large".into()))?;
        let backend = backend()?;
        let started = Instant::now();
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| {
                LlmError::Config(format!("cannot load GGUF model {}: {e}", path.display()))
            })?;
        let trained = model.n_ctx_train();
        let context_tokens = if trained > 0 && config.context_tokens > trained {
            tracing::warn!(
                requested = config.context_tokens,
                trained,
                "context_tokens exceeds the model's training context; using the model's"
            );
            trained
        } else {
            config.context_tokens
        };
        let im_end = match model
            .vocab()
            .tokenize(IM_END.as_bytes(), false, true)
            .as_slice()
        {
            [token] => Some(*token),
            _ => None,
        };
        let name = model_name(path);
        tracing::info!(
            model = %name,
            context_tokens,
            threads,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local model loaded"
        );
        let engine = Engine {
            model,
            backend,
            threads,
            context_tokens,
            im_end,
            generation: Mutex::new(()),
        };
        Ok(Self {
            inner: Arc::new(engine),
            name,
        })
    }

    /// Generates `tokens` tokens greedily after `prompt` (raw text; ChatML markers in it are
    /// honoured) and returns how many were generated and how long that took, prompt ingestion
    /// excluded. End-of-turn tokens do not stop it; only the context size does. Blocking.
    pub fn generation_speed(&self, prompt: &str, tokens: u32) -> Result<(u32, Duration), LlmError> {
        let engine = &self.inner;
        let _one_at_a_time = engine
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut prompt_tokens = Vec::new();
        engine.push_bos(&mut prompt_tokens);
        prompt_tokens.extend(
            engine
                .model
                .vocab()
                .tokenize(prompt.as_bytes(), false, true),
        );
        engine.check_fits(prompt_tokens.len())?;
        let mut sampler = Sampler {
            pick: LlamaSampler::greedy(),
            grammar: None,
        };
        let generation = engine.generate(&prompt_tokens, tokens, &mut sampler, false)?;
        Ok((generation.completion_tokens, generation.generation_time))
    }
}

/// The name recorded in provenance: the file name without `.gguf`.
fn model_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "local".to_string(), |s| s.to_string_lossy().into_owned())
}

/// What one generation produced.
struct Generation {
    text: String,
    prompt_tokens: u32,
    /// Tokens sampled, the end-of-turn token included (it cost a forward pass like the others).
    completion_tokens: u32,
    finish_reason: FinishReason,
    generation_time: Duration,
}

/// Picks the next token: `pick` (greedy, or temperature with a fixed seed), restricted by
/// `grammar` when there is one.
struct Sampler {
    pick: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl Sampler {
    /// Like llama.cpp's own sampler, checks the grammar lazily: the unconstrained pick is kept
    /// when the grammar allows it, and only otherwise is the grammar applied to the whole
    /// vocabulary (about 49k tokens, the costly part) and the pick made again. Both give the
    /// token the constrained distribution would: the argmax of the allowed tokens, or a draw
    /// from them in proportion to their probability. The grammar is never sampled with, so it
    /// is advanced exactly once per token, by `try_accept` (advancing it twice aborts
    /// llama.cpp).
    fn next(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> Result<LlamaToken, LlmError> {
        let token = self.pick.sample(ctx, idx);
        let Some(grammar) = &mut self.grammar else {
            return Ok(token);
        };
        let mut single =
            LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
        grammar.apply(&mut single);
        let allowed = single.data.first().is_some_and(|d| d.logit().is_finite());
        let token = if allowed {
            token
        } else {
            let mut all = ctx.token_data_array_ith(idx);
            grammar.apply(&mut all);
            all.apply_sampler(&mut self.pick);
            all.selected_token()
                .ok_or_else(|| LlmError::Inference("the grammar allows no next token".into()))?
        };
        grammar
            .try_accept(token)
            .map_err(|e| LlmError::Inference(format!("grammar rejected token {}: {e}", token.0)))?;
        Ok(token)
    }
}

impl Engine {
    fn push_bos(&self, tokens: &mut Vec<LlamaToken>) {
        let vocab = self.model.vocab();
        if vocab.should_add_bos() {
            tokens.push(vocab.bos());
        }
    }

    /// The ChatML prompt as tokens. Markers are parsed as special tokens; message text is not,
    /// so a message cannot forge a turn boundary by containing `<|im_end|>`.
    fn chat_tokens(&self, messages: &[Message]) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        self.push_bos(&mut tokens);
        for message in messages {
            let role = match message.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let header = format!("<|im_start|>{role}\n");
            tokens.extend(vocab.tokenize(header.as_bytes(), false, true));
            tokens.extend(vocab.tokenize(message.content.as_bytes(), false, false));
            tokens.extend(vocab.tokenize(b"<|im_end|>\n", false, true));
        }
        tokens.extend(vocab.tokenize(b"<|im_start|>assistant\n", false, true));
        tokens
    }

    fn check_fits(&self, prompt_tokens: usize) -> Result<(), LlmError> {
        // At least one token must remain for the answer.
        if prompt_tokens >= self.context_tokens as usize {
            return Err(LlmError::Rejected(format!(
                "prompt is {prompt_tokens} tokens but the local model's context holds {} \
                 (prompt and answer together); shorten the prompt or raise context_tokens",
                self.context_tokens
            )));
        }
        Ok(())
    }

    fn sampler(&self, request: &CompletionRequest) -> Result<Sampler, LlmError> {
        let pick = if request.temperature > 0.0 {
            LlamaSampler::chain_simple([
                LlamaSampler::temp(request.temperature),
                LlamaSampler::dist(SAMPLING_SEED),
            ])
        } else {
            LlamaSampler::greedy()
        };
        let grammar = match &request.output {
            OutputFormat::Text => None,
            OutputFormat::Json { grammar, .. } => {
                let gbnf = grammar.as_deref().unwrap_or(JSON_OBJECT_GBNF);
                let constraint = LlamaSampler::grammar(&self.model, gbnf, "root").map_err(|e| {
                    LlmError::Rejected(format!("the output grammar is not valid GBNF: {e}"))
                })?;
                Some(constraint)
            }
        };
        Ok(Sampler { pick, grammar })
    }

    fn complete(&self, request: &CompletionRequest) -> Result<Generation, LlmError> {
        let _one_at_a_time = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let prompt = self.chat_tokens(&request.messages);
        self.check_fits(prompt.len())?;
        let mut sampler = self.sampler(request)?;
        self.generate(&prompt, request.max_tokens, &mut sampler, true)
    }

    fn new_context(&self, n_ctx: u32) -> Result<LlamaContext<'_>, LlmError> {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(PROMPT_BATCH as u32)
            .with_n_ubatch(PROMPT_BATCH as u32)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        self.model
            .new_context(self.backend, params)
            .map_err(|e| LlmError::Inference(format!("cannot create a llama.cpp context: {e}")))
    }

    /// Ingests `prompt`, then samples up to `max_tokens` tokens. With `stop_at_end`, an
    /// end-of-generation token or `<|im_end|>` ends the answer (finish reason `Stop`).
    /// The caller holds the generation lock.
    fn generate(
        &self,
        prompt: &[LlamaToken],
        max_tokens: u32,
        sampler: &mut Sampler,
        stop_at_end: bool,
    ) -> Result<Generation, LlmError> {
        if prompt.is_empty() {
            return Err(LlmError::Rejected("the prompt is empty".into()));
        }
        let prompt_len = u32::try_from(prompt.len())
            .map_err(|_| LlmError::Rejected("prompt is too long".into()))?;
        let wanted = prompt_len
            .saturating_add(max_tokens)
            .min(self.context_tokens);
        let mut ctx = self.new_context(wanted.max(prompt_len + 1))?;
        let n_ctx = ctx.n_ctx();
        let vocab = self.model.vocab();
        let inference = |e: &dyn std::fmt::Display| LlmError::Inference(e.to_string());

        let mut batch = LlamaBatch::new(PROMPT_BATCH, 1);
        let mut pos: i32 = 0;
        for chunk in prompt.chunks(PROMPT_BATCH) {
            batch.clear();
            for token in chunk {
                let last = pos as usize + 1 == prompt.len();
                batch
                    .add(*token, pos, &[0], last)
                    .map_err(|e| inference(&e))?;
                pos += 1;
            }
            ctx.decode(&mut batch).map_err(|e| inference(&e))?;
        }

        let started = Instant::now();
        let mut bytes = Vec::new();
        let mut generated: u32 = 0;
        let finish_reason = loop {
            if generated >= max_tokens {
                break FinishReason::Length;
            }
            let token = sampler.next(&ctx, batch.n_tokens() - 1)?;
            generated += 1;
            if stop_at_end && (vocab.is_eog(token) || Some(token) == self.im_end) {
                break FinishReason::Stop;
            }
            vocab.token_to_piece_into(token, &mut bytes, false, None);
            if stop_at_end && bytes.ends_with(IM_END.as_bytes()) {
                bytes.truncate(bytes.len() - IM_END.len());
                break FinishReason::Stop;
            }
            if generated >= max_tokens || pos as u32 >= n_ctx {
                break FinishReason::Length;
            }
            batch.clear();
            batch
                .add(token, pos, &[0], true)
                .map_err(|e| inference(&e))?;
            pos += 1;
            ctx.decode(&mut batch).map_err(|e| inference(&e))?;
        };
        Ok(Generation {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            prompt_tokens: prompt_len,
            completion_tokens: generated,
            finish_reason,
            generation_time: started.elapsed(),
        })
    }
}

#[async_trait]
impl LlmProvider for LocalLlm {
    fn model(&self) -> &str {
        &self.name
    }

    fn count_tokens(&self, text: &str) -> u64 {
        // llama.cpp takes the length as an i32; anything near that is estimated instead.
        if text.len() >= i32::MAX as usize / 2 {
            return estimate_tokens(text);
        }
        self.inner
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, false)
            .len() as u64
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let engine = Arc::clone(&self.inner);
        let span =
            tracing::debug_span!("local.complete", purpose = %request.purpose, model = %self.name);
        let generation = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let started = Instant::now();
            let result = engine.complete(&request);
            if let Ok(g) = &result {
                tracing::debug!(
                    prompt_tokens = g.prompt_tokens,
                    completion_tokens = g.completion_tokens,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "local generation done"
                );
            }
            result
        })
        .await
        .map_err(|e| LlmError::Inference(format!("local generation task failed: {e}")))??;
        Ok(Completion {
            text: generation.text,
            prompt_tokens: u64::from(generation.prompt_tokens),
            completion_tokens: u64::from(generation.completion_tokens),
            model: self.name.clone(),
            finish_reason: generation.finish_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{default_llm_path, default_model_dir};

    /// The pulled default model; fails (never skips) when it is absent.
    fn model() -> &'static LocalLlm {
        static MODEL: OnceLock<LocalLlm> = OnceLock::new();
        MODEL.get_or_init(|| {
            let path = default_llm_path(&default_model_dir());
            assert!(
                path.is_file(),
                "local model missing at {}: run `octollm model pull` (or set OCTOLLM_MODEL_DIR)",
                path.display()
            );
            LocalLlm::load(LocalConfig::new(path)).unwrap()
        })
    }

    fn ask(question: &str, max_tokens: u32) -> CompletionRequest {
        CompletionRequest::new(
            "test.local",
            vec![
                Message::system("You are a helpful assistant. Answer briefly."),
                Message::user(question),
            ],
            max_tokens,
        )
    }

    #[test]
    fn missing_model_is_reported_before_touching_llama() {
        let err = LocalLlm::load(LocalConfig::new("/nonexistent/dir/model.gguf"))
            .err()
            .unwrap();
        assert_eq!(
            err,
            LlmError::ModelMissing {
                path: "/nonexistent/dir/model.gguf".into()
            }
        );
    }

    #[test]
    fn a_file_that_is_not_gguf_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.gguf");
        std::fs::write(&path, b"not a model").unwrap();
        assert!(matches!(
            LocalLlm::load(LocalConfig::new(path)),
            Err(LlmError::Config(_))
        ));
    }

    #[test]
    fn the_generic_json_grammar_parses() {
        let m = model();
        LlamaSampler::grammar(&m.inner.model, JSON_OBJECT_GBNF, "root").unwrap();
    }

    #[tokio::test]
    async fn generates_text_with_exact_usage() {
        let m = model();
        assert_eq!(m.model(), "SmolLM2-135M-Instruct.Q4_1");
        let request = ask("What is the capital of France?", 48);
        let c = m.complete(request.clone()).await.unwrap();
        assert!(!c.text.trim().is_empty(), "empty answer");
        assert!(c.text.contains("Paris"), "unexpected answer: {}", c.text);

        // Prompt tokens: the whole ChatML string tokenized at once gives the same count.
        let mut chatml = String::new();
        for msg in &request.messages {
            let role = if msg.role == Role::System {
                "system"
            } else {
                "user"
            };
            chatml.push_str(&format!("<|im_start|>{role}\n{}<|im_end|>\n", msg.content));
        }
        chatml.push_str("<|im_start|>assistant\n");
        let whole = m
            .inner
            .model
            .vocab()
            .tokenize(chatml.as_bytes(), true, true)
            .len();
        assert_eq!(c.prompt_tokens, whole as u64);

        // Completion tokens: the text plus the end-of-turn token when it stopped by itself.
        assert!(c.completion_tokens <= 48);
        let end = u64::from(c.finish_reason == FinishReason::Stop);
        let retokenized = m.count_tokens(&c.text);
        assert!(
            c.completion_tokens.abs_diff(retokenized + end) <= 2,
            "{} completion tokens for {retokenized} retokenized",
            c.completion_tokens
        );
        // Greedy decoding is deterministic.
        assert_eq!(m.complete(request).await.unwrap(), c);
    }

    #[tokio::test]
    async fn stops_at_max_tokens_with_length() {
        let c = model()
            .complete(ask("Write a long story about a dragon.", 5))
            .await
            .unwrap();
        assert_eq!(c.completion_tokens, 5);
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert!(!c.text.is_empty());
    }

    #[tokio::test]
    async fn temperature_sampling_is_seeded() {
        let mut request = ask("Name a colour.", 12);
        request.temperature = 0.8;
        let a = model().complete(request.clone()).await.unwrap();
        let b = model().complete(request).await.unwrap();
        assert_eq!(a.text, b.text);
    }

    #[tokio::test]
    async fn grammar_constrains_output_to_the_schema() {
        let grammar = r#"root ::= "{" ws "\"verdict\"" ws ":" ws verdict ws "," ws "\"reason\"" ws ":" ws reason ws "}"
verdict ::= "\"yes\"" | "\"no\""
reason ::= "\"" [^"\\\x00-\x1F]{1,80} "\""
ws ::= " "?
"#;
        let request = ask(
            "Is the sky blue on a clear day? Answer as JSON with a verdict (yes or no) and a reason.",
            96,
        )
        .json(serde_json::json!({"type": "object"}), Some(grammar.into()));
        let c = model().complete(request).await.unwrap();
        assert_eq!(c.finish_reason, FinishReason::Stop, "{}", c.text);
        let value: serde_json::Value = serde_json::from_str(&c.text).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 2, "{value}");
        assert!(
            matches!(object["verdict"].as_str(), Some("yes" | "no")),
            "{value}"
        );
        assert!(!object["reason"].as_str().unwrap().is_empty());
    }

    #[tokio::test]
    async fn json_without_grammar_is_a_json_object() {
        let request = ask(
            "Give a JSON object with the keys \"name\" and \"age\" for a person called Ann aged 30.",
            64,
        )
        .json(serde_json::json!({"type": "object"}), None);
        let c = model().complete(request).await.unwrap();
        assert_eq!(c.finish_reason, FinishReason::Stop, "{}", c.text);
        let value: serde_json::Value = serde_json::from_str(&c.text).unwrap();
        assert!(value.is_object(), "{value}");
    }

    #[tokio::test]
    async fn an_invalid_grammar_is_rejected() {
        let request = ask("hi", 8).json(serde_json::json!({}), Some("root ::= (".into()));
        assert!(matches!(
            model().complete(request).await,
            Err(LlmError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn a_prompt_longer_than_the_context_is_rejected() {
        let m = model();
        let long = "word ".repeat(5000);
        let err = m.complete(ask(&long, 8)).await.err().unwrap();
        assert!(
            matches!(&err, LlmError::Rejected(msg) if msg.contains("context")),
            "{err:?}"
        );
    }

    #[test]
    fn counts_tokens_exactly() {
        let m = model();
        assert_eq!(m.count_tokens(""), 0);
        let n = m.count_tokens("Hello, world! This is a test.");
        assert!((5..=12).contains(&n), "{n}");
        assert!(n <= estimate_tokens("Hello, world! This is a test."));
    }

    #[test]
    fn measures_generation_speed() {
        let (tokens, elapsed) = model()
            .generation_speed(
                "<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n",
                64,
            )
            .unwrap();
        assert_eq!(tokens, 64);
        let per_second = f64::from(tokens) / elapsed.as_secs_f64();
        eprintln!("local generation: {tokens} tokens in {elapsed:?} = {per_second:.1} tokens/s");
        assert!(per_second > 1.0);
    }
}
