#!/usr/bin/env python3
"""Benchmark `tenant create --from-file` against one `tenant create` process a tenant.

Run it inside a throwaway cluster (`just bench`, or
`cargo build --release && pg_virtualenv -t python3 scripts/bench_bulk.py`).
Connection from PGHOST/PGPORT/PGUSER/PGPASSWORD (the password is never
printed); it owns `benchbulk_master` and the databases `benchbulk_<i>`, and
drops them.

Each of R rounds (`--reps`, default 3) times, interleaved, on a fresh master
(`master migrate`, untimed):

  a. N (`--n`, default 500) `tenantctl tenant create t<i> --db-name
     benchbulk_<i>` processes, one after another;
  b. one `tenantctl tenant create --from-file` of the same N lines (a CSV of
     slug and db_name), with the fleet's default concurrency (4) unless
     `--concurrency` says otherwise.

Every run must exit 0, and after each one every tenant is checked (untimed)
to be active in the master exactly once, with its database migrated to the
latest embedded migration, so a broken run is never timed as a fast one.
Medians are reported, and the speed-up of (b) over (a) in the same rounds.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

PREFIX = "benchbulk_"
MASTER = "benchbulk_master"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target", "release", "tenantctl")
    migrations = os.path.join(root, "tenant-migrations")
    latest = max(int(name.split("_")[0]) for name in os.listdir(migrations) if name.endswith(".sql"))
    count = len({name.split("_")[0] for name in os.listdir(migrations) if name.endswith(".sql")})
    user = urllib.parse.quote(os.environ.get("PGUSER", "postgres"), safe="")
    password = urllib.parse.quote(os.environ.get("PGPASSWORD", ""), safe="")
    host = os.environ.get("PGHOST", "localhost")
    port = os.environ.get("PGPORT", "5432")
    base = f"postgresql://{user}:{password}@{host}:{port}"
    env = dict(os.environ)
    env.update(POSTGRES_BASE_URL=base, MASTER_DATABASE_URL=f"{base}/{MASTER}")
    for var in ("TENANTCTL_CONCURRENCY", "TENANTCTL_PER_SERVER", "TENANTCTL_SHARD", "TENANT_MIGRATIONS_DIR"):
        env.pop(var, None)

    def sql(statement: str, db: str = "postgres") -> str:
        return subprocess.run(
            ["psql", "-XAtq", "-d", db, "-c", statement], check=True, capture_output=True, text=True
        ).stdout

    def clean() -> None:
        names = sql(
            f"SELECT datname FROM pg_database WHERE left(datname, {len(PREFIX)}) = '{PREFIX}'"
        ).split()
        # One psql for all of them (untimed).
        script = "".join(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);\n' for db in names)
        subprocess.run(["psql", "-XAtq", "-d", "postgres"], input=script, check=True, capture_output=True, text=True)

    def tenantctl(*argv: str) -> None:
        p = subprocess.run([binary, *argv], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"tenantctl {' '.join(argv[:3])} ... failed: {p.stderr}")

    dbs = [f"{PREFIX}{i}" for i in range(args.n)]

    def check() -> None:
        # Untimed: every tenant active once in the master, and each database
        # at the latest migration with every one applied (one psql for all).
        rows = sql(
            'SELECT slug || \' \' || "dbName" || \' \' || status FROM "Company" ORDER BY slug', MASTER
        ).split("\n")
        rows = sorted(r for r in rows if r)
        want = sorted(f"t{i} {db} active" for i, db in enumerate(dbs))
        if rows != want:
            sys.exit(f"master: expected {len(want)} active tenants, found {len(rows)} rows")
        script = "".join(
            f"\\c {db}\nSELECT count(*) || ' ' || max(version) FROM _sqlx_migrations WHERE success;\n"
            for db in dbs
        )
        got = subprocess.run(
            ["psql", "-XAtq", "-d", "postgres"], input=script, check=True, capture_output=True, text=True
        ).stdout.split("\n")
        got = [g for g in got if g]
        if got != [f"{count} {latest}"] * len(dbs):
            bad = next((db for db, g in zip(dbs, got) if g != f"{count} {latest}"), "a database")
            sys.exit(f"{bad}: not migrated to {latest}")

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("slug,db_name\n")
        for i, db in enumerate(dbs):
            f.write(f"t{i},{db}\n")
        csv = f.name

    def sequential() -> None:
        for i, db in enumerate(dbs):
            tenantctl("tenant", "create", f"t{i}", "--db-name", db)

    def bulk() -> None:
        extra = ["--concurrency", str(args.concurrency)] if args.concurrency else []
        tenantctl("tenant", "create", "--from-file", csv, "--quiet", *extra)

    steps = [("sequential creates", sequential), ("create --from-file", bulk)]
    times: dict[str, list[float]] = {name: [] for name, _ in steps}
    load_before = os.getloadavg()
    try:
        for _ in range(args.reps):
            for name, step in steps:
                clean()
                tenantctl("master", "migrate")
                sql("CHECKPOINT")
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
                check()
                # As it goes, so a run cut short still shows what it measured.
                print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
        load_after = os.getloadavg()
        concurrency = args.concurrency or 4
        print(f"N={args.n} tenants, {count} migrations each, --from-file concurrency {concurrency}, {args.reps} rounds, medians:")
        med = {name: statistics.median(v) for name, v in times.items()}
        for name, value in med.items():
            runs = ", ".join(f"{t:.1f}" for t in times[name])
            print(f"  {name:20s} {value:8.2f} s  {value * 1000 / args.n:6.1f} ms/tenant  (runs: {runs} s)")
        print(f"  speed-up: sequential / --from-file = {med['sequential creates'] / med['create --from-file']:.2f}x")
        print(f"  load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    finally:
        clean()
        os.unlink(csv)


if __name__ == "__main__":
    main()
