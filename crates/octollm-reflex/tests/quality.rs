#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "test helpers; the quality table is printed for --nocapture"
)]
//! Corpus quality test (issue 3, acceptance item 1).
//!
//! Loads every `tests/corpus/*.jsonl` file, checks each case is well formed, scans it with
//! the default [`Scanner`], and measures:
//! - injection recall: injection cases whose report has `should_block`, overall, per
//!   family and per corpus file (so the evasions are visible on their own);
//! - benign false-positive rate: benign cases whose report has `should_block`;
//! - PII/secret recall: an expected entity is found when a PII or secret finding with the
//!   same label overlaps one of the entity's occurrences in the text (byte spans);
//! - PII/secret precision: PII or secret findings that overlap an expected entity of the
//!   same type, over all PII or secret findings, in every case of every class.
//!
//! The table is printed (run with `--nocapture`) and written to `docs/reflex-quality.md`
//! before the thresholds are asserted, so a failing run still records its numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use octollm_reflex::{FindingKind, ScanOptions, Scanner};
use serde::Deserialize;

const INJECTION_RECALL_MIN: f64 = 0.97;
const BENIGN_FP_MAX: f64 = 0.02;
const ENTITY_RECALL_MIN: f64 = 0.98;
const ENTITY_PRECISION_MIN: f64 = 0.95;
const MIN_CASES: usize = 400;

const CLASSES: &[&str] = &["benign", "pii", "secret", "injection"];
const PII_TYPES: &[&str] = &[
    "email",
    "phone",
    "credit_card",
    "ssn",
    "iban",
    "ipv4",
    "ipv6",
    "mac_address",
    "date_of_birth",
    "passport",
    "drivers_license",
];
const SECRET_TYPES: &[&str] = &[
    "openai_key",
    "anthropic_key",
    "aws_access_key",
    "github_token",
    "slack_token",
    "stripe_key",
    "google_api_key",
    "jwt",
    "private_key",
    "credential",
];
const EXTERNAL_BEGIN: &str = "<!-- external corpus: begin -->";
const EXTERNAL_END: &str = "<!-- external corpus: end -->";

const FAMILIES: &[&str] = &[
    "instruction_override",
    "persona_jailbreak",
    "prompt_extraction",
    "role_tag_injection",
    "template_injection",
    "command_injection",
    "data_exfiltration",
    "encoded_payload",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entity {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    text: String,
    class: String,
    #[serde(default)]
    entities: Vec<Entity>,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for human readers of the corpus")]
    note: Option<String>,
}

/// A case with where it came from.
struct Loaded {
    file: String,
    line: usize,
    case: Case,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load_corpus() -> Vec<Loaded> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {:?}", corpus_dir());
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let content = std::fs::read_to_string(&path).expect("corpus file is UTF-8");
        for (i, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let case: Case = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{file}:{}: bad JSON case: {e}", i + 1));
            cases.push(Loaded {
                file: file.clone(),
                line: i + 1,
                case,
            });
        }
    }
    cases
}

/// Panics with every problem found, so a corpus author fixes them in one go.
fn check_well_formed(cases: &[Loaded]) {
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for l in cases {
        let at = format!("{}:{}", l.file, l.line);
        let c = &l.case;
        if c.text.trim().is_empty() {
            problems.push(format!("{at}: empty text"));
        }
        if let Some(first) = seen.insert(c.text.clone(), at.clone()) {
            problems.push(format!("{at}: duplicate of {first}"));
        }
        if !CLASSES.contains(&c.class.as_str()) {
            problems.push(format!("{at}: unknown class {:?}", c.class));
        }
        match (&c.family, c.class.as_str()) {
            (Some(f), "injection") if FAMILIES.contains(&f.as_str()) => {}
            (Some(f), "injection") => problems.push(format!("{at}: unknown family {f:?}")),
            (None, "injection") => problems.push(format!("{at}: injection without family")),
            (Some(_), _) => problems.push(format!("{at}: family on a non-injection case")),
            (None, _) => {}
        }
        for e in &c.entities {
            let known =
                PII_TYPES.contains(&e.kind.as_str()) || SECRET_TYPES.contains(&e.kind.as_str());
            if !known {
                problems.push(format!("{at}: unknown entity type {:?}", e.kind));
            }
            if e.value.is_empty() || !c.text.contains(&e.value) {
                problems.push(format!(
                    "{at}: entity {:?} is not a substring of text",
                    e.value
                ));
            }
        }
        let has = |types: &[&str]| c.entities.iter().any(|e| types.contains(&e.kind.as_str()));
        if c.class == "pii" && !has(PII_TYPES) {
            problems.push(format!("{at}: class pii without a PII entity"));
        }
        if c.class == "secret" && !has(SECRET_TYPES) {
            problems.push(format!("{at}: class secret without a secret entity"));
        }
    }
    assert!(
        problems.is_empty(),
        "malformed corpus:\n{}",
        problems.join("\n")
    );
    assert!(
        cases.len() >= MIN_CASES,
        "corpus has {} cases, want ≥ {MIN_CASES}",
        cases.len()
    );
}

/// An expected entity and every byte span where its value occurs in the text.
struct Expected<'a> {
    kind: &'a str,
    value: &'a str,
    spans: Vec<(usize, usize)>,
}

/// Every byte span where `needle` occurs in `text`.
fn occurrences(text: &str, needle: &str) -> Vec<(usize, usize)> {
    text.match_indices(needle)
        .map(|(i, m)| (i, i + m.len()))
        .collect()
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Text shortened for a report line, with invisible characters made visible.
fn short(text: &str) -> String {
    const MAX: usize = 110;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX {
        escaped
    } else {
        let head: String = escaped.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[derive(Default)]
struct Ratio {
    hit: usize,
    total: usize,
}

impl Ratio {
    fn add(&mut self, hit: bool) {
        self.total += 1;
        self.hit += usize::from(hit);
    }
    fn value(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.hit as f64 / self.total as f64
        }
    }
}

#[derive(Default)]
struct TypeStats {
    recall: Ratio,
    precision: Ratio,
}

struct Results {
    blocked_by_class: BTreeMap<String, Ratio>,
    injection_by_family: BTreeMap<String, Ratio>,
    injection_by_file: BTreeMap<String, Ratio>,
    benign_by_file: BTreeMap<String, Ratio>,
    by_type: BTreeMap<String, TypeStats>,
    entity_recall: Ratio,
    entity_precision: Ratio,
    injection_misses: Vec<String>,
    benign_blocked: Vec<String>,
    entity_misses: Vec<String>,
    entity_false_positives: Vec<String>,
}

fn evaluate(cases: &[Loaded]) -> Results {
    let scanner = Scanner::new();
    let mut r = Results {
        blocked_by_class: BTreeMap::new(),
        injection_by_family: BTreeMap::new(),
        injection_by_file: BTreeMap::new(),
        benign_by_file: BTreeMap::new(),
        by_type: PII_TYPES
            .iter()
            .chain(SECRET_TYPES)
            .map(|t| ((*t).to_owned(), TypeStats::default()))
            .collect(),
        entity_recall: Ratio::default(),
        entity_precision: Ratio::default(),
        injection_misses: Vec::new(),
        benign_blocked: Vec::new(),
        entity_misses: Vec::new(),
        entity_false_positives: Vec::new(),
    };
    for l in cases {
        let c = &l.case;
        let at = format!("{}:{}", l.file, l.line);
        let report = scanner.scan(&c.text, ScanOptions::default());
        let blocked = report.should_block;
        r.blocked_by_class
            .entry(c.class.clone())
            .or_default()
            .add(blocked);
        if c.class == "injection" {
            let family = c.family.clone().unwrap_or_default();
            r.injection_by_family
                .entry(family.clone())
                .or_default()
                .add(blocked);
            r.injection_by_file
                .entry(l.file.clone())
                .or_default()
                .add(blocked);
            if !blocked {
                let seen: Vec<&str> = report.injections().map(|f| f.label).collect();
                r.injection_misses.push(format!(
                    "{at} [{family}] {} (found: {seen:?})",
                    short(&c.text)
                ));
            }
        }
        if c.class == "benign" {
            r.benign_by_file
                .entry(l.file.clone())
                .or_default()
                .add(blocked);
            if blocked {
                let seen: Vec<String> = report
                    .injections()
                    .map(|f| format!("{}@{:.2}", f.label, f.confidence))
                    .collect();
                r.benign_blocked
                    .push(format!("{at} {} (by: {seen:?})", short(&c.text)));
            }
        }

        // Expected entities, deduplicated, each with all its occurrences in the text.
        let expected: BTreeSet<(&str, &str)> = c
            .entities
            .iter()
            .map(|e| (e.kind.as_str(), e.value.as_str()))
            .collect();
        let expected: Vec<Expected<'_>> = expected
            .into_iter()
            .map(|(kind, value)| Expected {
                kind,
                value,
                spans: occurrences(&c.text, value),
            })
            .collect();
        let findings: Vec<_> = report
            .findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Pii | FindingKind::Secret))
            .collect();
        for Expected {
            kind: t,
            value: v,
            spans,
        } in &expected
        {
            let found = findings
                .iter()
                .any(|f| f.label == *t && spans.iter().any(|s| overlaps(*s, (f.start, f.end))));
            r.entity_recall.add(found);
            r.by_type
                .entry((*t).to_owned())
                .or_default()
                .recall
                .add(found);
            if !found {
                let got: Vec<String> = findings
                    .iter()
                    .filter(|f| spans.iter().any(|s| overlaps(*s, (f.start, f.end))))
                    .map(|f| f.label.to_owned())
                    .collect();
                let got = if got.is_empty() {
                    String::new()
                } else {
                    format!(" (found as {got:?})")
                };
                r.entity_misses.push(format!(
                    "{at} [{t}] {}{got} in: {}",
                    short(v),
                    short(&c.text)
                ));
            }
        }
        for f in &findings {
            let correct = expected.iter().any(|e| {
                f.label == e.kind && e.spans.iter().any(|s| overlaps(*s, (f.start, f.end)))
            });
            r.entity_precision.add(correct);
            r.by_type
                .entry(f.label.to_owned())
                .or_default()
                .precision
                .add(correct);
            if !correct {
                let span = c.text.get(f.start..f.end).unwrap_or("<bad span>");
                r.entity_false_positives.push(format!(
                    "{at} [{}] {:?} in: {}",
                    f.label,
                    short(span),
                    short(&c.text)
                ));
            }
        }
    }
    r
}

fn pct(r: &Ratio) -> String {
    format!("{:.3}", r.value())
}

fn table(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### Verdicts by class\n");
    let _ = writeln!(s, "| class | cases | blocked | blocked rate |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for class in CLASSES {
        if let Some(x) = r.blocked_by_class.get(*class) {
            let _ = writeln!(s, "| {class} | {} | {} | {} |", x.total, x.hit, pct(x));
        }
    }
    let _ = writeln!(s, "\n### Injection recall by family\n");
    let _ = writeln!(s, "| family | cases | blocked | recall |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for family in FAMILIES {
        if let Some(x) = r.injection_by_family.get(*family) {
            let _ = writeln!(s, "| {family} | {} | {} | {} |", x.total, x.hit, pct(x));
        }
    }
    let _ = writeln!(
        s,
        "\n### Injection recall and benign blocking by corpus file\n"
    );
    let _ = writeln!(
        s,
        "| file | injection cases | recall | benign cases | false-positive rate |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let files: BTreeSet<&String> = r
        .injection_by_file
        .keys()
        .chain(r.benign_by_file.keys())
        .collect();
    for file in files {
        let empty = Ratio::default();
        let inj = r.injection_by_file.get(file).unwrap_or(&empty);
        let ben = r.benign_by_file.get(file).unwrap_or(&empty);
        let cell = |x: &Ratio| {
            if x.total == 0 {
                "–".to_owned()
            } else {
                pct(x)
            }
        };
        let _ = writeln!(
            s,
            "| {file} | {} | {} | {} | {} |",
            inj.total,
            cell(inj),
            ben.total,
            cell(ben)
        );
    }
    let _ = writeln!(s, "\n### PII and secrets by type\n");
    let _ = writeln!(
        s,
        "| type | expected | found | recall | findings | correct | precision |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (t, x) in &r.by_type {
        let _ = writeln!(
            s,
            "| {t} | {} | {} | {} | {} | {} | {} |",
            x.recall.total,
            x.recall.hit,
            pct(&x.recall),
            x.precision.total,
            x.precision.hit,
            pct(&x.precision)
        );
    }
    let _ = writeln!(
        s,
        "| **all** | {} | {} | **{}** | {} | {} | **{}** |",
        r.entity_recall.total,
        r.entity_recall.hit,
        pct(&r.entity_recall),
        r.entity_precision.total,
        r.entity_precision.hit,
        pct(&r.entity_precision)
    );
    s
}

fn summary(r: &Results) -> (String, bool) {
    let injection = r
        .blocked_by_class
        .get("injection")
        .map_or(1.0, Ratio::value);
    let benign = r.blocked_by_class.get("benign").map_or(0.0, Ratio::value);
    let recall = r.entity_recall.value();
    let precision = r.entity_precision.value();
    let rows = [
        (
            "injection recall",
            injection,
            format!("≥ {INJECTION_RECALL_MIN}"),
            injection >= INJECTION_RECALL_MIN,
        ),
        (
            "benign false-positive rate",
            benign,
            format!("≤ {BENIGN_FP_MAX}"),
            benign <= BENIGN_FP_MAX,
        ),
        (
            "PII/secret recall",
            recall,
            format!("≥ {ENTITY_RECALL_MIN}"),
            recall >= ENTITY_RECALL_MIN,
        ),
        (
            "PII/secret precision",
            precision,
            format!("≥ {ENTITY_PRECISION_MIN}"),
            precision >= ENTITY_PRECISION_MIN,
        ),
    ];
    let mut s = String::new();
    let _ = writeln!(s, "| metric | value | threshold | pass |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for (name, value, threshold, pass) in &rows {
        let mark = if *pass { "yes" } else { "**no**" };
        let _ = writeln!(s, "| {name} | {value:.3} | {threshold} | {mark} |");
    }
    (s, rows.iter().all(|r| r.3))
}

fn markdown(cases: &[Loaded], r: &Results) -> String {
    let (summary, pass) = summary(r);
    let mut per_file: BTreeMap<&str, usize> = BTreeMap::new();
    for l in cases {
        *per_file.entry(l.file.as_str()).or_default() += 1;
    }
    let files: Vec<String> = per_file
        .iter()
        .map(|(f, n)| format!("`{f}` ({n})"))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "# Reflex layer detection quality\n");
    let _ = writeln!(
        s,
        "Generated by `cargo test -p octollm-reflex --test quality -- --nocapture` \
         (`crates/octollm-reflex/tests/quality.rs`); do not edit by hand. Issue 3, acceptance item 1.\n"
    );
    let _ = writeln!(s, "## How it is computed\n");
    let _ = writeln!(
        s,
        "The corpus is {} hand-written cases in `crates/octollm-reflex/tests/corpus/`: {}. \
         Each case is a JSON line with the text, its class (`benign`, `pii`, `secret`, `injection`), \
         every PII or secret value it contains (type and exact substring) and, for injections, the family. \
         Labels are what a careful human would say, not what the detector does; \
         secret values are fake (real formats, random bodies) and IBANs carry valid mod-97 check digits. Each text is scanned once \
         with `Scanner::new().scan(text, ScanOptions::default())`.\n",
        cases.len(),
        files.join(", ")
    );
    let _ = writeln!(
        s,
        "- **Injection recall**: injection cases whose report has `should_block = true`, over all injection \
         cases (evasions included).\n\
         - **Benign false-positive rate**: benign cases whose report has `should_block = true`, over all benign cases.\n\
         - **PII/secret recall**: an expected entity counts as found when a finding of kind `pii` or `secret` \
         with the same type label overlaps (in bytes of the original text) one of the places the value occurs.\n\
         - **PII/secret precision**: findings of kind `pii` or `secret`, in cases of every class, that overlap \
         an expected entity of the same type, over all such findings. A finding with the wrong type counts as \
         a miss for the expected type and a false positive for the reported one.\n"
    );
    let _ = writeln!(s, "## Result\n");
    let _ = writeln!(
        s,
        "{}\n\n{summary}",
        if pass {
            "All thresholds are met."
        } else {
            "**Some thresholds are not met yet.**"
        }
    );
    let _ = writeln!(s, "## Details\n\n{}", table(r));
    let _ = writeln!(
        s,
        "Misses: {} injections not blocked, {} benign cases blocked, {} entities missed, \
         {} PII/secret false positives (listed by the test with `--nocapture`).",
        r.injection_misses.len(),
        r.benign_blocked.len(),
        r.entity_misses.len(),
        r.entity_false_positives.len()
    );
    s
}

#[test]
fn corpus_meets_quality_thresholds() {
    let cases = load_corpus();
    check_well_formed(&cases);
    let r = evaluate(&cases);

    let list = |title: &str, items: &[String]| {
        println!("\n{title} ({}):", items.len());
        for item in items {
            println!("  {item}");
        }
    };
    list("Injections not blocked", &r.injection_misses);
    list("Benign cases blocked", &r.benign_blocked);
    list("PII/secret entities missed", &r.entity_misses);
    list("PII/secret false positives", &r.entity_false_positives);
    let (summary, pass) = summary(&r);
    println!("\n{}\n{summary}", table(&r));

    let mut doc = markdown(&cases, &r);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reflex-quality.md");
    // The external corpus's section is written by its own test
    // (crates/octollm-http/tests/injection_external.rs); keep it.
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    if let (Some(a), Some(b)) = (previous.find(EXTERNAL_BEGIN), previous.find(EXTERNAL_END))
        && a < b
    {
        doc.push('\n');
        doc.push_str(&previous[a..b + EXTERNAL_END.len()]);
        doc.push('\n');
    }
    std::fs::write(path, doc).expect("write docs/reflex-quality.md");

    assert!(pass, "quality thresholds not met:\n{summary}");
}
