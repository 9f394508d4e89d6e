# Sourced by the scripts that run OctoLLM's services as the real binary for a client to drive
# (test-openapi.sh, test-sdk.sh): a work directory removed on exit with every service started
# in it, the scripted model, and `start`.
#
# Before sourcing: BIN (the binary) and SCRIPT_JSON (the scripted model's answers).

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
printf '%s\n' "$SCRIPT_JSON" > "$WORK/script.json"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# env for one service: its own data directory (database, keys), the scripted model, API keys
# required as off loopback.
service_env() {
  local name=$1
  echo "OCTOLLM_DATA_DIR=$WORK/$name" "OCTOLLM_LLM_PROVIDER=scripted" \
    "OCTOLLM_LLM_SCRIPT=$WORK/script.json" "OCTOLLM_MODEL_DIR=$OCTOLLM_MODEL_DIR" \
    "OCTOLLM_REQUIRE_API_KEYS=true" "LOG_LEVEL=warn" "RATE_LIMIT_REQUESTS=1000000" \
    "OCTOLLM__EXECUTOR__MAX_TIMEOUT_SECONDS=5" "OCTOLLM__ORCHESTRATOR__POLL_INTERVAL_MS=50"
}

# start NAME PORT ENV...: `octollm serve ${SERVE_ARGS[@]}` in the background, ready; KEY is
# an admin key of its database.
start() {
  local name=$1 port=$2; shift 2
  mkdir -p "$WORK/$name"
  KEY=$(env $(service_env "$name") "$BIN" keys create --name "$name-client" --scopes admin 2>>"$WORK/$name.log")
  env $(service_env "$name") "$@" "$BIN" serve "${SERVE_ARGS[@]}" --bind "127.0.0.1:$port" \
    >>"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not become ready:" >&2
  cat "$WORK/$name.log" >&2
  return 1
}
