//! What a run selected and why (issue 15, items 9 and 10): the
//! prerequisites `just test` installs on a fresh machine, and every fleet
//! report stating its selection and where each part of it came from.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, tempdir::TempDir};

/// A folder of links to every program on PATH except `hidden`, with `fakes`
/// (name, shell script) in their place: a machine that lacks some tools,
/// or where `id` says we are not root and `cargo` has no network.
fn bin_dir_without(root: &Path, hidden: &[&str], fakes: &[(&str, &str)]) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("create bin");
    let path = std::env::var_os("PATH").expect("PATH");
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if hidden.contains(&name_str.as_ref())
                || fakes.iter().any(|(fake, _)| *fake == name_str)
            {
                continue;
            }
            let link = bin.join(&name);
            if !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    for (name, script) in fakes {
        let file = bin.join(name);
        std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).expect("write fake");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// Runs scripts/prereqs.sh with only `bin` on PATH and a HOME of its own
/// (whose .cargo/bin holds nothing), so what is hidden is really absent.
fn prereqs(home: &Path, bin: &Path, args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prereqs.sh");
    Run::from(
        Command::new(script)
            .args(args)
            .env("PATH", bin)
            .env("HOME", home)
            .env_remove("LIBCLANG_PATH")
            .output()
            .expect("run prereqs.sh"),
    )
}

const SQLX_INSTALL: &str = "cargo install --locked sqlx-cli --version 0.8.6 --no-default-features --features postgres,rustls";

#[test]
fn prereqs_find_sqlx_cli_missing_and_name_the_command_that_installs_it() {
    let dir = TempDir::new("prereqs-sqlx");
    let bin = bin_dir_without(dir.path(), &["sqlx"], &[]);
    // --check installs nothing: one line naming sqlx-cli and its command.
    for mode in ["test", "ci", "bench"] {
        let run = prereqs(dir.path(), &bin, &[mode, "--check"]).code(1);
        assert_eq!(
            run.stderr,
            format!(
                "prereqs: missing sqlx-cli 0.8.6 (the revert tests and the bench compare with it): install it with: {SQLX_INSTALL}\n"
            ),
            "{mode}"
        );
    }
    // The demo does not need it: nothing is missing.
    let run = prereqs(dir.path(), &bin, &["demo", "--check"]).ok();
    assert_eq!(run.stderr, "");
    // Installing with no network: cargo fails, one line says what to run.
    let offline = TempDir::new("prereqs-offline");
    let bin = bin_dir_without(
        offline.path(),
        &["sqlx"],
        &[(
            "cargo",
            "echo 'error: could not resolve crates.io' >&2; exit 101",
        )],
    );
    let run = prereqs(offline.path(), &bin, &["test"]).code(1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert_eq!(
        lines[0],
        format!(
            "prereqs: installing sqlx-cli 0.8.6 (the revert tests and the bench compare with it): {SQLX_INSTALL}"
        )
    );
    assert!(
        lines[1].starts_with(
            "prereqs: could not install sqlx-cli 0.8.6 (no network? its output is in "
        ) && lines[1].ends_with(&format!("): run: {SQLX_INSTALL}")),
        "{}",
        lines[1]
    );
}

#[test]
fn prereqs_say_apt_needs_root_instead_of_failing_halfway() {
    let dir = TempDir::new("prereqs-noroot");
    // Not root, and PostgreSQL's pg_virtualenv absent.
    let bin = bin_dir_without(dir.path(), &["pg_virtualenv"], &[("id", "echo 1000")]);
    for mode in ["test", "demo", "ci"] {
        let run = prereqs(dir.path(), &bin, &[mode]).code(1);
        assert_eq!(
            run.stderr,
            "prereqs: missing PostgreSQL (pg_virtualenv) (throwaway clusters for the tests, the demo and the bench), and installing it needs root: run: sudo apt-get install -y postgresql postgresql-common\n",
            "{mode}"
        );
    }
    let run = prereqs(dir.path(), &bin, &["test", "--check"]).code(1);
    assert!(
        run.stderr
            .contains("missing PostgreSQL (pg_virtualenv) (throwaway clusters for the tests, the demo and the bench): install it with: apt-get install -y postgresql postgresql-common"),
        "{}",
        run.stderr
    );
    // A mode it does not know is a usage error.
    prereqs(dir.path(), &bin, &["deploy"]).code(2);
}

#[test]
fn prereqs_pass_quietly_when_everything_is_there() {
    let dir = TempDir::new("prereqs-all");
    let bin = bin_dir_without(dir.path(), &[], &[]);
    for mode in ["test", "demo", "bench", "ci"] {
        let run = prereqs(dir.path(), &bin, &[mode]).ok();
        assert_eq!(run.stderr, "", "{mode}");
    }
}

// ---- Item 10: every fleet report states its selection and its sources ----

use crate::support::TestEnv;
use serde_json::{Value, json};

/// A master with six active tenants, one failed and one on no server but
/// the default; returns the slugs in creation order.
fn fleet(env: &TestEnv) -> Vec<String> {
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    env.with_tenants(&names);
    let slugs: Vec<String> = names.iter().map(|n| env.slug(n)).collect();
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET status = 'failed' WHERE slug = '{}'"#,
            slugs[6]
        ),
    );
    slugs
}

/// A working directory two levels below the test's scratch folder, whose
/// `.env` (if written) is then a parent's, not the working directory's.
fn nested(env: &TestEnv) -> PathBuf {
    let dir = env.workdir.path().join("deploy").join("app");
    std::fs::create_dir_all(&dir).expect("nested dir");
    dir
}

fn write_env_file(env: &TestEnv, contents: &str) -> PathBuf {
    let file = env.workdir.path().join(".env");
    std::fs::write(&file, contents).expect("write .env");
    file
}

/// The tenants a report lists.
fn listed(report: &Value) -> Vec<String> {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect()
}

/// What `tenant runs ID --output json` recorded as the run's selection.
fn recorded_selection(env: &TestEnv, report: &Value) -> Value {
    let id = report["run_id"].as_i64().expect("run_id");
    let run = env
        .run(&["tenant", "runs", &id.to_string(), "--output", "json"])
        .ok()
        .json();
    run["run"]["selection"].clone()
}

#[test]
fn a_shard_from_a_parent_env_file_is_stated_by_every_report_and_the_run_record() {
    let env = TestEnv::new();
    fleet(&env);
    let file = write_env_file(&env, "# the deploy job's settings\nTENANTCTL_SHARD=1/3\n");
    let cwd = nested(&env);
    let from = json!({"source": "env_file", "variable": "TENANTCTL_SHARD", "file": file.display().to_string()});
    let note = format!(
        "note: loaded {}, which sets TENANTCTL_SHARD",
        file.display()
    );

    // JSON: the selection, and stderr names the file.
    let run = env.run_with(&["tenant", "migrate", "--all", "--output", "json"], |c| {
        c.current_dir(&cwd);
    });
    let run = run.ok();
    assert_eq!(
        run.stderr.lines().next(),
        Some(note.as_str()),
        "{}",
        run.stderr
    );
    let report = run.json();
    let selected = listed(&report).len();
    assert!(
        selected < 6,
        "a shard of 3 took {selected} of 6 active tenants"
    );
    assert_eq!(
        report["selection"],
        json!({
            "companies": 7,
            "selected": selected,
            "all": true,
            "tenants": [],
            "statuses": ["active"],
            "servers": [],
            "shard": "1/3",
            "run": null,
            "from": {"all": {"source": "command_line"}, "statuses": {"source": "default"}, "shard": from},
        })
    );
    // Existing keys are unchanged.
    for key in ["tenants", "summary", "interrupted", "run_id"] {
        assert!(report.get(key).is_some(), "{key}: {report}");
    }
    // The run record states the same selection.
    assert_eq!(recorded_selection(&env, &report), report["selection"]);

    // The table's footer says it in words, and so does `tenant runs ID`.
    let run = env
        .run_with(&["tenant", "migrate", "--all"], |c| {
            c.current_dir(&cwd);
        })
        .ok();
    assert_eq!(
        run.stderr.lines().next(),
        Some(note.as_str()),
        "{}",
        run.stderr
    );
    let footer = format!(
        "selected {selected} of the master's 7 companies: --all, status active (by default), shard 1/3 (from TENANTCTL_SHARD in {})",
        file.display()
    );
    assert_eq!(
        run.stdout.lines().last(),
        Some(footer.as_str()),
        "{}",
        run.stdout
    );
    let run_id = run
        .stdout
        .lines()
        .find_map(|l| l.split("; recorded as run ").nth(1))
        .expect("a run id in the table")
        .to_owned();
    let shown = env.run(&["tenant", "runs", &run_id]).ok().stdout;
    assert!(shown.lines().any(|l| l == footer), "{shown}");

    // JSONL: the summary line carries it; status (no run record) too.
    for command in ["migrate", "status"] {
        let run = env
            .run_with(&["tenant", command, "--all", "--output", "jsonl"], |c| {
                c.current_dir(&cwd);
            })
            .ok();
        let last: Value =
            serde_json::from_str(run.stdout.lines().last().expect("summary")).expect("json");
        assert!(last.get("summary").is_some(), "{command}: {last}");
        assert_eq!(last["selection"]["shard"], "1/3", "{command}: {last}");
        assert_eq!(
            last["selection"]["from"]["shard"], from,
            "{command}: {last}"
        );
        assert_eq!(last["selection"]["selected"], selected, "{command}: {last}");
    }
}

#[test]
fn the_shard_source_is_the_flag_the_environment_or_the_file_that_set_it() {
    let env = TestEnv::new();
    fleet(&env);
    let file = write_env_file(&env, "TENANTCTL_SHARD=1/3\nTENANTCTL_CONCURRENCY=2\n");
    let cwd = nested(&env);
    let status = |args: &[&str], shard_env: Option<&str>| -> (Value, String) {
        let mut full = vec!["tenant", "status", "--output", "json"];
        full.extend_from_slice(args);
        let run = env
            .run_with(&full, |c| {
                c.current_dir(&cwd);
                if let Some(value) = shard_env {
                    c.env("TENANTCTL_SHARD", value);
                }
            })
            .ok();
        let report = run.json();
        assert_eq!(
            report["selection"]["selected"],
            listed(&report).len(),
            "{report}"
        );
        (report["selection"].clone(), run.stderr)
    };

    // The real environment wins over the file, and stderr says so.
    let (selection, stderr) = status(&["--all"], Some("0/2"));
    assert_eq!(selection["shard"], "0/2");
    assert_eq!(
        selection["from"]["shard"],
        json!({"source": "environment", "variable": "TENANTCTL_SHARD"})
    );
    assert_eq!(
        stderr.lines().next(),
        Some(
            format!(
                "note: loaded {}, which sets TENANTCTL_CONCURRENCY (TENANTCTL_SHARD already set in the environment, which wins)",
                file.display()
            )
            .as_str()
        ),
        "{stderr}"
    );
    // The flag wins over both.
    let (selection, _) = status(&["--all", "--shard", "1/2"], Some("0/2"));
    assert_eq!(selection["shard"], "1/2");
    assert_eq!(
        selection["from"]["shard"],
        json!({"source": "command_line"})
    );

    // Without a .env anywhere: no note, and the environment is named.
    std::fs::remove_file(&file).expect("remove .env");
    let (selection, stderr) = status(&["--status", "active", "--status", "failed"], Some("0/2"));
    assert!(!stderr.contains(".env"), "{stderr}");
    assert_eq!(selection["statuses"], json!(["active", "failed"]));
    assert_eq!(
        selection["from"]["statuses"],
        json!({"source": "command_line"})
    );
    assert_eq!(selection["all"], false);
    assert!(selection["from"].get("all").is_none(), "{selection}");
    assert_eq!(selection["companies"], 7);
}

#[test]
fn named_tenants_and_server_and_status_filters_are_stated() {
    let env = TestEnv::new();
    let slugs = fleet(&env);
    write_env_file(&env, "TENANTCTL_SHARD=1/3\n");
    let cwd = nested(&env);
    // Named tenants are never sharded: the report says no shard applied.
    let run = env
        .run_with(
            &[
                "tenant", "migrate", &slugs[0], &slugs[6], "--output", "json",
            ],
            |c| {
                c.current_dir(&cwd);
            },
        )
        .ok();
    let report = run.json();
    assert_eq!(
        report["selection"],
        json!({
            "companies": 7,
            "selected": 2,
            "all": false,
            "tenants": [slugs[0], slugs[6]],
            "statuses": [],
            "servers": [],
            "shard": null,
            "run": null,
            "from": {"tenants": {"source": "command_line"}},
        })
    );
    assert_eq!(recorded_selection(&env, &report), report["selection"]);

    // Named, narrowed by --status: two named, one selected.
    let run = env
        .run_with(
            &[
                "tenant", "status", &slugs[0], &slugs[6], "--status", "failed",
            ],
            |c| {
                c.current_dir(&cwd);
            },
        )
        .ok();
    assert_eq!(
        run.stdout.lines().last(),
        Some(
            format!(
                "selected 1 of the master's 7 companies: named {}, {}, --status failed",
                slugs[0], slugs[6]
            )
            .as_str()
        ),
        "{}",
        run.stdout
    );

    // --server with --all: every company is on the default server.
    let run = env
        .run_with(
            &[
                "tenant", "status", "--all", "--server", "default", "--shard", "0/1",
            ],
            |c| {
                c.current_dir(&cwd);
            },
        )
        .ok();
    assert_eq!(
        run.stdout.lines().last(),
        Some(
            "selected 6 of the master's 7 companies: --all, status active (by default), --server default, --shard 0/1"
        ),
        "{}",
        run.stdout
    );
    std::fs::remove_file(env.workdir.path().join(".env")).expect("remove .env");
    let report = env
        .run(&[
            "tenant", "status", "--all", "--server", "default", "--output", "json",
        ])
        .ok()
        .json();
    assert_eq!(report["selection"]["shard"], Value::Null);
    assert!(
        report["selection"]["from"].get("shard").is_none(),
        "{report}"
    );
    assert_eq!(report["selection"]["servers"], json!(["default"]));
    assert_eq!(
        report["selection"]["from"]["servers"],
        json!({"source": "command_line"})
    );
    assert_eq!(report["selection"]["selected"], 6);
}

#[test]
fn run_tables_from_before_the_selection_column_keep_working() {
    let env = TestEnv::new();
    fleet(&env);
    // Run tables as an older tenantctl made them, with one run recorded.
    env.exec(
        &env.master,
        r#"ALTER TABLE tenantctl.runs DROP COLUMN selection;
           INSERT INTO tenantctl.runs (command, tenants, outcome) VALUES ('migrate', 6, 'succeeded')"#,
    );
    let runs = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    assert_eq!(runs["runs"][0]["selection"], Value::Null, "{runs}");
    let old_id = runs["runs"][0]["id"].as_i64().expect("id");
    env.run(&["tenant", "runs", &old_id.to_string()]).ok();

    // A role that may write rows but does not own the table: the run goes
    // ahead, says its record will not state the selection, and its report
    // still does.
    let role = crate::support::role_with_password(&env, "writer", "writer-pw");
    env.exec(
        &env.master,
        &format!(
            r#"GRANT SELECT, UPDATE ON "Company" TO "writer_{t}";
               GRANT USAGE ON SCHEMA tenantctl TO "writer_{t}";
               GRANT SELECT, INSERT, UPDATE ON tenantctl.runs, tenantctl.run_tenants TO "writer_{t}";
               GRANT SELECT ON ALL TABLES IN SCHEMA public TO "writer_{t}";
               GRANT SELECT ON ALL TABLES IN SCHEMA tenantctl TO "writer_{t}""#,
            t = env.token
        ),
    );
    // (`--status dropped` selects nobody: the role needs no tenant rights.)
    let run = env.run_with(
        &[
            "tenant", "migrate", "--status", "dropped", "--output", "json",
        ],
        role.configure(),
    );
    let run = run.ok();
    assert!(
        run.stderr
            .contains("warning: this run's record will not state its selection"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["selection"]["selected"], 0);
    assert_eq!(report["selection"]["statuses"], json!(["dropped"]));
    assert_eq!(recorded_selection(&env, &report), Value::Null);

    // The owner's next run adds the column and records its selection.
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(report["selection"]["selected"], 6);
    assert_eq!(recorded_selection(&env, &report), report["selection"]);
}

#[test]
fn a_revert_of_a_run_states_that_run_as_its_selection() {
    let env = TestEnv::new();
    let full = env.fixture("reversible");
    let first = env.workdir.path().join("first");
    std::fs::create_dir_all(&first).expect("dir");
    std::fs::copy(
        full.join("20250101000001_items.sql"),
        first.join("20250101000001_items.sql"),
    )
    .expect("copy");
    let slugs = env.tenants_with(&first, &["a", "b", "c"]);
    let full = full.to_str().expect("utf-8");
    // A run that changes two of the three.
    let migrated = env
        .run(&[
            "tenant",
            "migrate",
            &slugs[0],
            &slugs[2],
            "--tenant-migrations",
            full,
            "--output",
            "json",
        ])
        .ok()
        .json();
    let id = migrated["run_id"].as_i64().expect("run_id");
    let run = env
        .run(&[
            "tenant",
            "revert",
            "--run",
            &id.to_string(),
            "--yes",
            "--tenant-migrations",
            full,
            "--output",
            "json",
        ])
        .ok();
    let report = run.json();
    assert_eq!(
        report["selection"],
        json!({
            "companies": 3,
            "selected": 2,
            "all": false,
            "tenants": [],
            "statuses": [],
            "servers": [],
            "shard": null,
            "run": id,
            "from": {"run": {"source": "command_line"}},
        })
    );
    assert_eq!(recorded_selection(&env, &report), report["selection"]);
    let table = env
        .run(&["tenant", "runs", &report["run_id"].to_string()])
        .ok()
        .stdout;
    assert!(
        table.lines().any(|l| l
            == format!(
                "selected 2 of the master's 3 companies: --run {id} (the tenants it changed)"
            )),
        "{table}"
    );
}
