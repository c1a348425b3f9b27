//! The deploy step with one handle (issue 20): `--label` on the runs that
//! change tenants, run records that keep every selected tenant (pending
//! until it is done, skipped, interrupted) with its slug, `tenant runs
//! --label`, `--failed-in RUN|LABEL`, `tenant revert --label`, and
//! `tenant status --check`.
//!
//! The fixture `reversible` gives versions 1 (plain) to 5 (reversible); a
//! tenant that already has `item_audit` fails on 4 after 3 committed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Gate, Run, TestEnv, find, wait_until};

const V1: i64 = 20_250_101_000_001;
const V2: i64 = 20_250_101_000_002;
const V3: i64 = 20_250_101_000_003;
const V5: i64 = 20_250_101_000_005;

/// A copy of the fixture with only the migrations up to `upto`.
fn folder(env: &TestEnv, name: &str, upto: i64) -> PathBuf {
    env.reversible_upto(name, upto)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `tenant <command> --tenant-migrations dir args... --output json`.
fn tenant(env: &TestEnv, command: &str, dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["tenant", command, "--tenant-migrations", s(dir)];
    all.extend_from_slice(args);
    if !args.contains(&"--output") {
        all.extend(["--output", "json"]);
    }
    env.run(&all)
}

/// The slugs of a fleet report's tenants, sorted.
fn slugs_of(report: &Value) -> BTreeSet<String> {
    report["tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("no tenants: {report}"))
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect()
}

fn set(slugs: &[&String]) -> BTreeSet<String> {
    slugs.iter().map(|s| (*s).clone()).collect()
}

/// Makes 4 fail on this tenant (after 3 commits), or undoes that.
fn break_tenant(env: &TestEnv, name: &str) {
    env.exec(&env.db(name), "CREATE TABLE item_audit (x int)");
}

fn mend_tenant(env: &TestEnv, name: &str) {
    env.exec(&env.db(name), "DROP TABLE item_audit");
}

fn run_count(env: &TestEnv) -> String {
    env.query(&env.master, "SELECT count(*)::text FROM tenantctl.runs")
        .concat()
}

#[test]
fn a_labelled_sharded_deploy_is_listed_rerun_and_rolled_back_by_its_label() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    let names = ["a", "b", "c", "d", "e", "f", "x1", "x2"];
    let slugs = env.tenants_with(&base, &names);
    break_tenant(&env, "x1");
    break_tenant(&env, "x2");
    // Already up to date before the deploy: recorded ok, never failed-in,
    // never taken back by the label.
    let ahead = env.tenants_with(&full, &["ahead"]).remove(0);
    let label = format!("pipeline-{}", env.token);

    // Three shards, one label: each shard's job records its own run.
    let mut ids = Vec::new();
    for shard in ["0/3", "1/3", "2/3"] {
        let run = tenant(
            &env,
            "migrate",
            &full,
            &["--all", "--shard", shard, "--label", &label],
        );
        let report = run.json();
        assert_eq!(report["label"], label.as_str(), "{report}");
        // A shard with a broken tenant fails; the others succeed.
        let broke = report["tenants"]
            .as_array()
            .expect("tenants")
            .iter()
            .any(|t| t["slug"] == slugs[6] || t["slug"] == slugs[7]);
        assert_eq!(run.code, i32::from(broke), "{report}");
        ids.push(report["run_id"].as_i64().expect("run id"));
    }
    let listed = env
        .run(&["tenant", "runs", "--label", &label, "--output", "json"])
        .ok()
        .json();
    let listed_ids: Vec<i64> = listed["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            assert_eq!(r["label"], label.as_str());
            r["id"].as_i64().expect("id")
        })
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed_ids, newest_first, "{listed}");
    let table = env.run(&["tenant", "runs", "--label", &label]).ok();
    assert!(table.stdout.contains(&label), "{}", table.stdout);

    // The failed ones, across all shards, and only them.
    let failed = tenant(&env, "status", &full, &["--failed-in", &label]).json();
    assert_eq!(slugs_of(&failed), set(&[&slugs[6], &slugs[7]]), "{failed}");
    assert_eq!(
        failed["selection"]["failed_in"],
        json!({"source": format!("label \"{label}\""), "not_ok": 2, "gone": 0})
    );
    let by_prefix = tenant(
        &env,
        "status",
        &full,
        &["--failed-in", &format!("label:{label}")],
    )
    .json();
    assert_eq!(slugs_of(&by_prefix), slugs_of(&failed));
    let described = env
        .run(&[
            "tenant",
            "status",
            "--failed-in",
            &label,
            "--tenant-migrations",
            s(&full),
        ])
        .stdout;
    assert!(
        described.contains(&format!(
            "--failed-in label \"{label}\": 2 tenant(s) not ok there"
        )),
        "{described}"
    );

    // Fixed, then rerun under the same label: nothing is left failed.
    mend_tenant(&env, "x1");
    mend_tenant(&env, "x2");
    let rerun = tenant(
        &env,
        "migrate",
        &full,
        &["--failed-in", &label, "--label", &label],
    )
    .ok()
    .json();
    assert_eq!(slugs_of(&rerun), set(&[&slugs[6], &slugs[7]]));
    let none = tenant(&env, "status", &full, &["--failed-in", &label]).ok();
    assert_eq!(none.json()["tenants"], json!([]));
    assert!(
        none.stderr
            .contains("nothing selected: every tenant of label"),
        "{}",
        none.stderr
    );
    for name in names {
        assert_eq!(env.applied(&env.db(name)).last(), Some(&V5), "{name}");
    }

    // The rollback: every run of the label, in every shard.
    let plan = tenant(&env, "revert", &full, &["--label", &label, "--dry-run"])
        .ok()
        .json();
    assert_eq!(plan["tenants"].as_array().expect("tenants").len(), 8);
    let undone = tenant(&env, "revert", &full, &["--label", &label, "--yes"])
        .ok()
        .json();
    assert_eq!(undone["label"], label.as_str());
    assert_eq!(undone["selection"]["label"], label.as_str());
    for name in names {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
    assert_eq!(env.applied(&env.db("ahead")).last(), Some(&V5), "{ahead}");
    let listed = env
        .run(&["tenant", "runs", "--label", &label, "--output", "json"])
        .ok()
        .json();
    let runs = listed["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 5, "{listed}");
    assert_eq!(runs[0]["command"], "revert");
    assert_eq!(runs[0]["id"], undone["run_id"]);
    // A second rollback finds nothing left to take back.
    let again = tenant(&env, "revert", &full, &["--label", &label, "--yes"])
        .ok()
        .json();
    assert!(
        again["tenants"]
            .as_array()
            .expect("tenants")
            .iter()
            .all(|t| t["reverted"] == json!([])),
        "{again}"
    );
}

#[test]
fn fail_fast_skips_are_recorded_and_selected_and_a_dropped_tenant_is_not() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&base, &["a", "b", "c", "d"]);
    break_tenant(&env, "a");
    // With one at a time, slugs order: a fails first, the rest are skipped.
    let run = tenant(
        &env,
        "migrate",
        &full,
        &[
            "--all",
            "--fail-fast",
            "--concurrency",
            "1",
            "--label",
            "ff",
        ],
    )
    .code(1);
    assert!(
        run.stderr
            .contains("tenant revert --label ff; the tenants to rerun: --failed-in ff"),
        "{}",
        run.stderr
    );
    let run = run.json();
    let id = run["run_id"].as_i64().expect("run id").to_string();
    let record = env
        .run(&["tenant", "runs", &id, "--output", "json"])
        .ok()
        .json();
    let statuses: BTreeSet<(String, String)> = record["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().expect("slug").to_owned(),
                t["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (slugs[0].clone(), "failed".to_owned()),
        (slugs[1].clone(), "skipped".to_owned()),
        (slugs[2].clone(), "skipped".to_owned()),
        (slugs[3].clone(), "skipped".to_owned()),
    ]
    .into();
    assert_eq!(statuses, expected, "{record}");
    let table = env.run(&["tenant", "runs", &id]).ok().stdout;
    assert!(
        table.contains("4 tenant(s) recorded in run") && table.contains("3 skipped"),
        "{table}"
    );

    // Dropped from the master since: no longer selected, and said so.
    env.exec(
        &env.master,
        &format!(r#"DELETE FROM "Company" WHERE slug = '{}'"#, slugs[3]),
    );
    for value in ["ff", "label:ff", &format!("run:{id}"), &id] {
        let selected = tenant(&env, "status", &full, &["--failed-in", value]).json();
        assert_eq!(
            slugs_of(&selected),
            set(&[&slugs[0], &slugs[1], &slugs[2]]),
            "{value}: {selected}"
        );
        assert_eq!(selected["selection"]["failed_in"]["gone"], 1, "{selected}");
    }
    // --shard and --server narrow it as they narrow --all.
    let mut seen = BTreeSet::new();
    for shard in ["0/2", "1/2"] {
        let part = tenant(
            &env,
            "status",
            &full,
            &["--failed-in", "ff", "--shard", shard],
        )
        .json();
        for slug in slugs_of(&part) {
            assert!(seen.insert(slug), "a tenant in two shards");
        }
    }
    assert_eq!(seen, set(&[&slugs[0], &slugs[1], &slugs[2]]));
    // Named tenants and --all do not mix with it.
    tenant(&env, "status", &full, &["--failed-in", "ff", "--all"]).code(2);
    tenant(&env, "status", &full, &["--failed-in", "ff", &slugs[0]]).code(2);
}

#[test]
fn labels_and_failed_in_values_are_refused_clearly_and_stored_exactly() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    env.tenants_with(&base, &["a"]);
    env.run(&["master", "migrate"]).ok();

    // Bad labels: a usage error, exit 2, nothing recorded.
    let long = "x".repeat(201);
    for bad in [
        "",
        "   ",
        "a\nb",
        "tab\there",
        "esc\u{1b}[31m",
        long.as_str(),
    ] {
        let before = run_count(&env);
        let refused = tenant(&env, "migrate", &full, &["--all", "--label", bad]).code(2);
        assert!(
            refused.stderr.contains("--label"),
            "{bad:?}: {}",
            refused.stderr
        );
        assert_eq!(run_count(&env), before, "{bad:?} recorded a run");
    }
    let refused = env.run_with(
        &[
            "tenant",
            "migrate",
            "--all",
            "--tenant-migrations",
            s(&full),
        ],
        |c| {
            c.env("TENANTCTL_LABEL", "line\nbreak");
        },
    );
    refused.code(2);
    assert_eq!(run_count(&env), "0");

    // A label is data: quotes, backslashes, SQL and non-ASCII kept exactly.
    let tricky = "it's \"q\" \\ é'); DROP TABLE tenantctl.runs; --";
    let first = env
        .run_with(
            &[
                "tenant",
                "migrate",
                "--all",
                "--tenant-migrations",
                s(&base),
                "--output",
                "json",
            ],
            |c| {
                c.env("TENANTCTL_LABEL", tricky);
            },
        )
        .ok()
        .json();
    assert_eq!(first["label"], tricky);
    assert_eq!(
        env.query(&env.master, "SELECT label FROM tenantctl.runs"),
        [tricky]
    );
    let listed = env
        .run(&["tenant", "runs", "--label", tricky, "--output", "json"])
        .ok()
        .json();
    assert_eq!(listed["runs"][0]["label"], tricky, "{listed}");
    let footer = tenant(
        &env,
        "migrate",
        &full,
        &["--all", "--label", tricky, "--output", "table"],
    )
    .ok()
    .stdout;
    assert!(footer.contains(&format!("label: {tricky}")), "{footer}");

    // Unknown labels and runs.
    let unknown = env.run(&["tenant", "runs", "--label", "nope"]).code(2);
    assert!(unknown.stderr.contains("\"nope\""), "{}", unknown.stderr);
    let unknown = tenant(&env, "revert", &full, &["--label", "nope", "--yes"]).code(2);
    assert!(unknown.stderr.contains("\"nope\""), "{}", unknown.stderr);
    let unknown = tenant(&env, "status", &full, &["--failed-in", "nope"]).code(2);
    assert!(unknown.stderr.contains("\"nope\""), "{}", unknown.stderr);
    tenant(&env, "status", &full, &["--failed-in", "run:999999"]).code(2);
    tenant(&env, "status", &full, &["--failed-in", "999999"]).code(2);
    tenant(&env, "status", &full, &["--failed-in", "run:x"]).code(2);

    // A label that is also a run id: the bare value is ambiguous.
    let ids = env.query(&env.master, "SELECT min(id)::text FROM tenantctl.runs");
    let id = ids[0].as_str();
    tenant(&env, "migrate", &full, &["--all", "--label", id]).ok();
    let ambiguous = tenant(&env, "status", &full, &["--failed-in", id]).code(2);
    assert!(
        ambiguous.stderr.contains(&format!("run:{id}"))
            && ambiguous.stderr.contains(&format!("label:{id}")),
        "{}",
        ambiguous.stderr
    );
    tenant(
        &env,
        "status",
        &full,
        &["--failed-in", &format!("run:{id}")],
    )
    .ok();
    tenant(
        &env,
        "status",
        &full,
        &["--failed-in", &format!("label:{id}")],
    )
    .ok();

    // --label takes no --run or --to.
    let both = tenant(
        &env,
        "revert",
        &full,
        &["--label", id, "--run", id, "--yes"],
    )
    .code(2);
    assert!(both.stderr.contains("--run"), "{}", both.stderr);
    tenant(
        &env,
        "revert",
        &full,
        &["--label", id, "--to", &V2.to_string(), "--yes"],
    )
    .code(2);
    // From the environment, the label only tags a revert --to.
    let tagged = env
        .run_with(
            &[
                "tenant",
                "revert",
                "--all",
                "--to",
                &V3.to_string(),
                "--yes",
                "--tenant-migrations",
                s(&full),
                "--output",
                "json",
            ],
            |c| {
                c.env("TENANTCTL_LABEL", "rollback-tag");
            },
        )
        .ok()
        .json();
    assert_eq!(tagged["label"], "rollback-tag", "{tagged}");
}

/// Tenants a to d at V2, and a folder whose V3 waits at the gate (with a
/// down script that takes back just what it adds); their slugs.
pub(crate) fn gated_fleet(env: &TestEnv) -> (Gate, PathBuf, Vec<String>) {
    let base = folder(env, "base", V2);
    let gate = Gate::new(env);
    let gated = folder(env, "gated", V3);
    std::fs::write(
        gated.join("20250101000003_prices.up.sql"),
        format!(
            "{}\nALTER TABLE items ADD COLUMN price_cents bigint;",
            gate.sql()
        ),
    )
    .expect("gated migration");
    std::fs::write(
        gated.join("20250101000003_prices.down.sql"),
        "ALTER TABLE items DROP COLUMN price_cents;",
    )
    .expect("its down script");
    let slugs = env.tenants_with(&base, &["a", "b", "c", "d"]);
    (gate, gated, slugs)
}

/// `migrate --all` one tenant at a time under `label`.
pub(crate) fn migrate_args<'a>(dir: &'a Path, label: &'a str) -> Vec<&'a str> {
    vec![
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "1",
        "--label",
        label,
        "--tenant-migrations",
        s(dir),
    ]
}

/// [`migrate_args`] in the background.
fn migrate_one_by_one(env: &TestEnv, dir: &Path, label: &str) -> std::process::Child {
    env.spawn(&migrate_args(dir, label))
}

#[test]
fn a_run_killed_outright_still_says_which_tenants_it_never_reached() {
    let env = TestEnv::new();
    let (gate, gated, slugs) = gated_fleet(&env);
    let child = migrate_one_by_one(&env, &gated, "killed");
    gate.wait_for(&env, 1);
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let _ = child.wait_with_output();
    let open = gate.open(&env);
    // The backend of the killed run ends once its wait does.
    wait_until(
        Duration::from_secs(60),
        "the killed run's session gone",
        || gate.waiting(&env).is_empty().then_some(()),
    );

    let id = env.query(&env.master, "SELECT max(id)::text FROM tenantctl.runs")[0].clone();
    let record = env
        .run(&["tenant", "runs", &id, "--output", "json"])
        .ok()
        .json();
    assert_eq!(record["run"]["outcome"], "running");
    let pending: BTreeSet<String> = record["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter(|t| t["status"] == "pending")
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect();
    assert_eq!(pending.len(), 4, "{record}");
    let selected = tenant(
        &env,
        "status",
        &gated,
        &["--failed-in", &format!("run:{id}")],
    )
    .json();
    assert_eq!(slugs_of(&selected), slugs.iter().cloned().collect());
    // The rerun picks them up and finishes them.
    tenant(
        &env,
        "migrate",
        &gated,
        &["--failed-in", "killed", "--label", "killed"],
    )
    .ok();
    drop(open);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2, V3], "{name}");
    }
    let none = tenant(&env, "status", &gated, &["--failed-in", "killed"])
        .ok()
        .json();
    assert_eq!(none["tenants"], json!([]));

    // The rollback job: the killed run gives no sign of life, so the label
    // is taken back whole (waiting, if need be, until its record has been
    // silent long enough), with no run id to find. A dry run ends nothing.
    let plan = tenant(&env, "revert", &gated, &["--label", "killed", "--dry-run"]).ok();
    assert!(plan.stderr.contains("taken for killed"), "{}", plan.stderr);
    let outcome = |env: &TestEnv| {
        env.query(
            &env.master,
            &format!("SELECT outcome FROM tenantctl.runs WHERE id = {id}"),
        )
    };
    assert_eq!(outcome(&env), ["running"]);
    let undone = tenant(&env, "revert", &gated, &["--label", "killed", "--yes"]).ok();
    assert!(
        undone.stderr.contains("taken for killed"),
        "{}",
        undone.stderr
    );
    assert_eq!(outcome(&env), ["interrupted"]);
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
}

/// A run paused (SIGSTOP, a suspended laptop, `docker pause`) looks
/// killed once its record is silent long enough: a revert of its label
/// takes it over. Resumed, the run must not go on migrating behind that
/// revert: it stops at its next heartbeat, cancelling its tenant in
/// flight, and its record keeps the revert's `interrupted`.
#[test]
fn a_paused_run_whose_record_a_revert_took_over_stops_when_resumed() {
    let env = TestEnv::new();
    let (gate, gated, _) = gated_fleet(&env);
    let child = migrate_one_by_one(&env, &gated, "paused");
    gate.wait_for(&env, 1);
    let pid = child.id().to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {name}");
    };
    signal("-STOP");
    let id = env.query(&env.master, "SELECT max(id)::text FROM tenantctl.runs")[0].clone();
    let taken = tenant(&env, "revert", &gated, &["--label", "paused", "--yes"]);
    signal("-CONT");
    let resumed = child.wait_with_output().expect("the run ends");
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    assert!(
        taken.stderr.contains("taken for killed"),
        "{}",
        taken.stderr
    );
    assert!(!resumed.status.success(), "{stderr}");
    assert!(stderr.contains("taken it for killed"), "{stderr}");
    let outcome = env.query(
        &env.master,
        &format!("SELECT outcome FROM tenantctl.runs WHERE id = {id}"),
    );
    assert_eq!(outcome, ["interrupted"]);
    // No tenant after the one in flight was started, and that one was
    // cancelled (the gate never opened).
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
    // A live run, by contrast, refuses the revert (its record renews).
    let live = migrate_one_by_one(&env, &gated, "live");
    gate.wait_for(&env, 1);
    let refused = tenant(&env, "revert", &gated, &["--label", "live", "--yes"]).code(2);
    assert!(
        refused.stderr.contains("still running"),
        "{}",
        refused.stderr
    );
    let open = gate.open(&env);
    let done = live.wait_with_output().expect("the live run ends");
    drop(open);
    assert!(done.status.success(), "{done:?}");
    for name in ["a", "b", "c", "d"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2, V3], "{name}");
    }
}

#[test]
fn status_check_gates_on_pending_and_dirty_migrations() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    env.tenants_with(&base, &["a", "b"]);
    // Without --check, pending migrations are not a failure.
    tenant(&env, "status", &full, &["--all"]).ok();
    let gated = tenant(&env, "status", &full, &["--all", "--check"]).code(1);
    assert_eq!(
        gated.json()["tenants"].as_array().expect("tenants").len(),
        2
    );
    assert!(
        gated.stderr.contains("check failed: 2 of 2"),
        "{}",
        gated.stderr
    );
    tenant(&env, "migrate", &full, &["--all"]).ok();
    tenant(&env, "status", &full, &["--all", "--check"]).ok();
    // A dirty migration fails the gate too.
    env.exec(
        &env.db("a"),
        &format!("UPDATE _sqlx_migrations SET success = false WHERE version = {V5}"),
    );
    tenant(&env, "status", &full, &["--all", "--check"]).code(1);
    tenant(&env, "status", &full, &[&env.slug("b"), "--check"]).ok();
}

#[test]
fn run_tables_from_before_labels_are_upgraded_in_place_and_old_runs_still_revert() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    env.tenants_with(&base, &["a", "b"]);
    let old = tenant(&env, "migrate", &full, &["--all"]).ok().json();
    let id = old["run_id"].as_i64().expect("run id").to_string();
    // The run tables (and that run) as the previous release left them,
    // the run killed before it recorded its end.
    env.exec(
        &env.master,
        &format!(
            "UPDATE tenantctl.runs SET outcome = 'running', finished_at = NULL WHERE id = {id}"
        ),
    );
    env.exec(
        &env.master,
        "DROP INDEX tenantctl.runs_label_idx;
         ALTER TABLE tenantctl.runs DROP COLUMN label;
         ALTER TABLE tenantctl.runs DROP COLUMN alive_at;
         ALTER TABLE tenantctl.run_tenants DROP COLUMN slug;
         ALTER TABLE tenantctl.run_tenants DROP CONSTRAINT run_tenants_status_check;
         ALTER TABLE tenantctl.run_tenants ADD CONSTRAINT run_tenants_status_check CHECK (status IN ('ok', 'failed'))",
    );
    let record = env
        .run(&["tenant", "runs", &id, "--output", "json"])
        .ok()
        .json();
    assert_eq!(record["run"]["label"], Value::Null, "{record}");
    assert_eq!(record["tenants"][0]["slug"], Value::Null, "{record}");
    tenant(&env, "status", &full, &["--failed-in", &id]).ok();
    let unknown = tenant(&env, "status", &full, &["--failed-in", "label:x"]).code(2);
    assert!(unknown.stderr.contains("\"x\""), "{}", unknown.stderr);

    // A role that may write rows but not alter the tables cannot record
    // a label, and says so before touching anything.
    let role = crate::support::role_with_password(&env, "writer", "writer-pw");
    env.exec(
        &env.master,
        &format!(
            r#"GRANT SELECT, UPDATE ON "Company" TO "writer_{t}";
               GRANT USAGE ON SCHEMA tenantctl TO "writer_{t}";
               GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA tenantctl TO "writer_{t}";
               GRANT SELECT ON ALL TABLES IN SCHEMA public TO "writer_{t}";"#,
            t = env.token,
        ),
    );
    let labelled = env.run_with(
        &[
            "tenant",
            "migrate",
            "--all",
            "--label",
            "new",
            "--tenant-migrations",
            s(&base),
        ],
        role.configure(),
    );
    let labelled = labelled.code(2);
    assert!(
        labelled.stderr.contains("master migrate"),
        "{}",
        labelled.stderr
    );
    assert_eq!(run_count(&env), "1");

    // That run gave no sign of life (nothing kept one): `--run` takes it
    // back as far as recorded, with a warning, as before.
    let plan = tenant(&env, "revert", &full, &["--run", &id, "--dry-run"]).ok();
    assert!(
        plan.stderr
            .contains("has not recorded its end (still running, or killed)"),
        "{}",
        plan.stderr
    );

    // The owner's revert of the old run upgrades the tables in place.
    let undone = tenant(&env, "revert", &full, &["--run", &id, "--yes"])
        .ok()
        .json();
    assert_eq!(
        find(&undone, &env.slug("a"))["reverted"]
            .as_array()
            .expect("reverted")
            .len(),
        3
    );
    for name in ["a", "b"] {
        assert_eq!(env.applied(&env.db(name)), [V1, V2], "{name}");
    }
    assert_eq!(
        env.query(
            &env.master,
            "SELECT count(*)::text FROM pg_indexes WHERE indexname = 'runs_label_idx'"
        ),
        ["1"]
    );
    let revert_id = undone["run_id"].as_i64().expect("run id").to_string();
    let record = env
        .run(&["tenant", "runs", &revert_id, "--output", "json"])
        .ok()
        .json();
    let slugs: BTreeSet<&str> = record["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["slug"].as_str().expect("a slug"))
        .collect();
    assert_eq!(
        slugs,
        [env.slug("a"), env.slug("b")]
            .iter()
            .map(String::as_str)
            .collect(),
        "{record}"
    );
    // And the next labelled run is recorded.
    tenant(&env, "migrate", &full, &["--all", "--label", "new"]).ok();
    assert_eq!(
        env.query(
            &env.master,
            "SELECT count(*)::text FROM tenantctl.runs WHERE label = 'new'"
        ),
        ["1"]
    );
}

/// Writes `migrations/<name>/migration.sql` in a Prisma schema folder.
fn prisma_migration(dir: &Path, name: &str, sql: &str) {
    let folder = dir.join("migrations").join(name);
    std::fs::create_dir_all(&folder).expect("migration folder");
    std::fs::write(folder.join("migration.sql"), sql).expect("migration.sql");
}

/// The kit's tenant schema folder, copied without needing the Prisma CLI:
/// tenantctl applies and reads Prisma's migrations natively.
fn prisma_tenant_schema(env: &TestEnv) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prisma-kit/tenant");
    let to = env.workdir.path().join("app");
    copy_tree(&from, &to);
    to
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn status_check_gates_on_prisma_pending_and_failed_migrations() {
    let env = TestEnv::new();
    let schema = prisma_tenant_schema(&env);
    env.write_config("[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"app/migrations\"\n");
    env.run(&["master", "migrate"]).ok();
    env.run(&["tenant", "create", &env.slug("a")]).ok();
    env.run(&["tenant", "status", "--all", "--check"]).ok();
    prisma_migration(
        &schema,
        "20270101000000_meter_note",
        "ALTER TABLE \"Meter\" ADD COLUMN \"note\" TEXT;\n",
    );
    // Pending: without --check a pending migration is no failure.
    env.run(&["tenant", "status", "--all"]).ok();
    env.run(&["tenant", "status", "--all", "--check"]).code(1);
    env.run(&["tenant", "migrate", "--all"]).ok();
    env.run(&["tenant", "status", "--all", "--check"]).ok();
    // A failed migration.
    prisma_migration(
        &schema,
        "20270102000000_broken",
        "ALTER TABLE nope ADD COLUMN x int;\n",
    );
    env.run(&["tenant", "migrate", "--all"]).code(1);
    let gated = env
        .run(&["tenant", "status", "--all", "--check", "--output", "json"])
        .code(1);
    assert_eq!(
        gated.json()["tenants"].as_array().expect("tenants").len(),
        1
    );
}

#[test]
fn labels_stay_with_their_master_and_a_recycled_database_name_is_not_reverted() {
    let env = TestEnv::new();
    let base = folder(&env, "base", V2);
    let full = folder(&env, "full", V5);
    let slugs = env.tenants_with(&base, &["a", "r"]);
    tenant(&env, "migrate", &full, &["--all", "--label", "rel-1"]).ok();

    // Another master on the same server has no such label, nor its runs.
    let other = format!("{}/other_master_{}", env.base_url, env.token);
    let in_other = |args: &[&str]| {
        let mut all = vec!["--tenant-migrations", s(&full)];
        all.extend_from_slice(args);
        env.run_with(&all, |c| {
            c.env("MASTER_DATABASE_URL", &other);
        })
    };
    env.exec(
        "postgres",
        &format!("CREATE DATABASE \"other_master_{}\"", env.token),
    );
    env.run_with(&["master", "migrate"], |c| {
        c.env("MASTER_DATABASE_URL", &other);
    })
    .ok();
    in_other(&["tenant", "status", "--failed-in", "rel-1"]).code(2);
    in_other(&["tenant", "revert", "--label", "rel-1", "--yes"]).code(2);
    in_other(&["tenant", "runs", "--label", "rel-1"]).code(2);

    // r's company is gone; a new company now names its database.
    env.exec(
        &env.master,
        &format!(
            r#"WITH gone AS (DELETE FROM "Company" WHERE slug = '{r}' RETURNING *)
               INSERT INTO "Company" (id, slug, name, "dbName", status)
               SELECT 'new-' || id, 'r2-{t}', name, "dbName", status FROM gone"#,
            t = env.token,
            r = slugs[1]
        ),
    );
    // As with --run: the tenant gone is reported skipped (exit 1), the
    // others are taken back.
    let undone = tenant(&env, "revert", &full, &["--label", "rel-1", "--yes"])
        .code(1)
        .json();
    let skipped: Vec<&Value> = undone["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter(|t| t["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{undone}");
    assert!(
        skipped[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer in the master")),
        "{undone}"
    );
    assert_eq!(env.applied(&env.db("a")), [V1, V2]);
    // The recycled database keeps what the new company has.
    assert_eq!(env.applied(&env.db("r")).last(), Some(&V5));
}
