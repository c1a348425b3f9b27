//! Running across the fleet: selection, shards, fail-fast, timeouts,
//! interrupts, concurrent runs, dry runs and status.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Gate, Run, TestEnv, block_on, find, wait_with_deadline};

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

    // Each shard is exactly the tenants whose id hashes to it with 64-bit
    // FNV-1a (computed here independently), so a constant or wrong hash
    // fails, not only a split that loses or repeats tenants.
    let ids: Vec<(String, String)> =
        env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["slug"].as_str().expect("slug").to_owned(),
                    r["id"].as_str().expect("id").to_owned(),
                )
            })
            .collect();
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for i in 0..3 {
        let shard = format!("{i}/3");
        let part = status(&[
            "--all", "--status", "active", "--status", "failed", "--shard", &shard,
        ]);
        let expected: Vec<String> = ids
            .iter()
            .filter(|(_, id)| fnv1a(id) % 3 == i)
            .map(|(slug, _)| slug.clone())
            .collect();
        assert_eq!(part, expected, "shard {shard}");
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

    env.expect(&["tenant", "migrate", "--all", "--shard", "3/3"])
        .stderr(
            "error: invalid value '3/3' for '--shard <I/N>': \"3/3\" is not a shard: use I/N with \
             0 <= I < N, e.g. 0/4, or auto in a CI job\n\n\
             For more information, try '--help'.\n",
        )
        .status(2)
        .run();
    env.expect(&["tenant", "migrate"])
        .stderr("error: name one or more tenants (slug or id), or pass --all or --status\n")
        .status(2)
        .run();
}

/// 64-bit FNV-1a, as its definition gives it (the shard split's hash).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn fail_fast_skips_the_rest_and_default_tries_everyone() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    // Something for b and c to do, so a tenant started by mistake shows.
    add_migration(
        &dir,
        "20250101000003_marker.sql",
        "CREATE TABLE fail_fast_marker (id int);",
    );
    let dir = dir.to_str().expect("utf-8");
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("a")));
    let marker = "SELECT coalesce(to_regclass('fail_fast_marker')::text, '')";

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
    for name in ["b", "c"] {
        assert_eq!(env.applied(&env.db(name)).len(), 2, "{name} not started");
        assert_eq!(env.query(&env.db(name), marker), [""], "{name} not started");
    }

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
    for name in ["b", "c"] {
        assert_eq!(env.query(&env.db(name), marker), ["fail_fast_marker"]);
    }
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
        // Without the timeout the migration would wait for this lock for
        // ever: the deadline fails the test instead.
        let run = wait_with_deadline(
            env.spawn(&[
                "tenant",
                "migrate",
                &slugs[0],
                "--lock-timeout",
                "200ms",
                "--output",
                "json",
                "--tenant-migrations",
                dir_str,
            ]),
            Duration::from_secs(30),
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
    let took = started.elapsed();
    assert_eq!(run.code, 1);
    // Well under the 5 s default (with room for a loaded machine to start
    // the process): the flag was applied, not merely accepted.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}"))
            && run.stderr.contains("timed out after 300ms"),
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
    // The first run's migration stays in flight until the gate opens, so
    // the second run provably starts while the first holds the lock.
    let gate = Gate::new(&env);
    add_migration(
        &dir,
        "20250101000003_slow.sql",
        &format!("CREATE TABLE slow_marker (id int);\n{}", gate.sql()),
    );
    let dir = dir.to_str().expect("utf-8");
    // A lock timeout much shorter than the second run's wait: it is for
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
    let mut at_gate = gate.wait_for(&env, 2);
    at_gate.sort();
    assert_eq!(at_gate, [env.db("a"), env.db("b")]);
    let second = env.spawn(&args);
    // The second run waits for the first one's migration lock in both
    // databases, for longer than its lock timeout.
    let waiting_for_lock = format!(
        "SELECT count(*)::text FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE l.locktype = 'advisory' AND NOT l.granted
            AND l.waitstart < now() - interval '600 ms'
            AND d.datname IN ('{}', '{}')",
        env.db("a"),
        env.db("b")
    );
    crate::support::wait_until(
        Duration::from_secs(60),
        "the second run to wait for the first one's migration locks",
        || (env.query("postgres", &waiting_for_lock) == ["2"]).then_some(()),
    );
    let open = gate.open(&env);
    let mut applied_total = std::collections::BTreeMap::<String, usize>::new();
    let mut reports = Vec::new();
    for child in [first, second] {
        let report = wait_with_deadline(child, Duration::from_secs(60))
            .ok()
            .json();
        for slug in &slugs {
            assert_eq!(find(&report, slug)["status"], "ok", "{report}");
            *applied_total.entry(slug.clone()).or_default() += find(&report, slug)["applied"]
                .as_array()
                .expect("applied")
                .len();
        }
        reports.push(report);
    }
    drop(open);
    for slug in &slugs {
        assert_eq!(
            applied_total[slug], 1,
            "{slug}: applied once across both runs"
        );
        // The run that waited found nothing left to do.
        assert_eq!(find(&reports[1], slug)["applied"], serde_json::json!([]));
    }
    assert_eq!(env.applied(&env.db("a")).len(), 3);
    assert_eq!(env.applied(&env.db("b")).len(), 3);
}

/// JSONL reports a tenant the moment it is done: the first line is read
/// while another tenant is still blocked (by a lock this test holds), so
/// the run cannot have ended.
#[test]
fn jsonl_lines_arrive_while_the_run_is_still_going() {
    use std::io::BufRead as _;

    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    add_migration(
        &dir,
        "20250101000003_alter.sql",
        "ALTER TABLE items ADD COLUMN extra int;",
    );
    let dir = dir.to_str().expect("utf-8");
    block_on(async {
        use sqlx::Executor as _;
        let mut blocker = env.connect(&env.db("b")).await;
        blocker
            .execute("BEGIN; LOCK TABLE items IN ACCESS SHARE MODE")
            .await
            .expect("lock");
        let mut child = env.spawn(&[
            "tenant",
            "migrate",
            "--all",
            "--concurrency",
            "1",
            "--output",
            "jsonl",
            "--tenant-migrations",
            dir,
        ]);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(60));
        let still_running = child.try_wait().expect("try_wait").is_none();
        // Let b go on before asserting, so a failure never leaves the run blocked.
        blocker.execute("ROLLBACK").await.expect("unlock");
        let first: serde_json::Value =
            serde_json::from_str(&first.expect("a line while b is still blocked")).expect("JSON");
        assert!(still_running, "the run had ended before its first line");
        assert_eq!(first["slug"], slugs[0].as_str());
        assert_eq!(
            first["applied"],
            serde_json::json!([20_250_101_000_003_i64])
        );
        let run = wait_with_deadline(child, Duration::from_secs(60)).ok();
        assert!(run.stderr.is_empty(), "{}", run.stderr);
        let rest: Vec<serde_json::Value> = rx
            .iter()
            .map(|l| serde_json::from_str(&l).expect("JSON"))
            .collect();
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert_eq!(rest[0]["slug"], slugs[1].as_str());
        assert_eq!(
            rest[1]["summary"],
            serde_json::json!({"ok": 2, "failed": 0, "skipped": 0})
        );
    });
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
