#!/usr/bin/env bash
# The AgentDojo security benchmark: renders AgentDojo 0.1.35's injection tasks through its six
# fixed-template attacks (scripts/agentdojo-data.py, the wheel read with the standard library),
# places each in a retrieved document and in command output of a real task run through the
# pipeline with the gullible model, defended and undefended, and runs tasks over its benign
# environment content. Prints the tables and writes them into docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
python3 scripts/agentdojo-data.py
OCTOLLM_WRITE_SECURITY=1 cargo test -p octollm-orchestrator --test agentdojo -- \
  --include-ignored --nocapture agentdojo_benchmark
