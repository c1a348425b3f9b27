//! Running across the fleet: selection, shards, fail-fast, timeouts,
//! interrupts, concurrent runs, dry runs and status.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Run, TestEnv, block_on, find};

fn slugs(report: &serde_json::Value) -> Vec<String> {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect()
}

fn add_migration(dir: &Path, file: &str, sql: &str) {
    std::fs::write(dir.join(file), sql).expect("write migration");
}

#[test]
fn selection_status_filter_and_shards() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let all = env.tenants_with(&dir, &["a", "b", "c", "d", "e", "f"]);
    let dir = dir.to_str().expect("utf-8");
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET status = 'failed' WHERE slug = '{}'"#,
            all[5]
        ),
    );
    let status = |args: &[&str]| -> Vec<String> {
        let mut full = vec![
            "tenant",
            "status",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ];
        full.extend_from_slice(args);
        slugs(&env.run(&full).ok().json())
    };

    assert_eq!(status(&["--all"]), all[..5], "--all means active tenants");
    assert_eq!(status(&["--all", "--status", "failed"]), all[5..]);
    assert_eq!(
        status(&["--all", "--status", "failed", "--status", "active"]).len(),
        6
    );
    assert_eq!(
        status(&[&all[3], &all[1]]),
        [all[3].clone(), all[1].clone()],
        "named, in the order given"
    );

    let mut seen = BTreeSet::new();
    let mut total = 0;
    for i in 0..3 {
        let shard = format!("{i}/3");
        let part = status(&[
            "--all", "--status", "active", "--status", "failed", "--shard", &shard,
        ]);
        total += part.len();
        seen.extend(part);
    }
    assert_eq!(total, 6, "no tenant in two shards");
    assert_eq!(seen.len(), 6, "every tenant in some shard");

    // The env fallback gives the same split as the flag.
    let by_flag = status(&["--all", "--shard", "1/2"]);
    let by_env = env
        .run_with(
            &[
                "tenant",
                "status",
                "--all",
                "--output",
                "json",
                "--tenant-migrations",
                dir,
            ],
            |c| {
                c.env("TENANTCTL_SHARD", "1/2");
            },
        )
        .ok()
        .json();
    assert_eq!(slugs(&by_env), by_flag);

    let bad = env.run(&["tenant", "migrate", "--all", "--shard", "3/3"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let neither = env.run(&["tenant", "migrate"]);
    assert_eq!(neither.code, 2, "{}", neither.stderr);
    assert!(neither.stderr.contains("--all"), "{}", neither.stderr);
}

#[test]
fn fail_fast_skips_the_rest_and_default_tries_everyone() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    let dir = dir.to_str().expect("utf-8");
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("a")));

    let run = env.run(&[
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "1",
        "--fail-fast",
        "--output",
        "json",
        "--tenant-migrations",
        dir,
    ]);
    assert_eq!(run.code, 1);
    let report = run.json();
    assert_eq!(
        report["summary"],
        serde_json::json!({"ok": 0, "failed": 1, "skipped": 2})
    );
    assert_eq!(find(&report, &slugs[1])["status"], "skipped");
    assert!(
        find(&report, &slugs[2])["error"]
            .as_str()
            .is_some_and(|e| e.contains("--fail-fast"))
    );

    let run = env.run(&[
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--tenant-migrations",
        dir,
    ]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.json()["summary"],
        serde_json::json!({"ok": 2, "failed": 1, "skipped": 0})
    );
}

#[test]
fn lock_and_statement_timeouts_fail_the_tenant_with_the_reason() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["locked"]);
    add_migration(
        &dir,
        "20250101000003_alter.sql",
        "ALTER TABLE items ADD COLUMN extra int;",
    );
    let dir_str = dir.to_str().expect("utf-8");

    // Application traffic holds a lock the migration needs.
    let run = block_on(async {
        use sqlx::Executor as _;
        let mut conn = env.connect(&env.db("locked")).await;
        conn.execute("BEGIN; LOCK TABLE items IN ACCESS SHARE MODE")
            .await
            .expect("lock");
        let started = Instant::now();
        let run = env.run(&[
            "tenant",
            "migrate",
            &slugs[0],
            "--lock-timeout",
            "200ms",
            "--output",
            "json",
            "--tenant-migrations",
            dir_str,
        ]);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the lock timeout did not fire"
        );
        conn.execute("ROLLBACK").await.expect("unlock");
        run
    });
    assert_eq!(run.code, 1);
    let tenant = run.json()["tenants"][0].clone();
    assert!(
        tenant["error"]
            .as_str()
            .is_some_and(|e| e.contains("lock timeout")),
        "{tenant}"
    );
    assert_eq!(
        env.applied(&env.db("locked")).len(),
        2,
        "nothing half-applied"
    );

    std::fs::remove_file(dir.join("20250101000003_alter.sql")).expect("remove");
    add_migration(&dir, "20250101000003_slow.sql", "SELECT pg_sleep(5);");
    let run = env.run(&[
        "tenant",
        "migrate",
        &slugs[0],
        "--statement-timeout",
        "300ms",
        "--output",
        "json",
        "--tenant-migrations",
        dir_str,
    ]);
    assert_eq!(run.code, 1);
    let tenant = run.json()["tenants"][0].clone();
    assert!(
        tenant["error"]
            .as_str()
            .is_some_and(|e| e.contains("statement timeout")),
        "{tenant}"
    );
}

#[test]
fn connect_timeout_names_the_server() {
    let env = TestEnv::new();
    // Accepts TCP connections (the kernel's backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let started = Instant::now();
    let run = env.run_with(&["tenant", "list", "--connect-timeout", "300ms"], |c| {
        c.env(
            "MASTER_DATABASE_URL",
            format!("postgresql://u:pw@127.0.0.1:{port}/master"),
        );
    });
    assert_eq!(run.code, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")) && run.stderr.contains("timed out"),
        "{}",
        run.stderr
    );
}

#[test]
fn interrupt_finishes_in_flight_tenant_skips_the_rest_and_rerun_completes() {
    interrupted_run("-INT", "1.5");
}

#[test]
fn sigterm_stops_the_same_way() {
    interrupted_run("-TERM", "1.6");
}

/// Sends `signal` while the first of three tenants runs a migration that
/// sleeps `sleep` seconds (distinct per caller, to find it in
/// pg_stat_activity), then checks the report and that a rerun completes.
fn interrupted_run(signal: &str, sleep: &str) {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    add_migration(
        &dir,
        "20250101000003_slow.sql",
        &format!("CREATE TABLE slow_marker (id int);\nSELECT pg_sleep({sleep});"),
    );
    let dir = dir.to_str().expect("utf-8");
    let args = [
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--tenant-migrations",
        dir,
    ];

    let child = env.spawn(&args);
    // Wait until the first tenant's migration is running, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env
        .query("postgres", &format!("SELECT pid::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep({sleep})%' AND pid <> pg_backend_pid()"))
        .is_empty()
    {
        assert!(Instant::now() < deadline, "migration never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let run = Run::from(child.wait_with_output().expect("wait"));
    assert_eq!(run.code, 130, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["interrupted"], true);
    assert_eq!(
        report["summary"],
        serde_json::json!({"ok": 1, "failed": 0, "skipped": 2})
    );
    assert_eq!(
        find(&report, &slugs[0])["applied"],
        serde_json::json!([20_250_101_000_003_i64])
    );
    for name in ["b", "c"] {
        assert_eq!(env.applied(&env.db(name)).len(), 2, "{name} untouched");
        assert_eq!(
            env.query(
                &env.db(name),
                "SELECT coalesce(to_regclass('slow_marker')::text, '')"
            ),
            [""]
        );
    }

    let rerun = env.run(&args).ok().json();
    assert_eq!(
        rerun["summary"],
        serde_json::json!({"ok": 3, "failed": 0, "skipped": 0})
    );
    assert_eq!(find(&rerun, &slugs[0])["applied"], serde_json::json!([]));
    assert_eq!(
        find(&rerun, &slugs[1])["applied"],
        serde_json::json!([20_250_101_000_003_i64])
    );
}

#[test]
fn two_runs_at_once_never_apply_a_migration_twice() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    add_migration(
        &dir,
        "20250101000003_slow.sql",
        "CREATE TABLE slow_marker (id int);\nSELECT pg_sleep(1);",
    );
    let dir = dir.to_str().expect("utf-8");
    // A lock timeout shorter than the other run's migration: it is for
    // migrations blocked by traffic, never for waiting on the other deploy.
    let args = [
        "tenant",
        "migrate",
        "--all",
        "--output",
        "json",
        "--lock-timeout",
        "200ms",
        "--tenant-migrations",
        dir,
    ];
    let first = env.spawn(&args);
    let second = env.spawn(&args);
    let mut applied_total = std::collections::BTreeMap::<String, usize>::new();
    for child in [first, second] {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        for slug in &slugs {
            *applied_total.entry(slug.clone()).or_default() += find(&report, slug)["applied"]
                .as_array()
                .expect("applied")
                .len();
        }
    }
    for slug in &slugs {
        assert_eq!(
            applied_total[slug], 1,
            "{slug}: applied once across both runs"
        );
    }
    assert_eq!(env.applied(&env.db("a")).len(), 3);
}

#[test]
fn dry_run_changes_nothing_and_jsonl_streams() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    add_migration(
        &dir,
        "20250101000003_more.sql",
        "CREATE TABLE more (id int);",
    );
    let dir = dir.to_str().expect("utf-8");

    let report = env
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--dry-run",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    let a = find(&report, &slugs[0]);
    assert_eq!(a["pending"], serde_json::json!([20_250_101_000_003_i64]));
    assert_eq!(a["applied"], serde_json::json!([]));
    assert_eq!(env.applied(&env.db("a")).len(), 2);
    assert_eq!(
        env.query(
            &env.db("a"),
            "SELECT coalesce(to_regclass('more')::text, '')"
        ),
        [""]
    );

    let run = env
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--output",
            "jsonl",
            "--tenant-migrations",
            dir,
        ])
        .ok();
    assert!(
        run.stderr.is_empty(),
        "no progress bar without a terminal: {}",
        run.stderr
    );
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[2]["summary"],
        serde_json::json!({"ok": 2, "failed": 0, "skipped": 0})
    );
    assert!(
        lines[..2]
            .iter()
            .all(|l| l["applied"] == serde_json::json!([20_250_101_000_003_i64]))
    );
}

#[test]
fn status_reports_each_problem_kind() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["fine", "gone", "drift", "dirty", "alien", "behind"]);
    let dir_str = dir.to_str().expect("utf-8");
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
    env.exec(
        &env.db("drift"),
        "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 20250101000001",
    );
    env.exec(
        &env.db("dirty"),
        "UPDATE _sqlx_migrations SET success = false WHERE version = 20250101000002",
    );
    env.exec(
        &env.db("alien"),
        "INSERT INTO _sqlx_migrations VALUES (20990101000000, 'future', now(), true, '\\x00', 0)",
    );
    env.exec(
        &env.db("behind"),
        "DELETE FROM _sqlx_migrations WHERE version = 20250101000002",
    );

    let run = env.run(&[
        "tenant",
        "status",
        "--all",
        "--output",
        "json",
        "--tenant-migrations",
        dir_str,
    ]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let kinds = |name: &str| -> Vec<String> {
        find(&report, &env.slug(name))["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .map(|p| p["kind"].as_str().expect("kind").to_owned())
            .collect()
    };
    assert_eq!(kinds("fine"), Vec::<String>::new());
    assert_eq!(kinds("gone"), ["database_missing"]);
    assert_eq!(kinds("drift"), ["checksum_mismatch"]);
    assert_eq!(kinds("dirty"), ["dirty"]);
    assert_eq!(kinds("alien"), ["unknown"]);
    assert_eq!(kinds("behind"), Vec::<String>::new());
    let behind = find(&report, &env.slug("behind"));
    assert_eq!(behind["pending"], 1);
    assert_eq!(behind["status"], "ok");
    assert_eq!(
        find(&report, &env.slug("fine"))["latest"],
        20_250_101_000_002_i64
    );
    assert_eq!(report["summary"]["failed"], 4);
}
