#!/usr/bin/env bash
# Deployment manifests (issue 5, acceptances 1 and 2 so far): every Kustomize overlay renders,
# every rendered object validates strictly against Kubernetes 1.28 (kubernetes-validate,
# offline), the policy checks pass on every overlay and reject a manifest that breaks each
# rule, and docker-compose.yml is valid.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null || { echo "test-k8s: kubectl is required (kubectl kustomize)" >&2; exit 1; }
python3 -c 'import kubernetes_validate, yaml' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q kubernetes-validate

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in deploy/k8s/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" > "$out/$name.yaml"
    kubernetes-validate --strict --quiet -k 1.28.0 "$out/$name.yaml" \
        || { echo "test-k8s: $name does not validate" >&2; exit 1; }
    python3 deploy/k8s/tests/policy.py "$out/$name.yaml" \
        || { echo "test-k8s: $name breaks the policy" >&2; exit 1; }
    echo "test-k8s: $name: $(grep -c '^kind:' "$out/$name.yaml") objects render, validate and pass the policy"
done

# The policy test can fail: a manifest that breaks every rule is rejected on each.
violations=$(python3 deploy/k8s/tests/policy.py deploy/k8s/tests/bad.yaml || true)
for rule in "Secret with values" "non-root" "read-only" "allowPrivilegeEscalation" "privileged" \
    "drop ALL" "adds capabilities" "no cpu request" "no memory limit" "not pinned" "literal value" \
    "livenessProbe path" "readinessProbe path"; do
    grep -q "$rule" <<<"$violations" || { echo "test-k8s: the policy missed: $rule" >&2; exit 1; }
done

docker-compose --env-file .env.example -f docker-compose.yml config -q
docker-compose --env-file .env.example -f docker-compose.yml -f deploy/compose/test.yml config -q
echo "test-k8s: ok"
