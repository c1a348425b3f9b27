#!/usr/bin/env bash
# A/B: up-to-date `tenant migrate --all` and `tenant status --all` over 100
# tenants, this build (NEW) against another binary (OLD), interleaved, 9
# rounds, medians. Run inside a throwaway cluster: `just bench-ab PATH_TO_OLD_BINARY`.
set -euo pipefail
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
export POSTGRES_BASE_URL="postgresql://$(enc "${PGUSER:-postgres}"):$(enc "${PGPASSWORD:-}")@${PGHOST:-localhost}:${PGPORT:-5432}"
NEW=${NEW:-target/release/tenantctl}
OLD=${OLD:?set OLD to the tenantctl binary to compare with}
$NEW master migrate >/dev/null
for i in $(seq 1 100); do $NEW tenant create "t$i" --output json >/dev/null; done
python3 - "$NEW" "$OLD" <<'PY'
import subprocess, sys, time, statistics
new, old = sys.argv[1], sys.argv[2]
res = {}
for rep in range(9):
    for name, b in (("new", new), ("old", old)):
        for cmd in (["tenant","migrate","--all","--output","json"], ["tenant","status","--all","--output","json"]):
            t = time.perf_counter()
            p = subprocess.run([b] + cmd, capture_output=True)
            dt = time.perf_counter() - t
            assert p.returncode == 0, p.stderr
            res.setdefault((name, cmd[1]), []).append(dt)
for k, v in sorted(res.items()):
    print(f"{k[0]} {k[1]:8s} median {statistics.median(v)*1000:7.1f} ms  min {min(v)*1000:7.1f}  max {max(v)*1000:7.1f}")
for c in ("migrate", "status"):
    print(f"{c}: new/old median ratio {statistics.median(res[('new',c)])/statistics.median(res[('old',c)]):.3f}")
PY
