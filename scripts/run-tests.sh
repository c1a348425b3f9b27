#!/usr/bin/env bash
# Runs the test suite against the server in POSTGRES_BASE_URL or the PG*
# variables (pg_virtualenv sets them). nextest if installed, else cargo test.
set -euo pipefail
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --no-fail-fast "$@"
else
  exec cargo test --no-fail-fast "$@"
fi
