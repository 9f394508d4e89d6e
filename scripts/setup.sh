#!/usr/bin/env bash
# Installs what OctoLLM needs to build, test and run on a fresh Debian machine, idempotently:
# the C toolchain for llama.cpp (cmake, clang, libclang-dev), bubblewrap for the executor's
# sandbox, redis-server and postgresql for the backends' tests (each test starts its own
# server on a free port), wrk for the reflex load test, Debian's python3 (the sandbox runs
# /usr/bin/python3), pip for `model pull`, python3-venv for the test tools pip installs
# (schemathesis), debootstrap + binutils to make the container image's base without a
# registry (scripts/image.sh), prometheus for promtool (alert rule tests), and python3-yaml for
# the manifest tests (scripts/test-k8s.sh, scripts/pod_runner.py).
set -euo pipefail

need=()
for pkg in cmake clang libclang-dev bubblewrap python3 python3-pip python3-venv python3-yaml pkg-config redis-server postgresql wrk debootstrap binutils curl prometheus; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)"; exit 1; }
