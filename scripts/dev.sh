#!/usr/bin/env bash
# The development stack (docker-compose.yml).
#
#   scripts/dev.sh up       build the image (cargo-chef, release) and start everything
#   scripts/dev.sh down     stop it (volumes kept; `down -v` to drop them)
#   scripts/dev.sh logs     follow the logs
#   scripts/dev.sh key      an API key (tasks:submit, tasks:read, tasks:cancel) from the orchestrator
#   scripts/dev.sh smoke    scripts/smoke-tests.sh against it (with a fresh key)
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
    key) docker-compose exec -T orchestrator /usr/local/bin/octollm keys create --name "${2:-dev}" \
        --scopes tasks:submit,tasks:read,tasks:cancel ;;
    smoke)
        OCTOLLM_API_KEY=$(docker-compose exec -T orchestrator /usr/local/bin/octollm keys create \
            --name smoke --scopes tasks:submit,tasks:read | tr -d '\r')
        export OCTOLLM_API_KEY
        bash scripts/smoke-tests.sh
        ;;
    ps) docker-compose ps ;;
    *) echo "usage: scripts/dev.sh up|down|logs|key|smoke|ps" >&2; exit 2 ;;
esac
