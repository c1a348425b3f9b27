#!/usr/bin/env python3
"""Benchmark `tenant create` from a template database (issue 19).

Run it inside a throwaway cluster (`just bench`, or after `cargo build
--release`: `pg_virtualenv -t python3 scripts/bench_template.py`).
Connection from PGHOST/PGPORT/PGUSER/PGPASSWORD (the password is never
printed); it owns `benchtpl_*` databases and drops them.

Each of R rounds (`--reps`, default 5) times, interleaved, N sequential
processes each (`--n`, default 20):

  embedded schema (the 6 migrations compiled in):
    a. `tenantctl tenant create` (clones the set's template, built before
       the first round by `tenantctl template build`);
    b. `psql -c "CREATE DATABASE ... TEMPLATE <that template> STRATEGY <the
       one tenantctl picks>"`: the bare clone, the floor;
    c. `tenantctl tenant create --no-template` (migrated in place);
  synthetic set of `--migrations` (default 100) migrations:
    d. `tenantctl tenant create` from its template;
    e. `tenantctl tenant create --no-template`.

Every create must exit 0 and every database is checked (untimed) to hold
the whole set, so a broken run is never timed as a fast one. Then, outside
the rounds, CREATE DATABASE ... STRATEGY WAL_LOG against FILE_COPY on a
small and a ~`--big-mb` MB template (the numbers behind the size tenantctl
switches strategy at). Medians are reported, with ratios measured in the
same rounds.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="creates per scenario per round")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--migrations", type=int, default=100, help="size of the synthetic set")
    ap.add_argument("--big-mb", type=int, default=100, help="size of the big template for the strategy comparison")
    ap.add_argument("--no-strategy", action="store_true", help="skip the WAL_LOG/FILE_COPY comparison")
    ap.add_argument("--json", help="also write the results here")
    return ap.parse_args()


def synthetic_set(n: int) -> str:
    """The embedded migrations plus n more, each a table, an index, a
    function and a comment, as a long-lived application accumulates."""
    folder = tempfile.mkdtemp(prefix="bench-template-")
    for name in os.listdir(os.path.join(ROOT, "tenant-migrations")):
        shutil.copy(os.path.join(ROOT, "tenant-migrations", name), folder)
    for i in range(n):
        version = 29990101000000 + i
        with open(os.path.join(folder, f"{version}_synthetic_{i}.sql"), "w") as f:
            f.write(
                f"CREATE TABLE synthetic_{i} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                f"name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());\n"
                f"CREATE INDEX synthetic_{i}_name ON synthetic_{i} (name);\n"
                f"CREATE FUNCTION synthetic_{i}_count() RETURNS bigint LANGUAGE sql "
                f"AS $$ SELECT count(*) FROM synthetic_{i} $$;\n"
                f"COMMENT ON TABLE synthetic_{i} IS 'migration {i}';\n"
            )
    return folder


def main() -> None:
    args = parse_args()
    binary = os.path.join(ROOT, "target", "release", "tenantctl")
    user = urllib.parse.quote(os.environ.get("PGUSER", "postgres"), safe="")
    password = urllib.parse.quote(os.environ.get("PGPASSWORD", ""), safe="")
    host = os.environ.get("PGHOST", "localhost")
    port = os.environ.get("PGPORT", "5432")
    base = f"postgresql://{user}:{password}@{host}:{port}"
    env = dict(os.environ)
    env.update(POSTGRES_BASE_URL=base, MASTER_DATABASE_URL=f"{base}/benchtpl_master")
    for var in ("TENANTCTL_CONCURRENCY", "TENANTCTL_SHARD", "TENANT_MIGRATIONS_DIR"):
        env.pop(var, None)
    synthetic = synthetic_set(args.migrations)
    embedded_count = len(os.listdir(os.path.join(ROOT, "tenant-migrations")))

    def sql(statement: str, db: str = "postgres") -> str:
        return subprocess.run(
            ["psql", "-XAtq", "-d", db, "-c", statement], check=True, capture_output=True, text=True
        ).stdout.strip()

    def tenantctl(*argv: str) -> str:
        p = subprocess.run([binary, *argv], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"tenantctl {' '.join(argv)} failed: {p.stderr}")
        return p.stdout

    def ours() -> list[str]:
        return sql("SELECT datname FROM pg_database WHERE datname LIKE 'benchtpl\\_%' "
                   "OR datname LIKE 'tenant\\_bt%' OR datname LIKE 'tenantctl\\_template\\_%'").split()

    def clean(keep_master: bool) -> None:
        for db in ours():
            if keep_master and db == "benchtpl_master":
                continue
            if db.startswith("tenantctl_template_"):
                if keep_master:
                    continue
                sql(f'ALTER DATABASE "{db}" IS_TEMPLATE false')
            sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if keep_master:
            sql('DELETE FROM "Company"', "benchtpl_master")

    def check(dbs: list[str], count: int) -> None:
        for db in dbs:
            got = sql("SELECT count(*) FROM _sqlx_migrations WHERE success", db)
            if got != str(count):
                sys.exit(f"{db}: {got} migrations recorded, expected {count}")

    def creates(tag: str, more: list[str]) -> tuple[float, list[str]]:
        dbs = []
        started = time.perf_counter()
        for i in range(args.n):
            slug = f"bt{tag}{i}"
            tenantctl("tenant", "create", slug, *more)
            dbs.append(f"tenant_{slug}")
        return time.perf_counter() - started, dbs

    clean(False)
    sql("CREATE DATABASE benchtpl_master")
    try:
        tenantctl("master", "migrate")
        built = json.loads(tenantctl("template", "build", "--output", "json"))["templates"][0]
        template = built["name"]
        strategy = "FILE_COPY" if built["size_bytes"] > 64 * 1024 * 1024 else "WAL_LOG"
        tenantctl("template", "build", "--tenant-migrations", synthetic)
        syn = ["--tenant-migrations", synthetic]
        scenarios = {
            "create (template)": (lambda r: creates(f"a{r}x", []), embedded_count),
            "bare CREATE DATABASE TEMPLATE": (lambda r: bare(r), None),
            "create --no-template": (lambda r: creates(f"c{r}x", ["--no-template"]), embedded_count),
            f"create, {args.migrations}+ migrations (template)": (lambda r: creates(f"d{r}x", syn), embedded_count + args.migrations),
            f"create, {args.migrations}+ migrations --no-template": (lambda r: creates(f"e{r}x", syn + ["--no-template"]), embedded_count + args.migrations),
        }

        def bare(r: int) -> tuple[float, list[str]]:
            dbs = [f"benchtpl_b{r}x{i}" for i in range(args.n)]
            started = time.perf_counter()
            for db in dbs:
                sql(f'CREATE DATABASE "{db}" TEMPLATE "{template}" STRATEGY {strategy}')
            return time.perf_counter() - started, dbs

        times: dict[str, list[float]] = {name: [] for name in scenarios}
        for r in range(args.reps):
            for name, (step, count) in scenarios.items():
                sql("CHECKPOINT")
                took, dbs = step(r)
                times[name].append(took * 1000 / args.n)
                if count is not None:
                    check(dbs, count)
                clean(True)
        med = {name: statistics.median(v) for name, v in times.items()}
        names = list(scenarios)
        results = {
            "n": args.n,
            "reps": args.reps,
            "template_strategy": strategy,
            "ms_per_tenant": med,
            "create_over_bare_clone": med[names[0]] / med[names[1]],
            "no_template_over_template": med[names[2]] / med[names[0]],
            "synthetic_no_template_over_template": med[names[4]] / med[names[3]],
        }
        print(f"tenant create, {args.n} sequential processes per scenario, {args.reps} rounds, medians:")
        for name, value in med.items():
            print(f"  {name:42s} {value:8.1f} ms/tenant")
        print(f"  create (template) / bare clone             = {results['create_over_bare_clone']:.2f} (target <= 1.5)")
        print(f"  --no-template / template (embedded)        = {results['no_template_over_template']:.2f}")
        print(f"  --no-template / template ({args.migrations}+ migrations) = {results['synthetic_no_template_over_template']:.2f} (target >= 5)")
        if not args.no_strategy:
            results["strategy"] = strategies(sql, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        clean(False)
        shutil.rmtree(synthetic, ignore_errors=True)


def strategies(sql, args: argparse.Namespace) -> dict:
    """CREATE DATABASE ... STRATEGY WAL_LOG against FILE_COPY, from a small
    template and a big one, interleaved, medians of 5."""
    sql("CREATE DATABASE benchtpl_small")
    sql("CREATE TABLE t (id int PRIMARY KEY, name text)", "benchtpl_small")
    sql("CREATE DATABASE benchtpl_big")
    rows = args.big_mb * 1024 * 1024 // 140
    sql(f"CREATE TABLE t AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, {rows}) g", "benchtpl_big")
    out = {}
    print("CREATE DATABASE from a template, by strategy (medians of 5, ms):")
    for source in ("benchtpl_small", "benchtpl_big"):
        size = int(sql(f"SELECT pg_database_size('{source}')"))
        times: dict[str, list[float]] = {"WAL_LOG": [], "FILE_COPY": []}
        for i in range(5):
            for strategy in times:
                started = time.perf_counter()
                sql(f'CREATE DATABASE "benchtpl_copy" TEMPLATE "{source}" STRATEGY {strategy}')
                times[strategy].append((time.perf_counter() - started) * 1000)
                sql('DROP DATABASE "benchtpl_copy"')
        med = {k: statistics.median(v) for k, v in times.items()}
        out[source] = {"size_bytes": size, **med}
        print(f"  {size / 1048576:7.1f} MB: WAL_LOG {med['WAL_LOG']:7.1f}  FILE_COPY {med['FILE_COPY']:7.1f}")
    return out


if __name__ == "__main__":
    main()
