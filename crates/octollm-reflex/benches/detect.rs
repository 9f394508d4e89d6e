//! Detection speed (SPEC §15): median ≤ 5 µs for a 500-byte prompt with all checks, and
//! ≥ 250 MiB/s on 10 KB. Clean and PII-heavy prompts at 500 B, 2 KB and 10 KB.
//!
//! `cargo bench -p octollm-reflex --bench detect`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use octollm_reflex::{ScanOptions, Scanner};

/// Ordinary technical and everyday prose, with some numbers, code and a URL.
const CLEAN: &str = "Could you help me refactor the billing service? The nightly job in cron runs at 02:00 and \
takes about 45 minutes, mostly in the reconcile step that loads 120000 rows into memory. I would like to stream \
the rows instead, keep the retry logic, and add a metric for the batch size. The code lives in src/billing/job.rs \
and the docs are at https://wiki.example.com/billing/runbook. We deploy with make && make install on Debian 12. \
Please also suggest a test plan, and explain how the change affects memory use on the 4 GB workers. ";

/// The same kind of prose with PII and secrets in it.
const PII: &str = "Customer Jane Roe (jane.roe@example.com, +1 415 555 2671) paid with 4111 1111 1111 1111 and \
asked us to refund to DE89 3704 0044 0532 0130 00. Her SSN 123-45-6789 and DOB: 1985-03-14 are on file; the \
request came from 192.168.10.24. The deploy key was sk-proj-abcdefghijklmnopqrstuvwx1234 and the config had \
password=Xk9#mQ2$vL7pR4 plus AKIAIOSFODNN7EXAMPLE. Please draft a polite reply and a ticket summary. ";

fn sized(base: &str, len: usize) -> String {
    let mut s = String::with_capacity(len + base.len());
    while s.len() < len {
        s.push_str(base);
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new();
    // Warm the lazily built automata outside the measurement.
    black_box(scanner.scan(PII, ScanOptions::default()));
    let mut group = c.benchmark_group("scan");
    for (name, base) in [("clean", CLEAN), ("pii", PII)] {
        for len in [500, 2_000, 10_000] {
            let text = sized(base, len);
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, len), &text, |b, t| {
                b.iter(|| scanner.scan(black_box(t), ScanOptions::default()));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
