#!/usr/bin/env bash
# The wire contract, proven by a client that reads only the documents: every service (the
# orchestrator, the reflex layer in front of it, each of the six arm services) runs as the
# real binary with API keys required, and schemathesis (PyPI) runs every check it has
# (`--checks all`) against the OpenAPI document the service serves, authenticated with a key
# this script creates. Any failure fails the script. The SSE stream is left out (it never
# ends while a task runs); tests/events.rs tests it, Last-Event-ID included.
#
#   bash scripts/test-openapi.sh [service ...]    services: orchestrator reflex planner coder
#                                                 executor retriever judge guardian (all by default)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

BIN="$CARGO_TARGET_DIR/debug/octollm"
[ -x "$BIN" ] || { echo "build first: cargo build --workspace" >&2; exit 1; }
SCHEMATHESIS_VERSION=4.32.5
VENV="$OCTOLLM_CACHE/venv-schemathesis"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
# Examples per operation: enough to find what the document and the service disagree on,
# few enough for CI (OCTOLLM_SCHEMATHESIS_EXAMPLES raises it for a deeper run).
EXAMPLES="${OCTOLLM_SCHEMATHESIS_EXAMPLES:-60}"

# The scripted model answers every model call at once, so the run measures the contract.
SCRIPT_JSON='{"responses": [
  {"purpose": "planner", "json": {"steps": [{"step_id": "s1", "arm_id": "coder", "description": "Write it", "dependencies": []}]}, "repeat": true},
  {"purpose": "coder", "content": "```python\nprint(1)\n```", "repeat": true},
  {"purpose": "judge", "content": "{\"verdict\":\"yes\",\"reason\":\"ok\"}", "repeat": true}
]}'
. scripts/services.sh

FAILED=()
check() {
  local name=$1 port=$2 key=$3; shift 3
  echo "== schemathesis: $name"
  if ! "$VENV/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
      --checks all -H "X-API-Key: $key" "$@" \
      --max-examples "$EXAMPLES" --seed "${OCTOLLM_SCHEMATHESIS_SEED:-1}" \
      --request-timeout 30 --no-color >"$WORK/$name.schemathesis" 2>&1; then
    FAILED+=("$name")
    sed -n '/FAILURES/,$p' "$WORK/$name.schemathesis" | head -200
  else
    grep -E "generated|passed" "$WORK/$name.schemathesis" | tail -1
  fi
}

SERVICES=("$@")
[ ${#SERVICES[@]} -gt 0 ] || SERVICES=(orchestrator reflex planner coder executor retriever judge guardian)

for service in "${SERVICES[@]}"; do
  port=$(free_port)
  case "$service" in
    orchestrator)
      SERVE_ARGS=()
      start orchestrator "$port"
      check orchestrator "$port" "$KEY" --exclude-path '/tasks/{id}/events'
      ;;
    reflex)
      # The reflex layer forwards /tasks… to an orchestrator of its own and documents those
      # routes as the orchestrator does; a key of that orchestrator opens them.
      upstream=$(free_port)
      SERVE_ARGS=()
      start upstream "$upstream"
      key=$KEY
      SERVE_ARGS=(reflex)
      start reflex "$port" "OCTOLLM_ORCHESTRATOR_URL=http://127.0.0.1:$upstream" \
        "RATE_LIMIT_REQUESTS=1000000"
      check reflex "$port" "$key" --exclude-path '/tasks/{id}/events'
      ;;
    planner|coder|executor|retriever|judge|guardian)
      SERVE_ARGS=(arm "$service")
      start "$service" "$port"
      check "$service" "$port" "$KEY"
      ;;
    *)
      echo "unknown service $service" >&2
      exit 2
      ;;
  esac
done

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "schemathesis found failures against: ${FAILED[*]}" >&2
  exit 1
fi
echo "schemathesis: no failures against ${SERVICES[*]}"
