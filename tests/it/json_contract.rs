//! The JSON contract (docs/src/json.md): every command's JSON, printed by
//! the real binary against a real server, validated against its schema in
//! docs/src/schemas/. Closed shapes say `additionalProperties: false`, so
//! a field nobody documented fails here.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{Run, TestEnv};

fn schema(name: &str) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/src/schemas")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("a schema is JSON");
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Asserts `value` is valid against schema `name`, naming every error.
#[track_caller]
fn holds(name: &str, value: &Value) {
    let validator = schema(name);
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

/// Runs `args` with `--output json` and validates the document.
#[track_caller]
fn json_holds(env: &TestEnv, name: &str, args: &[&str], code: i32) -> Value {
    // First: anything after `--` belongs to `tenant exec`'s program.
    let mut full = vec!["--output", "json"];
    full.extend(args);
    let run: Run = env.run(&full);
    assert_eq!(
        run.code, code,
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let value = run.json();
    holds(name, &value);
    value
}

/// Runs a fleet command with `--output jsonl` and validates each line:
/// tenant lines, then the summary line.
#[track_caller]
fn jsonl_holds(env: &TestEnv, name: &str, args: &[&str]) {
    let mut full = vec!["--output", "jsonl"];
    full.extend(args);
    let run = env.run(&full);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (last, tenants) = lines.split_last().expect("a summary line");
    for line in tenants {
        holds(&format!("{name}.line"), line);
    }
    holds(&format!("{name}.summary"), last);
}

#[test]
fn every_commands_json_holds_to_its_documented_schema() {
    let env = TestEnv::new();
    // The embedded schema: it has the settings table.
    json_holds(&env, "master-migrate", &["master", "migrate"], 0);
    let (a, b) = (env.slug("a"), env.slug("b"));
    json_holds(&env, "create", &["tenant", "create", &a], 0);
    json_holds(&env, "create", &["tenant", "create", &b], 0);
    let csv = env.workdir.path().join("more.csv");
    std::fs::write(&csv, format!("slug,name\n{},C\n", env.slug("c"))).expect("csv");
    json_holds(
        &env,
        "create-file",
        &[
            "tenant",
            "create",
            "--from-file",
            csv.to_str().expect("utf-8"),
        ],
        0,
    );

    json_holds(&env, "list", &["tenant", "list"], 0);
    json_holds(&env, "status", &["tenant", "status", "--all"], 0);
    jsonl_holds(&env, "status", &["tenant", "status", "--all"]);
    json_holds(&env, "migrate", &["tenant", "migrate", "--all"], 0);
    json_holds(
        &env,
        "migrate",
        &["tenant", "migrate", "--all", "--dry-run"],
        0,
    );
    jsonl_holds(&env, "migrate", &["tenant", "migrate", "--all"]);
    json_holds(
        &env,
        "sql",
        &["tenant", "sql", "--all", "--yes", "-c", "SELECT 1 AS one"],
        0,
    );
    json_holds(&env, "exec", &["tenant", "exec", "--all", "--", "true"], 0);
    json_holds(&env, "drift", &["tenant", "drift", "--all"], 0);
    json_holds(
        &env,
        "settings-fleet",
        &["tenant", "settings", "set", "--all", "theme", "dark"],
        0,
    );
    json_holds(
        &env,
        "settings-fleet",
        &["tenant", "settings", "get", "--all", "theme"],
        0,
    );
    json_holds(
        &env,
        "settings-get",
        &["tenant", "settings", "get", &a, "theme"],
        0,
    );
    json_holds(
        &env,
        "settings-list",
        &["tenant", "settings", "list", &a],
        0,
    );
    json_holds(&env, "url", &["tenant", "url", &a], 0);
    json_holds(&env, "runs", &["tenant", "runs"], 0);
    let runs = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    let id = runs["runs"][0]["id"].to_string();
    json_holds(&env, "run", &["tenant", "runs", &id], 0);
    // Other tests share the server: doctor may find their databases
    // (exit 1); the shape is the same either way.
    let run = env.run(&["--output", "json", "doctor"]);
    assert!(matches!(run.code, 0 | 1), "{}", run.all());
    holds("doctor", &run.json());
    json_holds(&env, "template-list", &["template", "list"], 0);
    json_holds(&env, "server-list", &["server", "list"], 0);
    json_holds(
        &env,
        "drop",
        &["tenant", "drop", &env.slug("c"), "--yes"],
        0,
    );
    // A usage error is the error object.
    let error = json_holds(&env, "error", &["tenant", "migrate"], 2);
    assert_eq!(error["kind"], "usage");
}

#[test]
fn a_revert_and_a_failed_run_hold_to_the_schema() {
    let env = TestEnv::new();
    let dir = env.fixture("reversible");
    let dir = dir.to_str().expect("utf-8");
    env.tenants_with(std::path::Path::new(dir), &["a"]);
    let report = json_holds(
        &env,
        "revert",
        &[
            "tenant",
            "revert",
            "--all",
            "--to",
            "0",
            "--yes",
            "--tenant-migrations",
            dir,
        ],
        0,
    );
    assert_eq!(report["summary"]["ok"], 1, "{report}");
    // A tenant whose database is gone fails: error and problems filled.
    env.exec("postgres", &format!("DROP DATABASE {}", env.db("a")));
    json_holds(
        &env,
        "status",
        &["tenant", "status", "--all", "--tenant-migrations", dir],
        1,
    );
    json_holds(
        &env,
        "migrate",
        &["tenant", "migrate", "--all", "--tenant-migrations", dir],
        1,
    );
}
