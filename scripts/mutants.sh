#!/usr/bin/env bash
# Mutation testing with cargo-mutants: every mutant of the given files is
# built and judged by the test suite (nextest if installed), against the
# server in POSTGRES_BASE_URL or the PG* variables (`just mutants` starts a
# throwaway cluster with pg_virtualenv). Slow: each mutant rebuilds and
# reruns the tests, so run it per file, in the background, not in CI.
#
#   scripts/mutants.sh FILE... [-- CARGO_MUTANTS_ARGS...]
#
#   scripts/mutants.sh src/selection.rs
#   scripts/mutants.sh src/migrations.rs -- --re Plan
#   scripts/mutants.sh src/dbname.rs -- -- --lib     # unit tests only
#
# Results (caught.txt, missed.txt, timeout.txt, ...) go to mutants.out/.
set -euo pipefail
files=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  files+=(--file "$1")
  shift
done
if [ $# -gt 0 ]; then shift; fi
if [ ${#files[@]} -eq 0 ]; then
  echo "usage: just mutants FILE... [-- cargo-mutants arguments]" >&2
  exit 2
fi
tool=()
if cargo nextest --version >/dev/null 2>&1; then
  tool=(--test-tool nextest)
fi
exec cargo mutants "${tool[@]}" "${files[@]}" "$@"
