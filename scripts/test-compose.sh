#!/usr/bin/env bash
# The development stack (docker-compose.yml) on this machine's Docker engine (issue 5,
# acceptance 3): the project's image from the Dockerfile's prebuilt stage, stand-ins for the
# images no registry can give us here (deploy/compose/test.yml says which and why), every
# service up and healthy, then scripts/smoke-tests.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

echo "== compose: no service starts with a default password"
if out=$(env -u GRAFANA_ADMIN_PASSWORD OCTOLLM_ARM_REGISTRY_TOKEN=x docker-compose -f docker-compose.yml config 2>&1); then
    echo "compose: the stack renders without GRAFANA_ADMIN_PASSWORD (a default password)" >&2
    exit 1
fi
grep -q "GRAFANA_ADMIN_PASSWORD" <<<"$out" || { echo "compose: unexpected refusal: $out" >&2; exit 1; }

bash scripts/image.sh "$CARGO_TARGET_DIR/debug/octollm" octollm:test

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export OCTOLLM_TAG=test
export OCTOLLM_ARM_REGISTRY_TOKEN="compose-test-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export POSTGRES_PASSWORD="pw-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
export GRAFANA_ADMIN_PASSWORD="gf-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
# Capability tokens on: the smoke test's task only completes if every arm container takes the
# orchestrator's tokens.
eval "$("$CARGO_TARGET_DIR/debug/octollm" tokens keygen 2>/dev/null | sed 's/^/export /')"
[ -n "${OCTOLLM_TOKEN_PUBLIC_KEYS:-}" ] || { echo "compose: octollm tokens keygen printed no key" >&2; exit 1; }
export OCTOLLM_LLM_PROVIDER=scripted OCTOLLM_LLM_SCRIPT=/config/smoke-script.json
export QDRANT_URL=""
export OCTOLLM_MODELS=${OCTOLLM_MODEL_DIR:-/var/cache/octollm/models}
mkdir -p "$OCTOLLM_MODELS"
for var in POSTGRES_PORT REDIS_PORT QDRANT_HTTP_PORT QDRANT_GRPC_PORT REFLEX_PORT ORCHESTRATOR_PORT PROMETHEUS_PORT GRAFANA_PORT; do
    export "$var=$(free_port)"
done
# The classic builder for the stand-ins (no buildx on this engine).
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

project="octollm-test-$$"
compose=(docker-compose -p "$project" -f docker-compose.yml -f deploy/compose/test.yml)
cleanup() {
    if [ "${1:-0}" != 0 ]; then
        "${compose[@]}" ps >&2 || true
        "${compose[@]}" logs --tail 40 >&2 || true
    fi
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
}
trap 'cleanup $?' EXIT

echo "== compose: building the stand-ins"
"${compose[@]}" build -q postgresql redis prometheus >/dev/null 2>&1 \
    || "${compose[@]}" build postgresql redis prometheus
echo "== compose: up"
"${compose[@]}" up -d --no-build 2>&1 | grep -v -i "deprecated\|buildkit" || true

healthy() {
    local service=$1 id state
    id=$("${compose[@]}" ps -q "$service")
    [ -n "$id" ] || return 1
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
    [ "$state" = healthy ] || [ "$state" = running ]
}
services=(postgresql redis reflex-layer orchestrator coder-arm judge-arm executor-arm planner-arm retriever-arm guardian-arm prometheus)
for _ in $(seq 1 90); do
    waiting=()
    for service in "${services[@]}"; do
        healthy "$service" || waiting+=("$service")
    done
    [ ${#waiting[@]} -eq 0 ] && break
    sleep 2
done
if [ ${#waiting[@]} -ne 0 ]; then
    echo "compose: not healthy: ${waiting[*]}" >&2
    exit 1
fi
echo "== compose: every service healthy"

# Every arm registered itself with the orchestrator.
for _ in $(seq 1 30); do
    count=$(curl -sS -H "Authorization: Bearer $OCTOLLM_ARM_REGISTRY_TOKEN" \
        "http://127.0.0.1:$ORCHESTRATOR_PORT/registry" \
        | python3 -c 'import json,sys; print(len([i for i in json.load(sys.stdin)["instances"] if i["origin"] == "registered"]))')
    [ "$count" -ge 6 ] && break
    sleep 1
done
[ "$count" -ge 6 ] || { echo "compose: only $count arms registered" >&2; exit 1; }

# The orchestrator requires API keys: make one in its database, as an operator would.
OCTOLLM_API_KEY=$("${compose[@]}" exec -T orchestrator /usr/local/bin/octollm keys create \
    --name compose-test --scopes admin | tr -d '\r')
export OCTOLLM_API_KEY
[ -n "$OCTOLLM_API_KEY" ] || { echo "compose: octollm keys create printed no key" >&2; exit 1; }
bash scripts/smoke-tests.sh "http://127.0.0.1:$REFLEX_PORT" "http://127.0.0.1:$PROMETHEUS_PORT"

# Acceptance 4: two coder containers; one is killed while tasks run on it; every task
# completes on the other; restarted, it registers again and the orchestrator uses it again.
echo "== compose: a coder container dies while tasks run"
registry() {
    curl -sS -H "Authorization: Bearer $OCTOLLM_ARM_REGISTRY_TOKEN" "http://127.0.0.1:$ORCHESTRATOR_PORT/registry"
}
coders_closed() {
    registry | python3 -c 'import json,sys; print(len([i for i in json.load(sys.stdin)["instances"] if i["arm"] == "coder" and i["breaker"] == "closed"]))'
}
"${compose[@]}" up -d --no-build --no-deps --scale coder-arm=2 coder-arm 2>&1 | grep -v -i "deprecated\|buildkit" || true
for _ in $(seq 1 60); do
    [ "$(coders_closed)" -ge 2 ] && break
    sleep 1
done
[ "$(coders_closed)" -ge 2 ] || { echo "compose: the second coder never registered" >&2; registry >&2; exit 1; }
mapfile -t coders < <("${compose[@]}" ps -q coder-arm)
submit() {
    curl -sS -H "X-API-Key: $OCTOLLM_API_KEY" -X POST -H 'content-type: application/json' -d "{\"goal\": \"$1\"}" \
        "http://127.0.0.1:$REFLEX_PORT/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])'
}
wait_done() {
    local status=
    for _ in $(seq 1 120); do
        status=$(curl -sS -H "X-API-Key: $OCTOLLM_API_KEY" "http://127.0.0.1:$REFLEX_PORT/tasks/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
        case "$status" in completed | failed | cancelled) break ;; esac
        sleep 1
    done
    [ "$status" = completed ] || { echo "compose: task $1 ended $status" >&2; exit 1; }
}
# Calls an arm container served since a time, from its own log lines.
calls_since() {
    docker logs --since "$2" "$1" 2>&1 | grep -c '"message":"arm call served","arm":"coder","outcome":"ok"' || true
}
tasks=()
for n in 1 2 3 4; do
    tasks+=("$(submit "Write a Python greeting program slowly, number $n")")
done
sleep 2 # each coder call takes 3 s: both instances hold calls now
docker kill "${coders[0]}" >/dev/null
for task in "${tasks[@]}"; do
    wait_done "$task"
done
failovers=$(curl -sS -H "X-API-Key: $OCTOLLM_API_KEY" "http://127.0.0.1:$ORCHESTRATOR_PORT/metrics" \
    | awk '/^octollm_arm_call_failovers_total\{.*arm="coder"/ {n += $NF} END {print n + 0}')
[ "$failovers" -ge 1 ] || { echo "compose: no coder call failed over: the kill hit no call" >&2; exit 1; }
echo "compose: ${#tasks[@]} tasks completed with ${coders[0]:0:12} killed mid-call ($failovers calls moved to the other coder)"
restarted_at=$(date -u +%Y-%m-%dT%H:%M:%S)
docker start "${coders[0]}" >/dev/null
# Back when the health polls find it ready: its breaker leaves `open` (half-open until a call
# succeeds on it, then closed).
coders_not_open() {
    registry | python3 -c 'import json,sys; print(len([i for i in json.load(sys.stdin)["instances"] if i["arm"] == "coder" and i["breaker"] != "open"]))'
}
for _ in $(seq 1 60); do
    [ "$(coders_not_open)" -ge 2 ] && break
    sleep 1
done
[ "$(coders_not_open)" -ge 2 ] || { echo "compose: the restarted coder is not back in rotation" >&2; registry >&2; exit 1; }
for n in 1 2 3 4; do
    wait_done "$(submit "Write a Python greeting program, round two number $n")"
done
back=$(calls_since "${coders[0]}" "$restarted_at")
[ "$back" -ge 1 ] || { echo "compose: the restarted coder got no call" >&2; exit 1; }
[ "$(coders_closed)" -ge 2 ] || { echo "compose: a coder breaker is still not closed" >&2; registry >&2; exit 1; }
echo "compose: the restarted coder served $back calls"
# Every call above carried the orchestrator's capability token: the arms required one.
for service in coder-arm judge-arm executor-arm planner-arm; do
    for id in $("${compose[@]}" ps -q "$service"); do
        # grep -c reads to the end: grep -q would stop early and fail the pipe (pipefail).
        docker logs "$id" 2>&1 | grep -c '"tokens_required":true' >/dev/null \
            || { echo "compose: $service ($id) does not require capability tokens" >&2; exit 1; }
    done
done
echo "compose: every arm container required capability tokens"

# Backup and restore drill (docs/deployment.md): a logical dump of the live database restores
# into an empty one with every row of every table (but arm_instances: live registrations that
# heartbeats keep changing, and that the arms rebuild by registering again after a restore).
pg=$("${compose[@]}" ps -q postgresql)
pg_bin=/usr/lib/postgresql/15/bin
pg_exec() { docker exec -i -e PGPASSWORD="$POSTGRES_PASSWORD" "$pg" "$@"; }
dump=$(mktemp)
pg_exec "$pg_bin/pg_dump" -h 127.0.0.1 -U octollm -d octollm --format=custom > "$dump"
pg_exec "$pg_bin/createdb" -h 127.0.0.1 -U octollm octollm_restored
pg_exec "$pg_bin/pg_restore" -h 127.0.0.1 -U octollm -d octollm_restored --no-owner --exit-on-error < "$dump"
rm -f "$dump"
row_counts() {
    local tables
    tables=$(pg_exec "$pg_bin/psql" -h 127.0.0.1 -U octollm -d "$1" -At \
        -c "select tablename from pg_tables where schemaname = 'public' and tablename <> 'arm_instances' order by 1")
    for table in $tables; do
        echo "$table $(pg_exec "$pg_bin/psql" -h 127.0.0.1 -U octollm -d "$1" -At -c "select count(*) from \"$table\"")"
    done
}
live=$(row_counts octollm)
restored=$(row_counts octollm_restored)
[ "$live" = "$restored" ] || { echo "compose: the restored database differs:" >&2; diff <(echo "$live") <(echo "$restored") >&2; exit 1; }
restored_tasks=$(awk '$1 == "tasks" {print $2}' <<<"$restored")
[ "${restored_tasks:-0}" -ge 8 ] || { echo "compose: the restored database holds ${restored_tasks:-no} tasks" >&2; exit 1; }
echo "compose: backup drill: $(wc -l <<<"$restored") tables and $restored_tasks tasks restored from a dump"
echo "compose test: ok"
