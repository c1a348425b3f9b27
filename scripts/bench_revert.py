#!/usr/bin/env python3
"""Benchmark `tenant revert` and `tenant migrate --to` against sqlx-cli.

Run it inside a throwaway cluster (`just bench-revert`, which is
`cargo build --release && pg_virtualenv -t python3 scripts/bench_revert.py`).
Connection from PGHOST/PGPORT/PGUSER/PGPASSWORD (the password is never
printed); it owns `benchrev_master` and `benchrev_<i>` and drops them.

N tenants (`--n`, default 100) carry the embedded tenant schema plus one
reversible migration (a table with an index and a foreign key). Each of R
rounds (`--reps`, default 7) times, interleaved:

  a. `tenantctl tenant revert --all --to PREV --yes` (C at once, default 4):
     one down script per tenant, planned for every tenant first (each
     tenant reverted on the connection its plan was read on, as far as the
     server's max_connections leaves room to keep them: about 80 of 100 on
     this throwaway cluster's default of 100);
  b. `tenantctl tenant migrate --all` back up (the same migration again);
  c. sqlx-cli, C processes at once: `sqlx migrate revert` on each tenant;
  d. sqlx-cli, C at once: `sqlx migrate run` on each tenant (back up).

Every run must exit 0, and after each one every tenant is checked to have
(or not have) the reversible version, so a broken run is never timed as a
fast one. Medians are reported, and each tenantctl median as a ratio to the
sqlx-cli one measured in the same rounds.
"""

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

UP = """CREATE TABLE feature_flags (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id uuid REFERENCES sites (id) ON DELETE CASCADE,
    name    text NOT NULL,
    enabled boolean NOT NULL DEFAULT false
);
CREATE INDEX feature_flags_name ON feature_flags (name);
"""
DOWN = "DROP TABLE feature_flags;\n"
VERSION = 29990101000001


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target", "release", "tenantctl")
    user = urllib.parse.quote(os.environ.get("PGUSER", "postgres"), safe="")
    password = urllib.parse.quote(os.environ.get("PGPASSWORD", ""), safe="")
    host = os.environ.get("PGHOST", "localhost")
    port = os.environ.get("PGPORT", "5432")
    base = f"postgresql://{user}:{password}@{host}:{port}"
    folder = tempfile.mkdtemp(prefix="bench-revert-")
    for name in os.listdir(os.path.join(root, "tenant-migrations")):
        shutil.copy(os.path.join(root, "tenant-migrations", name), folder)
    with open(os.path.join(folder, f"{VERSION}_feature_flags.up.sql"), "w") as f:
        f.write(UP)
    with open(os.path.join(folder, f"{VERSION}_feature_flags.down.sql"), "w") as f:
        f.write(DOWN)
    prev = max(int(n.split("_")[0]) for n in os.listdir(folder) if int(n.split("_")[0]) != VERSION)

    env = dict(os.environ)
    env.update(
        POSTGRES_BASE_URL=base,
        MASTER_DATABASE_URL=f"{base}/benchrev_master",
        TENANT_MIGRATIONS_DIR=folder,
    )
    for var in ("TENANTCTL_CONCURRENCY", "TENANTCTL_SHARD"):
        env.pop(var, None)

    def sql(statement: str, db: str = "postgres") -> str:
        return subprocess.run(
            ["psql", "-XAtq", "-d", db, "-c", statement], check=True, capture_output=True, text=True
        ).stdout

    dbs = [f"benchrev_{i}" for i in range(args.n)]

    def clean() -> None:
        for db in dbs + ["benchrev_master"]:
            sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def tenantctl(*argv: str) -> None:
        p = subprocess.run([binary, *argv], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"tenantctl {' '.join(argv)} failed: {p.stderr}")

    def sqlx(command: str, db: str) -> None:
        p = subprocess.run(
            ["sqlx", "migrate", command, "--source", folder, "--database-url", f"{base}/{db}"],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            sys.exit(f"sqlx migrate {command} on {db} failed: {p.stderr}")

    def sqlx_all(command: str) -> None:
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda db: sqlx(command, db), dbs))

    def check(applied: bool) -> None:
        # One query per database, untimed: the reversible version is
        # recorded, and its table exists, on every tenant, or on none.
        for db in dbs:
            got = sql(
                f"SELECT count(*) FROM _sqlx_migrations WHERE version = {VERSION} AND success; "
                "SELECT count(*) FROM pg_class WHERE relname = 'feature_flags'",
                db,
            ).split()
            want = ["1", "1"] if applied else ["0", "0"]
            if got != want:
                sys.exit(f"{db}: expected {want}, found {got}")

    clean()
    try:
        tenantctl("master", "migrate")
        for i, db in enumerate(dbs):
            tenantctl("tenant", "create", f"t{i}", "--db-name", db)
        check(True)
        c = str(args.concurrency)
        steps = [
            ("tenantctl revert", lambda: tenantctl("tenant", "revert", "--all", "--to", str(prev), "--yes", "--concurrency", c), False),
            ("tenantctl migrate", lambda: tenantctl("tenant", "migrate", "--all", "--concurrency", c), True),
            ("sqlx-cli revert", lambda: sqlx_all("revert"), False),
            ("sqlx-cli run", lambda: sqlx_all("run"), True),
        ]
        times: dict[str, list[float]] = {name: [] for name, _, _ in steps}
        for _ in range(args.reps):
            for name, step, applied in steps:
                sql("CHECKPOINT")
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
                check(applied)
        print(f"N={args.n} tenants, concurrency {args.concurrency}, {args.reps} rounds, medians:")
        med = {name: statistics.median(v) for name, v in times.items()}
        for name, value in med.items():
            print(f"  {name:18s} {value * 1000:8.1f} ms  {value * 1000 / args.n:6.2f} ms/tenant")
        print(f"  revert: tenantctl / sqlx-cli = {med['tenantctl revert'] / med['sqlx-cli revert']:.2f}")
        print(f"  up:     tenantctl / sqlx-cli = {med['tenantctl migrate'] / med['sqlx-cli run']:.2f}")
        print(f"  tenantctl revert / tenantctl migrate = {med['tenantctl revert'] / med['tenantctl migrate']:.2f}")
    finally:
        clean()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
