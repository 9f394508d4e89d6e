#!/usr/bin/env bash
# Builds the model image the Kubernetes manifests' init containers copy models from
# (deploy/k8s/model-image/Dockerfile): the files `octollm model pull` put in $OCTOLLM_MODEL_DIR,
# on any Debian base. Skips the build when an image with that tag already holds the same files.
#
#   scripts/model-image.sh [TAG] [BASE_IMAGE]
#   defaults: octollm/octollm-models:<the manifests' tag>, octollm-base:bookworm (scripts/image.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

tag=$(awk '/name: octollm\/octollm-models/ {getline; print $2}' deploy/k8s/base/kustomization.yaml)
TAG=${1:-octollm/octollm-models:$tag}
BASE=${2:-octollm-base:bookworm}
dir=$OCTOLLM_MODEL_DIR
for f in SmolLM2-135M-Instruct.Q4_1.gguf all-MiniLM-L6-v2/model.safetensors all-MiniLM-L6-v2/tokenizer.json \
    all-MiniLM-L6-v2/config.json all-MiniLM-L6-v2/1_Pooling/config.json; do
    [ -s "$dir/$f" ] || { echo "model-image: $dir/$f is missing (run: octollm model pull)" >&2; exit 1; }
done
# What the image holds, by name and size: equal files give an equal label.
content=$(cd "$dir" && find SmolLM2-135M-Instruct.Q4_1.gguf all-MiniLM-L6-v2 -type f -printf '%p %s\n' | sort | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{ index .Config.Labels "octollm.models" }}' "$TAG" 2>/dev/null)" = "$content" ]; then
    echo "model-image: $TAG is up to date"
    exit 0
fi
context=$(mktemp -d /var/tmp/octollm-models.XXXXXX)
trap 'rm -rf "$context"' EXIT
mkdir "$context/models"
cp -al "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$dir/all-MiniLM-L6-v2" "$context/models/" 2>/dev/null \
    || cp -a "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$dir/all-MiniLM-L6-v2" "$context/models/"
chmod -R a+rX "$context/models"
cp deploy/k8s/model-image/Dockerfile "$context/"
if ! out=$(DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$BASE" --label "octollm.models=$content" \
    -t "$TAG" "$context" 2>&1); then
    echo "$out" >&2
    exit 1
fi
echo "model-image: built $TAG on $BASE"
