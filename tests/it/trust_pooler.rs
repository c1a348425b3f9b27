//! Issue 15, poolers: a transaction-mode PgBouncer nobody declared (no
//! `?pgbouncer=true`) gets every server connection back as it lent it, a
//! pooler that moves a connection between transactions stops the tenant
//! with a message naming the marker, and `master migrate` creates a
//! missing master through a pooler without waiting on it.

use std::time::{Duration, Instant};

use crate::support::TestEnv;
use crate::support::pooler::PgBouncer;
use crate::support::server::PrivateServer;

const APP_PASSWORD: &str = "app-Trust-pw1";

fn server_with_app(env: &TestEnv, name: &str) -> PrivateServer {
    let server = PrivateServer::start(&format!("{}{name}", env.token));
    server.exec(
        "postgres",
        &format!(
            "CREATE ROLE app LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'; CREATE ROLE app_reader"
        ),
    );
    server.exec("postgres", "GRANT app_reader TO app");
    server
}

/// Rows of a query, each row's columns as text, on a plain connection.
fn query(url: &str, sql: &str) -> Vec<Vec<String>> {
    crate::support::block_on(async {
        use sqlx::{Connection as _, Executor as _, Row as _};
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let mut conn =
            sqlx::postgres::PgConnection::connect_with(&options.extra_float_digits(None))
                .await
                .unwrap_or_else(|e| panic!("connect for {sql}: {e}"));
        let rows = conn
            .fetch_all(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<String, _>(i).unwrap_or_default())
                    .collect()
            })
            .collect()
    })
}

/// What the next client of the pool's server connection to `db` finds
/// there: every kind of session state, by name.
fn session_state(bouncer: &PgBouncer, db: &str) -> Vec<(String, String)> {
    let url = format!("{}/{db}", bouncer.url_as("app", APP_PASSWORD));
    let sql = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), \
               current_setting('search_path'), current_user::text, \
               (SELECT count(*) FROM pg_prepared_statements)::text, \
               (SELECT count(*) FROM pg_class WHERE relpersistence = 't')::text, \
               (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                  AND pid = pg_backend_pid())::text, \
               (SELECT count(*) FROM pg_listening_channels())::text, \
               (SELECT count(*) FROM pg_cursors)::text";
    let row = query(&url, sql).remove(0);
    [
        "statement_timeout",
        "lock_timeout",
        "search_path",
        "user",
        "prepared statements",
        "temporary tables",
        "advisory locks",
        "listeners",
        "cursors",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .zip(row)
    .collect()
}

fn clean_state() -> Vec<(String, String)> {
    [
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("search_path", "\"$user\", public"),
        ("user", "app"),
        ("prepared statements", "0"),
        ("temporary tables", "0"),
        ("advisory locks", "0"),
        ("listeners", "0"),
        ("cursors", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Advisory locks held anywhere on the server, by any session.
fn advisory_locks(server: &PrivateServer) -> usize {
    query(
        &format!("{}/postgres", server.base_url()),
        "SELECT pid::text FROM pg_locks WHERE locktype = 'advisory'",
    )
    .len()
}

#[test]
fn an_undeclared_transaction_pooler_gets_every_server_connection_back_clean() {
    let env = TestEnv::new();
    let server = server_with_app(&env, "clean");
    // One server connection per database: the next client surely gets the
    // one tenantctl had.
    let bouncer = PgBouncer::start(&server, &env.token, "transaction", &[("app", APP_PASSWORD)]);
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = bouncer.url_as("app", APP_PASSWORD);
    let through = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    };
    let limits = ["--statement-timeout", "2s", "--lock-timeout", "3s"];
    let with_limits = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&limits);
        through(&all)
    };
    let check = |what: &str| {
        for db in ["tenant_acme", "master"] {
            assert_eq!(
                session_state(&bouncer, db),
                clean_state(),
                "{db} after {what}"
            );
        }
    };

    through(&["master", "migrate"]).ok();
    with_limits(&["tenant", "create", "acme"]).ok();
    check("tenant create");
    through(&["tenant", "status", "acme"]).ok();
    check("tenant status");
    with_limits(&["tenant", "migrate", "acme"]).ok();
    check("tenant migrate with nothing pending");

    // Pending migrations, in a transaction and not: the limits are in
    // force while they run, and gone afterwards.
    let more = env.tenant_schema_plus(
        "more",
        "29990101000001_seen.sql",
        "CREATE TABLE seen AS SELECT current_setting('statement_timeout') AS st, \
         current_setting('lock_timeout') AS lt;",
    );
    // A migration whose own SQL leaves session state (an application's
    // migrations may): none of it outlives the run either.
    std::fs::write(
        std::path::Path::new(&more).join("29990101000003_leaves_state.sql"),
        "SET statement_timeout = '77s'; SELECT pg_advisory_lock(4242); \
         PREPARE mig_p AS SELECT 1; CREATE TEMP TABLE mig_tmp (x int);",
    )
    .expect("write");
    std::fs::write(
        std::path::Path::new(&more).join("29990101000002_seen_notx.sql"),
        "-- no-transaction\nCREATE TABLE seen_notx AS SELECT current_setting('statement_timeout') AS st, \
         current_setting('lock_timeout') AS lt;\nCREATE INDEX CONCURRENTLY seen_st ON seen (st);",
    )
    .expect("write");
    with_limits(&["tenant", "migrate", "acme", "--tenant-migrations", &more]).ok();
    check("tenant migrate with two migrations pending");
    let seen = query(
        &format!("{}/tenant_acme", server.base_url()),
        "SELECT st, lt FROM seen UNION ALL SELECT st, lt FROM seen_notx",
    );
    assert_eq!(seen, [["2s", "3s"], ["2s", "3s"]]);

    let shown = with_limits(&[
        "tenant",
        "sql",
        "acme",
        "-c",
        "SHOW statement_timeout",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(
        shown["tenants"][0]["result_sets"][0]["rows"][0][0], "2s",
        "{shown}"
    );
    check("tenant sql with timeouts");

    // Whatever a script leaves in its session, committed, rolled back or
    // failed half way.
    let script = "SET search_path = pg_temp, public; SET statement_timeout = '17s'; \
                  SET ROLE app_reader; RESET ROLE; SET lock_timeout = '9s'; \
                  PREPARE leak AS SELECT 1; CREATE TEMP TABLE leak (x int); \
                  SELECT pg_advisory_lock(4242); LISTEN leak; \
                  DECLARE held CURSOR WITH HOLD FOR SELECT 1; SET ROLE app_reader";
    through(&["tenant", "sql", "acme", "-c", script]).ok();
    check("tenant sql whose script sets, prepares, locks and listens");
    // A dry run refuses the session-level advisory lock (see trust_dry_run).
    let dry = script.replace("SELECT pg_advisory_lock(4242); ", "");
    through(&["tenant", "sql", "acme", "--dry-run", "-c", &dry]).ok();
    check("tenant sql --dry-run of that script");
    let failing = format!("{script}; SELECT 1/0");
    through(&["tenant", "sql", "acme", "-c", &failing]).code(1);
    check("tenant sql whose script fails after all that");

    // The same through the pooler declared: its release clears the role
    // too, which RESET ALL leaves as the script set it.
    let marked = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", format!("{base}/?pgbouncer=true"))
                .env(
                    "MASTER_DATABASE_URL",
                    format!("{base}/master?pgbouncer=true"),
                );
        })
    };
    marked(&["tenant", "sql", "acme", "-c", script]).ok();
    check("tenant sql through the declared pooler");
    marked(&["tenant", "sql", "acme", "-c", &failing]).code(1);
    check("tenant sql through the declared pooler, failing");

    through(&["tenant", "settings", "set", "acme", "theme", "dark"]).ok();
    check("tenant settings set");
    let got = through(&["tenant", "settings", "get", "acme", "theme"]).ok();
    assert_eq!(got.stdout.trim(), "\"dark\"");
    through(&["tenant", "settings", "get", "--all", "theme"]).ok();
    check("tenant settings get");
    through(&["doctor", "--tenant-migrations", &more]).ok();
    check("doctor");
    let list = through(&["tenant", "runs", "--output", "json"]).ok();
    assert!(list.stdout.contains("migrate"), "{}", list.stdout);
    check("tenant runs");
    assert_eq!(advisory_locks(&server), 0);
}

#[test]
fn an_undeclared_transaction_pooler_that_moves_a_connection_stops_the_tenant() {
    let env = TestEnv::new();
    let server = server_with_app(&env, "moves");
    // Two server connections per database, handed out oldest first: a
    // client's next transaction goes to the other one.
    let bouncer = PgBouncer::start_with(
        &server,
        &format!("{}-rr", env.token),
        "transaction",
        &[("app", APP_PASSWORD)],
        2,
        "server_round_robin = 1",
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = bouncer.url_as("app", APP_PASSWORD);
    let marked = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", format!("{base}/?pgbouncer=true"))
                .env(
                    "MASTER_DATABASE_URL",
                    format!("{base}/master?pgbouncer=true"),
                );
        })
    };
    let unmarked = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base).env(
                "MASTER_DATABASE_URL",
                format!("{base}/master?pgbouncer=true"),
            );
        })
    };
    marked(&["master", "migrate"]).ok();
    marked(&["tenant", "create", "acme"]).ok();
    let warm = || {
        // Both server connections open, so that the pool has two to turn.
        let options: sqlx::postgres::PgConnectOptions =
            format!("{base}/tenant_acme").parse().expect("url");
        let options = options.extra_float_digits(None);
        crate::support::block_on(async {
            use sqlx::{Connection as _, Executor as _};
            let mut a = sqlx::postgres::PgConnection::connect_with(&options)
                .await
                .expect("a");
            let mut b = sqlx::postgres::PgConnection::connect_with(&options)
                .await
                .expect("b");
            a.execute("BEGIN").await.expect("begin a");
            b.execute("BEGIN").await.expect("begin b");
            a.execute("COMMIT").await.expect("commit a");
            b.execute("COMMIT").await.expect("commit b");
            let _ = a.close().await;
            let _ = b.close().await;
        });
    };
    let more = env.tenant_schema_plus(
        "more",
        "29990101000001_more.up.sql",
        "CREATE TABLE more (x int);",
    );
    std::fs::write(
        std::path::Path::new(&more).join("29990101000001_more.down.sql"),
        "DROP TABLE more;",
    )
    .expect("write down script");
    let applied = || {
        query(
            &format!("{}/tenant_acme", server.base_url()),
            "SELECT version::text FROM _sqlx_migrations WHERE version = 29990101000001",
        )
        .len()
    };

    for args in [
        vec!["tenant", "migrate", "acme", "--tenant-migrations", &more],
        vec![
            "tenant",
            "migrate",
            "--all",
            "--tenant-migrations",
            &more,
            "--lock-timeout",
            "2s",
        ],
    ] {
        warm();
        let run = unmarked(&args).code(1);
        let text = run.all();
        assert!(
            text.contains("?pgbouncer=true")
                && text.contains(&format!("127.0.0.1:{}", bouncer.port))
                && text.contains("transaction-mode pooler")
                && text.contains("POSTGRES_BASE_URL"),
            "{text}"
        );
        assert_eq!(applied(), 0, "nothing is applied: {text}");
        assert_eq!(advisory_locks(&server), 0, "no lock is left behind");
    }

    // A revert moved the same way stops too, reverting nothing.
    marked(&["tenant", "migrate", "acme", "--tenant-migrations", &more]).ok();
    assert_eq!(applied(), 1);
    warm();
    let run = unmarked(&[
        "tenant",
        "revert",
        "acme",
        "--to",
        "20240101000006",
        "--yes",
        "--tenant-migrations",
        &more,
    ])
    .code(1);
    assert!(run.all().contains("?pgbouncer=true"), "{}", run.all());
    assert_eq!(applied(), 1);
    assert_eq!(advisory_locks(&server), 0);
}

#[test]
fn an_undeclared_session_pooler_keeps_working() {
    let env = TestEnv::new();
    let server = server_with_app(&env, "session");
    let bouncer = PgBouncer::start_with(
        &server,
        &format!("{}-srr", env.token),
        "session",
        &[("app", APP_PASSWORD)],
        2,
        "server_round_robin = 1",
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = bouncer.url_as("app", APP_PASSWORD);
    let through = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    };
    through(&["master", "migrate"]).ok();
    through(&["tenant", "create", "acme", "--lock-timeout", "2s"]).ok();
    let more = env.tenant_schema_plus(
        "more",
        "29990101000001_seen.sql",
        "CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lt;",
    );
    through(&[
        "tenant",
        "migrate",
        "--all",
        "--tenant-migrations",
        &more,
        "--lock-timeout",
        "1500ms",
    ])
    .ok();
    let seen = query(
        &format!("{}/tenant_acme", server.base_url()),
        "SELECT lt FROM seen",
    );
    assert_eq!(seen, [["1500ms"]]);
    assert_eq!(advisory_locks(&server), 0);
}

#[test]
fn master_migrate_through_pgbouncer_creates_a_missing_master_without_waiting_on_it() {
    let env = TestEnv::new();
    for (mode, marker, master) in [
        ("session", "", None),
        ("transaction", "?pgbouncer=true", Some("control")),
        ("transaction", "", None),
    ] {
        let server = server_with_app(&env, &format!("m{mode}{}", marker.len()));
        let bouncer = PgBouncer::start_with(
            &server,
            &format!("{}-m{mode}{}", env.token, marker.len()),
            mode,
            &[("app", APP_PASSWORD)],
            1,
            "",
        );
        let base = bouncer.url_as("app", APP_PASSWORD);
        let through = |args: &[&str]| {
            env.run_with(args, |c| {
                c.env("POSTGRES_BASE_URL", format!("{base}/{marker}"));
                match master {
                    Some(name) => c.env("MASTER_DATABASE_URL", format!("{base}/{name}{marker}")),
                    None => c.env_remove("MASTER_DATABASE_URL"),
                };
            })
        };
        let started = Instant::now();
        let run = through(&["master", "migrate", "--output", "json"]).ok();
        assert_eq!(
            run.json()["created"],
            true,
            "{mode}{marker}: {}",
            run.stdout
        );
        let took = started.elapsed();
        let name = master.unwrap_or("master");
        let exists = query(
            &format!("{}/postgres", server.base_url()),
            &format!("SELECT datname::text FROM pg_database WHERE datname = '{name}'"),
        );
        assert_eq!(exists.len(), 1, "{mode}{marker}: the master exists");
        // Usable at once, through the pooler, with no retry to wait out.
        through(&["tenant", "create", "acme"]).ok();
        through(&["master", "migrate"]).ok();
        assert!(
            took < Duration::from_secs(5),
            "{mode}{marker}: took {took:?}, as long as the connect timeout"
        );
    }
}

#[test]
fn a_login_the_pooler_holds_times_out_with_a_message_that_names_it() {
    let env = TestEnv::new();
    let server = server_with_app(&env, "held");
    let bouncer = PgBouncer::start(&server, &env.token, "session", &[("app", APP_PASSWORD)]);
    let base = bouncer.url_as("app", APP_PASSWORD);
    for (db, args) in [
        ("nomaster", vec!["tenant", "list"]),
        ("nomaster", vec!["tenant", "status", "--all"]),
        ("other_master", vec!["doctor"]),
    ] {
        let mut full = args.clone();
        full.extend(["--connect-timeout", "1s"]);
        let run = || {
            env.run_with(&full, |c| {
                c.env("POSTGRES_BASE_URL", &base)
                    .env("MASTER_DATABASE_URL", format!("{base}/{db}"));
            })
            .code(1)
        };
        // The first login to a missing database fails at once; PgBouncer
        // then holds the next ones until server_login_retry has passed.
        let first = run();
        assert!(first.stderr.contains(db), "{}", first.stderr);
        let run = run();
        assert!(
            run.stderr.contains("timed out after 1s")
                && run.stderr.contains("answers like PgBouncer")
                && run.stderr.contains("server_login_retry")
                && run.stderr.contains(&format!("database {db}"))
                && run.stderr.contains(&format!("127.0.0.1:{}", bouncer.port)),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains(APP_PASSWORD), "{}", run.stderr);
    }

    // Something that never answers is not called a pooler.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let run = env
        .run_with(&["tenant", "list", "--connect-timeout", "1s"], |c| {
            c.env(
                "POSTGRES_BASE_URL",
                format!("postgresql://app:pw@127.0.0.1:{port}"),
            )
            .env_remove("MASTER_DATABASE_URL");
        })
        .code(1);
    assert!(
        run.stderr
            .contains("timed out after 1s (see --connect-timeout)")
            && !run.stderr.contains("PgBouncer"),
        "{}",
        run.stderr
    );
    drop(silent);
}
