#!/usr/bin/env bash
# Builds the OctoLLM image on a machine without a registry: a Debian bookworm base made with
# debootstrap and `docker import` (once; reused while it exists), then the Dockerfile's
# `prebuilt` target around a binary built here.
#
#   scripts/image.sh [BINARY] [TAG]     defaults: the debug build in $CARGO_TARGET_DIR, octollm:dev
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

BINARY=${1:-$CARGO_TARGET_DIR/debug/octollm}
TAG=${2:-octollm:dev}
BASE=octollm-base:bookworm
# What the runtime needs (scripts and Dockerfile agree): llama.cpp's OpenMP, the executor's
# sandbox and interpreter, CA roots.
PACKAGES=libgomp1,libstdc++6,bubblewrap,python3-minimal,ca-certificates

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
    root=$(mktemp -d /var/tmp/octollm-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    echo "== base image: debootstrap bookworm (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" http://deb.debian.org/debian >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$BASE" >/dev/null
    rm -rf "$root"
    trap - EXIT
fi

# A small build context: the binary alone, without debug info.
context=$(mktemp -d /var/tmp/octollm-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
objcopy --strip-debug "$BINARY" "$context/octollm"
cp deploy/docker/Dockerfile "$context/Dockerfile"
# The classic builder: this engine has no buildx, and the Dockerfile's stage order lets the
# classic builder reach `prebuilt` without a Rust image. Its deprecation notice is noise here;
# the output is shown when the build fails.
if ! out=$(DOCKER_BUILDKIT=0 docker build -q --target prebuilt \
    --build-arg BASE_IMAGE="$BASE" --build-arg BINARY=octollm \
    -t "$TAG" "$context" 2>&1); then
    echo "$out" >&2
    exit 1
fi
echo "built $TAG from $BINARY on $BASE"
