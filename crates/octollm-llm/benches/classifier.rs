//! The injection classifier's cost on one core: features (tokenization and the token table)
//! and the network, for the clean prompts of the rules' benchmark at 500 B, 2 KB and 10 KB;
//! and, for comparison, the whole MiniLM sentence embedding of the same 500 B (what the
//! classifier does not use).
//!
//! `cargo bench -p octollm-llm --bench classifier` (needs `octollm model pull`)

#![allow(clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use octollm_llm::embed::minilm::MiniLmEmbedder;
use octollm_llm::embed::token_features::TokenFeatures;
use octollm_llm::models::{default_model_dir, embedding_path};
use octollm_reflex::classifier::Weights;
use octollm_reflex::{Classifier, ScanOptions, Scanner};

const CLEAN: &str = "Could you help me refactor the billing service? The nightly job in cron runs at 02:00 and \
takes about 45 minutes, mostly in the reconcile step that loads 120000 rows into memory. I would like to stream \
the rows instead, keep the retry logic, and add a metric for the batch size. The code lives in src/billing/job.rs \
and the docs are at https://wiki.example.com/billing/runbook. We deploy with make && make install on Debian 12. \
Please also suggest a test plan, and explain how the change affects memory use on the 4 GB workers. ";

fn sized(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(CLEAN);
    }
    s.truncate(len);
    s
}

fn bench(c: &mut Criterion) {
    let dir = embedding_path(&default_model_dir());
    let features = TokenFeatures::load(&dir).expect("the MiniLM model: run `octollm model pull`");
    let weights = Weights::shipped().expect("shipped weights");
    let classifier = Arc::new(Classifier::new(weights, Arc::new(features)).expect("weights fit"));
    let both = Scanner::with_classifier(Arc::clone(&classifier));
    let options = ScanOptions::default();
    let mut group = c.benchmark_group("classifier");
    for len in [500, 2_000, 10_000] {
        let text = sized(len);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("score", len), &text, |b, t| {
            b.iter(|| classifier.score(black_box(t)));
        });
        group.bench_with_input(
            BenchmarkId::new("scan_with_classifier", len),
            &text,
            |b, t| {
                b.iter(|| both.scan(black_box(t), options));
            },
        );
    }
    let embedder = MiniLmEmbedder::load(&dir).expect("the MiniLM model");
    let text = sized(500);
    group.throughput(Throughput::Bytes(500));
    group.sample_size(10);
    group.bench_function("sentence_embedding/500", |b| {
        b.iter(|| embedder.embed_blocking(vec![black_box(text.clone())]));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
