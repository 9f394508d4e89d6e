//! Measures the local model's generation speed on one thread: 128 greedy tokens, five runs,
//! median. `cargo run --release -p octollm-llm --example generation_speed`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a measurement tool"
)]

fn main() {
    let dir = octollm_llm::models::default_model_dir();
    let path = octollm_llm::models::default_llm_path(&dir);
    let llm =
        octollm_llm::local::LocalLlm::load(octollm_llm::local::LocalConfig::new(path)).unwrap();
    let prompt = "Write a short story about an octopus who learns to program computers.";
    let mut rates = Vec::new();
    for run in 0..5 {
        let (tokens, elapsed) = llm.generation_speed(prompt, 128).unwrap();
        let rate = f64::from(tokens) / elapsed.as_secs_f64();
        println!(
            "run {run}: {tokens} tokens in {:.3} s = {rate:.1} tokens/s",
            elapsed.as_secs_f64()
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.1} tokens/s", rates[rates.len() / 2]);
}
