#!/usr/bin/env bash
# Load test of the reflex service (`octollm serve reflex`) on loopback, as in issue 3 / SPEC §15:
# 500-byte bodies, 16 connections. Builds a release binary, starts the service with rate
# limiting off (one client IP would be limited otherwise), then
#   1. wrk (closed loop, as fast as it can) for the maximum throughput,
#   2. examples/reflex_load (open loop at a fixed rate, latency from the scheduled send time)
#      at 5,000 requests/s for the latency percentiles,
# and reads the server's CPU time (utime+stime of every thread, /proc/PID/stat) around each run.
# Every body is distinct, so the cache never answers. Two floors come first, under the same
# open-loop load: examples/http_floor (a bare hyper server answering a fixed body: what loopback
# TCP and HTTP cost on this host) and the service's own `GET /health` (plus routing and the
# middleware every route has).
# With OCTOLLM_REFLEX_CLASSIFIER=true the service runs the injection classifier after the rules
# (a build with the `embed` feature; the MiniLM model must be pulled).
#   usage: scripts/bench-reflex.sh [seconds] [rate]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
SECONDS_PER_RUN="${1:-20}"
RATE="${2:-5000}"
command -v wrk >/dev/null || bash scripts/setup.sh

FEATURES=()
[ "${OCTOLLM_REFLEX_CLASSIFIER:-false}" = true ] && FEATURES=(--features embed)
cargo build --release --locked -q -p octollm --no-default-features "${FEATURES[@]}" --bin octollm --example reflex_load --example http_floor
BIN="$CARGO_TARGET_DIR/release/octollm"
LOAD="$CARGO_TARGET_DIR/release/examples/reflex_load"
FLOOR="$CARGO_TARGET_DIR/release/examples/http_floor"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
DATA="$(mktemp -d)"
TICKS="$(getconf CLK_TCK)"

# Server CPU per request over one open-loop run of $LOAD against $1 (PID $2); the rest of the
# arguments go to $LOAD after the URL, rate, connections and seconds.
open_loop_cpu() {
  local label="$1" pid="$2" url="$3"; shift 3
  local before sys_before after sys_after result
  before="$(awk '{print $14 + $15}' "/proc/$pid/stat")"; sys_before="$(awk '{print $15}' "/proc/$pid/stat")"
  result="$("$LOAD" "$url" "$RATE" 16 "$SECONDS_PER_RUN" "$@")"
  after="$(awk '{print $14 + $15}' "/proc/$pid/stat")"; sys_after="$(awk '{print $15}' "/proc/$pid/stat")"
  echo "$result"
  python3 - "$label" "$result" "$before" "$after" "$TICKS" "$SECONDS_PER_RUN" "$sys_before" "$sys_after" <<'PY'
import json, sys
label = sys.argv[1]
r = json.loads(sys.argv[2]); before, after, ticks, secs, sys_before, sys_after = map(float, sys.argv[3:9])
total = r["target_rps"] * secs  # every scheduled request of the run, warm-up included
print(f"server CPU per request ({label}): {(after-before)/ticks/total*1e6:.1f} us "
      f"(kernel {(sys_after-sys_before)/ticks/total*1e6:.1f} us); "
      f"p50 {r['p50_us']} us, p99 {r['p99_us']} us, p99.9 {r['p999_us']} us, max {r['max_us']} us "
      f"(from the send itself: p50 {r['service_p50_us']} us, p99 {r['service_p99_us']} us); "
      f"{r['achieved_rps']} req/s achieved, {r['errors']} errors")
PY
}

FLOOR_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$FLOOR" "127.0.0.1:$FLOOR_PORT" >"$DATA/floor.log" 2>&1 &
FLOOR_PID=$!
trap 'kill "$FLOOR_PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$FLOOR_PORT/" 2>/dev/null && break
  sleep 0.1
done
echo "== floor: bare hyper server, open loop ${RATE} requests/s, 16 connections, ${SECONDS_PER_RUN}s"
"$LOAD" "http://127.0.0.1:$FLOOR_PORT" 1000 16 2 500 >/dev/null
open_loop_cpu "bare hyper floor" "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT" 500
kill "$FLOOR_PID"; wait "$FLOOR_PID" 2>/dev/null || true

RATE_LIMIT_ENABLED=false OCTOLLM_REFLEX_BIND="127.0.0.1:$PORT" OCTOLLM_DATA_DIR="$DATA" RUST_LOG=warn \
  "$BIN" serve reflex >"$DATA/server.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
  curl -fsS "$URL/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$URL/health" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$PID/stat"; }
served() { curl -fsS "$URL/metrics" | awk '/^reflex_requests_total|^octollm_reflex_requests_total/ {s += $2} END {print s + 0}'; }

echo "== warm-up"
"$LOAD" "$URL" 1000 16 3 500 >/dev/null

# Server CPU per request of one wrk run, split into user and kernel (system) time.
wrk_cpu() {
  local label="$1"; shift
  local before sys_before after sys_after requests
  before="$(cpu_ticks)"; sys_before="$(sys_ticks)"
  wrk "$@" | tee "$DATA/wrk.txt"
  after="$(cpu_ticks)"; sys_after="$(sys_ticks)"
  requests="$(awk '/requests in/ {print $1}' "$DATA/wrk.txt")"
  python3 -c "t=$TICKS; n=$requests; print(f'server CPU per request ($label): {($after-$before)/t/n*1e6:.1f} us, of which kernel {($sys_after-$sys_before)/t/n*1e6:.1f} us, over {n} requests')"
}

echo "== floor: the service's GET /health, open loop ${RATE} requests/s, 16 connections, ${SECONDS_PER_RUN}s"
open_loop_cpu "GET /health" "$PID" "$URL" 0 /health

echo "== baseline: wrk on GET /health (HTTP + loopback TCP + middleware, no scan), 16 connections"
wrk_cpu "GET /health" -t2 -c16 -d"${SECONDS_PER_RUN}s" "$URL/health"

echo "== wrk: 16 connections, 2 threads, ${SECONDS_PER_RUN}s, as fast as possible"
wrk_cpu "POST /preprocess" -t2 -c16 -d"${SECONDS_PER_RUN}s" --latency -s scripts/bench/reflex.lua "$URL"

echo "== open loop: POST /preprocess, ${RATE} requests/s, 16 connections, ${SECONDS_PER_RUN}s"
open_loop_cpu "open loop" "$PID" "$URL" 500
