#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, fetches the two
# models, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bash scripts/setup.sh

echo "== build"
cargo build --workspace --all-targets --locked
echo "== models"
"$CARGO_TARGET_DIR/debug/octollm" model pull
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked -- --test-threads 2
