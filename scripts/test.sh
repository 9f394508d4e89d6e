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
# The Qdrant backend is behind a feature (a larger build); keep it compiling and linted. Its
# contract test starts the workplace's Qdrant build (OCTOLLM_QDRANT_BIN) or uses QDRANT_URL,
# and is ignored, saying why, where there is neither.
cargo clippy -p octollm-store -p octollm --features octollm/qdrant --all-targets --locked -- -D warnings
# The slim build (no local model, no OTLP) that the reflex benchmark uses.
cargo clippy -p octollm --no-default-features --all-targets --locked -- -D warnings
echo "== unused dependencies"
# cargo-machete reads the sources (no build); installed once into the cache.
MACHETE="$OCTOLLM_CACHE/tools/bin/cargo-machete"
[ -x "$MACHETE" ] || cargo install --locked --root "$OCTOLLM_CACHE/tools" cargo-machete --version 0.9.2
"$MACHETE"
echo "== tests"
cargo test --workspace --locked -- --test-threads 2
cargo test -p octollm-store --features qdrant --locked --lib --test qdrant_store
echo "== wire contract"
bash scripts/test-openapi.sh
bash scripts/test-sdk.sh
echo "== manifests"
bash scripts/test-k8s.sh
echo "== image"
docker info >/dev/null 2>&1 || { echo "the image tests need a Docker engine (docker info failed)" >&2; exit 1; }
bash scripts/test-image.sh
bash scripts/test-compose.sh
# The pods run the binary with the Qdrant backend, so the retriever keeps its vectors in Qdrant
# as the manifests configure it.
cargo build -p octollm --features qdrant --locked
bash scripts/test-pods.sh
