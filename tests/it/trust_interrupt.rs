//! An interrupt never hangs: a tenant waiting on a lock held elsewhere (no
//! `--lock-timeout`) is cancelled on the server once the grace period is
//! over (at once on a second interrupt), reported `interrupted` in the
//! output format asked for, the run record is closed as interrupted, no
//! session of tenantctl's is left waiting, and a rerun completes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Executor as _;

use crate::support::pooler::PgBouncer;
use crate::support::server::PrivateServer;
use crate::support::{Run, TestEnv, block_on, find, wait_until, wait_with_deadline};

/// Generous: the product's grace period is a few seconds; the point is
/// that it exits at all.
const EXITS_WITHIN: Duration = Duration::from_secs(30);

/// The grace period tenantctl documents (`fleet::INTERRUPT_GRACE`).
const GRACE: Duration = Duration::from_secs(5);

/// What the test holds in a tenant database while tenantctl runs.
#[derive(Clone, Copy)]
pub(crate) enum Held {
    /// `LOCK TABLE items IN ACCESS EXCLUSIVE MODE` in an open transaction.
    TableLock,
    /// sqlx's migration lock (the advisory lock an application's
    /// `Migrator::run` holds while it migrates).
    MigrationLock,
}

/// A lock held by a connection of the test's own until dropped.
pub(crate) struct Holding {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Holding {
    pub(crate) fn start(env: &TestEnv, db: &str, held: Held) -> Self {
        Self::start_at(env.db_url(db), db, held)
    }

    /// On the database at `url`, whose name is `db`.
    fn start_at(url: String, db: &str, held: Held) -> Self {
        let sql = match held {
            Held::TableLock => "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE".to_owned(),
            Held::MigrationLock => {
                let name = tenantctl::dbname::DbName::parse(db).expect("db name");
                format!(
                    "SELECT pg_advisory_lock({})",
                    tenantctl::migrations::lock_id(&name)
                )
            }
        };
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::postgres::PgConnection::connect(&url)
                    .await
                    .expect("connect to hold a lock");
                conn.execute(sql.as_str()).await.expect("take the lock");
                let _ = held_tx.send(());
                let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
                let _ = conn.close().await;
            });
        });
        held_rx.recv().expect("lock taken");
        Self {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sessions of tenantctl's in this database (its `application_name`).
fn tenantctl_sessions(env: &TestEnv, db: &str) -> Vec<String> {
    env.query(
        "postgres",
        &format!(
            "SELECT coalesce(wait_event_type, '') || ':' || state FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name LIKE 'tenantctl%'"
        ),
    )
}

/// Waits until tenantctl's session in `db` waits on a lock.
pub(crate) fn wait_for_lock_wait(env: &TestEnv, db: &str) {
    wait_until(
        Duration::from_secs(30),
        "tenantctl to wait on the lock",
        || {
            tenantctl_sessions(env, db)
                .iter()
                .any(|s| s.starts_with("Lock:"))
                .then_some(())
        },
    );
}

/// After tenantctl exited: no session of its left in `db` (a backend
/// notices its client is gone only when it next talks to it, so one
/// queued on a lock would stay).
fn assert_no_session_left(env: &TestEnv, db: &str) {
    wait_until(
        Duration::from_secs(10),
        "tenantctl's sessions to end",
        || tenantctl_sessions(env, db).is_empty().then_some(()),
    );
}

pub(crate) fn kill(signal: &str, pid: u32) {
    assert!(
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
}

/// The newest run's outcome in `tenant runs`.
fn last_run_outcome(env: &TestEnv) -> String {
    let runs = env.run(&["tenant", "runs", "--output", "json"]).ok().json();
    runs["runs"][0]["outcome"]
        .as_str()
        .expect("outcome")
        .to_owned()
}

/// Three tenants a, b, c on `two-step` plus a migration that alters
/// `items`; returns the env, the folder and the slugs.
fn setup() -> (TestEnv, String, Vec<String>) {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "ALTER TABLE items ADD COLUMN note text;",
    )
    .expect("write migration");
    let dir = dir.to_str().expect("utf-8").to_owned();
    (env, dir, slugs)
}

const V3: i64 = 20_250_101_000_003;

/// How the interrupt is delivered.
#[derive(Clone, Copy, Debug)]
enum Interrupt {
    Once(&'static str),
    /// Two SIGINTs in quick succession.
    Twice,
    /// SIGTERM to tenantctl's whole process group, as `timeout` and
    /// `docker stop` deliver it.
    Group,
}

/// `migrate --all --concurrency 1` where b waits on `held`; interrupted as
/// `how` once b waits. Returns the run's output.
fn interrupted_migrate(env: &TestEnv, dir: &str, held: Held, how: Interrupt, output: &str) -> Run {
    let holding = Holding::start(env, &env.db("b"), held);
    let mut cmd = env.cmd();
    cmd.args([
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "1",
        "--output",
        output,
        "--tenant-migrations",
        dir,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if matches!(how, Interrupt::Group) {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let child = cmd.spawn().expect("spawn tenantctl");
    let pid = child.id();
    wait_for_lock_wait(env, &env.db("b"));
    let sent = Instant::now();
    match how {
        Interrupt::Once(signal) => kill(signal, pid),
        Interrupt::Twice => {
            kill("-INT", pid);
            std::thread::sleep(Duration::from_millis(200));
            kill("-INT", pid);
        }
        // `kill -TERM -- -PGID`: tenantctl leads a group of its own here.
        Interrupt::Group => assert!(
            Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status()
                .expect("kill")
                .success()
        ),
    }
    let run = wait_with_deadline(child, EXITS_WITHIN);
    let took = sent.elapsed();
    assert_eq!(
        run.code, 130,
        "{how:?}: stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    if matches!(how, Interrupt::Twice) {
        // A second interrupt does not wait out the grace period.
        assert!(took < GRACE, "two interrupts took {took:?}: {}", run.stderr);
    }
    // Nothing of tenantctl's is still queued behind the test's lock,
    // which is still held.
    assert_no_session_left(env, &env.db("b"));
    drop(holding);
    run
}

fn assert_json_report(report: &serde_json::Value, slugs: &[String]) {
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(
        report["summary"],
        json!({"ok": 1, "failed": 0, "skipped": 1, "interrupted": 1}),
        "{report}"
    );
    assert_eq!(find(report, &slugs[0])["status"], "ok");
    assert_eq!(find(report, &slugs[0])["applied"], json!([V3]));
    let b = find(report, &slugs[1]);
    assert_eq!(b["status"], "interrupted", "{report}");
    assert_eq!(b["applied"], json!([]), "{report}");
    let error = b["error"].as_str().expect("error");
    assert!(error.starts_with("interrupted: "), "{error}");
    assert_eq!(find(report, &slugs[2])["status"], "skipped");
}

/// After the interrupted run: b and c untouched, the run closed as
/// interrupted, and a rerun (the lock gone) finishes the job.
fn assert_rerun_completes(env: &TestEnv, dir: &str, slugs: &[String]) {
    assert_eq!(last_run_outcome(env), "interrupted");
    for name in ["b", "c"] {
        assert_eq!(
            env.applied(&env.db(name)),
            [20_250_101_000_001, 20_250_101_000_002],
            "{name} untouched"
        );
    }
    let rerun = env.migrate_all(dir).ok().json();
    assert_eq!(
        rerun["summary"],
        json!({"ok": 3, "failed": 0, "skipped": 0})
    );
    assert_eq!(find(&rerun, &slugs[1])["applied"], json!([V3]));
    assert_eq!(find(&rerun, &slugs[2])["applied"], json!([V3]));
    assert_eq!(last_run_outcome(env), "succeeded");
}

#[test]
fn sigint_cancels_a_migration_waiting_on_a_table_lock_json() {
    let (env, dir, slugs) = setup();
    let run = interrupted_migrate(&env, &dir, Held::TableLock, Interrupt::Once("-INT"), "json");
    assert_json_report(&run.json(), &slugs);
    assert!(
        run.stderr
            .contains("interrupted: cancelling the statement in flight on tenant"),
        "{}",
        run.stderr
    );
    assert_rerun_completes(&env, &dir, &slugs);
}

#[test]
fn sigterm_cancels_a_migration_waiting_on_the_migration_lock_json() {
    let (env, dir, slugs) = setup();
    let run = interrupted_migrate(
        &env,
        &dir,
        Held::MigrationLock,
        Interrupt::Once("-TERM"),
        "json",
    );
    assert_json_report(&run.json(), &slugs);
    assert_rerun_completes(&env, &dir, &slugs);
}

#[test]
fn two_quick_sigints_print_the_report_and_exit_130_at_once() {
    let (env, dir, slugs) = setup();
    let run = interrupted_migrate(&env, &dir, Held::TableLock, Interrupt::Twice, "json");
    assert_json_report(&run.json(), &slugs);
    assert_rerun_completes(&env, &dir, &slugs);
}

#[test]
fn a_process_group_sigterm_reports_in_jsonl() {
    let (env, dir, slugs) = setup();
    let run = interrupted_migrate(&env, &dir, Held::TableLock, Interrupt::Group, "jsonl");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    let status = |slug: &str| {
        lines
            .iter()
            .find(|l| l["slug"] == slug)
            .map(|l| l["status"].clone())
    };
    assert_eq!(status(&slugs[0]), Some(json!("ok")));
    assert_eq!(status(&slugs[1]), Some(json!("interrupted")));
    assert_eq!(status(&slugs[2]), Some(json!("skipped")));
    assert_eq!(
        lines[3],
        json!({"schema_version": 1, "summary": {"ok": 1, "failed": 0, "skipped": 1, "interrupted": 1}, "interrupted": true, "run_id": lines[3]["run_id"], "selection": lines[3]["selection"]})
    );
    assert_rerun_completes(&env, &dir, &slugs);
}

#[test]
fn two_sigints_report_in_a_table_with_the_migration_lock_held() {
    let (env, dir, slugs) = setup();
    let run = interrupted_migrate(&env, &dir, Held::MigrationLock, Interrupt::Twice, "table");
    let row = |slug: &str| {
        run.stdout
            .lines()
            .find(|l| l.contains(slug))
            .unwrap_or_else(|| panic!("{slug} not in\n{}", run.stdout))
            .to_owned()
    };
    assert!(row(&slugs[0]).contains(" ok "), "{}", run.stdout);
    assert!(row(&slugs[1]).contains(" interrupted "), "{}", run.stdout);
    assert!(row(&slugs[2]).contains(" skipped "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("1 ok, 0 failed, 1 skipped, 1 interrupted; recorded as run"),
        "{}",
        run.stdout
    );
    assert_rerun_completes(&env, &dir, &slugs);
}

/// `timeout` signals its whole process group (itself and tenantctl).
#[test]
fn timeout_gets_the_report_too() {
    let (env, dir, slugs) = setup();
    let holding = Holding::start(&env, &env.db("b"), Held::TableLock);
    let mut cmd = Command::new("timeout");
    cmd.args(["--preserve-status", "-s", "TERM", "8"])
        .arg(env!("CARGO_BIN_EXE_tenantctl"))
        .args([
            "tenant",
            "migrate",
            "--all",
            "--concurrency",
            "1",
            "--output",
            "json",
            "--tenant-migrations",
            &dir,
        ]);
    env.configure(&mut cmd);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn timeout");
    let run = wait_with_deadline(child, Duration::from_secs(8) + EXITS_WITHIN);
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    // `timeout` signals tenantctl and its group: one interrupt, with its
    // grace period, not a second one that quits at once.
    assert!(!run.stderr.contains("interrupted again"), "{}", run.stderr);
    assert_json_report(&run.json(), &slugs);
    assert_no_session_left(&env, &env.db("b"));
    drop(holding);
    assert_rerun_completes(&env, &dir, &slugs);
}

/// `tenant sql` shares the path: its statement waiting on a lock is
/// cancelled, reported interrupted, and nothing of it stays.
#[test]
fn tenant_sql_waiting_on_a_lock_is_cancelled() {
    let (env, _dir, slugs) = setup();
    for how in [Interrupt::Once("-INT"), Interrupt::Twice] {
        let holding = Holding::start(&env, &env.db("b"), Held::TableLock);
        let child = env.spawn(&[
            "tenant",
            "sql",
            "--all",
            "--yes",
            "--concurrency",
            "1",
            "--output",
            "json",
            "-c",
            "INSERT INTO items VALUES (1, 'x')",
        ]);
        wait_for_lock_wait(&env, &env.db("b"));
        match how {
            Interrupt::Twice => {
                kill("-INT", child.id());
                std::thread::sleep(Duration::from_millis(200));
                kill("-INT", child.id());
            }
            _ => kill("-INT", child.id()),
        }
        let run = wait_with_deadline(child, EXITS_WITHIN);
        assert_eq!(run.code, 130, "{how:?}: {}\n{}", run.stdout, run.stderr);
        let report = run.json();
        assert_eq!(
            find(&report, &slugs[1])["status"],
            "interrupted",
            "{report}"
        );
        assert_eq!(find(&report, &slugs[2])["status"], "skipped", "{report}");
        assert_no_session_left(&env, &env.db("b"));
        drop(holding);
        assert_eq!(
            env.query(&env.db("b"), "SELECT count(*)::text FROM items"),
            ["0"],
            "{how:?}: rolled back"
        );
        // Reset a for the next round.
        env.exec(&env.db("a"), "DELETE FROM items");
    }
}

const APP_PASSWORD: &str = "app-Cancel-pw1";

/// Sessions in `db` of the private server waiting on a lock, as seen by
/// its superuser.
fn lock_waiters(server: &PrivateServer, db: &str) -> Vec<String> {
    block_on(async {
        use sqlx::Connection as _;
        let mut conn =
            sqlx::postgres::PgConnection::connect(&format!("{}/postgres", server.base_url()))
                .await
                .expect("connect to the private server");
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT usename::text FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        .bind(db)
        .fetch_all(&mut conn)
        .await
        .expect("read pg_stat_activity");
        let _ = conn.close().await;
        rows.into_iter().map(|(u,)| u).collect()
    })
}

/// Behind PgBouncer, in session mode and in transaction mode with one
/// server connection per pool (the waiting session is the tenant pool's
/// only one, so the cancel cannot come through that pool): the waiting
/// tenant is cancelled and reported interrupted all the same.
#[test]
fn behind_pgbouncer_a_waiting_tenant_is_cancelled_too() {
    for mode in ["transaction", "session"] {
        let env = TestEnv::new();
        let server = PrivateServer::start(&env.token);
        server.exec(
            "postgres",
            &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"),
        );
        server.exec("postgres", "CREATE DATABASE master OWNER app");
        let bouncer = PgBouncer::start(&server, &env.token, mode, &[("app", APP_PASSWORD)]);
        let marker = if mode == "transaction" {
            "?pgbouncer=true"
        } else {
            ""
        };
        let base = format!("{}/{marker}", bouncer.url_as("app", APP_PASSWORD));
        let master = format!("{}/master{marker}", bouncer.url_as("app", APP_PASSWORD));
        let configure = |c: &mut Command| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", &master);
        };
        let dir = env.fixture("two-step");
        let dir = dir.to_str().expect("utf-8").to_owned();
        env.run_with(&["master", "migrate"], configure).ok();
        for slug in ["acme", "globex", "initech"] {
            env.run_with(
                &["tenant", "create", slug, "--tenant-migrations", &dir],
                configure,
            )
            .ok();
        }
        std::fs::write(
            Path::new(&dir).join("20250101000003_more.sql"),
            "ALTER TABLE items ADD COLUMN note text;",
        )
        .expect("write migration");
        let holding = Holding::start_at(
            format!("{}/tenant_globex", server.base_url()),
            "tenant_globex",
            Held::TableLock,
        );
        let args = [
            "tenant",
            "migrate",
            "--all",
            "--concurrency",
            "1",
            "--output",
            "json",
            "--tenant-migrations",
            &dir,
        ];
        let mut cmd = env.cmd();
        configure(&mut cmd);
        let child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tenantctl");
        wait_until(
            Duration::from_secs(30),
            "globex to wait on the lock",
            || (!lock_waiters(&server, "tenant_globex").is_empty()).then_some(()),
        );
        kill("-INT", child.id());
        let run = wait_with_deadline(child, EXITS_WITHIN);
        assert_eq!(run.code, 130, "{mode}: {}\n{}", run.stdout, run.stderr);
        let report = run.json();
        assert_eq!(find(&report, "acme")["status"], "ok", "{mode}: {report}");
        assert_eq!(
            find(&report, "globex")["status"],
            "interrupted",
            "{mode}: {report}"
        );
        assert_eq!(
            find(&report, "initech")["status"],
            "skipped",
            "{mode}: {report}"
        );
        // PgBouncer may keep the server connection, but nothing waits.
        wait_until(Duration::from_secs(10), "no session waiting", || {
            lock_waiters(&server, "tenant_globex")
                .is_empty()
                .then_some(())
        });
        drop(holding);
        let rerun = env.run_with(&args, configure).ok().json();
        assert_eq!(
            rerun["summary"],
            json!({"ok": 3, "failed": 0, "skipped": 0}),
            "{mode}"
        );
    }
}

/// `tenant revert` goes the same way: a down script waiting on a lock is
/// cancelled and rolled back, the revert's own run closed as interrupted,
/// and a rerun finishes it.
#[test]
fn a_revert_waiting_on_a_lock_is_cancelled_and_a_rerun_finishes_it() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    std::fs::write(
        dir.join("20250101000003_more.up.sql"),
        "ALTER TABLE items ADD COLUMN note text;",
    )
    .expect("write migration");
    std::fs::write(
        dir.join("20250101000003_more.down.sql"),
        "ALTER TABLE items DROP COLUMN note;",
    )
    .expect("write migration");
    let dir = dir.to_str().expect("utf-8").to_owned();
    env.migrate_all(&dir).ok();
    let args = [
        "tenant",
        "revert",
        "--all",
        "--to",
        "20250101000002",
        "--yes",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--tenant-migrations",
        &dir,
    ];
    let holding = Holding::start(&env, &env.db("b"), Held::TableLock);
    let child = env.spawn(&args);
    wait_for_lock_wait(&env, &env.db("b"));
    kill("-TERM", child.id());
    let run = wait_with_deadline(child, EXITS_WITHIN);
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(find(&report, &slugs[0])["status"], "ok", "{report}");
    assert_eq!(
        find(&report, &slugs[1])["status"],
        "interrupted",
        "{report}"
    );
    assert_eq!(find(&report, &slugs[2])["status"], "skipped", "{report}");
    assert_eq!(report["summary"]["interrupted"], 1, "{report}");
    assert_no_session_left(&env, &env.db("b"));
    drop(holding);
    assert_eq!(last_run_outcome(&env), "interrupted");
    // The down script was rolled back, row and all.
    assert_eq!(
        env.applied(&env.db("b")),
        [20_250_101_000_001, 20_250_101_000_002, V3]
    );
    let rerun = env.run(&args).ok().json();
    assert_eq!(rerun["summary"]["failed"], 0, "{rerun}");
    for name in ["a", "b", "c"] {
        assert_eq!(
            env.applied(&env.db(name)),
            [20_250_101_000_001, 20_250_101_000_002],
            "{name}"
        );
    }
}

/// A `-- no-transaction` migration cut by the cancel keeps the statements
/// that ran before it and is not recorded, as when one fails; the report
/// says the tenant was interrupted and which statement was cut, and a
/// rerun (of a script written to be rerun) completes.
#[test]
fn a_cut_no_transaction_migration_is_reported_interrupted_with_its_statement() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "-- no-transaction\nCREATE TABLE IF NOT EXISTS before_cut (id int);\nALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n",
    )
    .expect("write migration");
    let dir = dir.to_str().expect("utf-8").to_owned();
    let holding = Holding::start(&env, &env.db("b"), Held::TableLock);
    let child = env.spawn(&[
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "2",
        "--output",
        "json",
        "--tenant-migrations",
        &dir,
    ]);
    wait_for_lock_wait(&env, &env.db("b"));
    kill("-INT", child.id());
    let run = wait_with_deadline(child, EXITS_WITHIN);
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(find(&report, &slugs[0])["status"], "ok", "{report}");
    let b = find(&report, &slugs[1]);
    assert_eq!(b["status"], "interrupted", "{report}");
    let error = b["error"].as_str().expect("error");
    assert!(
        error.starts_with("interrupted: ") && error.contains("statement 2 (line 3)"),
        "{error}"
    );
    assert_eq!(
        report["summary"],
        json!({"ok": 1, "failed": 0, "skipped": 0, "interrupted": 1})
    );
    assert_no_session_left(&env, &env.db("b"));
    drop(holding);
    let b_db = env.db("b");
    assert_eq!(
        env.query(
            &b_db,
            "SELECT coalesce(to_regclass('before_cut')::text, '')"
        ),
        ["before_cut"],
        "the statement before the cut stays"
    );
    assert_eq!(env.applied(&b_db), [20_250_101_000_001, 20_250_101_000_002]);
    let rerun = env.migrate_all(&dir).ok().json();
    assert_eq!(find(&rerun, &slugs[1])["applied"], json!([V3]));
}
