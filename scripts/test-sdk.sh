#!/usr/bin/env bash
# The public Python SDK (octollm-sdk 0.4.0, from github.com/doublegate/OctoLLM), unmodified,
# against every service run as the real binary with API keys required: the orchestrator, the
# reflex layer in front of it, and the six arm services, each driven through its SDK client
# (scripts/sdk_check.py). The SDK's source comes from OCTOLLM_SDK_DIR, or from the snapshot
# of that repository the workplace keeps; where neither exists the check says so and skips.
#
#   bash scripts/test-sdk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

BIN="$CARGO_TARGET_DIR/debug/octollm"
[ -x "$BIN" ] || { echo "build first: cargo build --workspace" >&2; exit 1; }

SDK_DIR="${OCTOLLM_SDK_DIR:-}"
if [ -z "$SDK_DIR" ]; then
  for mirror in /work/.mirror/doublegate+OctoLLM/repo "$(pwd)/../.mirror/doublegate+OctoLLM/repo"; do
    if git -C "$mirror" cat-file -e HEAD:sdks/python/octollm-sdk/pyproject.toml 2>/dev/null; then
      SDK_SRC=$(mktemp -d)
      git -C "$mirror" archive HEAD:sdks/python/octollm-sdk | tar -x -C "$SDK_SRC"
      SDK_DIR="$SDK_SRC"
      break
    fi
  done
fi
if [ -z "$SDK_DIR" ] || [ ! -f "$SDK_DIR/pyproject.toml" ]; then
  echo "test-sdk: skipped: the OctoLLM Python SDK's source is not here (set OCTOLLM_SDK_DIR)"
  exit 0
fi
VENV="$OCTOLLM_CACHE/venv-sdk"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "$SDK_DIR"

SCRIPT_JSON='{"responses": [
  {"purpose": "planner", "when": "slow task", "json": {"steps": [{"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}]}, "delay_ms": 5000, "repeat": true},
  {"purpose": "planner", "json": {"steps": [{"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}]}, "repeat": true},
  {"purpose": "coder", "content": "```python\nprint(\"hello\")\n```", "repeat": true},
  {"purpose": "judge", "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}", "repeat": true}
]}'
. scripts/services.sh
[ -z "${SDK_SRC:-}" ] || trap 'cleanup; rm -rf "$SDK_SRC"' EXIT

SERVE_ARGS=()
port=$(free_port)
start orchestrator "$port"
export ORCHESTRATOR_URL="http://127.0.0.1:$port" ORCHESTRATOR_KEY="$KEY"
port=$(free_port)
SERVE_ARGS=(reflex)
start reflex "$port" "OCTOLLM_ORCHESTRATOR_URL=$ORCHESTRATOR_URL"
# The reflex layer's admin routes and the forwarded /tasks take the orchestrator's keys.
export REFLEX_URL="http://127.0.0.1:$port" REFLEX_KEY="$ORCHESTRATOR_KEY"
for arm in planner coder executor retriever judge guardian; do
  port=$(free_port)
  SERVE_ARGS=(arm "$arm")
  # The executor's own limit (300 s), which the SDK's default timeout (30 s) is within.
  start "$arm" "$port" OCTOLLM__EXECUTOR__MAX_TIMEOUT_SECONDS=300
  name=$(echo "$arm" | tr a-z A-Z)
  export "${name}_URL=http://127.0.0.1:$port" "${name}_KEY=$KEY"
done

"$VENV/bin/python" scripts/sdk_check.py
