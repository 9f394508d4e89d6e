# Shared locations, sourced by the other scripts. The cargo target directory and the models
# live outside the clone so repeated runs (and CI) reuse them.
if [ -w /var/cache ] || [ "$(id -u)" -eq 0 ]; then
  OCTOLLM_CACHE="${OCTOLLM_CACHE:-/var/cache/octollm}"
else
  OCTOLLM_CACHE="${OCTOLLM_CACHE:-$HOME/.cache/octollm}"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$OCTOLLM_CACHE/target}"
export OCTOLLM_MODEL_DIR="${OCTOLLM_MODEL_DIR:-$OCTOLLM_CACHE/models}"
mkdir -p "$CARGO_TARGET_DIR" "$OCTOLLM_MODEL_DIR"
# A Qdrant server for the tests that want one: the workplace's build (shared/tools/qdrant,
# beside the checkout or in /work/shared), unless QDRANT_URL names a running server.
if [ -z "${QDRANT_URL:-}" ] && [ -z "${OCTOLLM_QDRANT_BIN:-}" ]; then
  _dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  while [ -n "$_dir" ]; do
    for _qdrant in "$_dir"/shared/tools/qdrant/qdrant-*.gz; do
      [ -f "$_qdrant" ] && export OCTOLLM_QDRANT_BIN="$_qdrant" && break 2
    done
    [ "$_dir" = / ] && break
    _dir="$(dirname "$_dir")"
  done
  if [ -z "${OCTOLLM_QDRANT_BIN:-}" ]; then
    for _qdrant in /work/shared/tools/qdrant/qdrant-*.gz; do
      [ -f "$_qdrant" ] && export OCTOLLM_QDRANT_BIN="$_qdrant"
    done
  fi
  unset _dir _qdrant
fi
