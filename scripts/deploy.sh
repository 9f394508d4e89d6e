#!/usr/bin/env bash
# Rolls a Kustomize overlay out with a given image: migrations first (the Job must succeed),
# then every workload, waiting for each rollout; a rollout that does not finish is undone.
#
#   scripts/deploy.sh staging|production IMAGE:TAG [--render]   (--render: print, apply nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
env=${1:?usage: scripts/deploy.sh staging|production IMAGE:TAG}
image=${2:?usage: scripts/deploy.sh staging|production IMAGE:TAG}
ns="octollm-$env"
overlay="deploy/k8s/overlays/$env"
[ -d "$overlay" ] || { echo "deploy: no overlay $overlay" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The overlay with the release's image (a copy: the repository's files stay as they are).
cp -r deploy "$work/"
cat >> "$work/$overlay/kustomization.yaml" <<YAML
images:
  - name: octollm/octollm
    newName: ${image%:*}
    newTag: ${image##*:}
YAML
kubectl kustomize "$work/$overlay" > "$work/rendered.yaml"
if [ "${3:-}" = --render ]; then
    cat "$work/rendered.yaml"
    exit 0
fi

# Migrations first: a Job's template cannot change, so the old one goes.
kubectl -n "$ns" delete job octollm-migrate --ignore-not-found
kubectl apply -f "$work/rendered.yaml"
kubectl -n "$ns" wait --for=condition=complete job/octollm-migrate --timeout=300s

failed=()
for workload in $(kubectl -n "$ns" get deployment,daemonset -l app.kubernetes.io/part-of=octollm -o name); do
    kubectl -n "$ns" rollout status "$workload" --timeout=600s || failed+=("$workload")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "deploy: rolling back ${failed[*]}" >&2
    for workload in "${failed[@]}"; do
        kubectl -n "$ns" rollout undo "$workload"
    done
    exit 1
fi
echo "deploy: $env runs $image"
