//! Behind a real PgBouncer (issue 9): every command through session mode
//! with PgBouncer's stock settings, and the timeouts proven to apply.

use std::time::{Duration, Instant};

use crate::support::TestEnv;
use crate::support::pooler::PgBouncer;
use crate::support::server::PrivateServer;

const APP_PASSWORD: &str = "app-Pooled-pw1";

/// A private server with role `app`, PgBouncer in front in `mode`.
fn pooled(env: &TestEnv, mode: &str) -> (PrivateServer, PgBouncer) {
    let server = PrivateServer::start(&env.token);
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"),
    );
    let bouncer = PgBouncer::start(&server, &env.token, mode, &[("app", APP_PASSWORD)]);
    (server, bouncer)
}

/// What a client that comes after tenantctl sees on the pool's server
/// connection: search_path, statement_timeout, prepared statements and
/// temporary tables left behind.
fn next_client_sees(bouncer: &PgBouncer, db: &str) -> (String, String, String, String) {
    crate::support::block_on(async {
        use sqlx::{Connection as _, Executor as _, Row as _};
        let options: sqlx::postgres::PgConnectOptions =
            format!("{}/{db}", bouncer.url_as("app", APP_PASSWORD))
                .parse()
                .expect("url");
        let mut conn =
            sqlx::postgres::PgConnection::connect_with(&options.extra_float_digits(None))
                .await
                .expect("connect through the pooler");
        let mut seen = Vec::new();
        for sql in [
            "SHOW search_path",
            "SHOW statement_timeout",
            "SELECT count(*)::text FROM pg_prepared_statements",
            "SELECT count(*)::text FROM pg_class WHERE relpersistence = 't'",
        ] {
            let row = conn.fetch_one(sql).await.expect(sql);
            seen.push(row.get::<String, _>(0));
        }
        let _ = conn.close().await;
        (
            seen.remove(0),
            seen.remove(0),
            seen.remove(0),
            seen.remove(0),
        )
    })
}

#[test]
fn every_command_works_through_pgbouncer_in_session_mode_and_timeouts_apply() {
    let env = TestEnv::new();
    let (server, bouncer) = pooled(&env, "session");
    let base = bouncer.url_as("app", APP_PASSWORD);
    let through = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    };
    // The tenant schema plus one migration that needs a lock application
    // traffic can hold.
    let more = env.tenant_schema_plus(
        "more",
        "29990101000001_alter_settings.sql",
        "ALTER TABLE settings ADD COLUMN note text;",
    );

    // The master database made beforehand, as production has it: a login
    // to a database that does not exist yet makes PgBouncer wait
    // server_login_retry (15 s) before it tries that database again.
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    through(&["master", "migrate"]).ok();
    through(&["tenant", "create", "acme"]).ok();
    through(&["tenant", "create", "globex"]).ok();
    through(&["tenant", "list"]).ok();
    through(&["tenant", "status", "--all"]).ok();
    through(&["tenant", "migrate", "--all"]).ok();
    through(&["tenant", "url", "acme"]).ok();
    let exec = through(&[
        "tenant",
        "exec",
        "acme",
        "--",
        "sh",
        "-c",
        "echo $TENANT_DB_NAME",
    ])
    .ok();
    assert!(exec.stdout.contains("tenant_acme"), "{}", exec.stdout);

    // The timeouts reach the session.
    let shown = through(&[
        "tenant",
        "sql",
        "acme",
        "--lock-timeout",
        "1234ms",
        "--statement-timeout",
        "5s",
        "-c",
        "SHOW lock_timeout; SHOW statement_timeout",
        "--output",
        "json",
    ])
    .ok()
    .json();
    let sets = &shown["tenants"][0]["result_sets"];
    assert_eq!(sets[0]["rows"][0][0], "1234ms", "{shown}");
    assert_eq!(sets[1]["rows"][0][0], "5s", "{shown}");

    // A migration blocked by a lock fails with the reason, quickly.
    let holder = std::thread::spawn({
        let url = format!("{}/tenant_acme", server.base_url());
        move || {
            crate::support::block_on(async {
                use sqlx::{Connection as _, Executor as _};
                let mut conn = sqlx::postgres::PgConnection::connect(&url)
                    .await
                    .expect("connect");
                conn.execute("BEGIN; LOCK TABLE settings IN ACCESS SHARE MODE")
                    .await
                    .expect("lock");
                tokio::time::sleep(Duration::from_secs(8)).await;
                let _ = conn.execute("ROLLBACK").await;
            });
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let run = through(&[
        "tenant",
        "migrate",
        "acme",
        "--tenant-migrations",
        &more,
        "--lock-timeout",
        "300ms",
    ])
    .code(1);
    assert!(run.all().contains("lock timeout"), "{}", run.all());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    holder.join().expect("holder");
    through(&["tenant", "migrate", "--all", "--tenant-migrations", &more]).ok();

    through(&["tenant", "settings", "set", "acme", "theme", "dark"]).ok();
    let got = through(&["tenant", "settings", "get", "acme", "theme"]).ok();
    assert_eq!(got.stdout.trim(), "\"dark\"");
    through(&["doctor", "--tenant-migrations", &more]).ok();
    through(&["tenant", "drop", "globex", "--yes"]).ok();
    assert!(!through(&["tenant", "list"]).ok().stdout.contains("globex"));
    assert!(!bouncer.log().is_empty());
}

/// A private server behind PgBouncer in transaction mode, with URLs that
/// say `pgbouncer=true`, a migrated master and tenants acme, globex and
/// initech: what each transaction-mode scenario starts from.
struct Transactional {
    env: TestEnv,
    server: PrivateServer,
    bouncer: PgBouncer,
    base: String,
    master: String,
}

impl Transactional {
    fn start() -> Self {
        let env = TestEnv::new();
        let (server, bouncer) = pooled(&env, "transaction");
        server.exec("postgres", "CREATE DATABASE master OWNER app");
        let base = format!("{}/?pgbouncer=true", bouncer.url_as("app", APP_PASSWORD));
        let master = format!(
            "{}/master?pgbouncer=true",
            bouncer.url_as("app", APP_PASSWORD)
        );
        let pooled = Self {
            env,
            server,
            bouncer,
            base,
            master,
        };
        pooled.through(&["master", "migrate"]).ok();
        for slug in ["acme", "globex", "initech"] {
            pooled.through(&["tenant", "create", slug]).ok();
        }
        pooled
    }

    /// The binary, connecting through the pooler only.
    fn through(&self, args: &[&str]) -> crate::support::Run {
        self.env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &self.base)
                .env("MASTER_DATABASE_URL", &self.master);
        })
    }

    /// A count a `tenant sql` query returns for one tenant, as text.
    fn scalar(&self, tenant: &str, sql: &str) -> String {
        let report = self
            .through(&["tenant", "sql", tenant, "-c", sql, "--output", "json"])
            .ok()
            .json();
        report["tenants"][0]["result_sets"][0]["rows"][0][0]
            .as_str()
            .unwrap_or_else(|| panic!("no value in {report}"))
            .to_owned()
    }
}

#[test]
fn through_pgbouncer_in_transaction_mode_fleet_commands_and_settings_work() {
    let pooled = Transactional::start();
    let through = |args: &[&str]| pooled.through(args);
    through(&["tenant", "list"]).ok();
    through(&["tenant", "status", "--all"]).ok();
    through(&["tenant", "migrate", "--all", "--concurrency", "3"]).ok();
    for slug in ["acme", "globex", "initech"] {
        through(&[
            "tenant",
            "settings",
            "set",
            slug,
            "limit",
            "12345678901234567890",
        ])
        .ok();
    }
    let got = through(&["tenant", "settings", "get", "globex", "limit"]).ok();
    assert_eq!(got.stdout, "12345678901234567890\n");
    let all = through(&[
        "tenant", "settings", "get", "--all", "limit", "--output", "json",
    ])
    .ok()
    .json();
    assert_eq!(all["summary"]["ok"], 3, "{all}");
}

#[test]
fn through_pgbouncer_in_transaction_mode_timeouts_and_session_state_stay_out_of_the_pool() {
    let pooled = Transactional::start();
    let through = |args: &[&str]| pooled.through(args);
    // Timeouts apply inside the transaction, and never leak to the pool.
    let shown = through(&[
        "tenant",
        "sql",
        "acme",
        "--lock-timeout",
        "777ms",
        "-c",
        "SHOW lock_timeout",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(
        shown["tenants"][0]["result_sets"][0]["rows"][0][0], "777ms",
        "{shown}"
    );
    assert_eq!(pooled.scalar("acme", "SHOW lock_timeout"), "0");

    // What a script does to its session stays out of the pool's one
    // server connection: the next client gets it clean.
    through(&[
        "tenant",
        "sql",
        "acme",
        "-c",
        "SET search_path = pg_temp, public; SET statement_timeout = '17s'; \
         PREPARE leak AS SELECT 1; CREATE TEMP TABLE leak (x int); SELECT 1",
    ])
    .ok();
    let (search_path, timeout, prepared, temp) = next_client_sees(&pooled.bouncer, "tenant_acme");
    assert!(!search_path.contains("pg_temp"), "{search_path}");
    assert_eq!(timeout, "0");
    assert_eq!(prepared, "0");
    assert_eq!(temp, "0");
}

#[test]
fn through_pgbouncer_in_transaction_mode_a_failing_migration_leaves_no_lock() {
    let pooled = Transactional::start();
    let broken = pooled.env.tenant_schema_plus(
        "broken",
        "29990101000002_broken.sql",
        "CREATE TABLE half (x int); SELECT * FROM no_such_table;",
    );
    pooled
        .through(&["tenant", "migrate", "acme", "--tenant-migrations", &broken])
        .code(1);
    pooled.server.exec("postgres", "SELECT 1");
    let locks = crate::support::block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::postgres::PgConnection::connect(&format!(
            "{}/postgres",
            pooled.server.base_url()
        ))
        .await
        .expect("connect");
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                .fetch_one(&mut conn)
                .await
                .expect("locks");
        let _ = conn.close().await;
        n
    });
    assert_eq!(locks, 0, "an advisory lock outlived the run");
}

#[test]
fn through_pgbouncer_in_transaction_mode_a_run_goes_up_and_is_reverted() {
    // A reversible migration goes up and comes back down through the
    // pooler, and the run is recorded, and read back, through the pooled
    // master.
    let pooled = Transactional::start();
    let through = |args: &[&str]| pooled.through(args);
    let rev = pooled.env.tenant_schema_plus(
        "rev",
        "29990101000003_flags.up.sql",
        "CREATE TABLE flags (name text PRIMARY KEY);",
    );
    std::fs::write(
        std::path::Path::new(&rev).join("29990101000003_flags.down.sql"),
        "DROP TABLE flags;",
    )
    .expect("write down script");
    let up = through(&[
        "tenant",
        "migrate",
        "--all",
        "--tenant-migrations",
        &rev,
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(up["summary"]["ok"], 3, "{up}");
    let id = up["run_id"].as_i64().expect("run id").to_string();
    let undone = through(&[
        "tenant",
        "revert",
        "--run",
        &id,
        "--yes",
        "--tenant-migrations",
        &rev,
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(undone["summary"]["ok"], 3, "{undone}");
    let left = through(&[
        "tenant",
        "sql",
        "--all",
        "--yes",
        "-c",
        "SELECT (SELECT count(*) FROM _sqlx_migrations WHERE version = 29990101000003) + \
                (SELECT count(*) FROM pg_class WHERE relname = 'flags')",
        "--output",
        "json",
    ])
    .ok()
    .json();
    let tenants = left["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 3, "{left}");
    for tenant in tenants {
        assert_eq!(tenant["result_sets"][0]["rows"][0][0], "0", "{left}");
    }
}

#[test]
fn through_pgbouncer_in_transaction_mode_sql_commits_a_dry_run_does_not_and_exec_keeps_the_flag() {
    let pooled = Transactional::start();
    let through = |args: &[&str]| pooled.through(args);
    // A row of the test's own, so the dry run below has something to delete.
    through(&["tenant", "settings", "set", "acme", "limit", "1"]).ok();
    // Writes through sql commit; a dry run does not.
    through(&[
        "tenant",
        "sql",
        "--all",
        "--yes",
        "-c",
        "INSERT INTO settings (key, value) VALUES ('k', '1')",
    ])
    .ok();
    through(&[
        "tenant",
        "sql",
        "acme",
        "--dry-run",
        "-c",
        "DELETE FROM settings",
    ])
    .ok();
    assert_eq!(pooled.scalar("acme", "SELECT count(*) FROM settings"), "2");
    assert_eq!(
        pooled.scalar("initech", "SELECT count(*) FROM settings"),
        "1"
    );

    let exec = through(&[
        "tenant",
        "exec",
        "acme",
        "--",
        "sh",
        "-c",
        "echo \"$DATABASE_URL\"",
    ])
    .ok();
    assert!(exec.stdout.contains("pgbouncer=true"), "{}", exec.stdout);
    through(&["tenant", "url", "acme"]).ok();
    through(&["doctor"]).ok();
}

#[test]
fn through_pgbouncer_in_transaction_mode_a_no_transaction_migration_is_refused_and_drop_works() {
    let pooled = Transactional::start();
    let through = |args: &[&str]| pooled.through(args);
    // A -- no-transaction migration cannot run here: refused before any
    // tenant is touched.
    let notx = pooled.env.tenant_schema_plus(
        "notx",
        "29990101000001_concurrently.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY settings_value ON settings (key, value);",
    );
    let run = through(&["tenant", "migrate", "--all", "--tenant-migrations", &notx]).code(2);
    assert!(run.stderr.contains("session-mode pool"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let index = pooled.scalar(
        "acme",
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'settings_value'",
    );
    assert_eq!(index, "0", "no tenant touched");

    through(&["tenant", "drop", "initech", "--yes"]).ok();
    let list = through(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
}

/// A read that fails inside the pooled connection's one transaction is the
/// error reported, not the COMMIT that fails after it at release ("current
/// transaction is aborted"): each read runs under a savepoint rolled back
/// after it.
#[test]
fn through_pgbouncer_in_transaction_mode_a_failed_read_is_the_error_reported() {
    let pooled = Transactional::start();
    pooled.server.exec("tenant_globex", "DROP TABLE settings");
    for args in [
        &["tenant", "settings", "get", "globex", "theme"][..],
        &["tenant", "settings", "list", "globex"],
    ] {
        let run = pooled.through(args).code(1);
        assert!(
            run.stderr.contains("no settings table"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("25P02"), "{args:?}: {}", run.stderr);
    }
    pooled.through(&["tenant", "migrate", "--all"]).ok();
    pooled
        .server
        .exec("master", "REVOKE SELECT ON tenantctl.runs FROM app");
    let run = pooled
        .through(&["tenant", "revert", "--run", "1", "--yes"])
        .code(1);
    assert!(
        run.stderr.contains("permission denied for table runs"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("25P02"), "{}", run.stderr);
}
