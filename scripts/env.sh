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
