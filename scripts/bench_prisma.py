#!/usr/bin/env python3
"""Benchmark `tenantctl tenant migrate --all` with a Prisma migrator against
the seed's own infrastructure step: `prisma migrate deploy` once per tenant,
one after another (its `execa` loop), run through the kit's `run.sh` with
`DATABASE_URL=${POSTGRES_BASE_URL}/${dbName}`.

Run inside a throwaway cluster (`just bench` runs it after bench.py, or
`pg_virtualenv -t python3 scripts/bench_prisma.py [--n 100]`). It owns the
databases `pbench_master` and `tenant_pbench_<i>` (dropped at the start and
the end) and a scratch copy of the kit's tenant schema.

Scenarios, N tenants (`--n`, default 100) with the kit's tenant schema:
1. Up to date: nothing pending.
   a. the seed's loop, `--baseline-reps` times (default 1: it costs about a
      Node start-up per tenant); ms per tenant = `prisma migrate deploy`'s
      own time per up-to-date tenant.
   b. `tenantctl tenant migrate --all`, `--reps` times (default 5).
2. One pending migration (a column added to "Site"): before each timed run
   every tenant is put back (column dropped, its `_prisma_migrations` row
   deleted; not timed).
   a. the seed's loop; b. `tenantctl tenant migrate --all`.
Every run must exit 0; every tenantctl run must report N ok and the
expected migrations applied; after each loop and each tenantctl run of
scenario 2, every tenant must hold the new migration's finished row.
Reported: medians, and the ratio loop/tenantctl (above 1 = tenantctl faster).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
KIT = ROOT / "tests" / "prisma-kit"
MASTER = "pbench_master"
PENDING = "20990101000000_bench_note"


def log(msg: str) -> None:
    print(f"bench_prisma: {msg}", file=sys.stderr, flush=True)


def base_url() -> str:
    user = urllib.parse.quote(os.environ.get("PGUSER") or "postgres", safe="")
    password = os.environ.get("PGPASSWORD", "")
    host = os.environ.get("PGHOST") or "localhost"
    port = os.environ.get("PGPORT") or "5432"
    if host.startswith("/"):
        raise SystemExit("bench_prisma.py: needs a TCP PGHOST (Prisma's URL cannot name a socket directory here)")
    creds = f"{user}:{urllib.parse.quote(password, safe='')}@" if password else f"{user}@"
    return f"postgresql://{creds}{host}:{port}"


def psql(sql: str, db: str = "postgres") -> str:
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"bench_prisma.py: psql failed: {out.stderr.strip()}")
    return out.stdout


def tenant_db(i: int) -> str:
    return f"tenant_pbench_{i}"


def drop_all(n: int) -> None:
    names = [MASTER] + [tenant_db(i) for i in range(n)]
    psql("".join(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);\n' for name in names))


def timed(cmd: list[str], env: dict, cwd: pathlib.Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, out


def seed_loop(n: int, base: str, schema: pathlib.Path, env: dict, expect: str) -> float:
    start = time.perf_counter()
    for i in range(n):
        child = dict(env, DATABASE_URL=f"{base}/{tenant_db(i)}")
        out = subprocess.run(
            ["bash", str(KIT / "run.sh"), str(schema), "migrate", "deploy"],
            env=child,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0 or expect not in out.stdout:
            raise SystemExit(f"bench_prisma.py: prisma migrate deploy on tenant {i} failed or did not say {expect!r}:\n{out.stdout}\n{out.stderr}")
    return time.perf_counter() - start


def tenantctl_migrate(tenantctl: str, env: dict, cwd: pathlib.Path, n: int, applied: list[str]) -> float:
    took, out = timed([tenantctl, "tenant", "migrate", "--all", "--output", "json"], env, cwd)
    if out.returncode != 0:
        raise SystemExit(f"bench_prisma.py: tenantctl failed ({out.returncode}):\n{out.stderr}")
    report = json.loads(out.stdout)
    summary = report["summary"]
    if summary["ok"] != n or summary["failed"] or summary["skipped"]:
        raise SystemExit(f"bench_prisma.py: tenantctl summary {summary}")
    for tenant in report["tenants"]:
        if tenant["applied"] != applied:
            raise SystemExit(f"bench_prisma.py: tenant {tenant['slug']} applied {tenant['applied']}, expected {applied}")
    return took


def check_pending_applied(n: int) -> None:
    for i in range(n):
        got = psql(
            f"SELECT count(*) FROM _prisma_migrations WHERE migration_name = '{PENDING}' "
            "AND finished_at IS NOT NULL AND rolled_back_at IS NULL",
            tenant_db(i),
        ).strip()
        if got != "1":
            raise SystemExit(f"bench_prisma.py: tenant {i} does not have {PENDING} applied once ({got})")


def reset_pending(n: int) -> None:
    script = "".join(
        f'\\c {tenant_db(i)}\nALTER TABLE "Site" DROP COLUMN IF EXISTS "bench_note";\n'
        f"DELETE FROM _prisma_migrations WHERE migration_name = '{PENDING}';\n"
        for i in range(n)
    )
    psql(script)
    psql("CHECKPOINT;")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="tenants (default 100)")
    ap.add_argument("--reps", type=int, default=5, help="tenantctl repetitions (default 5)")
    ap.add_argument("--baseline-reps", type=int, default=1, help="repetitions of the seed's loop (default 1)")
    ap.add_argument("--tenantctl", default=str(ROOT / "target" / "release" / "tenantctl"))
    args = ap.parse_args(argv)
    if not (KIT / "node_modules" / ".prisma-kit-stamp").is_file():
        raise SystemExit("bench_prisma.py: the Prisma kit is not installed: run tests/prisma-kit/setup.sh")
    n = args.n
    base = base_url()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="tenantctl-pbench."))
    schema = scratch / "tenant"
    shutil.copytree(KIT / "tenant", schema, ignore=shutil.ignore_patterns("generated"))
    (scratch / "tenantctl.toml").write_text('[tenants.migrator]\nkind = "prisma"\nmigrations = "tenant/migrations"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTCTL_", "POSTGRES_BASE_URL"))}
    env.pop("TENANT_MIGRATIONS_DIR", None)
    tenv = dict(env, POSTGRES_BASE_URL=base, MASTER_DATABASE_URL=f"{base}/{MASTER}", NO_COLOR="1")
    try:
        drop_all(n)
        log(f"setting up {n} tenants (tenantctl tenant create, Prisma migrations applied natively)")
        psql(f'CREATE DATABASE "{MASTER}"')
        _, out = timed([args.tenantctl, "master", "migrate"], tenv, scratch)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        for i in range(n):
            _, out = timed([args.tenantctl, "-q", "tenant", "create", f"pbench-{i}", "--db-name", tenant_db(i)], tenv, scratch)
            if out.returncode != 0:
                raise SystemExit(f"bench_prisma.py: create {i}: {out.stderr}")

        results = {}
        log("up to date: the seed's loop")
        loop = [seed_loop(n, base, schema, env, "No pending migrations") for _ in range(args.baseline_reps)]
        log("up to date: tenantctl tenant migrate --all")
        ours = [tenantctl_migrate(args.tenantctl, tenv, scratch, n, []) for _ in range(args.reps)]
        results["up_to_date"] = (statistics.median(loop), statistics.median(ours))

        pending_dir = schema / "migrations" / PENDING
        pending_dir.mkdir()
        (pending_dir / "migration.sql").write_text('-- AlterTable\nALTER TABLE "Site" ADD COLUMN "bench_note" TEXT;\n')
        loop, ours = [], []
        for _ in range(args.baseline_reps):
            reset_pending(n)
            log("one pending: the seed's loop")
            loop.append(seed_loop(n, base, schema, env, "successfully applied"))
            check_pending_applied(n)
        for _ in range(args.reps):
            reset_pending(n)
            log("one pending: tenantctl tenant migrate --all")
            ours.append(tenantctl_migrate(args.tenantctl, tenv, scratch, n, [PENDING]))
            check_pending_applied(n)
        results["one_pending"] = (statistics.median(loop), statistics.median(ours))

        print(f"\nPrisma migrator, N={n} tenants, kit tenant schema; medians (loop x{args.baseline_reps}, tenantctl x{args.reps})")
        print(f"{'scenario':<14} {'seed loop s':>12} {'ms/tenant':>10} {'tenantctl s':>12} {'ms/tenant':>10} {'ratio':>8}")
        for name, (theirs, mine) in results.items():
            print(
                f"{name:<14} {theirs:>12.2f} {theirs * 1000 / n:>10.1f} {mine:>12.3f} {mine * 1000 / n:>10.2f} {theirs / mine:>7.1f}x"
            )
        print(
            f"prisma migrate deploy, up to date: {results['up_to_date'][0] * 1000 / n:.0f} ms per tenant "
            "(one Node start-up, schema engine load, one lock, one read)"
        )
        return 0
    finally:
        drop_all(n)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
