#!/usr/bin/env bash
# The development stack (docker-compose.yml).
#
#   scripts/dev.sh up       build the image (cargo-chef, release) and start everything
#   scripts/dev.sh down     stop it (volumes kept; `down -v` to drop them)
#   scripts/dev.sh logs     follow the logs
#   scripts/dev.sh smoke    scripts/smoke-tests.sh against it
#   scripts/dev.sh ps       what runs, and its health
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .env ] || { echo "dev: copy .env.example to .env and edit it first" >&2; exit 1; }
set -a
. ./.env
set +a
case "${1:-up}" in
    up) docker-compose up -d --build ;;
    down) shift; docker-compose down "$@" ;;
    logs) docker-compose logs -f --tail 100 ;;
    smoke) bash scripts/smoke-tests.sh ;;
    ps) docker-compose ps ;;
    *) echo "usage: scripts/dev.sh up|down|logs|smoke|ps" >&2; exit 2 ;;
esac
