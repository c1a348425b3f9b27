#!/usr/bin/env bash
# The one list of what building, testing, the demo, the benchmarks and CI
# need beyond Rust, Python and a C compiler, and the one place that installs
# it. `.ci/run` and the justfile's recipes call it; nothing else should know
# a package name.
#
#   scripts/prereqs.sh MODE [--check]
#
# MODE is test, demo, bench, mutants, docs or ci (ci = test + docs + just itself).
# Without --check, what is missing is installed: apt packages when running
# as root, cargo and pip packages as anyone. What cannot be installed (no
# root for apt, no network for cargo) gets one line on stderr naming it and
# the command that would install it, and the exit status is 1.
# With --check nothing is installed: each missing prerequisite is named with
# its install command, and the exit status is 1 if any is missing.
#
# To add a prerequisite, add one `need` line below.
set -euo pipefail

usage() { echo "usage: scripts/prereqs.sh test|demo|bench|mutants|docs|ci [--check]" >&2; exit 2; }
[ $# -ge 1 ] || usage
mode=$1
check_only=false
case "${2:-}" in
  "") ;;
  --check) check_only=true ;;
  *) usage ;;
esac
case "$mode" in test | demo | bench | mutants | docs | ci) ;; *) usage ;; esac
# Paths below (the Prisma kit) are relative to the repository.
cd "$(dirname "$0")/.."

# Where cargo and pip put what they install, which may not be on PATH yet
# (pyenv shims, --user installs); .ci/run adds the same folders.
PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"
if pip_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null); then
  PATH="$PATH:$pip_scripts"
fi
export PATH

# --- how to tell whether each one is there -------------------------------
has_postgres() {
  command -v pg_virtualenv >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}
# The unversioned libclang.so comes with libclang-NN-dev, which also brings
# the headers bindgen needs. A looser glob matched libclang-cpp.so.NN, which
# some images carry without libclang itself, and the build then failed.
has_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] || ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1
}
has_pgbouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
has_sqlx() { sqlx --version 2>/dev/null | grep -q ' 0\.8\.'; }
has_just() { command -v just >/dev/null 2>&1; }
has_node() {
  command -v npm >/dev/null 2>&1 &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 18) ? 0 : 1)' 2>/dev/null
}
has_prisma_kit() { [ -x tests/prisma-kit/node_modules/.bin/prisma ] && [ -f tests/prisma-kit/node_modules/.prisma-kit-stamp ]; }
has_mutants() { cargo mutants --version >/dev/null 2>&1; }
has_mdbook() { mdbook --version 2>/dev/null | grep -q '^mdbook v0\.5\.4$'; }

# --- the list ------------------------------------------------------------
# need NAME "MODES" CHECK KIND WHAT... WHY
#   KIND apt:   WHAT is the Debian packages (installed only as root)
#   KIND cmd:   WHAT is one command line, run as is (cargo install, a setup script)
# Keep WHY short: it is printed when the prerequisite is missing.
entries=()
need() { entries+=("$(printf '%s\x1f' "$@")"); }

need "PostgreSQL (pg_virtualenv)" "test demo bench mutants ci" has_postgres \
  apt "postgresql postgresql-common" "throwaway clusters for the tests, the demo and the bench"
need "libclang" "test demo bench mutants ci" has_libclang \
  apt "libclang-dev" "bindgen, to build PostgreSQL's parser (pg_query) into tenantctl"
need "PgBouncer" "test mutants ci" has_pgbouncer \
  apt "pgbouncer" "the pooler tests start one in front of a private server"
need "sqlx-cli 0.8.6" "test bench mutants ci" has_sqlx \
  cmd "cargo install --locked sqlx-cli --version 0.8.6 --no-default-features --features postgres,rustls" \
  "the revert tests and the bench compare with it"
need "Node.js >= 18.18 and npm" "test bench ci" has_node \
  apt "nodejs npm" "runs the real Prisma CLI (tests/prisma-kit) the Prisma tests and bench compare with"
need "the Prisma kit" "test bench ci" has_prisma_kit \
  cmd "tests/prisma-kit/setup.sh" "the real Prisma CLI and client, installed offline-safe from npm"
need "cargo-mutants" "mutants" has_mutants \
  cmd "cargo install --locked cargo-mutants" "mutation testing"
need "mdBook 0.5.4" "docs ci" has_mdbook \
  cmd "cargo install --locked mdbook --version 0.5.4 --no-default-features --features search" \
  "builds the book (docs/) that just docs and CI build"
need "just" "ci" has_just \
  cmd "python3 -m pip install --quiet rust-just || cargo install --locked just" "runs the recipes CI calls"

# --- doing it ------------------------------------------------------------
say() { echo "prereqs: $*" >&2; }
root=false
[ "$(id -u)" = 0 ] && root=true

missing=0
apt_names=()
apt_packages=()
# Two passes: apt packages first (installed together), then commands,
# which may need them (the Prisma kit's setup needs Node from apt).
for pass in apt cmd; do
for entry in "${entries[@]}"; do
  IFS=$'\x1f' read -r name modes check kind what why <<<"$entry"
  case " $modes " in *" $mode "*) ;; *) continue ;; esac
  [ "$kind" = "$pass" ] || continue
  "$check" && continue
  case "$kind" in
    apt)
      if $check_only; then
        say "missing $name ($why): install it with: apt-get install -y $what"
        missing=1
      elif $root && command -v apt-get >/dev/null 2>&1; then
        apt_names+=("$name")
        read -ra packages <<<"$what"
        apt_packages+=("${packages[@]}")
      else
        say "missing $name ($why), and installing it needs root: run: sudo apt-get install -y $what"
        missing=1
      fi
      ;;
    cmd)
      if $check_only; then
        say "missing $name ($why): install it with: $what"
        missing=1
        continue
      fi
      say "installing $name ($why): $what"
      log=$(mktemp -t prereqs.XXXXXX)
      if bash -c "$what" </dev/null >"$log" 2>&1 && hash -r && "$check"; then
        rm -f "$log"
      else
        tool=${what%% *}
        if ! command -v "$tool" >/dev/null 2>&1; then
          say "could not install $name: $tool is not installed (or not on PATH): install it, then run: $what"
        else
          say "could not install $name (no network? its output is in $log): run: $what"
        fi
        missing=1
      fi
      ;;
  esac
done
[ "$pass" = apt ] || continue

if [ ${#apt_packages[@]} -gt 0 ]; then
  say "installing ${apt_names[*]} with apt-get: ${apt_packages[*]}"
  log=$(mktemp -t prereqs.XXXXXX)
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}"; } </dev/null >"$log" 2>&1; then
    rm -f "$log"
  else
    say "could not install ${apt_names[*]} (no network? its output is in $log): run: apt-get install -y ${apt_packages[*]}"
    missing=1
  fi
  hash -r
fi
done
exit "$missing"
