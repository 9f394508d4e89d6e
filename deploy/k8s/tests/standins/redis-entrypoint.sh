#!/bin/sh
# What the official redis image's entry point does: a first argument that is an option or a
# .conf file means redis-server; without a configuration file that sets protected-mode, the
# server runs with `--protected-mode no` (it listens for the network, not only loopback).
set -eu
case "${1:-}" in -* | *.conf) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
    shift
    if [ -f "${1:-}" ] && grep -q '^protected-mode' "$1"; then
        exec redis-server "$@"
    fi
    if [ -f "${1:-}" ]; then
        conf=$1
        shift
        exec redis-server "$conf" --protected-mode no "$@"
    fi
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
