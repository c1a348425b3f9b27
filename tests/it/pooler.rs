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

#[test]
fn through_pgbouncer_in_transaction_mode_with_pgbouncer_true() {
    let env = TestEnv::new();
    let (server, bouncer) = pooled(&env, "transaction");
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = format!("{}/?pgbouncer=true", bouncer.url_as("app", APP_PASSWORD));
    let master = format!(
        "{}/master?pgbouncer=true",
        bouncer.url_as("app", APP_PASSWORD)
    );
    let through = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", &master);
        })
    };
    through(&["master", "migrate"]).ok();
    for slug in ["acme", "globex", "initech"] {
        through(&["tenant", "create", slug]).ok();
    }
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
    assert_eq!(got.stdout.trim(), "12345678901234567890");
    let all = through(&[
        "tenant", "settings", "get", "--all", "limit", "--output", "json",
    ])
    .ok()
    .json();
    assert_eq!(all["summary"]["ok"], 3, "{all}");

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
    let after = through(&[
        "tenant",
        "sql",
        "acme",
        "-c",
        "SHOW lock_timeout",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(
        after["tenants"][0]["result_sets"][0]["rows"][0][0], "0",
        "{after}"
    );

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
    let (search_path, timeout, prepared, temp) = next_client_sees(&bouncer, "tenant_acme");
    assert!(!search_path.contains("pg_temp"), "{search_path}");
    assert_eq!(timeout, "0");
    assert_eq!(prepared, "0");
    assert_eq!(temp, "0");

    // A failing migration rolls back and leaves no lock behind.
    let broken = env.tenant_schema_plus(
        "broken",
        "29990101000002_broken.sql",
        "CREATE TABLE half (x int); SELECT * FROM no_such_table;",
    );
    through(&["tenant", "migrate", "acme", "--tenant-migrations", &broken]).code(1);
    server.exec("postgres", "SELECT 1");
    let locks = crate::support::block_on(async {
        use sqlx::Connection as _;
        let mut conn =
            sqlx::postgres::PgConnection::connect(&format!("{}/postgres", server.base_url()))
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

    // A reversible migration goes up and comes back down through the
    // pooler, and the run is recorded, and read back, through the pooled
    // master.
    let rev = env.tenant_schema_plus(
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
    for tenant in left["tenants"].as_array().expect("tenants") {
        assert_eq!(tenant["result_sets"][0]["rows"][0][0], "0", "{left}");
    }

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
    let count = through(&[
        "tenant",
        "sql",
        "acme",
        "-c",
        "SELECT count(*) FROM settings",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(
        count["tenants"][0]["result_sets"][0]["rows"][0][0], "2",
        "{count}"
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

    // A -- no-transaction migration cannot run here: refused before any
    // tenant is touched.
    let notx = env.tenant_schema_plus(
        "notx",
        "29990101000001_concurrently.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY settings_value ON settings (key, value);",
    );
    let run = through(&["tenant", "migrate", "--all", "--tenant-migrations", &notx]).code(2);
    assert!(run.stderr.contains("session-mode pool"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    through(&["tenant", "drop", "initech", "--yes"]).ok();
    let list = through(&["tenant", "list", "--output", "json"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
}
