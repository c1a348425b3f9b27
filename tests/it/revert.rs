//! Reversible migrations: `migrate --to`, `revert --to`, `revert --run`,
//! the run records behind it, and what sqlx-cli makes of the result.
//!
//! The fixture `reversible` mixes a plain migration (1) with reversible
//! pairs (2-5): an enum type and a table, a column and a function, a
//! trigger, and a `-- no-transaction` pair of concurrent indexes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::support::{Gate, Run, TestEnv, find, wait_with_deadline};

const V1: i64 = 20_250_101_000_001;
const V2: i64 = 20_250_101_000_002;
const V3: i64 = 20_250_101_000_003;
const V4: i64 = 20_250_101_000_004;
const V5: i64 = 20_250_101_000_005;

/// A copy of the fixture with only the migrations up to `upto`.
fn folder(env: &TestEnv, name: &str, upto: i64) -> PathBuf {
    env.reversible_upto(name, upto)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `pg_dump --schema-only` of a tenant database, `_sqlx_migrations`'
/// rows not included (it is a schema dump).
fn schema(env: &TestEnv, db: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--dbname", &env.db_url(db)])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_dump 15.14 and later fence the script with `\restrict KEY`, a
    // random key per dump.
    String::from_utf8(out.stdout)
        .expect("utf-8 dump")
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `tenant revert` with the migrations in `dir`, JSON output unless the
/// arguments choose another.
fn revert(env: &TestEnv, dir: &Path, args: &[&str]) -> Run {
    tenantctl(env, "revert", dir, args)
}

/// `tenant migrate`, as [`revert`].
fn migrate(env: &TestEnv, dir: &Path, args: &[&str]) -> Run {
    tenantctl(env, "migrate", dir, args)
}

fn tenantctl(env: &TestEnv, command: &str, dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["tenant", command, "--tenant-migrations", s(dir)];
    all.extend_from_slice(args);
    if !args.contains(&"--output") {
        all.extend(["--output", "json"]);
    }
    env.run(&all)
}

/// What run `id` recorded for the tenant with this database:
/// (before, after, versions, status).
fn recorded(
    env: &TestEnv,
    id: &serde_json::Value,
    db: &str,
) -> (serde_json::Value, serde_json::Value, Vec<i64>, String) {
    let id = id.as_i64().expect("run id").to_string();
    let record = env
        .run(&["tenant", "runs", &id, "--output", "json"])
        .ok()
        .json();
    let tenant = record["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["db_name"] == db)
        .unwrap_or_else(|| panic!("{db} not in run {id}: {record}"))
        .clone();
    (
        tenant["before"].clone(),
        tenant["after"].clone(),
        versions(&tenant["versions"]),
        tenant["status"].as_str().expect("status").to_owned(),
    )
}

fn versions(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_i64().expect("version"))
        .collect()
}

#[test]
fn up_then_down_leaves_the_schema_exactly_as_before() {
    let env = TestEnv::new();
    let old = folder(&env, "old", V1);
    let full = folder(&env, "full", V5);
    env.tenants_with(&old, &["a", "b"]);
    // b starts one reversible step further, to go back to a middle version.
    migrate(&env, &full, &[&env.slug("b"), "--to", &V2.to_string()]).ok();
    let before_a = schema(&env, &env.db("a"));
    let before_b = schema(&env, &env.db("b"));
    assert!(before_b.contains("tag_kind") && !before_a.contains("tag_kind"));

    migrate(&env, &full, &["--all"]).ok();
    assert_eq!(env.applied(&env.db("a")), [V1, V2, V3, V4, V5]);
    assert!(schema(&env, &env.db("a")).contains("items_audit"));

    // a back to the plain migration, b to a reversible one in the middle.
    for (name, to, reverted) in [("a", V1, vec![V5, V4, V3, V2]), ("b", V2, vec![V5, V4, V3])] {
        let slug = env.slug(name);
        let report = revert(&env, &full, &[&slug, "--to", &to.to_string(), "--yes"])
            .ok()
            .json();
        assert_eq!(
            versions(&find(&report, &slug)["reverted"]),
            reverted,
            "{name}"
        );
    }

    assert_eq!(schema(&env, &env.db("a")), before_a);
    assert_eq!(schema(&env, &env.db("b")), before_b);
    // VERSION itself stays applied.
    assert_eq!(env.applied(&env.db("a")), [V1]);
    assert_eq!(env.applied(&env.db("b")), [V1, V2]);
}

#[test]
fn migrate_to_and_revert_to_go_both_ways_and_stop_where_told() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V1);
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&base, &["a", "b", "c"]);

    // Up, no further than --to.
    let dry = migrate(
        &env,
        &full,
        &["--all", "--to", &V3.to_string(), "--dry-run"],
    )
    .ok()
    .json();
    assert_eq!(versions(&find(&dry, &slugs[0])["pending"]), [V2, V3]);
    assert_eq!(env.applied(&env.db("a")), [V1], "dry run applied nothing");
    let up = migrate(&env, &full, &["--all", "--to", &V3.to_string()])
        .ok()
        .json();
    for slug in &slugs {
        assert_eq!(versions(&find(&up, slug)["applied"]), [V2, V3]);
    }
    assert!(up["run_id"].as_i64().is_some(), "{up}");
    // Already past a lower target: nothing to do, and nothing reverted.
    let lower = migrate(&env, &full, &["--all", "--to", &V2.to_string()])
        .ok()
        .json();
    assert_eq!(
        versions(&find(&lower, &slugs[0])["applied"]),
        Vec::<i64>::new()
    );
    assert_eq!(env.applied(&env.db("a")), [V1, V2, V3]);
    migrate(&env, &full, &[&slugs[2], "--to", &V5.to_string()]).ok();

    // An unknown version is a usage error that touches nothing.
    let dir = s(&full);
    env.expect(&[
        "tenant",
        "migrate",
        "--tenant-migrations",
        dir,
        "--all",
        "--to",
        "20250101000009",
    ])
    .stderr(
        "error: --to 20250101000009: no migration has that version in {workdir}/full (the newest is \
         20250101000005); see \
         `tenantctl tenant status` for what each tenant has\n",
    )
    .status(2)
    .run();
    env.expect(&[
        "tenant",
        "revert",
        "--tenant-migrations",
        dir,
        "--all",
        "--to",
        "2025",
        "--yes",
    ])
    .stderr(
        "error: --to 2025: no migration has that version in {workdir}/full (the newest is \
         20250101000005); see \
         `tenantctl tenant status` for what each tenant has\n",
    )
    .status(2)
    .run();
    assert_eq!(env.applied(&env.db("c")), [V1, V2, V3, V4, V5]);

    // Down: the plan first, per tenant; nothing changes.
    let plan = revert(
        &env,
        &full,
        &["--all", "--to", &V2.to_string(), "--dry-run"],
    )
    .ok()
    .json();
    assert_eq!(versions(&find(&plan, &slugs[0])["to_revert"]), [V3]);
    assert_eq!(versions(&find(&plan, &slugs[2])["to_revert"]), [V5, V4, V3]);
    assert_eq!(env.applied(&env.db("c")), [V1, V2, V3, V4, V5]);

    // Without a terminal, only --yes goes ahead.
    env.expect(&[
        "tenant",
        "revert",
        "--tenant-migrations",
        dir,
        "--all",
        "--to",
        &V2.to_string(),
    ])
    .stderr(
        "error: refusing to revert 3 tenant(s), running the down scripts of 20250101000005, \
         20250101000004, 20250101000003 (newest first) without confirmation: no terminal to ask \
         on; pass --yes\n",
    )
    .status(2)
    .run();
    assert_eq!(env.applied(&env.db("c")), [V1, V2, V3, V4, V5]);

    let down = revert(&env, &full, &["--all", "--to", &V2.to_string(), "--yes"])
        .ok()
        .json();
    assert_eq!(versions(&find(&down, &slugs[0])["reverted"]), [V3]);
    assert_eq!(versions(&find(&down, &slugs[2])["reverted"]), [V5, V4, V3]);
    assert_eq!(down["summary"], json!({"ok": 3, "failed": 0, "skipped": 0}));
    for name in ["a", "b", "c"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
    // At the target already: ok, nothing to do.
    let again = revert(&env, &full, &["--all", "--to", &V2.to_string()])
        .ok()
        .json();
    assert_eq!(
        versions(&find(&again, &slugs[1])["reverted"]),
        Vec::<i64>::new()
    );

    // --to 0 reverts every reversible migration, stopping at the plain one.
    // In jsonl, one line per tenant (its revert, not its plan), then the
    // summary.
    let zero = revert(
        &env,
        &full,
        &["--all", "--to", "0", "--yes", "--output", "jsonl"],
    )
    .ok();
    let lines: Vec<serde_json::Value> = zero
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "{}", zero.stdout);
    for slug in &slugs {
        let line = lines
            .iter()
            .find(|l| l["slug"] == slug.as_str())
            .unwrap_or_else(|| panic!("no line for {slug}: {}", zero.stdout));
        assert_eq!(versions(&line["reverted"]), [V2]);
        assert!(line.get("to_revert").is_none(), "{line}");
    }
    assert_eq!(lines[3]["summary"]["ok"], 3, "{}", zero.stdout);
    for name in ["a", "b", "c"] {
        assert_eq!(env.applied(&env.db(name)), [V1], "{name}");
    }
    // And back up past the no-transaction pair.
    migrate(&env, &full, &["--all"]).ok();
    assert_eq!(
        env.query(
            &env.db("b"),
            "SELECT coalesce(to_regclass('tags_kind')::text, '')"
        ),
        ["tags_kind"]
    );
}

#[test]
fn a_refused_revert_changes_nothing_on_any_tenant() {
    let env = TestEnv::new();
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&full, &["dirty", "edited", "unknown", "fine"]);
    env.exec(
        &env.db("dirty"),
        &format!("UPDATE _sqlx_migrations SET success = false WHERE version = {V4}"),
    );
    env.exec(
        &env.db("edited"),
        &format!("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = {V3}"),
    );
    env.exec(
        &env.db("unknown"),
        "INSERT INTO _sqlx_migrations VALUES (20250101000042, 'elsewhere', now(), true, '\\x00', 0)",
    );
    let snapshot = |name: &str| (env.applied(&env.db(name)), schema(&env, &env.db(name)));
    let before: Vec<_> = ["dirty", "edited", "unknown", "fine"]
        .iter()
        .map(|n| snapshot(n))
        .collect();

    let run = revert(&env, &full, &["--all", "--to", &V2.to_string(), "--yes"]).code(2);
    let line_for = |slug: &str| -> String {
        run.stderr
            .lines()
            .find(|l| l.contains(slug) && l.starts_with("failed"))
            .unwrap_or_else(|| panic!("no line for {slug}: {}", run.stderr))
            .to_owned()
    };
    let dirty = line_for(&slugs[0]);
    assert!(
        dirty.contains(&V4.to_string()) && dirty.contains("dirty"),
        "{dirty}"
    );
    let edited = line_for(&slugs[1]);
    assert!(
        edited.contains(&V3.to_string()) && edited.contains("checksum"),
        "{edited}"
    );
    let unknown = line_for(&slugs[2]);
    assert!(unknown.contains("20250101000042"), "{unknown}");
    assert!(!run.stderr.contains(&format!("failed: tenant {}", slugs[3])));
    assert!(
        run.stderr.contains("nothing was reverted"),
        "{}",
        run.stderr
    );

    // A missing down script refuses the same way, with the fine tenant alone.
    let missing = folder(&env, "missing", V5);
    std::fs::remove_file(missing.join("20250101000003_prices.down.sql")).expect("rm");
    let run = revert(
        &env,
        &missing,
        &[&slugs[3], "--to", &V2.to_string(), "--yes"],
    )
    .code(2);
    let report = run.json();
    assert_eq!(report["refused"], true);
    let fine = find(&report, &slugs[3]);
    assert_eq!(fine["refusals"][0]["kind"], "no_down_script", "{fine}");
    assert_eq!(fine["refusals"][0]["version"], V3);

    let after: Vec<_> = ["dirty", "edited", "unknown", "fine"]
        .iter()
        .map(|n| snapshot(n))
        .collect();
    assert_eq!(before, after, "no tenant changed");
    // No run was recorded for a revert that never started.
    let runs = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    assert!(
        runs["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .all(|r| r["command"] != "revert"),
        "{runs}"
    );
}

#[test]
fn a_failing_down_script_rolls_back_that_tenant_only() {
    let env = TestEnv::new();
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&full, &["a", "blocked", "c"]);
    // A view on the column 3's down script drops: that drop fails here.
    env.exec(
        &env.db("blocked"),
        "CREATE VIEW priced AS SELECT id, price_cents FROM items",
    );

    let run = revert(&env, &full, &["--all", "--to", &V2.to_string(), "--yes"]).code(1);
    let report = run.json();
    let blocked = find(&report, &slugs[1]);
    assert_eq!(blocked["status"], "failed");
    // 5 and 4 were reverted, each in its own transaction; 3 failed and
    // rolled back, its function (dropped first) still there.
    assert_eq!(versions(&blocked["reverted"]), [V5, V4]);
    assert!(
        blocked["error"]
            .as_str()
            .is_some_and(|e| e.contains(&V3.to_string())),
        "{blocked}"
    );
    assert_eq!(env.applied(&env.db("blocked")), [V1, V2, V3]);
    assert_eq!(
        env.query(
            &env.db("blocked"),
            "SELECT coalesce(to_regprocedure('item_total(bigint)')::text, '')"
        ),
        ["item_total(bigint)"]
    );
    for (slug, name) in [(&slugs[0], "a"), (&slugs[2], "c")] {
        assert_eq!(find(&report, slug)["status"], "ok");
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
    // The revert's own run record: where each tenant was and is.
    assert_eq!(
        recorded(&env, &report["run_id"], &env.db("blocked")),
        (json!(V5), json!(V3), vec![V5, V4], "failed".to_owned())
    );
    assert_eq!(
        recorded(&env, &report["run_id"], &env.db("a")),
        (json!(V5), json!(V2), vec![V5, V4, V3], "ok".to_owned())
    );
}

#[test]
fn a_no_transaction_down_script_that_stops_half_way_leaves_the_tenant_dirty() {
    let env = TestEnv::new();
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&full, &["half", "fine"]);
    // 5's down script drops two indexes, one statement at a time; on
    // "half" the second is already gone, so it stops after the first.
    env.exec(&env.db("half"), "DROP INDEX tags_kind");

    let report = revert(&env, &full, &["--all", "--to", &V4.to_string(), "--yes"])
        .code(1)
        .json();
    let half = find(&report, &slugs[0]);
    assert_eq!(half["status"], "failed", "{half}");
    assert!(
        half["error"]
            .as_str()
            .is_some_and(|e| e.contains("tags_kind")),
        "{half}"
    );
    assert_eq!(find(&report, &slugs[1])["status"], "ok");
    assert_eq!(env.applied(&env.db("fine")), [V1, V2, V3, V4]);
    // Recorded as failed part-way, so nothing runs on it blind.
    assert_eq!(
        env.query(
            &env.db("half"),
            &format!("SELECT success::text FROM _sqlx_migrations WHERE version = {V5}")
        ),
        ["false"]
    );
    // Its record: 5 no longer counts as applied there.
    assert_eq!(
        recorded(&env, &report["run_id"], &env.db("half")),
        (json!(V5), json!(V4), vec![], "failed".to_owned())
    );
    let again = revert(&env, &full, &[&slugs[0], "--to", &V4.to_string(), "--yes"]).code(2);
    assert!(again.stderr.contains("dirty"), "{}", again.stderr);
    migrate(&env, &full, &[&slugs[0]]).code(1);
}

#[test]
fn revert_run_takes_back_only_the_tenants_that_run_changed() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&base, &["a", "b", "breaks", "ahead"]);
    // ahead is migrated by an earlier run; the run under test changes nothing there.
    migrate(&env, &full, &[&slugs[3]]).ok();
    // 4 fails on breaks (its table is already there), after 3 committed.
    env.exec(&env.db("breaks"), "CREATE TABLE item_audit (x int)");

    let run = migrate(&env, &full, &["--all"]).code(1);
    assert!(run.stderr.contains("revert --run"), "{}", run.stderr);
    let report = run.json();
    let id = report["run_id"].as_i64().expect("run id");
    assert_eq!(versions(&find(&report, &slugs[2])["applied"]), [V3]);
    // A tenant created after the run is not the run's either.
    env.run(&[
        "tenant",
        "create",
        &env.slug("later"),
        "--tenant-migrations",
        s(&full),
    ])
    .ok();

    // The run's record: who changed, from what to what.
    let record = env
        .run(&["tenant", "runs", &id.to_string(), "--output", "json"])
        .ok()
        .json();
    assert_eq!(record["run"]["outcome"], "failed");
    assert_eq!(record["run"]["changed"], 3);
    let tenants = record["tenants"].as_array().expect("tenants");
    let of = |db: &str| {
        tenants
            .iter()
            .find(|t| t["db_name"] == db)
            .unwrap_or_else(|| panic!("{db} not in {record}"))
    };
    assert_eq!(of(&env.db("a"))["before"], V2);
    assert_eq!(of(&env.db("a"))["after"], V5);
    assert_eq!(of(&env.db("breaks"))["after"], V3);
    assert_eq!(of(&env.db("breaks"))["status"], "failed");
    // ahead was selected and already up to date: recorded ok, unchanged.
    assert!(
        tenants
            .iter()
            .filter(|t| t["db_name"] == env.db("ahead"))
            .all(|t| t["versions"] == json!([]) && t["status"] == "ok"),
        "{record}"
    );
    let listed = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    assert!(
        listed["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["id"] == id),
        "{listed}"
    );

    let plan = revert(&env, &full, &["--run", &id.to_string(), "--dry-run"])
        .ok()
        .json();
    assert_eq!(
        plan["tenants"].as_array().expect("tenants").len(),
        3,
        "{plan}"
    );
    let undone = revert(&env, &full, &["--run", &id.to_string(), "--yes"])
        .ok()
        .json();
    assert_eq!(
        versions(&find(&undone, &slugs[0])["reverted"]),
        [V5, V4, V3]
    );
    assert_eq!(versions(&find(&undone, &slugs[2])["reverted"]), [V3]);
    for name in ["a", "b", "breaks"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
    assert_eq!(env.applied(&env.db("ahead")), [V1, V2, V3, V4, V5]);
    assert_eq!(env.applied(&env.db("later")), [V1, V2, V3, V4, V5]);

    // Selections do not mix with --run; a revert run cannot be "reverted".
    revert(&env, &full, &["--run", &id.to_string(), "--all", "--yes"]).code(2);
    let revert_id = undone["run_id"].as_i64().expect("revert run id");
    let refused = revert(&env, &full, &["--run", &revert_id.to_string(), "--yes"]).code(2);
    assert!(refused.stderr.contains("revert"), "{}", refused.stderr);
    revert(&env, &full, &["--run", "999999", "--yes"]).code(2);
}

#[test]
fn revert_run_is_exact_even_out_of_order_and_refuses_a_tenant_migrated_since() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let upto4 = folder(&env, "upto4", V4);
    let full = folder(&env, "full", V5);
    // A folder without 3: "gap" gets 4 first, then 3 from the run, out of
    // order (sqlx applies any pending version, old or new).
    let gap = folder(&env, "gap", V4);
    for file in [
        "20250101000003_prices.up.sql",
        "20250101000003_prices.down.sql",
    ] {
        std::fs::remove_file(gap.join(file)).expect("rm");
    }
    let slugs = env.tenants_with(&base, &["a", "b"]);
    env.run(&[
        "tenant",
        "create",
        &env.slug("gap"),
        "--tenant-migrations",
        s(&gap),
    ])
    .ok();
    let first = migrate(&env, &upto4, &["--all"]).ok().json();
    let id = first["run_id"].as_i64().expect("run id");
    assert_eq!(versions(&find(&first, &env.slug("gap"))["applied"]), [V3]);
    migrate(&env, &full, &[&slugs[1]]).ok();

    // b was migrated again by a later run: the whole revert is refused.
    let run = revert(&env, &full, &["--run", &id.to_string(), "--yes"]).code(2);
    assert!(
        run.stderr.contains(&slugs[1])
            && run
                .stderr
                .contains(&format!("{V5} was applied after run {id}")),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.applied(&env.db("a")),
        [V1, V2, V3, V4],
        "refused for all"
    );
    assert_eq!(env.applied(&env.db("b")), [V1, V2, V3, V4, V5]);
    assert_eq!(env.applied(&env.db("gap")), [V1, V2, V3, V4]);

    // Once b's later run is taken back, the run goes back exactly: on gap
    // that is 3 alone, though 4 is newer.
    revert(&env, &full, &[&slugs[1], "--to", &V4.to_string(), "--yes"]).ok();
    let undone = revert(&env, &full, &["--run", &id.to_string(), "--yes"])
        .ok()
        .json();
    assert_eq!(versions(&find(&undone, &env.slug("gap"))["reverted"]), [V3]);
    assert_eq!(versions(&find(&undone, &slugs[0])["reverted"]), [V4, V3]);
    assert_eq!(env.applied(&env.db("gap")), [V1, V2, V4]);
    for name in ["a", "b"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }

    // The same versions applied again by a later run are that run's: taking
    // back the first run a second time, by mistake, is refused.
    let again = migrate(&env, &upto4, &["--all"]).ok().json();
    let again_id = again["run_id"].as_i64().expect("run id");
    let mistake = revert(&env, &full, &["--run", &id.to_string(), "--yes"]).code(2);
    assert!(
        mistake
            .stderr
            .contains(&format!("{V3} was applied after run {id}")),
        "{}",
        mistake.stderr
    );
    assert_eq!(env.applied(&env.db("a")), [V1, V2, V3, V4]);
    revert(&env, &full, &["--run", &again_id.to_string(), "--yes"]).ok();
    assert_eq!(env.applied(&env.db("a")), [V1, V2]);
    assert_eq!(env.applied(&env.db("gap")), [V1, V2, V4]);
}

#[test]
fn sqlx_cli_agrees_with_the_state_a_revert_leaves() {
    let env = TestEnv::new();
    // Up to 4: sqlx-cli sends a -- no-transaction file whole, and 5's two
    // CREATE INDEX CONCURRENTLY cannot run that way.
    let full = folder(&env, "full", V4);
    env.tenants_with(&full, &["a"]);
    revert(&env, &full, &["--all", "--to", &V2.to_string(), "--yes"]).ok();

    let info = std::process::Command::new("sqlx")
        .args([
            "migrate",
            "info",
            "--source",
            s(&full),
            "--database-url",
            &env.db_url(&env.db("a")),
        ])
        .output()
        .expect("sqlx-cli must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&info.stderr)
    );
    for (version, state) in [
        (V1, "installed"),
        (V2, "installed"),
        (V3, "pending"),
        (V4, "pending"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&version.to_string()))
            .unwrap_or_else(|| panic!("{version} missing: {text}"));
        assert!(line.contains(&format!("/{state} ")), "{line}");
        assert!(!line.contains("checksum"), "{line}");
    }
    // And sqlx's own runner takes it from there.
    let run = std::process::Command::new("sqlx")
        .args([
            "migrate",
            "run",
            "--source",
            s(&full),
            "--database-url",
            &env.db_url(&env.db("a")),
        ])
        .output()
        .expect("sqlx migrate run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(env.applied(&env.db("a")), [V1, V2, V3, V4]);
}

#[test]
fn an_interrupted_revert_finishes_on_a_rerun() {
    let env = TestEnv::new();
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&full, &["a", "b", "c"]);
    // The down script of 4 waits at a gate before dropping anything.
    let gate = Gate::new(&env);
    let down = full.join("20250101000004_audit.down.sql");
    let original = std::fs::read_to_string(&down).expect("read");
    std::fs::write(&down, format!("{}\n{original}", gate.sql())).expect("write");
    let args = [
        "tenant",
        "revert",
        "--all",
        "--to",
        &V2.to_string(),
        "--yes",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--tenant-migrations",
        s(&full),
    ];

    // First interrupt: the tenant in flight finishes, the rest are skipped.
    let child = env.spawn(&args);
    gate.wait_for(&env, 1);
    let kill = |signal: &str, pid: u32| {
        assert!(
            std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("kill")
                .success()
        );
    };
    kill("-INT", child.id());
    let opened = gate.open(&env);
    let run = wait_with_deadline(child, Duration::from_secs(60));
    drop(opened);
    assert_eq!(run.code, 130, "{}", run.stderr);
    let report = run.json();
    assert_eq!(
        report["summary"],
        json!({"ok": 1, "failed": 0, "skipped": 2})
    );
    let done: Vec<&String> = slugs
        .iter()
        .filter(|s| find(&report, s)["status"] == "ok")
        .collect();
    assert_eq!(done.len(), 1);

    // A second interrupt while a tenant's down script runs quits at once;
    // the server rolls that migration back (its COMMIT is never sent).
    let child = env.spawn(&args);
    let waiting = gate.wait_for(&env, 1);
    kill("-INT", child.id());
    std::thread::sleep(Duration::from_millis(200));
    kill("-INT", child.id());
    let run = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(run.code, 130, "{}", run.stderr);
    let stuck = &waiting[0];
    let _open = gate.open(&env);
    crate::support::wait_until(
        Duration::from_secs(30),
        "the orphaned session to end",
        || gate.waiting(&env).is_empty().then_some(()),
    );
    // 5 was reverted before the wait; 4 was rolled back, row and all.
    assert_eq!(env.applied(stuck), [V1, V2, V3, V4]);
    assert_eq!(
        env.query(
            stuck,
            "SELECT coalesce(to_regclass('item_audit')::text, '')"
        ),
        ["item_audit"]
    );

    let rerun = env.run(&args).ok().json();
    assert_eq!(
        rerun["summary"],
        json!({"ok": 3, "failed": 0, "skipped": 0})
    );
    for name in ["a", "b", "c"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
}

#[test]
fn the_first_run_creates_the_run_tables_where_master_migrate_did_not() {
    let env = TestEnv::new();
    let full = folder(&env, "full", V5);
    let base = folder(&env, "base", V2);
    env.tenants_with(&base, &["a"]);
    // A master from before run records: no tables, so nothing to list yet.
    env.exec(
        &env.master,
        "DROP TABLE tenantctl.run_tenants; DROP TABLE tenantctl.runs",
    );
    let none = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    assert_eq!(none, json!({"schema_version": 1, "runs": []}));
    assert!(
        env.run(&["tenant", "runs"])
            .ok()
            .stdout
            .contains("no runs recorded yet")
    );

    let run = migrate(&env, &full, &["--all"]).ok().json();
    let id = run["run_id"].as_i64().expect("run id");
    let listed = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    assert_eq!(listed["runs"][0]["id"], id, "{listed}");
    assert_eq!(listed["runs"][0]["changed"], 1, "{listed}");
    assert_eq!(listed["runs"][0]["outcome"], "succeeded", "{listed}");
}

/// tenantctl's sessions in `db` (by their `application_name`), as
/// `state:wait_event_type`.
fn sessions_in(env: &TestEnv, db: &str) -> Vec<String> {
    env.query(
        "postgres",
        &format!(
            "SELECT state || ':' || coalesce(wait_event_type, '') FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name LIKE 'tenantctl%'"
        ),
    )
}

/// With `--yes`, each tenant is reverted on the connection its plan was
/// read on, kept open between the passes; that changes none of the
/// guarantees: a tenant whose migrations changed since its plan is still
/// refused under the lock, and a kept connection the server ended
/// meanwhile is replaced by a fresh one, its tenant reverted and recorded
/// once.
#[test]
fn a_revert_on_kept_connections_still_rechecks_and_replaces_one_the_server_ended() {
    use crate::support::{block_on, wait_until};

    let env = TestEnv::new();
    let full = folder(&env, "full", V5);
    env.tenants_with(&full, &["a", "b", "c", "d"]);
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| env.db(n));
    // The test holds a's migration lock: tenantctl, one tenant at a time
    // in slug order, plans all four, then waits on a's lock with the
    // other three's connections kept.
    let lock = tenantctl::migrations::lock_id(&tenantctl::dbname::DbName::parse(&a).expect("db"));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = env.db_url(&a);
    let holder = std::thread::spawn(move || {
        block_on(async move {
            use sqlx::{Connection as _, Executor as _};
            let mut conn = sqlx::postgres::PgConnection::connect(&url)
                .await
                .expect("connect to hold a's lock");
            conn.execute(format!("SELECT pg_advisory_lock({lock})").as_str())
                .await
                .expect("take a's lock");
            let _ = held_tx.send(());
            let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
            let _ = conn.close().await;
        });
    });
    held_rx.recv().expect("a's lock taken");
    let child = env.spawn(&[
        "tenant",
        "revert",
        "--all",
        "--to",
        &V2.to_string(),
        "--yes",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--tenant-migrations",
        s(&full),
    ]);
    wait_until(
        Duration::from_secs(60),
        "tenantctl to wait on a's lock",
        || {
            sessions_in(&env, &a)
                .iter()
                .any(|s| s.ends_with(":Lock"))
                .then_some(())
        },
    );
    // Planned and kept, idle, one each.
    for db in [&b, &c, &d] {
        assert_eq!(sessions_in(&env, db), ["idle:Client"], "{db}");
    }
    // b changes under tenantctl (5 taken back by hand, its row with it);
    // c's kept connection is ended by the server.
    env.exec(
        &b,
        &format!("DELETE FROM _sqlx_migrations WHERE version = {V5}"),
    );
    let ended = env.query(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
             WHERE datname = '{c}' AND application_name LIKE 'tenantctl%'"
        ),
    );
    assert_eq!(ended, ["true"]);
    drop(release_tx);
    holder.join().expect("a's lock released");

    let run = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    assert_eq!(
        report["summary"],
        json!({"ok": 3, "failed": 1, "skipped": 0}),
        "{report}"
    );
    let b_report = find(&report, &env.slug("b"));
    assert_eq!(b_report["status"], "failed");
    assert!(
        b_report["error"]
            .as_str()
            .is_some_and(|e| e.contains("changed after the revert was planned")),
        "{b_report}"
    );
    assert_eq!(env.applied(&b), [V1, V2, V3, V4], "b untouched");
    for db in [&a, &c, &d] {
        assert_eq!(env.applied(db), [V1, V2], "{db}");
    }
    // c is recorded once, as reverted, not as failed on its dead connection.
    let (_, after, reverted, status) = recorded(&env, &report["run_id"], &c);
    assert_eq!(
        (after, reverted, status.as_str()),
        (json!(V2), vec![V5, V4, V3], "ok")
    );
}

/// More tenants than the server can spare connections for (here the
/// role's `CONNECTION LIMIT` of 20, for 24 tenants): as many as fit are
/// kept, the rest connect again, and every tenant is reverted. Keeping
/// them all would have been refused by the server half way through the
/// plan.
#[test]
fn a_revert_wider_than_the_connections_it_may_keep_reconnects_the_rest() {
    use crate::support::server::PrivateServer;

    const PW: &str = "app-Keep-pw1";
    let env = TestEnv::new();
    let server = PrivateServer::start(&format!("{}keep", env.token));
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB CONNECTION LIMIT 20 PASSWORD '{PW}'"),
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = server.url_as("app", PW);
    let configure = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env("MASTER_DATABASE_URL", format!("{base}/master"));
    };
    let full = folder(&env, "full", V5);
    env.run_with(&["master", "migrate"], configure).ok();
    let names: Vec<String> = (0..24).map(|i| format!("k{i:02}")).collect();
    for name in &names {
        env.run_with(
            &["tenant", "create", name, "--tenant-migrations", s(&full)],
            configure,
        )
        .ok();
    }
    let run = env.run_with(
        &[
            "tenant",
            "revert",
            "--all",
            "--to",
            &V2.to_string(),
            "--yes",
            "--concurrency",
            "2",
            "--output",
            "json",
            "--tenant-migrations",
            s(&full),
        ],
        configure,
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run.json();
    assert_eq!(
        report["summary"],
        json!({"ok": 24, "failed": 0, "skipped": 0})
    );
    for name in &names {
        assert_eq!(
            versions(&find(&report, name)["reverted"]),
            [V5, V4, V3],
            "{name}"
        );
    }
}

/// The down script and the deletion of its row go to the server in one
/// query: a trigger that quietly drops the delete (the row stays) fails the
/// tenant, and the down script is rolled back with it, so the record never
/// says applied over a schema taken back.
#[test]
fn a_down_script_whose_row_will_not_go_is_rolled_back() {
    let env = TestEnv::new();
    let upto4 = folder(&env, "upto4", V4);
    env.tenants_with(&upto4, &["a"]);
    let a = env.db("a");
    env.exec(
        &a,
        "CREATE FUNCTION keep_rows() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RETURN NULL; END $$; \
         CREATE TRIGGER keep_rows BEFORE DELETE ON _sqlx_migrations \
         FOR EACH ROW EXECUTE FUNCTION keep_rows()",
    );
    let before = schema(&env, &a);
    let run = revert(&env, &upto4, &["--all", "--to", &V3.to_string(), "--yes"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    let tenant = find(&report, &env.slug("a"));
    assert_eq!(tenant["status"], "failed", "{tenant}");
    assert!(
        tenant["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer recorded in _sqlx_migrations")),
        "{tenant}"
    );
    assert_eq!(versions(&tenant["reverted"]), Vec::<i64>::new());
    assert_eq!(env.applied(&a), [V1, V2, V3, V4]);
    assert_eq!(schema(&env, &a), before, "the down script was rolled back");
}
