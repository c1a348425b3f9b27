//! The timeouts' environment variables, each shown to take effect (the
//! flags are tested in fleet.rs).

use std::time::{Duration, Instant};

use crate::support::{TestEnv, block_on, wait_with_deadline};

#[test]
fn tenantctl_connect_timeout_is_read_from_the_environment() {
    let env = TestEnv::new();
    // Accepts TCP connections (the kernel's backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let started = Instant::now();
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env("TENANTCTL_CONNECT_TIMEOUT", "300ms").env(
            "MASTER_DATABASE_URL",
            format!("postgresql://u:pw@127.0.0.1:{port}/master"),
        );
    });
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.stderr);
    // Well under the 5 s default.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(
        run.stderr.contains("timed out after 300ms"),
        "{}",
        run.stderr
    );
}

#[test]
fn tenantctl_lock_and_statement_timeouts_are_read_from_the_environment() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    std::fs::write(
        dir.join("20250101000003_alter.sql"),
        "ALTER TABLE items ADD COLUMN extra int;",
    )
    .expect("write");
    let dir_str = dir.to_str().expect("utf-8");
    let migrate = |var: &str, value: &str| {
        env.cmd()
            .args([
                "tenant",
                "migrate",
                &slugs[0],
                "--output",
                "json",
                "--tenant-migrations",
                dir_str,
            ])
            .env(var, value)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tenantctl")
    };

    // Traffic holds a lock the migration needs; without the variable the
    // run would wait for ever (the deadline fails the test instead).
    let run = block_on(async {
        use sqlx::Executor as _;
        let mut conn = env.connect(&env.db("a")).await;
        conn.execute("BEGIN; LOCK TABLE items IN ACCESS SHARE MODE")
            .await
            .expect("lock");
        let child = migrate("TENANTCTL_LOCK_TIMEOUT", "200ms");
        let run = wait_with_deadline(child, Duration::from_secs(30));
        conn.execute("ROLLBACK").await.expect("unlock");
        run
    });
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run.json()["tenants"][0]["error"].clone();
    assert!(
        error.as_str().is_some_and(|e| e.contains("lock timeout")),
        "{error}"
    );
    assert_eq!(env.applied(&env.db("a")).len(), 2);

    // A statement longer than the variable allows is cancelled.
    std::fs::remove_file(dir.join("20250101000003_alter.sql")).expect("remove");
    std::fs::write(dir.join("20250101000003_slow.sql"), "SELECT pg_sleep(5);").expect("write");
    let child = migrate("TENANTCTL_STATEMENT_TIMEOUT", "300ms");
    let run = wait_with_deadline(child, Duration::from_secs(30));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run.json()["tenants"][0]["error"].clone();
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("statement timeout")),
        "{error}"
    );
    assert_eq!(env.applied(&env.db("a")).len(), 2);
}

/// The session limits reach the commands whose work sets none of its own
/// (`tenant status`, `tenant settings get|set|list`): each tenant's work
/// runs in a transaction with them set, so a table another session holds
/// locked fails that tenant once `--lock-timeout` (or its variable) runs
/// out, instead of holding the command up for ever.
#[test]
fn status_and_settings_give_up_on_a_locked_table_when_the_lock_timeout_runs_out() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    let spawn = |args: &[&str], var: Option<(&str, &str)>| {
        let mut cmd = env.cmd();
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((name, value)) = var {
            cmd.env(name, value);
        }
        cmd.spawn().expect("spawn tenantctl")
    };
    let under_lock = |table: &str, args: &[&str], var: Option<(&str, &str)>| {
        block_on(async {
            use sqlx::Executor as _;
            let mut conn = env.connect(&env.db("a")).await;
            conn.execute(format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE").as_str())
                .await
                .expect("lock");
            let run = wait_with_deadline(spawn(args, var), Duration::from_secs(30));
            conn.execute("ROLLBACK").await.expect("unlock");
            run
        })
    };

    let run = under_lock(
        "_sqlx_migrations",
        &[
            "tenant",
            "status",
            &slug,
            "--lock-timeout",
            "200ms",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.all());
    let error = run.json()["tenants"][0]["error"].clone();
    assert!(
        error.as_str().is_some_and(|e| e.contains("lock timeout")),
        "{error}"
    );

    let run = under_lock(
        "settings",
        &[
            "tenant", "settings", "set", "--all", "plan", "\"pro\"", "--output", "json",
        ],
        Some(("TENANTCTL_LOCK_TIMEOUT", "200ms")),
    );
    assert_eq!(run.code, 1, "{}", run.all());
    let error = run.json()["tenants"][0]["error"].clone();
    assert!(
        error.as_str().is_some_and(|e| e.contains("lock timeout")),
        "{error}"
    );

    let run = under_lock(
        "settings",
        &[
            "tenant",
            "settings",
            "get",
            &slug,
            "plan",
            "--lock-timeout",
            "200ms",
        ],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("lock timeout"), "{}", run.stderr);

    // Unlocked, the same commands work and the setting was never written.
    let run = env
        .run(&[
            "tenant",
            "settings",
            "list",
            &slug,
            "--lock-timeout",
            "200ms",
            "--output",
            "json",
        ])
        .ok();
    assert_eq!(
        run.json()["settings"],
        serde_json::json!([]),
        "{}",
        run.stdout
    );
    env.run(&["tenant", "status", &slug, "--statement-timeout", "5s"])
        .ok();
}
