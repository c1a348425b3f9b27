# tenantctl recipes. Without POSTGRES_BASE_URL, `test`, `demo` and `bench`
# run inside a throwaway PostgreSQL cluster from pg_virtualenv. Each recipe
# first installs what it needs and is missing (scripts/prereqs.sh, the one
# list of prerequisites).

set shell := ["bash", "-euo", "pipefail", "-c"]

default:
    @just --list

# Build and run the integration tests (throwaway cluster unless POSTGRES_BASE_URL is set)
test *ARGS:
    scripts/prereqs.sh test
    cargo build --tests --quiet
    if [ -n "${POSTGRES_BASE_URL:-}" ]; then scripts/run-tests.sh {{ARGS}}; else pg_virtualenv -t scripts/run-tests.sh {{ARGS}}; fi

# master migrate, three tenants, migrate --all, a setting, list
demo:
    scripts/prereqs.sh demo
    cargo build --quiet
    if [ -n "${POSTGRES_BASE_URL:-}" ]; then scripts/demo.sh; else pg_virtualenv -t scripts/demo.sh; fi

# Rerunnable benchmark against sqlx-cli, psql and pgbench floors (N=100 by default; --scale 100,1000 for growth)
bench *ARGS:
    scripts/prereqs.sh bench
    cargo build --release --quiet --bin tenantctl --example connect_floor
    pg_virtualenv -t python3 scripts/bench.py {{ARGS}}
    # Prisma migrator against the seed's own `prisma migrate deploy` loop (N=100)
    pg_virtualenv -t python3 scripts/bench_prisma.py
    # tenant create from a template against a bare CREATE DATABASE ... TEMPLATE and --no-template (issue 19)
    pg_virtualenv -t python3 scripts/bench_template.py
    # tenant create --from-file of 500 tenants against 500 sequential tenant create processes
    pg_virtualenv -t python3 scripts/bench_bulk.py

# Mutation testing (cargo-mutants) of FILES against the suite, in a throwaway cluster; slow, so per file and in the background, not in CI. After `--`, cargo-mutants arguments: `just mutants src/migrations.rs -- --re Plan`
mutants *ARGS:
    scripts/prereqs.sh mutants
    if [ -n "${POSTGRES_BASE_URL:-}" ]; then scripts/mutants.sh {{ARGS}}; else pg_virtualenv -t scripts/mutants.sh {{ARGS}}; fi

# What CI runs: formatting, lints with warnings denied, the book, tests
ci: fmt-check clippy layering docs test

# The book (docs/src, mdBook) into docs/book; its links and anchors are checked by `cargo test --test docs`
docs:
    scripts/prereqs.sh docs
    mdbook build docs
    cargo test --quiet --test docs

# The layering ARCHITECTURE.md documents (imports one way, no cycle, clap only in the command line, short functions): seconds, no database
layering:
    cargo test --quiet --test layering

fmt-check:
    cargo fmt --all -- --check

clippy:
    cargo clippy --all-targets --quiet -- -D warnings

# Add a tenant migration: plain (`just new-migration add_flags`) or a reversible .up.sql/.down.sql pair (`just new-migration add_flags reversible`)
new-migration NAME KIND="simple":
    scripts/new-migration.sh tenant-migrations '{{NAME}}' '{{KIND}}'

# Add a master migration (plain or reversible, as for new-migration)
new-master-migration NAME KIND="simple":
    scripts/new-migration.sh master-migrations '{{NAME}}' '{{KIND}}'

# Up-to-date migrate/status of this build against another binary, interleaved (e.g. a build of the previous release)
bench-ab OLD:
    scripts/prereqs.sh demo
    cargo build --release --quiet --bin tenantctl
    OLD={{OLD}} pg_virtualenv -t scripts/bench-ab.sh

# Fleet revert and migrate --to against sqlx-cli's migrate revert/run (N=100; --n, --reps, --concurrency)
bench-revert *ARGS:
    scripts/prereqs.sh bench
    cargo build --release --quiet --bin tenantctl
    pg_virtualenv -t python3 scripts/bench_revert.py {{ARGS}}
