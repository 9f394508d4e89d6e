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

command -v promtool >/dev/null || { echo "test-k8s: promtool is required (Debian package prometheus; scripts/setup.sh installs it)" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Objects of the Prometheus Operator and Velero: kubernetes-validate has no schema for custom
# resources, so they are split off and checked for their required fields instead.
split_custom() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys, yaml
source, core, custom = sys.argv[1:]
known = {("monitoring.coreos.com/v1", "ServiceMonitor"): ["selector", "endpoints"],
         ("monitoring.coreos.com/v1", "PrometheusRule"): ["groups"],
         ("velero.io/v1", "Schedule"): ["schedule", "template"]}
cores, customs = [], []
for obj in yaml.safe_load_all(open(source)):
    if not obj:
        continue
    key = (obj["apiVersion"], obj["kind"])
    if key in known:
        missing = [f for f in known[key] if f not in obj.get("spec", {})]
        if missing:
            sys.exit(f"{obj['kind']}/{obj['metadata']['name']}: spec lacks {missing}")
        customs.append(obj)
    elif "." in obj["apiVersion"].split("/")[0] and not obj["apiVersion"].startswith(("apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.authorization.k8s.io/")):
        sys.exit(f"unknown custom resource {key}")
    else:
        cores.append(obj)
yaml.safe_dump_all(cores, open(core, "w"), sort_keys=False)
yaml.safe_dump_all(customs, open(custom, "w"), sort_keys=False)
PY
}
for overlay in deploy/k8s/overlays/*/ deploy/k8s/backup/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" > "$out/$name.yaml"
    split_custom "$out/$name.yaml" "$out/$name-core.yaml" "$out/$name-custom.yaml"
    if grep -q '^kind:' "$out/$name-core.yaml"; then
        kubernetes-validate --strict --quiet -k 1.28.0 "$out/$name-core.yaml" \
            || { echo "test-k8s: $name does not validate" >&2; exit 1; }
    fi
    python3 deploy/k8s/tests/policy.py "$out/$name.yaml" \
        || { echo "test-k8s: $name breaks the policy" >&2; exit 1; }
    echo "test-k8s: $name: $(grep -c '^kind:' "$out/$name.yaml") objects render, validate and pass the policy"
done

# The alert rules: valid, and their unit tests pass.
python3 -c "
import yaml
rule = yaml.safe_load(open('deploy/k8s/components/monitoring/prometheusrule.yaml'))
yaml.safe_dump({'groups': rule['spec']['groups']}, open('$out/octollm-rules.yml', 'w'), sort_keys=False)
"
cp deploy/k8s/components/monitoring/tests/alerts.test.yml "$out/"
promtool check rules "$out/octollm-rules.yml" >/dev/null
(cd "$out" && promtool test rules alerts.test.yml >/dev/null) \
    || { (cd "$out" && promtool test rules alerts.test.yml) >&2; echo "test-k8s: alert rule tests fail" >&2; exit 1; }
echo "test-k8s: alert rules check and their promtool tests pass"

# The policy test can fail: a manifest that breaks every rule is rejected on each.
violations=$(python3 deploy/k8s/tests/policy.py deploy/k8s/tests/bad.yaml || true)
for rule in "Secret with values" "non-root" "read-only" "allowPrivilegeEscalation" "privileged" \
    "drop ALL" "adds capabilities" "no cpu request" "no memory limit" "not pinned" "literal value" \
    "livenessProbe path" "readinessProbe path"; do
    grep -q "$rule" <<<"$violations" || { echo "test-k8s: the policy missed: $rule" >&2; exit 1; }
done

# A release renders with its image everywhere (scripts/deploy.sh, as the deploy workflow runs it).
release=ghcr.io/example/octollm/octollm:v9.8.7
images=$(bash scripts/deploy.sh production "$release" --render | grep -E '^\s+image: .*octollm' | sort -u | awk '{print $2}')
[ "$images" = "$release" ] || { echo "test-k8s: deploy.sh rendered images: $images" >&2; exit 1; }
python3 -c 'import yaml, sys; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' .github/workflows/*.yml

docker-compose --env-file .env.example -f docker-compose.yml config -q
docker-compose --env-file .env.example -f docker-compose.yml -f deploy/compose/test.yml config -q
echo "test-k8s: ok"
