#!/usr/bin/env bash
# What Kubernetes would run, run in Docker (scripts/pod_runner.py, whose header says exactly
# what it models and what not): the rendered Kustomize production overlay and the rendered
# Helm chart (values.yaml), the real YAML. Every Deployment, StatefulSet and Job (and DaemonSet)
# runs with its init containers, image, command, args, env, volumes and security context on one
# internal Docker network where each Service name resolves to a forwarder at its cluster IP;
# the runner polls the probes as the kubelet would and fails on a pod that never becomes ready,
# exits or would be restarted; then an admin API key is made inside an orchestrator container
# and scripts/smoke-tests.sh runs through the Ingress's route (the reflex layer): a task, and a
# document ingested through the API that a hybrid search finds again (the retriever's embedding
# model); with the retriever on Qdrant, Qdrant then holds the document's vectors. The runner's
# own manifests (deploy/k8s/tests/pod-runner/) run first.
#
#   scripts/test-pods.sh [kustomize|helm]... [--without-retriever-models]
#   (no form: both; --without-retriever-models: the retriever's model init container, volume
#   and mount removed from the render, to see the test fail)
#
# Stand-ins, because no image registry is reachable here (deploy/k8s/tests/standins/):
# PostgreSQL 15 and Redis 7 from Debian's packages behind entry points that behave like the
# official images' (same uids, PGDATA, protected mode), Qdrant 1.13.6 built from source
# (OCTOLLM_QDRANT_BIN; the manifests name 1.12.4) in a local image, Prometheus from Debian for
# the ServiceMonitors, and an ingress controller that is a TCP forwarder. The OctoLLM image and
# the model image are built here (scripts/image.sh, scripts/model-image.sh). Test overrides,
# printed by the runner: the scripted model (OCTOLLM_LLM_PROVIDER=scripted and its script
# mounted into the OctoLLM containers: no provider is reachable; ENVIRONMENT=staging, since
# production refuses the scripted model), a test Secret with generated values, at most two
# replicas of a workload (--max-replicas). Skipped cleanly, saying so:
# without a Qdrant build (OCTOLLM_QDRANT_BIN) the Qdrant StatefulSet; with a binary built
# without the `qdrant` feature the retriever's use of Qdrant (QDRANT_URL left out: its vectors
# stay in PostgreSQL) while the Qdrant StatefulSet still runs. OCTOLLM_BINARY names another
# binary (default: the debug build); OCTOLLM_PODS_HOLD=SECONDS keeps the pods up at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

forms=()
filter=""
for arg in "$@"; do
    case "$arg" in
        kustomize | helm) forms+=("$arg") ;;
        --without-retriever-models) filter=retriever-models ;;
        *) echo "usage: scripts/test-pods.sh [kustomize|helm]... [--without-retriever-models]" >&2; exit 2 ;;
    esac
done
[ ${#forms[@]} -gt 0 ] || forms=(kustomize helm)

docker info >/dev/null 2>&1 || { echo "test-pods: needs a Docker engine (docker info failed)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "test-pods: kubectl is required (kubectl kustomize)" >&2; exit 1; }
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q --break-system-packages pyyaml 2>/dev/null \
    || python3 -m pip install -q pyyaml

work=$(mktemp -d /var/tmp/octollm-test-pods.XXXXXX)
runs=()
cleanup() {
    for run in "${runs[@]}"; do
        python3 scripts/pod_runner.py cleanup "$run" || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

echo "== pods: images"
# The binary as it is now: the build directory changes under a running test otherwise.
binary=${OCTOLLM_BINARY:-$CARGO_TARGET_DIR/debug/octollm}
cp "$binary" "$work/octollm"
previous=$(docker image inspect -f '{{.Id}}' octollm-pods:test 2>/dev/null || true)
bash scripts/image.sh "$work/octollm" octollm-pods:test
# The image of the previous run, untagged now: not kept.
[ -z "$previous" ] || [ "$previous" = "$(docker image inspect -f '{{.Id}}' octollm-pods:test)" ] \
    || docker rmi "$previous" >/dev/null 2>&1 || true
"$work/octollm" model pull >/dev/null || { echo "test-pods: octollm model pull failed" >&2; exit 1; }
bash scripts/model-image.sh
models_tag=$(awk '/name: octollm\/octollm-models/ {getline; print $2}' deploy/k8s/base/kustomization.yaml)

# Qdrant: the workplace's build in a local image, if there is one; the retriever uses it if
# the binary has the Qdrant client (the `qdrant` feature, as the release image has).
qdrant_server=yes qdrant_client=yes
if [ -z "${OCTOLLM_QDRANT_BIN:-}" ] || [ ! -f "$OCTOLLM_QDRANT_BIN" ]; then
    qdrant_server=no
    echo "pods: SKIP the Qdrant StatefulSet and the retriever's use of it: no Qdrant build (OCTOLLM_QDRANT_BIN, shared/tools/qdrant)"
elif grep -q "this build has no Qdrant client" "$work/octollm"; then
    qdrant_client=no
    echo "pods: SKIP the retriever's use of Qdrant: $binary has no Qdrant client (cargo build -p octollm --features qdrant);" \
        "the Qdrant StatefulSet runs, the retriever keeps its vectors in PostgreSQL"
fi
standins=$work/standins
mkdir -p "$standins"
cp deploy/k8s/tests/standins/* "$standins/"
targets=(postgres redis prometheus)
if [ "$qdrant_server" = yes ]; then
    gunzip -c "$OCTOLLM_QDRANT_BIN" > "$standins/qdrant"
    chmod +x "$standins/qdrant"
    targets+=(qdrant)
fi
for target in "${targets[@]}"; do
    if ! out=$(DOCKER_BUILDKIT=0 docker build -q --target "$target" --build-arg BASE_IMAGE=octollm-base:bookworm \
        -t "octollm-pods-$target:test" "$standins" 2>&1); then
        echo "$out" >&2
        echo "test-pods: the $target stand-in does not build" >&2
        exit 1
    fi
done
echo "pods: stand-ins ${targets[*]} built"

# The runner itself: what the OctoLLM renders do not exercise works (a Service port that
# differs from its target port, DNS names, every probe kind, volumes, security context), and
# a liveness probe that fails or a readiness probe that never passes fails the run.
echo "== pods: the runner's own test (deploy/k8s/tests/pod-runner/)"
selftest=(python3 scripts/pod_runner.py run --setup-image octollm-base:bookworm --namespace selftest
    --image local/base=octollm-base:bookworm --timeout 20)
runs+=("tp$$-selftest")
"${selftest[@]}" --run-id "tp$$-selftest" deploy/k8s/tests/pod-runner/selftest.yaml \
    || { echo "test-pods: the runner's own test fails" >&2; exit 1; }
for case in fails-liveness:"liveness probe failed" fails-readiness:"not ready within"; do
    runs+=("tp$$-${case%%:*}")
    if out=$("${selftest[@]}" --timeout 6 --run-id "tp$$-${case%%:*}" "deploy/k8s/tests/pod-runner/${case%%:*}.yaml" 2>&1); then
        echo "test-pods: the runner passed ${case%%:*}.yaml" >&2; exit 1
    fi
    grep -q "${case#*:}" <<<"$out" || { echo "$out" >&2; echo "test-pods: ${case%%:*}.yaml failed otherwise" >&2; exit 1; }
    echo "pods: ${case%%:*}.yaml fails as it should: $(grep -m1 'FAIL' <<<"$out" | cut -c1-160)"
done

runner=(python3 scripts/pod_runner.py run
    --setup-image octollm-base:bookworm
    --image octollm/octollm=octollm-pods:test
    --image "octollm/octollm-models=octollm/octollm-models:$models_tag"
    --image postgres=octollm-pods-postgres:test
    --image redis=octollm-pods-redis:test
    --image qdrant/qdrant=octollm-pods-qdrant:test
    --prometheus-image octollm-pods-prometheus:test
    --set-config OCTOLLM_LLM_PROVIDER=scripted
    --set-config ENVIRONMENT=staging
    --set-config OCTOLLM_LLM_SCRIPT=/config/smoke-script.json
    --add-file /config/smoke-script.json=deploy/compose/smoke-script.json
    --smoke ${OCTOLLM_PODS_HOLD:+--hold "$OCTOLLM_PODS_HOLD"})
[ "$qdrant_server" = yes ] || runner+=(--skip qdrant --drop-env retriever-arm:QDRANT_URL)
[ "$qdrant_server" = no ] || [ "$qdrant_client" = yes ] || runner+=(--drop-env retriever-arm:QDRANT_URL)

render() {
    case "$1" in
        kustomize) kubectl kustomize deploy/k8s/overlays/production ;;
        helm) "$(bash deploy/k8s/tests/helm.sh)" template octollm charts/octollm --namespace octollm -f charts/octollm/values.yaml ;;
    esac
}
namespace() {
    case "$1" in
        kustomize) echo octollm-production ;;
        helm) echo octollm ;;
    esac
}
# The check that the test can fail: the retriever without its model.
without_models() {
    python3 -c '
import sys, yaml
objects = [o for o in yaml.safe_load_all(sys.stdin) if o]
for o in objects:
    if o["kind"] == "Deployment" and o["metadata"]["labels"].get("app.kubernetes.io/name") == "retriever-arm":
        spec = o["spec"]["template"]["spec"]
        spec.pop("initContainers", None)
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "models"]
        for c in spec["containers"]:
            c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "models"]
yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
'
}

failed=()
for form in "${forms[@]}"; do
    echo "== pods: $form"
    render "$form" > "$work/$form.yaml"
    if [ "$filter" = retriever-models ]; then
        without_models < "$work/$form.yaml" > "$work/$form-filtered.yaml"
        mv "$work/$form-filtered.yaml" "$work/$form.yaml"
        echo "pods: the retriever's model init container, volume and mount removed"
    fi
    run="tp$$-$form"
    runs+=("$run")
    start=$(date +%s)
    if "${runner[@]}" --run-id "$run" --namespace "$(namespace "$form")" "$work/$form.yaml"; then
        echo "pods: $form passed in $(($(date +%s) - start)) s"
    else
        echo "pods: $form FAILED after $(($(date +%s) - start)) s" >&2
        failed+=("$form")
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "test-pods: failed: ${failed[*]}" >&2; exit 1; }
echo "test-pods: ok"
