#!/usr/bin/env bash
# The image on this machine's Docker engine (issue 5, acceptance 5): built from the
# Dockerfile's prebuilt stage, run the way the manifests run it (read-only root file system,
# uid 1000, no capabilities, no new privileges), each component serves its probes, Docker's
# own health check (`octollm healthcheck`, no curl in the image) reports healthy, and a task
# runs to completion inside the orchestrator container (scripted model).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

IMAGE=octollm:test
bash scripts/image.sh "$CARGO_TARGET_DIR/debug/octollm" "$IMAGE"

run_id="octollm-test-$$"
work=$(mktemp -d /var/tmp/octollm-image-test.XXXXXX)
chmod 755 "$work"
cleanup() {
    # Only the containers this script started.
    docker ps -aq --filter "label=octollm-test=$run_id" | xargs -r docker rm -f >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/script.json" <<'JSON'
{"responses": [
  {"purpose": "planner", "repeat": true, "json": {"steps": [
    {"step_id": "s1", "arm_id": "coder", "description": "Write the program", "dependencies": []}]}},
  {"purpose": "coder", "repeat": true, "content": "```python\nprint('hello')\n```"}
]}
JSON
chmod 644 "$work/script.json"

# run NAME PORT HEALTH_URL ARGS...: a hardened container of the image; prints its host port.
run() {
    local name=$1 port=$2 health=$3
    shift 3
    docker run -d --name "$run_id-$name" --label "octollm-test=$run_id" \
        --read-only --user 1000:1000 --cap-drop ALL --security-opt no-new-privileges \
        --tmpfs /data:uid=1000,gid=1000,mode=0700 --tmpfs /tmp \
        -v "$work/script.json:/config/script.json:ro" \
        -e OCTOLLM_ALLOW_UNAUTHENTICATED=true \
        -e OCTOLLM_LLM_PROVIDER=scripted -e OCTOLLM_LLM_SCRIPT=/config/script.json \
        --health-cmd "/usr/local/bin/octollm healthcheck $health" --health-interval 1s \
        -p "127.0.0.1::$port" \
        "$IMAGE" "$@" >/dev/null
    docker port "$run_id-$name" "$port/tcp" | head -1 | sed 's/.*://'
}

wait_healthy() {
    local name=$1
    for _ in $(seq 1 60); do
        case "$(docker inspect -f '{{.State.Health.Status}}' "$run_id-$name")" in
            healthy) return 0 ;;
        esac
        if [ "$(docker inspect -f '{{.State.Running}}' "$run_id-$name")" != true ]; then
            docker logs "$run_id-$name" >&2 || true
            echo "FAIL: $name exited" >&2
            return 1
        fi
        sleep 1
    done
    docker logs "$run_id-$name" >&2 || true
    echo "FAIL: $name never became healthy" >&2
    return 1
}

expect_status() {
    local want=$1 url=$2
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' "$url")
    if [ "$got" != "$want" ]; then
        echo "FAIL: $url answered $got, expected $want" >&2
        return 1
    fi
}

orch=$(run orchestrator 8000 http://127.0.0.1:8000/ready serve orchestrator --bind 0.0.0.0:8000)
reflex=$(run reflex 8080 http://127.0.0.1:8080/ready serve reflex --bind 0.0.0.0:8080)
coder=$(run coder 8102 http://127.0.0.1:8102/ready serve arm coder --bind 0.0.0.0:8102)
for name in orchestrator reflex coder; do
    wait_healthy "$name"
done
expect_status 200 "http://127.0.0.1:$orch/health/live"
expect_status 200 "http://127.0.0.1:$orch/ready"
expect_status 200 "http://127.0.0.1:$orch/metrics"
expect_status 200 "http://127.0.0.1:$reflex/health"
expect_status 200 "http://127.0.0.1:$reflex/ready"
expect_status 200 "http://127.0.0.1:$coder/health"
expect_status 200 "http://127.0.0.1:$coder/ready"
expect_status 200 "http://127.0.0.1:$coder/capabilities"

# The container really is locked down.
user=$(docker exec "$run_id-orchestrator" id -u)
[ "$user" = 1000 ] || { echo "FAIL: runs as uid $user" >&2; exit 1; }
if docker exec "$run_id-orchestrator" sh -c 'touch /usr/local/bin/x' 2>/dev/null; then
    echo "FAIL: the root file system is writable" >&2
    exit 1
fi
caps=$(docker exec "$run_id-orchestrator" sh -c 'grep CapEff /proc/self/status' | awk '{print $2}')
[ "$caps" = 0000000000000000 ] || { echo "FAIL: effective capabilities $caps" >&2; exit 1; }

# A task runs to the end inside the read-only container (its database on the /data tmpfs).
task=$(curl -sf -X POST -H 'content-type: application/json' \
    -d '{"goal": "Write a Python program that prints hello"}' \
    "http://127.0.0.1:$orch/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
status=
for _ in $(seq 1 60); do
    status=$(curl -sf "http://127.0.0.1:$orch/tasks/$task" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    case "$status" in completed | failed | cancelled) break ;; esac
    sleep 1
done
[ "$status" = completed ] || { docker logs "$run_id-orchestrator" >&2; echo "FAIL: task $task is $status" >&2; exit 1; }

echo "image test: ok (orchestrator, reflex and coder healthy read-only as uid 1000 without capabilities; task $task completed)"
