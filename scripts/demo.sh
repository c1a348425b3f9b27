#!/usr/bin/env bash
# The quick-start walk-through. Uses POSTGRES_BASE_URL, or builds it from the
# PG* variables pg_virtualenv sets (the password never gets printed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${POSTGRES_BASE_URL:-}" ]; then
  enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
  export POSTGRES_BASE_URL="postgresql://$(enc "${PGUSER:-postgres}"):$(enc "${PGPASSWORD:-}")@${PGHOST:-localhost}:${PGPORT:-5432}"
fi
# Wherever cargo put it: CARGO_TARGET_DIR or a config may move target/.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
t="$target_dir/debug/tenantctl"
run() { printf '\n$ tenantctl %s\n' "$*"; "$t" "$@"; }
run master migrate
run tenant create acme --name "Acme Corp"
run tenant create green-city --name "Green City Council"
run tenant create riverside
run tenant migrate --all
run tenant settings set acme theme '{"mode": "dark", "accent": "green"}'
run tenant settings get acme theme
run tenant status --all
run tenant list
