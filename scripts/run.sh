#!/usr/bin/env bash
# The main job on a fresh machine: embedded mode, local model. Installs what is needed,
# builds, fetches the default models, then runs one task end to end.
#   bash scripts/run.sh                       # the default demo goal
#   bash scripts/run.sh "your goal" --criterion "..."
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bash scripts/setup.sh
cargo build --locked -p octollm
"$CARGO_TARGET_DIR/debug/octollm" model pull
export OCTOLLM_DATA_DIR="${OCTOLLM_DATA_DIR:-$PWD/.octollm}"
if [ "$#" -eq 0 ]; then
  set -- "Write a Python function that returns the n-th Fibonacci number and print fib(10)" \
    --criterion "The code runs without errors"
fi
exec "$CARGO_TARGET_DIR/debug/octollm" run "$@"
