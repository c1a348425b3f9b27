#!/usr/bin/env python3
"""Benchmark `tenantctl` against sqlx-cli, a psql floor and a pgbench floor.

Run it inside a throwaway cluster (`just bench`, which is
`cargo build --release && pg_virtualenv -t python3 scripts/bench.py [ARGS]`).
It reads the connection from PGHOST/PGPORT/PGUSER/PGPASSWORD, builds the
tenantctl URLs from them (percent-encoded; the password is never printed) and
owns the databases `bench_master` and `bench_<i>`: it drops them at the start
and at the end.

What is measured, with N tenants (`--n`, default 100), concurrency C
(`--concurrency`, default 4) and R repetitions (`--reps`, default 3); every
number reported is the median of the R wall-clock times of the whole command
(process start to exit, so start-up cost counts, as it does in a deploy):

1. Fresh databases: each repetition of each scenario starts from N empty
   databases (dropped and recreated, not timed, followed by a CHECKPOINT so
   one scenario's writes are not flushed during the next one's timing), after
   one untimed warm-up run.
   a. `tenantctl tenant migrate --all --concurrency C`
   b. sqlx-cli sequential: `sqlx migrate run` once per tenant, one at a time
   c. sqlx-cli parallel: the same, C processes at once (like `xargs -P C`)
   d. psql floor: C long-lived psql sessions, tenants split round-robin;
      for each tenant the session does `\\c <db>`, creates a
      `_sqlx_migrations` table of sqlx's shape, and for each migration file
      runs `BEGIN; \\i <file>; INSERT INTO _sqlx_migrations (...); COMMIT;`
      with the checksum sqlx would record (SHA-384 of the file). So the floor
      does the same DDL and the same bookkeeping insert, one transaction per
      migration, but none of sqlx's extras: no advisory lock, no reading of
      the applied list, no follow-up autocommit UPDATE of execution_time, and
      one process per worker instead of one per tenant. (psql sends each
      statement of a file as its own round trip; sqlx sends a file as one
      multi-statement query.) Its databases pass the same check as sqlx's.
   After every timed fresh run (untimed) one psql session checks that every
   tenant has exactly the expected versions with sqlx's checksums.
2. Up-to-date databases (the everyday deploy, nothing pending): all tenants
   are migrated once by tenantctl (not timed), then
   a. `tenantctl tenant migrate --all --concurrency C` (must apply nothing)
   b. `tenantctl tenant status --all --concurrency C` (read-only)
   c. sqlx-cli sequential (must find nothing pending: it reads the
      `_sqlx_migrations` tenantctl wrote, so this also checks compatibility)
   d. sqlx-cli parallel, C at once
   e. connection floor: `pgbench -C -n -c C -j C -t ceil(N/C)` with a script
      of `SELECT 1;` against one tenant database: a new connection (TLS
      negotiated as PGSSLMODE says, as for the others) plus one trivial
      query, C*ceil(N/C) times. Its ms/tenant is per connection made.
3. Peak RSS of tenantctl (max over all its runs), and of the other tools
   per process for comparison. Linux's ru_maxrss for a child includes the
   parent's memory it was spawned from, so see run() for how it is measured.

Every tenantctl run must exit 0 with `summary.ok == N`, `failed == 0`,
`skipped == 0` (and apply all / no migrations as expected); every sqlx-cli,
psql and pgbench run must exit 0, so a broken run is never timed as a fast one.

Ratios: "x floor" is ms/tenant divided by the floor's ms/tenant (psql floor
for fresh, pgbench -C floor for up-to-date; 1.0x = as fast as the floor).
"vs sqlx seq/par" is the sqlx-cli median divided by tenantctl's median
(above 1 = tenantctl is faster). "CPU s" is the user+system time of the
client processes (from wait4; the server's CPU is not included).

Caveat on the floors: pg_virtualenv uses scram-sha-256 password auth, where
the *client* computes 4096 HMAC-SHA-256 rounds per connection. libpq 15
(psql, pgbench) re-keys the HMAC on every round, which with OpenSSL 3 costs
about 5 ms of CPU per connection here, while sqlx keeps one keyed HMAC and
needs about 0.5 ms. So with password auth the libpq floors are not strict
lower bounds for sqlx-based tools, and tenantctl can come in under 1.0x; the
CPU column shows where the difference goes.

The machine this was written on has 2 cores and is shared, so scenarios are
interleaved within each repetition (and the order rotated per repetition) so
that noise spreads over all of them.

4. Several servers (skipped with `--no-servers`): a second PostgreSQL server
   is started for the run (initdb in a temporary directory, pg_ctl on a free
   loopback port, password auth, as the postgres user when root; stopped and
   removed at the end) and named `eu2` through POSTGRES_BASE_URL_EU2.
   a. The same up-to-date `tenantctl tenant migrate --all -c C` over the N
      tenants, all placed on the default server, against N/2 on each server
      (the second half's databases exist, migrated, on both; only the
      master's "dbServer" changes between the two, untimed). The ratio of
      their ms/tenant is what the multi-server machinery costs (or saves).
   b. `tenant move` throughput: a tenant of about `--move-mb` MB (default
      100) moved to eu2 and back (`--drop-source`), each direction timed,
      against `pg_dump -Fc -Z0 | pg_restore --single-transaction` run by
      hand from the same database into an empty one on eu2, interleaved.
      MB/s is the database's size (pg_database_size, 10^6 bytes) over the
      wall time, so the move's bookkeeping, renames and verification count.
      Both servers are checkpointed (untimed) before each scenario, so that
      none pays for the dirty buffers the one before left (a move's DROP
      DATABASE of its source forces a checkpoint there).
      `--move-only` runs only this (`just bench --move-only --n 2`).

5. Drift (`tenant drift --all`, issue 18) against an up-to-date `tenant
   status --all` over the same N migrated tenants, in the same run, `-c C`
   for both, interleaved (the order alternates per round) for D rounds
   (`--drift-reps`, default 5): the issue's target is drift at most about
   2x status. A third scenario, `tenant drift --all --against bench-1`,
   compares with a tenant instead of the scratch database, so the
   difference between the two drift medians is what building the
   reference costs (create, migrate, read, drop the scratch database) and
   the `--against` median over status is the per-tenant catalog read's
   share. Every drift run must exit 0 with all N tenants `match`. With
   `--scale`, the same three are timed at each size; `--drift-only` skips
   sections 1, 2 and 4 (for a quick drift measurement at a large N:
   `just bench --drift-only --n 1000`).

`--scale 100,1000` additionally times the up-to-date `tenantctl tenant
migrate --all` at each size (R reps, median) and prints ms/tenant per size and
the growth ratio last/first (1.0 = linear). Off by default because creating
1000 databases takes a while (`--n 20 --scale 100,1000` took about 4.5
minutes on 2 cores) and about 7.5 MB of disk each.

Output: a table on stdout, progress on stderr, the same numbers as JSON in
bench/out/<timestamp>.json. Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import getpass
import hashlib
import json
import math
import os
import pathlib
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
MASTER_DB = "bench_master"
TENANT_DB_RE = r"^bench_[0-9]+$"
RSS_POLL_SECONDS = 0.002
SQLX_INSTALL = "cargo install sqlx-cli --version 0.8.6 --no-default-features --features postgres,rustls --locked"
# Variables that would change what the tools do behind our back.
SCRUBBED_ENV = ("DATABASE_URL", "TENANT_MIGRATIONS_DIR", "POSTGRES_BASE_URL", "MASTER_DATABASE_URL")
MOVE_DB = "bench_move"
MANUAL_DB = "bench_manual_copy"


# --------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A setup step or a timed run failed; the message is already redacted."""


def db(i: int) -> str:
    return f"bench_{i}"


@dataclasses.dataclass
class Proc:
    """One finished child process."""

    cmd: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float
    maxrss_kib: int
    cpu_seconds: float  # user + system time of the process


@dataclasses.dataclass
class Sample:
    """One timed repetition of a scenario."""

    seconds: float
    maxrss_kib: int  # max over the processes of this repetition
    cpu_seconds: float  # summed over the processes of this repetition (client side only)


@dataclasses.dataclass
class Migration:
    version: int
    description: str
    path: pathlib.Path
    checksum: str  # hex SHA-384 of the file, as sqlx records it


def load_migrations(folder: pathlib.Path) -> list[Migration]:
    out = []
    for path in sorted(folder.glob("*.sql")):
        version, _, rest = path.stem.partition("_")
        if not version.isdigit():
            continue
        if rest.endswith(".up") or rest.endswith(".down"):
            raise SystemExit(f"bench.py: reversible migrations are not supported: {path.name}")
        out.append(
            Migration(int(version), rest.replace("_", " "), path, hashlib.sha384(path.read_bytes()).hexdigest())
        )
    out.sort(key=lambda m: m.version)
    if not out:
        raise SystemExit(f"bench.py: no migrations in {folder}")
    return out


# --------------------------------------------------------------------------
# configuration


@dataclasses.dataclass
class Config:
    n: int
    c: int
    reps: int
    tenantctl: str
    sqlx: str
    psql: str
    pgbench: str
    migrations_dir: pathlib.Path
    migrations: list[Migration]
    scratch: pathlib.Path
    env: dict[str, str]
    admin_db: str
    secrets: list[str]  # strings to redact from anything printed
    url_prefix: str  # postgresql://user:pass@host:port
    url_query: str  # "" or "?host=/socket/dir"

    def url(self, database: str | None = None) -> str:
        path = f"/{database}" if database else ""
        return f"{self.url_prefix}{path}{self.url_query}"

    def redact(self, text: str) -> str:
        for s in self.secrets:
            if s:
                text = text.replace(s, "***")
        return text


def find_tool(name: str, extra: list[pathlib.Path] = ()) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for p in extra:
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def make_config(args: argparse.Namespace) -> Config:
    cargo_home = pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo"))
    sqlx = args.sqlx or find_tool("sqlx", [cargo_home / "bin" / "sqlx"])
    if not sqlx or not os.access(sqlx, os.X_OK):
        raise SystemExit(f"bench.py: sqlx-cli not found; install it with: {SQLX_INSTALL}")
    tenantctl = pathlib.Path(args.tenantctl)
    if not tenantctl.is_absolute():
        tenantctl = ROOT / tenantctl
    if not os.access(tenantctl, os.X_OK):
        raise SystemExit(f"bench.py: {tenantctl} not found; run: cargo build --release")
    psql = find_tool("psql")
    pgbench = find_tool("pgbench", [pathlib.Path("/usr/bin/pgbench")])
    if not psql or not pgbench:
        raise SystemExit("bench.py: psql and pgbench are needed (Debian: apt-get install postgresql-client)")

    user = os.environ.get("PGUSER") or getpass.getuser()
    password = os.environ.get("PGPASSWORD", "")
    host = os.environ.get("PGHOST") or "localhost"
    port = os.environ.get("PGPORT") or "5432"
    enc_user = urllib.parse.quote(user, safe="")
    enc_pass = urllib.parse.quote(password, safe="")
    creds = f"{enc_user}:{enc_pass}@" if password else f"{enc_user}@"
    query = ""
    if host.startswith("/"):  # a Unix socket directory goes in the query
        query = "?host=" + urllib.parse.quote(host, safe="")
        host = "localhost"
    elif ":" in host:  # IPv6 literal
        host = f"[{host}]"
    prefix = f"postgresql://{creds}{host}:{port}"

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED_ENV and not k.startswith("TENANTCTL_") and not k.startswith("POSTGRES_BASE_URL_")
    }
    cfg_url = prefix + query
    env["POSTGRES_BASE_URL"] = cfg_url
    env["MASTER_DATABASE_URL"] = f"{prefix}/{MASTER_DB}{query}"
    env["NO_COLOR"] = "1"

    admin_db = os.environ.get("PGDATABASE") or "postgres"
    if admin_db == MASTER_DB or re.match(TENANT_DB_RE, admin_db):
        admin_db = "postgres"

    migrations_dir = ROOT / "tenant-migrations"
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="tenantctl-bench."))
    return Config(
        n=args.n,
        c=args.concurrency,
        reps=args.reps,
        tenantctl=str(tenantctl),
        sqlx=sqlx,
        psql=psql,
        pgbench=pgbench,
        migrations_dir=migrations_dir,
        migrations=load_migrations(migrations_dir),
        scratch=scratch,
        env=env,
        admin_db=admin_db,
        secrets=sorted({password, enc_pass} - {""}, key=len, reverse=True),
        url_prefix=prefix,
        url_query=query,
    )


# --------------------------------------------------------------------------
# running things


def _poll_hwm(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Sample VmHWM (the process's own peak RSS, KiB) until done is set."""
    path = f"/proc/{pid}/status"
    while not done.is_set():
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except (OSError, ValueError):
            return  # exited (zombie or gone)
        done.wait(RSS_POLL_SECONDS)


def run(cfg: Config, cmd: list[str]) -> Proc:
    """Run cmd to completion (cwd = scratch dir, so no .env is picked up),
    timing its wall clock and measuring its peak RSS.

    Peak RSS: on Linux a child's ru_maxrss (wait4) is at least the peak RSS of
    the memory image it exec'd from, which with vfork/posix_spawn is this
    Python process. So ru_maxrss is exact only when it exceeds our own peak;
    otherwise we use the child's VmHWM sampled every 2 ms (a lower bound that
    can only miss growth in the last 2 ms of its life)."""
    with tempfile.TemporaryFile(dir=cfg.scratch) as out, tempfile.TemporaryFile(dir=cfg.scratch) as err:
        done, peak = threading.Event(), [0]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=cfg.env, cwd=cfg.scratch)
        poller = threading.Thread(target=_poll_hwm, args=(p.pid, done, peak), daemon=True)
        poller.start()  # Popen returns after the exec, so this samples the new image
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        poller.join()
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; keep Popen from waiting again
        # Read after the wait: it only grows, so it covers the moment of the exec even
        # when other threads grew this process in between.
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        maxrss = usage.ru_maxrss if usage.ru_maxrss > parent_peak else peak[0]
        out.seek(0)
        err.seek(0)
        return Proc(
            cmd,
            p.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            seconds,
            maxrss,
            usage.ru_utime + usage.ru_stime,
        )


def run_all(cfg: Config, cmds: list[list[str]], parallel: int) -> tuple[float, list[Proc]]:
    """Run cmds with at most `parallel` at once; returns (wall seconds, procs)."""
    t0 = time.perf_counter()
    if parallel <= 1:
        procs = [run(cfg, c) for c in cmds]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            procs = list(pool.map(lambda c: run(cfg, c), cmds))
    return time.perf_counter() - t0, procs


def check(cfg: Config, proc: Proc, what: str) -> None:
    if proc.rc != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        raise BenchError(cfg.redact(f"{what} failed (exit {proc.rc}): {shlex.join(proc.cmd)}\n{tail}"))


def psql(cfg: Config, sql: str, database: str | None = None) -> str:
    """Untimed admin SQL through one psql session; returns unaligned tuples."""
    path = cfg.scratch / "admin.sql"
    path.write_text("\\set ON_ERROR_STOP on\n" + sql)
    proc = run(cfg, [cfg.psql, "-X", "-q", "-A", "-t", "-d", database or cfg.admin_db, "-f", str(path)])
    check(cfg, proc, "psql")
    return proc.stdout


# --------------------------------------------------------------------------
# databases


def drop_bench_databases(cfg: Config, include_master: bool = False) -> None:
    names = psql(cfg, f"SELECT datname FROM pg_database WHERE datname ~ '{TENANT_DB_RE}' ORDER BY 1;").split()
    if include_master:
        names.append(MASTER_DB)
    if names:
        psql(cfg, "".join(f"DROP DATABASE IF EXISTS {n} WITH (FORCE);\n" for n in names))


def checkpoint(cfg: Config) -> None:
    try:
        psql(cfg, "CHECKPOINT;")
    except BenchError:
        pass  # not allowed for this role: fine, just noisier


def fresh_databases(cfg: Config, n: int) -> None:
    """Exactly bench_1..bench_n, all empty (untimed). FILE_COPY is much faster
    than PG15's default WAL_LOG for many small databases."""
    drop_bench_databases(cfg)
    psql(cfg, "".join(f"CREATE DATABASE {db(i)} STRATEGY = FILE_COPY;\n" for i in range(1, n + 1)))
    checkpoint(cfg)


def setup_master(cfg: Config) -> None:
    psql(cfg, f"DROP DATABASE IF EXISTS {MASTER_DB} WITH (FORCE);")
    check(cfg, run(cfg, [cfg.tenantctl, "master", "migrate", "--quiet"]), "tenantctl master migrate")


def register_tenants(cfg: Config, n: int) -> None:
    psql(
        cfg,
        'DELETE FROM "Company";\n'
        'INSERT INTO "Company" (id, slug, name, "dbName", status, "createdAt", "updatedAt")\n'
        "SELECT 'id'||i, 'bench-'||i, 'Bench '||i, 'bench_'||i, 'active', now(), now()\n"
        f"FROM generate_series(1, {n}) i;\n",
        MASTER_DB,
    )


def verify_migrated(cfg: Config, n: int) -> None:
    """Every tenant has exactly our migrations, successful, with sqlx's checksums."""
    expected = ",".join(f"{m.version}:{m.checksum}" for m in cfg.migrations)
    q = (
        "SELECT current_database() || ' ' || coalesce(string_agg(version || ':' || encode(checksum, 'hex'), ','"
        " ORDER BY version) FILTER (WHERE success), '') || ' ' || count(*) FILTER (WHERE NOT success)"
        " FROM _sqlx_migrations;\n"
    )
    script = "".join(f"\\c {db(i)}\n{q}" for i in range(1, n + 1))
    rows = psql(cfg, script, db(1)).split("\n")
    got = {}
    for row in filter(None, rows):
        name, applied, dirty = row.split(" ")
        got[name] = (applied, dirty)
    for i in range(1, n + 1):
        applied, dirty = got.get(db(i), ("<missing>", "?"))
        if applied != expected or dirty != "0":
            raise BenchError(f"{db(i)}: _sqlx_migrations is not what sqlx would record after migrating")


# --------------------------------------------------------------------------
# scenarios: each runs once and returns a Sample (or raises BenchError)


def tenantctl_json(cfg: Config, proc: Proc, what: str, n: int) -> dict:
    check(cfg, proc, what)
    try:
        report = json.loads(proc.stdout)
        s = report["summary"]
    except (ValueError, KeyError) as e:
        raise BenchError(f"{what}: unreadable JSON on stdout ({e})") from None
    if (s.get("ok"), s.get("failed"), s.get("skipped")) != (n, 0, 0) or report.get("interrupted"):
        raise BenchError(f"{what}: expected ok={n} failed=0 skipped=0, got {s}")
    if len(report.get("tenants", [])) != n:
        raise BenchError(f"{what}: {len(report.get('tenants', []))} tenants in the report, expected {n}")
    return report


def tenantctl_migrate(cfg: Config, n: int, expect_applied: int) -> Sample:
    what = "tenantctl tenant migrate --all"
    proc = run(
        cfg,
        [cfg.tenantctl, "tenant", "migrate", "--all", "--concurrency", str(cfg.c), "--output", "json", "--quiet"],
    )
    report = tenantctl_json(cfg, proc, what, n)
    for t in report["tenants"]:
        if len(t.get("applied") or []) != expect_applied:
            raise BenchError(f"{what}: {t.get('db_name')} applied {t.get('applied')}, expected {expect_applied}")
    return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)


def tenantctl_status(cfg: Config, n: int | None = None) -> Sample:
    n = cfg.n if n is None else n
    what = "tenantctl tenant status --all"
    proc = run(
        cfg,
        [cfg.tenantctl, "tenant", "status", "--all", "--concurrency", str(cfg.c), "--output", "json", "--quiet"],
    )
    report = tenantctl_json(cfg, proc, what, n)
    for t in report["tenants"]:
        if t.get("pending") != 0 or t.get("problems"):
            raise BenchError(f"{what}: {t.get('db_name')} pending={t.get('pending')} problems={t.get('problems')}")
    return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)


def tenantctl_drift(cfg: Config, n: int, against: str | None = None) -> Sample:
    what = "tenantctl tenant drift --all" + (f" --against {against}" if against else "")
    cmd = [cfg.tenantctl, "tenant", "drift", "--all", "--concurrency", str(cfg.c), "--output", "json", "--quiet"]
    proc = run(cfg, cmd + (["--against", against] if against else []))
    report = tenantctl_json(cfg, proc, what, n)
    drift = report.get("drift") or {}
    if (drift.get("matched"), drift.get("differ"), drift.get("pending")) != (n, 0, 0):
        raise BenchError(
            f"{what}: expected {n} matching, got matched={drift.get('matched')} differ={drift.get('differ')}"
            f" pending={drift.get('pending')}"
        )
    return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)


def sqlx_cmd(cfg: Config, i: int) -> list[str]:
    return [cfg.sqlx, "migrate", "run", "--source", str(cfg.migrations_dir), "--database-url", cfg.url(db(i))]


def sqlx_loop(cfg: Config, parallel: int, expect_applied: bool, n: int | None = None) -> Sample:
    n = cfg.n if n is None else n
    seconds, procs = run_all(cfg, [sqlx_cmd(cfg, i) for i in range(1, n + 1)], parallel)
    for p in procs:
        check(cfg, p, "sqlx migrate run")
        applied = p.stdout.count("Applied ")
        if applied != (len(cfg.migrations) if expect_applied else 0):
            raise BenchError(f"sqlx migrate run applied {applied} migrations, expected otherwise")
    return Sample(seconds, max(p.maxrss_kib for p in procs), sum(p.cpu_seconds for p in procs))


def write_psql_floor_scripts(cfg: Config) -> list[tuple[str, pathlib.Path]]:
    """One script per worker: (first database to connect to, script path)."""
    create = (
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,"
        " installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL,"
        " execution_time BIGINT NOT NULL);\n"
    )
    per_tenant = create
    for m in cfg.migrations:
        desc = m.description.replace("'", "''")
        per_tenant += (
            f"BEGIN;\n\\i '{m.path}'\n"
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)"
            f" VALUES ({m.version}, '{desc}', TRUE, '\\x{m.checksum}', 0);\nCOMMIT;\n"
        )
    workers = []
    for w in range(cfg.c):
        tenants = list(range(w + 1, cfg.n + 1, cfg.c))  # round-robin split
        if not tenants:
            continue
        lines = ["\\set ON_ERROR_STOP on\n"]
        for k, i in enumerate(tenants):
            if k:  # the first database is the session's initial connection
                lines.append(f"\\c {db(i)}\n")
            lines.append(per_tenant)
        path = cfg.scratch / f"psql-floor-{w}.sql"
        path.write_text("".join(lines))
        workers.append((db(tenants[0]), path))
    return workers


def psql_floor(cfg: Config, workers: list[tuple[str, pathlib.Path]]) -> Sample:
    cmds = [[cfg.psql, "-X", "-q", "-d", first, "-f", str(path)] for first, path in workers]
    seconds, procs = run_all(cfg, cmds, len(cmds))
    for p in procs:
        check(cfg, p, "psql floor")
    return Sample(seconds, max(p.maxrss_kib for p in procs), sum(p.cpu_seconds for p in procs))


def pgbench_connections(cfg: Config) -> int:
    return cfg.c * math.ceil(cfg.n / cfg.c)


CONNECT_FLOOR = ROOT / "target" / "release" / "examples" / "connect_floor"


def connect_floor(cfg: Config) -> Sample:
    """examples/connect_floor.rs: each tenant database connected to and
    closed, nothing else, through tenantctl's own connector and fleet runner
    at the same concurrency. What `migrate` adds to it is its one query."""
    if not CONNECT_FLOOR.exists():
        raise BenchError("missing target/release/examples/connect_floor: cargo build --release --example connect_floor")
    proc = run(cfg, [str(CONNECT_FLOOR), str(cfg.c)] + [db(i) for i in range(1, cfg.n + 1)])
    check(cfg, proc, "connect_floor")
    return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)


def pgbench_floor(cfg: Config) -> Sample:
    script = cfg.scratch / "select1.sql"
    script.write_text("SELECT 1;\n")
    per_client = math.ceil(cfg.n / cfg.c)
    cmd = [cfg.pgbench, "-C", "-n", "-c", str(cfg.c), "-j", str(cfg.c), "-t", str(per_client), "-f", str(script), db(1)]
    proc = run(cfg, cmd)
    check(cfg, proc, "pgbench")
    m = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    if not m or int(m.group(1)) != pgbench_connections(cfg):
        raise BenchError(f"pgbench did not process {pgbench_connections(cfg)} transactions")
    return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)


# --------------------------------------------------------------------------
# measuring


@dataclasses.dataclass
class Result:
    key: str
    group: str  # "fresh" | "up-to-date"
    label: str
    units: int  # tenants (or connections for the pgbench floor)
    samples: list[Sample] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def ms_per_unit(self) -> float:
        return self.median * 1000 / self.units

    @property
    def cpu_median(self) -> float:
        return statistics.median(s.cpu_seconds for s in self.samples)

    @property
    def maxrss_mib(self) -> float:
        return max(s.maxrss_kib for s in self.samples) / 1024


def interleaved(cfg: Config, scenarios: list[tuple[Result, object, object]]) -> None:
    """R rounds; each round runs every scenario once (order rotated per round),
    calling its untimed `prepare` first."""
    k = len(scenarios)
    for rep in range(cfg.reps):
        order = scenarios[rep % k :] + scenarios[: rep % k]
        for result, prepare, timed in order:
            if prepare:
                prepare()
            log(f"rep {rep + 1}/{cfg.reps}: {result.label} ...")
            sample = timed()
            result.samples.append(sample)
            log(f"rep {rep + 1}/{cfg.reps}: {result.label}: {sample.seconds:.3f} s")


def bench_fresh(cfg: Config) -> list[Result]:
    n, c, k = cfg.n, cfg.c, len(cfg.migrations)
    workers = write_psql_floor_scripts(cfg)
    r_t = Result("fresh.tenantctl_migrate", "fresh", f"tenantctl tenant migrate --all -c{c}", n)
    r_seq = Result("fresh.sqlx_sequential", "fresh", "sqlx migrate run, sequential", n)
    r_par = Result("fresh.sqlx_parallel", "fresh", f"sqlx migrate run, {c} in parallel", n)
    r_floor = Result("fresh.psql_floor", "fresh", f"psql floor, {len(workers)} sessions", n)

    def prepare():
        fresh_databases(cfg, n)

    # Untimed warm-up on a fresh set: the first migration run against a newly
    # started cluster is markedly slower (cold caches), and would otherwise
    # land on whichever scenario happens to go first.
    log("fresh: warm-up run (untimed)")
    prepare()
    tenantctl_migrate(cfg, n, expect_applied=k)
    verify_migrated(cfg, n)

    def verified(fn):
        def go():
            sample = fn()
            verify_migrated(cfg, n)  # untimed
            return sample

        return go

    interleaved(
        cfg,
        [
            (r_t, prepare, verified(lambda: tenantctl_migrate(cfg, n, expect_applied=k))),
            (r_seq, prepare, verified(lambda: sqlx_loop(cfg, 1, expect_applied=True))),
            (r_par, prepare, verified(lambda: sqlx_loop(cfg, c, expect_applied=True))),
            (r_floor, prepare, verified(lambda: psql_floor(cfg, workers))),
        ],
    )
    return [r_t, r_seq, r_par, r_floor]


def bench_up_to_date(cfg: Config) -> list[Result]:
    n, c = cfg.n, cfg.c
    log(f"up-to-date: {n} fresh databases, migrated once by tenantctl (untimed)")
    fresh_databases(cfg, n)
    tenantctl_migrate(cfg, n, expect_applied=len(cfg.migrations))
    verify_migrated(cfg, n)
    checkpoint(cfg)
    per_client = math.ceil(n / c)
    results = [
        Result("uptodate.tenantctl_migrate", "up-to-date", f"tenantctl tenant migrate --all -c{c}", n),
        Result("uptodate.tenantctl_status", "up-to-date", f"tenantctl tenant status --all -c{c}", n),
        Result("uptodate.sqlx_sequential", "up-to-date", "sqlx migrate run, sequential", n),
        Result("uptodate.sqlx_parallel", "up-to-date", f"sqlx migrate run, {c} in parallel", n),
        Result(
            "uptodate.pgbench_floor",
            "up-to-date",
            f"pgbench -C floor, {c}x{per_client} conns",
            pgbench_connections(cfg),
        ),
        Result("uptodate.connect_floor", "up-to-date", f"sqlx connect+close only, {c} at once", n),
    ]
    fns = [
        lambda: tenantctl_migrate(cfg, n, expect_applied=0),
        lambda: tenantctl_status(cfg),
        lambda: sqlx_loop(cfg, 1, expect_applied=False),
        lambda: sqlx_loop(cfg, c, expect_applied=False),
        lambda: pgbench_floor(cfg),
        lambda: connect_floor(cfg),
    ]
    interleaved(cfg, [(r, None, f) for r, f in zip(results, fns)])
    verify_migrated(cfg, n)  # nothing changed
    return results


def bench_drift(cfg: Config, n: int, reps: int) -> list[Result]:
    """Up-to-date status, drift and drift --against over the n tenants
    bench_1..bench_n (registered and migrated), interleaved, `reps` rounds;
    the order alternates per round so neither goes first every time."""
    c = cfg.c
    results = [
        Result(f"drift.{n}.status", "drift", f"tenantctl tenant status --all -c{c}", n),
        Result(f"drift.{n}.drift", "drift", f"tenantctl tenant drift --all -c{c}", n),
        Result(f"drift.{n}.against", "drift", f"tenantctl tenant drift --all -c{c} --against bench-1", n),
    ]
    fns = [
        lambda: tenantctl_status(cfg, n),
        lambda: tenantctl_drift(cfg, n),
        lambda: tenantctl_drift(cfg, n, against="bench-1"),
    ]
    log(f"drift: N={n}, warm-up (untimed)")
    tenantctl_drift(cfg, n)
    for rep in range(reps):
        pairs = list(zip(results, fns))
        for r, fn in pairs if rep % 2 == 0 else pairs[::-1]:
            r.samples.append(fn())
        log(
            f"drift N={n} round {rep + 1}/{reps}: status {results[0].samples[-1].seconds:.3f} s,"
            f" drift {results[1].samples[-1].seconds:.3f} s, --against {results[2].samples[-1].seconds:.3f} s"
        )
    return results


def drift_json(results: list[Result]) -> dict:
    status, drift, against = results
    return {
        "n": status.units,
        "status_median_s": round(status.median, 4),
        "drift_median_s": round(drift.median, 4),
        "against_median_s": round(against.median, 4),
        "status_ms_per_tenant": round(status.ms_per_unit, 3),
        "drift_ms_per_tenant": round(drift.ms_per_unit, 3),
        "against_ms_per_tenant": round(against.ms_per_unit, 3),
        "ratio_drift_over_status": round(drift.median / status.median, 3),
        "ratio_against_over_status": round(against.median / status.median, 3),
        "client_cpu_s": {r.key: round(r.cpu_median, 4) for r in results},
        "peak_rss_mib": {r.key: round(r.maxrss_mib, 1) for r in results},
        "samples_s": {r.key: [round(x.seconds, 4) for x in r.samples] for r in results},
    }


def print_drift(cfg: Config, sets: list[list[Result]], reps: int) -> None:
    print(f"drift against an up-to-date status over the same tenants, -c{cfg.c} (median of {reps}, interleaved):")
    for results in sets:
        status, drift, against = results
        print(f"  N={status.units}")
        for r in results:
            print(
                f"    {r.label:<58} {r.median:8.3f} s  {r.ms_per_unit:7.2f} ms/tenant"
                f"  CPU {r.cpu_median:6.2f} s  RSS {r.maxrss_mib:.1f} MiB"
            )
        print(
            f"    drift over status: {drift.median / status.median:.2f}x (target: at most about 2x);"
            f" --against over status: {against.median / status.median:.2f}x;"
            f" the reference (scratch database) costs {drift.median - against.median:+.3f} s"
        )


def bench_scale(cfg: Config, sizes: list[int], drift_reps: int) -> tuple[list[Result], list[Result], list[list[Result]]]:
    """Up-to-date tenantctl migrate at each size, and as a reference the same
    check by sqlx-cli, C at once: growth both share is the server's (more
    databases to start backends in), growth only tenantctl shows is ours.
    Then drift against status at that size (bench_drift)."""
    results, references, drift_sets = [], [], []
    for size in sizes:
        log(f"scale: {size} tenants, migrated once by tenantctl (untimed)")
        fresh_databases(cfg, size)
        register_tenants(cfg, size)
        tenantctl_migrate(cfg, size, expect_applied=len(cfg.migrations))
        checkpoint(cfg)
        r = Result(f"scale.{size}", "scale", f"up-to-date tenantctl migrate --all -c{cfg.c}, N={size}", size)
        ref = Result(f"scale.sqlx.{size}", "scale", f"up-to-date sqlx migrate run, {cfg.c} in parallel, N={size}", size)
        for rep in range(cfg.reps):
            r.samples.append(tenantctl_migrate(cfg, size, expect_applied=0))
            ref.samples.append(sqlx_loop(cfg, cfg.c, expect_applied=False, n=size))
            log(
                f"scale N={size} rep {rep + 1}/{cfg.reps}: tenantctl {r.samples[-1].seconds:.3f} s,"
                f" sqlx-cli {ref.samples[-1].seconds:.3f} s"
            )
        results.append(r)
        references.append(ref)
        drift_sets.append(bench_drift(cfg, size, drift_reps))
    return results, references, drift_sets


def bench_drift_scale(cfg: Config, sizes: list[int], reps: int) -> list[list[Result]]:
    """bench_drift at each size, on databases made and migrated for it."""
    out = []
    for size in sizes:
        log(f"drift scale: {size} tenants, migrated once by tenantctl (untimed)")
        fresh_databases(cfg, size)
        register_tenants(cfg, size)
        tenantctl_migrate(cfg, size, expect_applied=len(cfg.migrations))
        checkpoint(cfg)
        out.append(bench_drift(cfg, size, reps))
    return out


# --------------------------------------------------------------------------
# several servers


@dataclasses.dataclass
class SecondServer:
    """A PostgreSQL server of the benchmark's own, stopped and removed by stop()."""

    bindir: pathlib.Path
    directory: pathlib.Path
    port: int
    password: str
    as_postgres: bool

    def env(self) -> dict[str, str]:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": "postgres", "PGPASSWORD": self.password}

    def url(self) -> str:
        return f"postgresql://postgres:{urllib.parse.quote(self.password, safe='')}@127.0.0.1:{self.port}"

    def tool(self, name: str, args: list[str]) -> list[str]:
        cmd = [str(self.bindir / name), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_postgres else cmd

    def stop(self) -> None:
        data = self.directory / "data"
        subprocess.run(self.tool("pg_ctl", ["-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_second_server(cfg: Config) -> SecondServer:
    found = sorted(
        pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    bindir = found[-1].parent if found else pathlib.Path(shutil.which("initdb") or "initdb").parent
    as_postgres = os.geteuid() == 0
    directory = pathlib.Path(tempfile.mkdtemp(prefix="tenantctl-bench-pg2."))
    password = hashlib.sha256(os.urandom(16)).hexdigest()[:24]
    (directory / "pw").write_text(password)
    if as_postgres:
        shutil.chown(directory, "postgres", "postgres")
        shutil.chown(directory / "pw", "postgres", "postgres")
    port = free_port()
    server = SecondServer(bindir, directory, port, password, as_postgres)
    data = directory / "data"
    steps = [
        server.tool(
            "initdb",
            ["-D", str(data), "-U", "postgres", "--pwfile", str(directory / "pw"), "--auth=scram-sha-256",
             "--no-sync", "-E", "UTF8", "--locale=C"],
        ),
        server.tool(
            "pg_ctl",
            ["-D", str(data), "-l", str(directory / "log"), "-w", "-t", "60", "-o",
             f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} -c max_connections=200",
             "start"],
        ),
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            server.stop()
            raise BenchError(f"second server: {cmd[0]} failed: {proc.stderr.strip()[-500:]}")
    cfg.secrets.append(password)
    cfg.env["POSTGRES_BASE_URL_EU2"] = server.url()
    return server


def free_port() -> int:
    """A free loopback port (closed again, so the server can take it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def psql_on(cfg: Config, server: SecondServer, sql: str, database: str = "postgres") -> str:
    """Untimed admin SQL on the second server."""
    other = dataclasses.replace(cfg, env={**cfg.env, **server.env()}, admin_db=database)
    return psql(other, sql, database)


def place(cfg: Config, half: int | None) -> None:
    """All tenants on default (None), or those after `half` on eu2."""
    target = "NULL" if half is None else f"CASE WHEN substr(id, 3)::int > {half} THEN 'eu2' END"
    psql(cfg, f'UPDATE "Company" SET "dbServer" = {target};', MASTER_DB)


def tenantctl_migrate_placed(cfg: Config, n: int, on_eu2: int) -> Sample:
    what = "tenantctl tenant migrate --all (two servers)"
    proc = run(
        cfg,
        [cfg.tenantctl, "tenant", "migrate", "--all", "--concurrency", str(cfg.c), "--output", "json", "--quiet"],
    )
    report = tenantctl_json(cfg, proc, what, n)
    placed = sum(1 for t in report["tenants"] if t.get("server") == "eu2")
    if placed != on_eu2 or any(t.get("applied") for t in report["tenants"]):
        raise BenchError(f"{what}: {placed} tenants on eu2 (expected {on_eu2}), or something was applied")
    return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)


def bench_servers(cfg: Config, server: SecondServer) -> list[Result]:
    """Up-to-date migrate --all, all on one server vs split over two. Expects
    bench_1..bench_N migrated on default (bench_up_to_date leaves them so)."""
    n, c = cfg.n, cfg.c
    half = n // 2
    log(f"servers: bench_{half + 1}..bench_{n} created and migrated on eu2 too (untimed)")
    psql_on(cfg, server, "".join(f"DROP DATABASE IF EXISTS {db(i)};\nCREATE DATABASE {db(i)};\n" for i in range(half + 1, n + 1)))
    place(cfg, half)
    check(cfg, run(cfg, [cfg.tenantctl, "tenant", "migrate", "--all", "--quiet", "--concurrency", str(c)]), "migrate on eu2")
    one = Result("servers.one", "servers", f"up-to-date migrate --all -c{c}, {n} on one server", n)
    two = Result("servers.two", "servers", f"up-to-date migrate --all -c{c}, {half}+{n - half} on two servers", n)
    interleaved(
        cfg,
        [
            (one, lambda: place(cfg, None), lambda: tenantctl_migrate_placed(cfg, n, 0)),
            (two, lambda: place(cfg, half), lambda: tenantctl_migrate_placed(cfg, n, n - half)),
        ],
    )
    place(cfg, None)
    psql_on(cfg, server, "".join(f"DROP DATABASE IF EXISTS {db(i)} WITH (FORCE);\n" for i in range(half + 1, n + 1)))
    return [one, two]


def bench_move(cfg: Config, server: SecondServer, megabytes: int) -> tuple[int, list[Result]]:
    """tenant move of a ~megabytes MB tenant to eu2 and back, against pg_dump | pg_restore by hand."""
    rows = megabytes * 2600  # about 380 bytes a row with its index
    log(f"move: a tenant of about {megabytes} MB (untimed)")
    psql(cfg, f"DROP DATABASE IF EXISTS {MOVE_DB} WITH (FORCE);\nCREATE DATABASE {MOVE_DB};")
    psql_on(cfg, server, f"DROP DATABASE IF EXISTS {MOVE_DB} WITH (FORCE);")
    psql(
        cfg,
        "CREATE TABLE big (id bigserial PRIMARY KEY, payload text NOT NULL);\n"
        f"INSERT INTO big (payload) SELECT repeat(md5(g::text), 10) FROM generate_series(1, {rows}) g;\n"
        "VACUUM ANALYZE big;\n",
        MOVE_DB,
    )
    size = int(psql(cfg, f"SELECT pg_database_size('{MOVE_DB}');").strip())
    psql(
        cfg,
        'INSERT INTO "Company" (id, slug, name, "dbName", status, "createdAt", "updatedAt")\n'
        f"VALUES ('move', 'bench-move', 'Bench move', '{MOVE_DB}', 'active', now(), now());\n",
        MASTER_DB,
    )
    checkpoint(cfg)
    there = Result("move.to_eu2", "move", "tenant move --to eu2 (source kept)", 1)
    back = Result("move.to_default", "move", "tenant move --to default (source kept)", 1)
    there_drop = Result("move.to_eu2_finish", "move", "  then tenant move --finish (drops the source on default)", 1)
    back_drop = Result("move.to_default_finish", "move", "  then tenant move --finish (drops the source on eu2)", 1)
    manual = Result("move.pg_dump_restore", "move", "pg_dump -Fc -Z0 | pg_restore by hand", 1)
    # The same by hand, creating its target too, as a move must: the
    # baseline a hand-run move between servers really is.
    manual_create = Result("move.createdb_pg_dump_restore", "move", "createdb, then pg_dump | pg_restore by hand", 1)
    pipe = (
        f'pg_dump -Fc -Z0 -d {MOVE_DB} | PGHOST=127.0.0.1 PGPORT="$EU2_PORT" PGUSER=postgres PGPASSWORD="$EU2_PASSWORD" '
        f"pg_restore --exit-on-error --single-transaction --no-owner -d {MANUAL_DB}\n"
    )
    script = cfg.scratch / "manual-copy.sh"
    script.write_text("set -euo pipefail\n" + pipe)
    # Back: from eu2 (where the tenant is after its move there) to default.
    manual_back = Result("move.pg_dump_restore_back", "move", "pg_dump -Fc -Z0 | pg_restore by hand, eu2 to default", 1)
    script_back = cfg.scratch / "manual-copy-back.sh"
    script_back.write_text(
        "set -euo pipefail\n"
        f'PGHOST=127.0.0.1 PGPORT="$EU2_PORT" PGUSER=postgres PGPASSWORD="$EU2_PASSWORD" pg_dump -Fc -Z0 -d {MOVE_DB} | '
        f"pg_restore --exit-on-error --single-transaction --no-owner -d {MANUAL_DB}\n"
    )
    script_create = cfg.scratch / "manual-createdb-copy.sh"
    script_create.write_text(
        "set -euo pipefail\n"
        f'PGHOST=127.0.0.1 PGPORT="$EU2_PORT" PGUSER=postgres PGPASSWORD="$EU2_PASSWORD" '
        f"psql -XAtq -d postgres -c 'CREATE DATABASE {MANUAL_DB} TEMPLATE template0'\n" + pipe
    )
    manual_cfg = dataclasses.replace(
        cfg, env={**cfg.env, "EU2_PORT": str(server.port), "EU2_PASSWORD": server.password}
    )

    def move(to: str) -> Sample:
        proc = run(cfg, [cfg.tenantctl, "tenant", "move", "bench-move", "--to", to, "--output", "json", "--quiet"])
        check(cfg, proc, f"tenant move --to {to}")
        report = json.loads(proc.stdout)
        if report.get("to") != to or report.get("source_dropped") or not report.get("source_kept_as"):
            raise BenchError(f"tenant move --to {to}: unexpected report {report}")
        log(f"  tenant move --to {to}: step_ms {report.get('step_ms')}")
        return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)

    def finish(to: str) -> Sample:
        proc = run(cfg, [cfg.tenantctl, "tenant", "move", "bench-move", "--finish", "--output", "json", "--quiet"])
        check(cfg, proc, "tenant move --finish")
        report = json.loads(proc.stdout)
        if report.get("to") != to or not report.get("source_dropped"):
            raise BenchError(f"tenant move --finish: unexpected report {report}")
        return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)

    def fresh_manual() -> None:
        psql_on(cfg, server, f"DROP DATABASE IF EXISTS {MANUAL_DB} WITH (FORCE);\nCREATE DATABASE {MANUAL_DB} TEMPLATE template0;")

    def by_hand() -> Sample:
        proc = run(manual_cfg, ["bash", str(script)])
        check(cfg, proc, "pg_dump | pg_restore")
        return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)

    def fresh_manual_back() -> None:
        psql(cfg, f"DROP DATABASE IF EXISTS {MANUAL_DB} WITH (FORCE);\nCREATE DATABASE {MANUAL_DB} TEMPLATE template0;")

    def by_hand_back() -> Sample:
        proc = run(manual_cfg, ["bash", str(script_back)])
        check(cfg, proc, "pg_dump | pg_restore, eu2 to default")
        psql(cfg, f"DROP DATABASE IF EXISTS {MANUAL_DB} WITH (FORCE);")
        return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)

    def no_manual() -> None:
        psql_on(cfg, server, f"DROP DATABASE IF EXISTS {MANUAL_DB} WITH (FORCE);")

    def by_hand_with_create() -> Sample:
        proc = run(manual_cfg, ["bash", str(script_create)])
        check(cfg, proc, "createdb, pg_dump | pg_restore")
        return Sample(proc.seconds, proc.maxrss_kib, proc.cpu_seconds)

    def settle() -> None:
        # Both servers write their dirty buffers out (untimed) before each
        # scenario, so none pays for the writes of the one before: a move's
        # DROP DATABASE forces a checkpoint on its source server, which
        # would otherwise also write out the previous scenario's copy.
        checkpoint(cfg)
        psql_on(cfg, server, "CHECKPOINT;")

    # The tenant must be on default before each round: "there" then "back".
    for rep in range(cfg.reps):
        for result, prepare, timed in (
            (manual, fresh_manual, by_hand),
            (manual_create, no_manual, by_hand_with_create),
            (there, None, lambda: move("eu2")),
            (there_drop, None, lambda: finish("eu2")),
            (manual_back, fresh_manual_back, by_hand_back),
            (back, None, lambda: move("default")),
            (back_drop, None, lambda: finish("default")),
        ):
            if prepare:
                prepare()
            # Not between a move and its --finish: the drop's checkpoint
            # writes out what the move left, as --drop-source would.
            if result is not there_drop and result is not back_drop:
                settle()
            log(f"rep {rep + 1}/{cfg.reps}: {result.label} ...")
            result.samples.append(timed())
            log(f"rep {rep + 1}/{cfg.reps}: {result.label}: {result.samples[-1].seconds:.3f} s")
    psql_on(cfg, server, f"DROP DATABASE IF EXISTS {MANUAL_DB} WITH (FORCE);")
    psql(cfg, f"DELETE FROM \"Company\" WHERE id = 'move';\nDELETE FROM tenantctl.moves WHERE company_id = 'move';", MASTER_DB)
    psql(cfg, f"DROP DATABASE IF EXISTS {MOVE_DB} WITH (FORCE);")
    whole = []
    for moved, dropped, key, label in (
        (there, there_drop, "move.to_eu2_and_finish", "tenant move --to eu2, then --finish"),
        (back, back_drop, "move.to_default_and_finish", "tenant move --to default, then --finish"),
    ):
        both = Result(key, "move", label, 1)
        both.samples = [
            Sample(a.seconds + b.seconds, max(a.maxrss_kib, b.maxrss_kib), a.cpu_seconds + b.cpu_seconds)
            for a, b in zip(moved.samples, dropped.samples)
        ]
        whole.append(both)
    return size, [manual, manual_back, manual_create, there, there_drop, back, back_drop, *whole]


# --------------------------------------------------------------------------
# reporting


def tool_version(cfg: Config, cmd: list[str]) -> str:
    try:
        p = run(cfg, cmd)
        return (p.stdout.strip() or p.stderr.strip()).splitlines()[0] if p.rc == 0 else f"? (exit {p.rc})"
    except (OSError, IndexError):
        return "?"


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def summarize(fresh: list[Result], upd: list[Result]) -> list[dict]:
    """Rows with the ratios filled in, for the table and the JSON."""
    rows = []
    for group in (fresh, upd):
        by_key = {r.key.split(".", 1)[1]: r for r in group}
        floor = by_key.get("psql_floor") or by_key.get("pgbench_floor")
        seq, par = by_key["sqlx_sequential"], by_key["sqlx_parallel"]
        for r in group:
            is_tenantctl = r.key.split(".", 1)[1].startswith("tenantctl")
            rows.append(
                {
                    "key": r.key,
                    "group": r.group,
                    "scenario": r.label,
                    "samples_s": [round(s.seconds, 4) for s in r.samples],
                    "median_s": round(r.median, 4),
                    "ms_per_tenant": round(r.ms_per_unit, 3),
                    "units": r.units,
                    "vs_floor": round(r.ms_per_unit / floor.ms_per_unit, 3),
                    "floor": floor.key,
                    "speedup_vs_sqlx_sequential": round(seq.median / r.median, 3) if is_tenantctl else None,
                    "speedup_vs_sqlx_parallel": round(par.median / r.median, 3) if is_tenantctl else None,
                    "peak_rss_mib": round(r.maxrss_mib, 1),
                    "client_cpu_s": round(r.cpu_median, 4),
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    head = ["scenario", "median s", "min-max s", "ms/tenant", "x floor", "vs sqlx seq", "vs sqlx par", "RSS MiB", "CPU s"]
    body = []
    group = None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            body.append([f"-- {group} --"] + [""] * (len(head) - 1))
        body.append(
            [
                "  " + r["scenario"],
                f"{r['median_s']:.3f}",
                f"{min(r['samples_s']):.3f}-{max(r['samples_s']):.3f}",
                f"{r['ms_per_tenant']:.2f}",
                fmt_ratio(r["vs_floor"]),
                fmt_ratio(r["speedup_vs_sqlx_sequential"]),
                fmt_ratio(r["speedup_vs_sqlx_parallel"]),
                f"{r['peak_rss_mib']:.1f}",
                f"{r['client_cpu_s']:.2f}",
            ]
        )
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    print(line(head))
    print(line(["-" * w for w in widths]))
    for row in body:
        print(line(row))


# --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark tenantctl against sqlx-cli, psql and pgbench (run inside pg_virtualenv -t).",
        epilog="See the docstring at the top of this file for what is measured.",
    )
    ap.add_argument("--n", type=int, default=100, help="tenants (default 100)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per scenario; medians are reported (default 3)")
    ap.add_argument("--concurrency", "-c", type=int, default=4, help="tenants in flight for every tool (default 4)")
    ap.add_argument(
        "--scale",
        default="",
        help="comma-separated sizes, e.g. 100,1000: also time up-to-date tenantctl migrate at each (default off)",
    )
    ap.add_argument(
        "--drift-reps", type=int, default=5, help="interleaved rounds of status/drift (default 5)"
    )
    ap.add_argument(
        "--drift-only",
        action="store_true",
        help="only the drift section (at --n, and at each --scale size): no fresh, up-to-date, servers",
    )
    ap.add_argument("--tenantctl", default="target/release/tenantctl", help="binary (default target/release/tenantctl)")
    ap.add_argument("--sqlx", default=None, help="sqlx-cli binary (default: sqlx on PATH or ~/.cargo/bin/sqlx)")
    ap.add_argument("--no-servers", action="store_true", help="skip the second server (split migrate, tenant move)")
    ap.add_argument("--move-mb", type=int, default=100, help="size of the moved tenant in MB (default 100)")
    ap.add_argument(
        "--move-only",
        action="store_true",
        help="only the tenant move section (second server, --move-mb): no fresh, up-to-date, split migrate, drift",
    )
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "out"), help="where the JSON goes (default bench/out)")
    args = ap.parse_args(argv)
    if args.move_only and (args.no_servers or args.drift_only):
        ap.error("--move-only needs the second server; it excludes --no-servers and --drift-only")
    if args.n < 1 or args.reps < 1 or args.concurrency < 1 or args.drift_reps < 1:
        ap.error("--n, --reps, --drift-reps and --concurrency must be at least 1")
    try:
        args.scale_sizes = [int(s) for s in args.scale.split(",") if s.strip()]
    except ValueError:
        ap.error("--scale takes comma-separated integers, e.g. 100,1000")
    if any(s < 1 for s in args.scale_sizes) or len(args.scale_sizes) == 1:
        ap.error("--scale takes at least two positive sizes, e.g. 100,1000")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    cfg = make_config(args)
    if "PG_CLUSTER_CONF_ROOT" not in os.environ:
        log("warning: not inside pg_virtualenv; databases bench_master and bench_<i> on this server will be dropped")
    command_line = shlex.join(["python3", *sys.argv])
    try:
        pg_version = psql(cfg, "SHOW server_version;").strip()
        settings = dict(
            line.split("|", 1)
            for line in psql(
                cfg, "SELECT name, setting FROM pg_settings WHERE name IN ('ssl', 'fsync', 'max_connections');"
            ).split()
        )
        sqlx_version = tool_version(cfg, [cfg.sqlx, "--version"])  # also warms the page cache
        tenantctl_version = tool_version(cfg, [cfg.tenantctl, "--version"])
        pgbench_version = tool_version(cfg, [cfg.pgbench, "--version"])
        log(f"N={cfg.n} C={cfg.c} R={cfg.reps}; PostgreSQL {pg_version}; {sqlx_version}; {tenantctl_version}")

        drop_bench_databases(cfg, include_master=True)
        setup_master(cfg)
        register_tenants(cfg, cfg.n)

        fresh, upd, servers, moves, move_size, scale, scale_ref = [], [], [], [], 0, [], []
        drift_sets = []
        if args.move_only:
            second = start_second_server(cfg)
            try:
                move_size, moves = bench_move(cfg, second, args.move_mb)
            finally:
                second.stop()
        elif args.drift_only:
            sizes = list(dict.fromkeys([cfg.n, *args.scale_sizes]))
            drift_sets = bench_drift_scale(cfg, sizes, args.drift_reps)
        else:
            fresh = bench_fresh(cfg)
            upd = bench_up_to_date(cfg)
            # Right after up-to-date: the n tenants are migrated and all on
            # the default server (the servers section moves them about).
            drift_sets = [bench_drift(cfg, cfg.n, args.drift_reps)]
            if not args.no_servers:
                second = start_second_server(cfg)
                try:
                    servers = bench_servers(cfg, second)
                    move_size, moves = bench_move(cfg, second, args.move_mb)
                finally:
                    second.stop()
            if args.scale_sizes:
                scale, scale_ref, more = bench_scale(cfg, args.scale_sizes, args.drift_reps)
                drift_sets += [d for d in more if d[0].units != cfg.n]
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        try:
            log("cleaning up the benchmark databases")
            drop_bench_databases(cfg, include_master=True)
            psql(cfg, f"DROP DATABASE IF EXISTS {MOVE_DB} WITH (FORCE);")
        except BenchError as e:
            log(f"cleanup failed: {e}")
        shutil.rmtree(cfg.scratch, ignore_errors=True)

    rows = summarize(fresh, upd) if fresh else []
    drift_results = [r for d in drift_sets for r in d]
    tenantctl_rss = max(
        (r.maxrss_mib for r in fresh + upd + scale + drift_results if "tenantctl" in r.key or r.group in ("scale", "drift")),
        default=0.0,
    )
    elapsed = time.perf_counter() - started

    print(f"command:    {command_line}")
    print(f"N={cfg.n} tenants, C={cfg.c} concurrency, R={cfg.reps} reps (median shown), {len(cfg.migrations)} migrations")
    print(
        f"PostgreSQL {pg_version} (ssl={settings.get('ssl')}, fsync={settings.get('fsync')});"
        f" {sqlx_version}; {tenantctl_version} (git {git_describe()}); {pgbench_version}; {os.cpu_count()} CPUs"
    )
    print()
    if rows:
        print_table(rows)
        print()
    if rows:
        print("x floor: ms/tenant over the floor's (fresh: psql floor; up-to-date: pgbench -C floor, per connection).")
        print("vs sqlx: sqlx-cli median / tenantctl median in the same section (>1 = tenantctl faster).")
        print("RSS MiB: peak resident set of one process (max over reps); CPU s: user+sys of the client processes.")
    print(f"tenantctl peak RSS: {tenantctl_rss:.1f} MiB (max over all its runs)")
    by_key = {r.key: r for r in upd}
    if "uptodate.connect_floor" in by_key:
        conn_floor = by_key["uptodate.connect_floor"]
        migrate = by_key["uptodate.tenantctl_migrate"]
        print(
            f"up-to-date tenantctl migrate over the in-process connect+close floor: "
            f"{migrate.ms_per_unit / conn_floor.ms_per_unit:.2f}x "
            f"({migrate.ms_per_unit:.2f} vs {conn_floor.ms_per_unit:.2f} ms/tenant)"
        )
    servers_json = None
    if servers:
        one, two = servers
        ratio = two.ms_per_unit / one.ms_per_unit
        print()
        print(f"several servers, up-to-date tenantctl tenant migrate --all -c{cfg.c} (median of {cfg.reps}):")
        for r in servers:
            print(f"  {r.label:<60} {r.median:8.3f} s  {r.ms_per_unit:7.2f} ms/tenant")
        print(f"  two servers over one: {ratio:.2f}x per tenant (target: within 1.10x)")
        servers_json = {
            "one_server_ms_per_tenant": round(one.ms_per_unit, 3),
            "two_servers_ms_per_tenant": round(two.ms_per_unit, 3),
            "ratio": round(ratio, 3),
            "samples_s": {r.key: [round(x.seconds, 4) for x in r.samples] for r in servers},
        }
    move_json = None
    if moves:
        print()
        print(f"tenant move of a {move_size / 1e6:.1f} MB tenant (median of {cfg.reps}):")
        rates = {}
        for r in moves:
            rates[r.key] = move_size / 1e6 / r.median
            print(f"  {r.label:<60} {r.median:8.3f} s  {rates[r.key]:7.1f} MB/s")
        manual = rates["move.pg_dump_restore"]
        print(
            f"  tenant move over pg_dump | pg_restore by hand: "
            f"{rates['move.to_eu2'] / manual:.2f}x and {rates['move.to_default'] / manual:.2f}x the throughput "
            f"(target: at least 0.90x)"
        )
        manual_back_rate = rates["move.pg_dump_restore_back"]
        print(
            f"  each direction over the hand pipe in the same direction: "
            f"{rates['move.to_eu2'] / manual:.2f}x and {rates['move.to_default'] / manual_back_rate:.2f}x"
        )
        created = rates["move.createdb_pg_dump_restore"]
        print(
            f"  over the hand pipe that creates its target too (createdb, as a move must): "
            f"{rates['move.to_eu2'] / created:.2f}x and {rates['move.to_default'] / created:.2f}x"
        )
        print(
            f"  with the source dropped too (--finish, as --drop-source): "
            f"{rates['move.to_eu2_and_finish'] / manual:.2f}x and {rates['move.to_default_and_finish'] / manual:.2f}x"
        )
        move_json = {
            "size_bytes": move_size,
            "mb_per_s": {k: round(v, 2) for k, v in rates.items()},
            "samples_s": {r.key: [round(x.seconds, 4) for x in r.samples] for r in moves},
        }
    scale_json = None
    if scale:
        print()
        print(f"scale, up-to-date tenantctl tenant migrate --all -c{cfg.c} (median of {cfg.reps}):")
        for r, ref in zip(scale, scale_ref):
            print(
                f"  N={r.units:<6} {r.median:8.3f} s  {r.ms_per_unit:7.2f} ms/tenant"
                f"  client CPU {r.cpu_median * 1000 / r.units:5.2f} ms/tenant  RSS {r.maxrss_mib:.1f} MiB"
                f"   (sqlx-cli x{cfg.c}: {ref.ms_per_unit:7.2f} ms/tenant)"
            )
        growth = scale[-1].ms_per_unit / scale[0].ms_per_unit
        ref_growth = scale_ref[-1].ms_per_unit / scale_ref[0].ms_per_unit
        print(f"  growth of ms/tenant N={scale[0].units} -> N={scale[-1].units}: {growth:.2f}x (1.00x = linear)")
        print(f"  same growth for sqlx-cli x{cfg.c} (the server's share): {ref_growth:.2f}x")
        scale_json = {
            "sizes": [
                {
                    "n": r.units,
                    "samples_s": [round(s.seconds, 4) for s in r.samples],
                    "median_s": round(r.median, 4),
                    "ms_per_tenant": round(r.ms_per_unit, 3),
                    "client_cpu_ms_per_tenant": round(r.cpu_median * 1000 / r.units, 3),
                    "peak_rss_mib": round(r.maxrss_mib, 1),
                }
                for r in scale
            ],
            "growth_ms_per_tenant": round(growth, 3),
            "sqlx_parallel_ms_per_tenant": [round(r.ms_per_unit, 3) for r in scale_ref],
            "sqlx_parallel_growth": round(ref_growth, 3),
        }
    if drift_sets:
        print()
        print_drift(cfg, drift_sets, args.drift_reps)
    print(f"\ntotal wall time: {elapsed:.1f} s")

    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "timestamp": stamp.isoformat(timespec="seconds"),
                "command": command_line,
                "n": cfg.n,
                "concurrency": cfg.c,
                "reps": cfg.reps,
                "migrations": len(cfg.migrations),
                "postgres_version": pg_version,
                "postgres_settings": settings,
                "sqlx_cli_version": sqlx_version,
                "tenantctl_version": tenantctl_version,
                "pgbench_version": pgbench_version,
                "git": git_describe(),
                "cpus": os.cpu_count(),
                "scenarios": rows,
                "tenantctl_peak_rss_mib": round(tenantctl_rss, 1),
                "scale": scale_json,
                "servers": servers_json,
                "move": move_json,
                "drift": [drift_json(d) for d in drift_sets],
                "total_wall_s": round(elapsed, 1),
            },
            indent=2,
        )
        + "\n"
    )
    log(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
