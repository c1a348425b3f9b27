//! The Prisma migrator against what a hostile pass found (issue 16): a
//! migration another deploy is applying, Prisma's lock and a pooler nobody
//! declared, the role's search_path, a schema of its own, a BOM, a lock
//! timeout inside a migration, a row deleted under a run, extension tables,
//! the child's `.env`, and folder order. The real Prisma is the reference
//! wherever its behaviour is what tenantctl must match.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::prisma::{add_migration, kit, prisma};
use crate::support::{TestEnv, find, wait_until};

/// A Prisma schema of our own (an `Order` table, another shape than the
/// kit's), as `prisma migrate dev` lays it out.
fn schema(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.workdir.path().join(name);
    std::fs::create_dir_all(dir.join("migrations")).expect("mkdir");
    std::fs::write(
        dir.join("schema.prisma"),
        "generator client {\n  provider = \"prisma-client-js\"\n  engineType = \"client\"\n}\n\n\
         datasource db {\n  provider = \"postgresql\"\n  url      = env(\"DATABASE_URL\")\n}\n\n\
         model Order {\n  id    BigInt @id @default(autoincrement())\n  total Decimal\n}\n",
    )
    .expect("schema");
    std::fs::write(
        dir.join("migrations/migration_lock.toml"),
        "provider = \"postgresql\"\n",
    )
    .expect("lock");
    add_migration(
        &dir,
        "20240101000000_orders",
        "-- CreateTable\nCREATE TABLE \"Order\" (\n    \"id\" BIGSERIAL NOT NULL,\n    \"total\" DECIMAL(65,30) NOT NULL,\n    CONSTRAINT \"Order_pkey\" PRIMARY KEY (\"id\")\n);\n",
    );
    dir
}

fn toml(name: &str, extra: &str) -> String {
    format!("[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"{name}/migrations\"\n{extra}")
}

/// `master migrate`, the toml, and one tenant created; returns its slug and
/// database.
fn one_tenant(env: &TestEnv, name: &str, extra: &str) -> (PathBuf, String, String) {
    let dir = schema(env, name);
    env.write_config(toml(name, extra));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug(name);
    env.run(&["tenant", "create", &slug]).ok();
    (dir, slug, env.db(name))
}

/// The real `prisma migrate deploy`, started in the background.
fn spawn_deploy(env: &TestEnv, dir: &Path, db: &str) -> Child {
    Command::new("bash")
        .arg(kit().join("run.sh"))
        .arg(dir)
        .args(["migrate", "deploy"])
        .current_dir(env.workdir.path())
        .env("DATABASE_URL", env.db_url(db))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prisma migrate deploy")
}

fn unfinished(env: &TestEnv, db: &str, table: &str, name: &str) -> bool {
    env.query(
        db,
        &format!(
            "SELECT count(*)::text FROM {table} WHERE migration_name = '{name}' AND finished_at IS NULL"
        ),
    ) == ["1"]
}

fn columns(env: &TestEnv, db: &str, table: &str) -> Vec<String> {
    env.query(
        db,
        &format!(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = '{table}' ORDER BY 1"
        ),
    )
}

/// A psql session holding something (`sql` runs, then it sleeps) under an
/// application_name of its own, ended by [`end_holder`].
fn hold(env: &TestEnv, db: &str, name: &str, sql: &str) -> Child {
    Command::new("psql")
        .args(["-X", "-q", "-d", &env.db_url(db), "-c", sql])
        .env("PGAPPNAME", name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql")
}

fn end_holder(env: &TestEnv, db: &str, name: &str, mut child: Child) {
    env.exec(
        db,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        ),
    );
    let _ = child.wait();
}

fn advisory_held(env: &TestEnv, db: &str) -> bool {
    env.query(
        db,
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND objid = 72707369 AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    ) == ["1"]
}

/// D6: a migration the real `prisma migrate deploy` (then another
/// tenantctl) is applying right now is in progress, not failed: status
/// says so and succeeds, and `tenant migrate` waits for Prisma's lock and
/// then finds nothing to do, instead of a false P3009 whose advice
/// (`resolve --rolled-back`) would corrupt the history.
#[test]
fn a_migration_being_applied_elsewhere_is_in_progress_not_failed() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "busy", "");
    let slow = "20240201000000_slow";
    add_migration(
        &dir,
        slow,
        "SELECT pg_sleep(5);\nALTER TABLE \"Order\" ADD COLUMN \"note\" TEXT;\n",
    );
    let deploy = spawn_deploy(&env, &dir, &db);
    wait_until(
        Duration::from_secs(30),
        "Prisma to start the migration",
        || unfinished(&env, &db, "_prisma_migrations", slow).then_some(()),
    );
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .ok()
        .json();
    let row = find(&status, &slug);
    assert_eq!(row["in_progress"], serde_json::json!([slow]), "{row}");
    assert_eq!(row["failed"], serde_json::json!([]), "{row}");
    let migrated = env.run(&["tenant", "migrate", &slug, "--output", "json"]);
    assert!(!migrated.all().contains("P3009"), "{}", migrated.all());
    let migrated = migrated.ok().json();
    assert_eq!(find(&migrated, &slug)["applied"], serde_json::json!([]));
    let deployed = deploy.wait_with_output().expect("prisma");
    assert!(deployed.status.success(), "{deployed:?}");
    assert!(columns(&env, &db, "Order").contains(&"note".to_owned()));

    // The same while another tenantctl applies one.
    let slower = "20240301000000_slower";
    add_migration(
        &dir,
        slower,
        "SELECT pg_sleep(4);\nALTER TABLE \"Order\" ADD COLUMN \"more\" TEXT;\n",
    );
    let other = env.spawn(&["tenant", "migrate", &slug]);
    wait_until(Duration::from_secs(30), "tenantctl to start it", || {
        unfinished(&env, &db, "_prisma_migrations", slower).then_some(())
    });
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        find(&status, &slug)["in_progress"],
        serde_json::json!([slower])
    );
    let doctor = env.run(&["doctor", "--output", "json"]);
    assert!(!doctor.all().contains("P3009"), "{}", doctor.all());
    let migrated = env
        .run(&["tenant", "migrate", &slug, "--output", "json"])
        .ok()
        .json();
    assert_eq!(find(&migrated, &slug)["applied"], serde_json::json!([]));
    crate::support::wait_with_deadline(other, Duration::from_secs(30)).ok();
    // A row really left unfinished, with no lock held, is still failed.
    env.exec(
        &db,
        &format!(
            "UPDATE _prisma_migrations SET finished_at = NULL WHERE migration_name = '{slower}'"
        ),
    );
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .code(1)
        .json();
    assert_eq!(find(&status, &slug)["failed"], serde_json::json!([slower]));
}

/// D10: `--lock-timeout` bounds the wait for Prisma's lock; the error names
/// the lock and who may hold it, and nothing is recorded.
#[test]
fn lock_timeout_bounds_the_wait_for_prismas_lock() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "wait", "");
    add_migration(
        &dir,
        "20240201000000_more",
        "ALTER TABLE \"Order\" ADD COLUMN \"more\" TEXT;\n",
    );
    let holder = hold(
        &env,
        &db,
        "prisma-elsewhere",
        "SELECT pg_advisory_lock(72707369), pg_sleep(60)",
    );
    wait_until(Duration::from_secs(10), "the holder", || {
        advisory_held(&env, &db).then_some(())
    });
    let started = std::time::Instant::now();
    let run = env.run(&["tenant", "migrate", &slug, "--lock-timeout", "700ms"]);
    let took = started.elapsed();
    end_holder(&env, &db, "prisma-elsewhere", holder);
    let run = run.code(1);
    assert!(took < Duration::from_secs(20), "waited {took:?}");
    assert!(run.stderr.contains("72707369"), "{}", run.stderr);
    assert!(
        run.stderr.contains("prisma migrate deploy"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.query(&db, "SELECT count(*)::text FROM _prisma_migrations"),
        ["1"]
    );
    env.run(&["tenant", "migrate", &slug, "--lock-timeout", "700ms"])
        .ok();
    assert!(columns(&env, &db, "Order").contains(&"more".to_owned()));
}

/// D7: through a transaction-mode PgBouncer nobody declared, spreading
/// transactions over its server connections (round robin), a run with
/// limits leaves no setting on any of them, whatever the run's outcome.
#[test]
fn an_undeclared_round_robin_pooler_gets_no_session_setting() {
    use crate::support::pooler::PgBouncer;
    use crate::support::server::PrivateServer;
    const PW: &str = "app-Rr-pw3";
    let env = TestEnv::new();
    let server = PrivateServer::start(&env.token);
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{PW}'"),
    );
    let bouncer = PgBouncer::start_with(
        &server,
        &format!("{}-rr", env.token),
        "transaction",
        &[("app", PW)],
        3,
        "server_round_robin = 1",
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = bouncer.url_as("app", PW);
    let master = format!("{base}/master");
    let dir = schema(&env, "rr");
    env.write_config(toml("rr", "schema = \"public\"\n"));
    let through = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", &master);
        })
    };
    // Made directly on the server; only the migrate goes through the pooler.
    let direct = server.url_as("app", PW);
    env.run_with(&["master", "migrate"], |c| {
        c.env("POSTGRES_BASE_URL", &direct)
            .env("MASTER_DATABASE_URL", format!("{direct}/master"));
    })
    .ok();
    env.run_with(&["tenant", "create", "acme"], |c| {
        c.env("POSTGRES_BASE_URL", &direct)
            .env("MASTER_DATABASE_URL", format!("{direct}/master"));
    })
    .ok();
    add_migration(
        &dir,
        "20240201000000_rr",
        "CREATE TABLE \"Rr\" (x int);\nCREATE TABLE \"Rr2\" (y int);\n",
    );
    let seen = crate::support::block_on(async {
        use sqlx::{Connection as _, Executor as _, Row as _};
        let options: sqlx::postgres::PgConnectOptions =
            format!("{base}/tenant_acme").parse().expect("url");
        // Three server connections in the pool (the application's traffic).
        let mut busy = Vec::new();
        for _ in 0..3 {
            let mut conn = sqlx::postgres::PgConnection::connect_with(
                &options.clone().extra_float_digits(None),
            )
            .await
            .expect("connect");
            sqlx::query("BEGIN")
                .persistent(false)
                .execute(&mut conn)
                .await
                .expect("begin");
            busy.push(conn);
        }
        for mut conn in busy {
            let _ = sqlx::query("COMMIT")
                .persistent(false)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
        let _ = through(&[
            "tenant",
            "migrate",
            "acme",
            "--statement-timeout",
            "1500ms",
            "--lock-timeout",
            "1s",
        ]);
        let mut conn =
            sqlx::postgres::PgConnection::connect_with(&options.extra_float_digits(None))
                .await
                .expect("connect through the pooler");
        let mut seen = Vec::new();
        for _ in 0..6 {
            // Simple protocol: each query is one transaction of its own.
            let row = conn
                .fetch_one(
                    "SELECT current_setting('search_path') || ' ' || current_setting('statement_timeout') \
                     || ' ' || current_setting('lock_timeout')",
                )
                .await
                .expect("read the settings");
            seen.push(row.get::<String, _>(0));
        }
        let _ = conn.close().await;
        seen
    });
    for setting in &seen {
        assert_eq!(setting, "\"$user\", public 0 0", "{seen:?}");
    }
}

/// D14: with no schema configured the scripts run with the database's (the
/// role's) own search_path, as the real Prisma runs them: a function from
/// an `ext` schema on it resolves for both.
#[test]
fn without_a_configured_schema_the_roles_search_path_holds() {
    let env = TestEnv::new();
    let dir = schema(&env, "path");
    env.write_config(toml("path", ""));
    env.run(&["master", "migrate"]).ok();
    let (a, b) = (env.slug("pa"), env.slug("pb"));
    for slug in [&a, &b] {
        env.run(&["tenant", "create", slug]).ok();
    }
    let (db_a, db_b) = (env.db("pa"), env.db("pb"));
    for db in [&db_a, &db_b] {
        env.exec(
            db,
            &format!(
                "CREATE SCHEMA ext; CREATE FUNCTION ext.short_token() RETURNS text LANGUAGE sql AS $$SELECT 'tok'$$; \
                 ALTER DATABASE \"{db}\" SET search_path = \"$user\", public, ext"
            ),
        );
    }
    let name = "20240201000000_token";
    add_migration(
        &dir,
        name,
        "ALTER TABLE \"Order\" ADD COLUMN \"token\" TEXT NOT NULL DEFAULT short_token();\nSELECT short_token();\n",
    );
    let by_prisma = prisma(&env, &dir, &db_b, &["migrate", "deploy"]);
    assert_eq!(by_prisma.code, 0, "{}", by_prisma.all());
    let report = env
        .run(&["tenant", "migrate", &a, "--output", "json"])
        .ok()
        .json();
    assert_eq!(find(&report, &a)["applied"], serde_json::json!([name]));
    for db in [&db_a, &db_b] {
        assert!(columns(&env, db, "Order").contains(&"token".to_owned()));
    }
}

/// D1a: with `schema = "app"` the schema is created if missing before
/// `_prisma_migrations`, as Prisma's engine does; everything lands there,
/// and the real Prisma (`?schema=app`) agrees it is up to date.
#[test]
fn a_configured_schema_is_created_and_used() {
    let env = TestEnv::new();
    for schema_name in ["app", "Tenant Data"] {
        let name = if schema_name == "app" { "sa" } else { "sb" };
        let dir = schema(&env, name);
        env.write_config(toml(name, &format!("schema = \"{schema_name}\"\n")));
        env.run(&["master", "migrate"]).ok();
        let slug = env.slug(name);
        env.run(&["tenant", "create", &slug]).ok();
        let db = env.db(name);
        assert_eq!(
            env.query(
                &db,
                &format!(
                    "SELECT count(*)::text FROM pg_tables WHERE schemaname = '{schema_name}' \
                     AND tablename IN ('Order', '_prisma_migrations')"
                )
            ),
            ["2"],
            "{schema_name}"
        );
        assert_eq!(
            env.query(
                &db,
                "SELECT count(*)::text FROM pg_tables WHERE schemaname = 'public'"
            ),
            ["0"]
        );
        // The kit's Prisma talks through node-postgres, which ignores
        // `?schema=`: tenantctl's own reading is the check here.
        let status = env
            .run(&["tenant", "status", &slug, "--output", "json"])
            .ok()
            .json();
        let row = find(&status, &slug);
        assert_eq!(
            row["applied"],
            serde_json::json!(["20240101000000_orders"]),
            "{row}"
        );
        assert_eq!(row["pending"], serde_json::json!([]), "{row}");
        assert!(dir.is_dir());
    }
}

/// D2: a UTF-8 BOM at the start of migration.sql (an editor's) is not
/// sent, as Prisma does not send it; the checksum stays the file's, so the
/// real Prisma agrees it is applied.
#[test]
fn a_bom_at_the_start_of_a_migration_is_not_sent() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "bom", "");
    add_migration(
        &dir,
        "20240201000000_one",
        "\u{feff}ALTER TABLE \"Order\" ADD COLUMN \"one\" TEXT;",
    );
    add_migration(
        &dir,
        "20240301000000_several",
        "\u{feff}-- a comment first\r\nALTER TABLE \"Order\" ADD COLUMN \"two\" TEXT;\r\nALTER TABLE \"Order\" ADD COLUMN \"three\" TEXT;\r\n",
    );
    env.run(&["tenant", "migrate", &slug]).ok();
    let cols = columns(&env, &db, "Order");
    for col in ["one", "two", "three"] {
        assert!(cols.contains(&col.to_owned()), "{cols:?}");
    }
    let status = prisma(&env, &dir, &db, &["migrate", "status"]);
    assert!(
        status.all().contains("Database schema is up to date"),
        "{}",
        status.all()
    );
}

/// D11: a migration stopped by --lock-timeout (55P03) was undone whole by
/// the server: marked rolled back, so the next run applies it. D4: a
/// script with effects a rollback does not undo (a sequence advanced) is
/// never marked rolled back after a cancel: it stays failed.
#[test]
fn a_lock_timeout_in_a_migration_is_rolled_back_unless_not_undone() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "lt", "");
    let name = "20240201000000_locked";
    add_migration(
        &dir,
        name,
        "ALTER TABLE \"Order\" ADD COLUMN \"locked\" TEXT;\nCREATE INDEX \"Order_locked\" ON \"Order\" (\"locked\");\n",
    );
    let holder = hold(
        &env,
        &db,
        "table-holder",
        "BEGIN; LOCK TABLE \"Order\"; SELECT pg_sleep(60);",
    );
    wait_until(Duration::from_secs(10), "the table lock", || {
        (env.query(
            &db,
            "SELECT count(*)::text FROM pg_locks WHERE relation = '\"Order\"'::regclass AND mode = 'AccessExclusiveLock' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == ["1"])
            .then_some(())
    });
    let cut = env.run(&["tenant", "migrate", &slug, "--lock-timeout", "500ms"]);
    end_holder(&env, &db, "table-holder", holder);
    let cut = cut.code(1);
    assert!(cut.stderr.contains("next run applies it"), "{}", cut.stderr);
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        find(&status, &slug)["rolled_back"],
        serde_json::json!([name])
    );
    env.run(&["tenant", "migrate", &slug]).ok();
    assert!(columns(&env, &db, "Order").contains(&"locked".to_owned()));

    for (i, sql) in [
        "SELECT nextval('\"Order_id_seq\"');\nSELECT pg_sleep(3);\n",
        "ALTER TABLE \"Order\" ADD COLUMN \"n\" BIGINT;\nSELECT setval('\"Order_id_seq\"', 100);\nSELECT pg_sleep(3);\n",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("2024040{i}000000_sequence");
        add_migration(&dir, &name, sql);
        let cut = env
            .run(&["tenant", "migrate", &slug, "--statement-timeout", "300ms"])
            .code(1);
        assert!(cut.stderr.contains("recorded as failed"), "{}", cut.stderr);
        let status = env
            .run(&["tenant", "status", &slug, "--output", "json"])
            .code(1)
            .json();
        assert_eq!(find(&status, &slug)["failed"], serde_json::json!([name]));
        // Resolved for the next variant, as a person would.
        env.exec(
            &db,
            &format!("UPDATE _prisma_migrations SET finished_at = now() WHERE migration_name = '{name}'"),
        );
    }
}

/// D12: the started row deleted while its script ran: the run says so and
/// never reports the migration applied.
#[test]
fn a_started_row_deleted_meanwhile_is_an_error() {
    let env = TestEnv::new();
    let (dir, slug, _db) = one_tenant(&env, "gone", "");
    for (name, sql) in [
        (
            "20240201000000_gone",
            "DELETE FROM _prisma_migrations WHERE finished_at IS NULL;\n",
        ),
        (
            "20240201000000_gone2",
            "ALTER TABLE \"Order\" ADD COLUMN \"g\" TEXT;\nTRUNCATE _prisma_migrations;\n",
        ),
    ] {
        std::fs::remove_dir_all(dir.join("migrations/20240201000000_gone")).ok();
        add_migration(&dir, name, sql);
        let run = env
            .run(&["tenant", "migrate", &slug, "--output", "json"])
            .code(1);
        assert!(run.all().contains("deleted"), "{}", run.all());
        assert_eq!(
            find(&run.json(), &slug)["applied"],
            serde_json::json!([]),
            "{}",
            run.all()
        );
    }
}

/// D15: a table that belongs to an extension (PostGIS's spatial_ref_sys
/// from template1) does not make the schema "not empty" (P3005), as the
/// real Prisma does not count it; a table of the application's still does.
#[test]
fn extension_tables_do_not_make_the_schema_not_empty() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "ext", "");
    let other = env.slug("ext2");
    env.run(&["tenant", "create", &other]).ok();
    let other_db = env.db("ext2");
    for db in [&db, &other_db] {
        env.exec(
            db,
            "DROP TABLE _prisma_migrations; DROP TABLE \"Order\"; \
             CREATE TABLE spatial_ref_sys (srid int PRIMARY KEY); \
             ALTER EXTENSION plpgsql ADD TABLE spatial_ref_sys",
        );
    }
    let by_prisma = prisma(&env, &dir, &other_db, &["migrate", "deploy"]);
    assert_eq!(by_prisma.code, 0, "{}", by_prisma.all());
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .ok()
        .json();
    assert_eq!(find(&status, &slug)["not_empty"], false);
    env.run(&["tenant", "migrate", &slug]).ok();
    assert_eq!(columns(&env, &db, "Order"), ["id", "total"]);

    env.exec(
        &db,
        "DROP TABLE _prisma_migrations; CREATE TABLE app_own (x int)",
    );
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .code(1)
        .json();
    assert_eq!(find(&status, &slug)["not_empty"], true);
}

/// D13: a variable tenantctl keeps from a child (another database's URL,
/// the master's, the servers') does not come back when the child loads the
/// project's `.env` as Prisma does (dotenv fills only unset variables).
#[test]
fn a_withheld_variable_stays_withheld_from_a_dotenv_loading_child() {
    let env = TestEnv::new();
    let (_dir, slug, _db) = one_tenant(&env, "dot", "");
    let master = env.master_url();
    std::fs::write(
        env.workdir.path().join(".env"),
        format!(
            "DIRECT_URL={master}\nSHADOW_DATABASE_URL={master}\nMASTER_DATABASE_URL={master}\nAPP_NAME=kept\n"
        ),
    )
    .expect(".env");
    let node_path = kit().join("node_modules");
    let run = env
        .run_with(
            &[
                "tenant",
                "exec",
                &slug,
                "--",
                "node",
                "-r",
                "dotenv/config",
                "-e",
                "console.log(JSON.stringify([process.env.DIRECT_URL ?? null, process.env.SHADOW_DATABASE_URL ?? null, process.env.MASTER_DATABASE_URL ?? null, process.env.POSTGRES_BASE_URL ?? null, process.env.APP_NAME ?? null, process.env.DATABASE_URL ? 'set' : null]))",
            ],
            |c| {
                c.env("NODE_PATH", &node_path);
            },
        )
        .ok();
    assert!(
        run.stdout.contains(r#"["","","","","kept","set"]"#),
        "{}",
        run.all()
    );
}

/// D3: Prisma's CLI orders migration folders ignoring case; two names
/// that order differently by bytes are refused, naming both, before any
/// tenant is touched.
#[test]
fn names_ordered_differently_by_case_are_refused() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "case", "");
    for (upper, lower) in [
        ("20240201000000_B", "20240201000000_a"),
        ("20240301000000_Zeta", "20240301000000_alpha"),
        ("20240401000000_Users", "20240401000000_users"),
    ] {
        add_migration(&dir, upper, "CREATE TABLE \"U\" (x int);\n");
        add_migration(&dir, lower, "CREATE TABLE \"L\" (x int);\n");
        let run = env.run(&["tenant", "migrate", &slug]).code(2);
        assert!(
            run.stderr.contains(upper)
                && run.stderr.contains(lower)
                && run.stderr.contains("rename"),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        for name in [upper, lower] {
            std::fs::remove_dir_all(dir.join("migrations").join(name)).expect("rm");
        }
    }
    assert_eq!(
        env.query(&db, "SELECT count(*)::text FROM _prisma_migrations"),
        ["1"]
    );
}

/// D1b: with `apply = "command"` and a schema other than public, the
/// command's `DATABASE_URL` names it (`schema=`), and a command that exits
/// 0 leaving migrations pending there fails its tenant, create and migrate.
#[test]
fn a_command_that_leaves_the_schema_pending_fails_its_tenant() {
    let env = TestEnv::new();
    let dir = schema(&env, "cmd");
    env.run(&["master", "migrate"]).ok();
    let command =
        "command = [\"sh\", \"-c\", \"echo \\\"$DATABASE_URL\\\" > url.$TENANT_SLUG.txt\"]\n";
    for (schema_name, encoded) in [("app", "app"), ("Tenant Data", "Tenant%20Data")] {
        env.write_config(toml(
            "cmd",
            &format!("schema = \"{schema_name}\"\napply = \"command\"\n{command}"),
        ));
        let slug = env.slug(&encoded.to_lowercase().replace('%', ""));
        let run = env.run(&["tenant", "create", &slug]).code(1);
        assert!(
            run.stderr
                .contains(&format!("still pending in schema {schema_name}")),
            "{}",
            run.stderr
        );
        let url = std::fs::read_to_string(env.workdir.path().join(format!("url.{slug}.txt")))
            .expect("the command ran");
        assert!(
            url.trim_end().ends_with(&format!("?schema={encoded}")),
            "{url}"
        );
    }
    // migrate: a tenant made natively, then a command that does nothing.
    env.write_config(toml("cmd", "schema = \"app\"\n"));
    let slug = env.slug("made");
    env.run(&["tenant", "create", &slug]).ok();
    add_migration(
        &dir,
        "20240201000000_more",
        "ALTER TABLE \"Order\" ADD COLUMN \"m\" TEXT;\n",
    );
    env.write_config(toml(
        "cmd",
        &format!("schema = \"app\"\napply = \"command\"\n{command}"),
    ));
    let run = env.run(&["tenant", "migrate", &slug]).code(1);
    assert!(
        run.stderr.contains("still pending in schema app"),
        "{}",
        run.stderr
    );
    // With public (Prisma's default) the URL is left as it is.
    env.write_config(toml("cmd", &format!("apply = \"command\"\n{command}")));
    let public = env.slug("pub");
    env.run(&["tenant", "create", &public]).code(1);
    let url = std::fs::read_to_string(env.workdir.path().join(format!("url.{public}.txt")))
        .expect("the command ran");
    assert!(!url.contains("schema="), "{url}");
}

/// What must run outside a transaction block (`CREATE INDEX CONCURRENTLY`
/// alone in its file, after the comment Prisma writes) still runs alone,
/// with a configured schema and limits; and a cut-short one, which leaves
/// an invalid index behind, stays failed (D4), never marked rolled back.
#[test]
fn a_concurrent_index_runs_alone_and_a_cut_short_one_stays_failed() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "cic", "schema = \"public\"\n");
    add_migration(
        &dir,
        "20240201000000_index",
        "-- CreateIndex\nCREATE INDEX CONCURRENTLY \"Order_total_idx\" ON \"Order\"(\"total\");\n",
    );
    env.run(&[
        "tenant",
        "migrate",
        &slug,
        "--statement-timeout",
        "20s",
        "--lock-timeout",
        "5s",
    ])
    .ok();
    assert_eq!(
        env.query(
            &db,
            "SELECT indisvalid::text FROM pg_index WHERE indexrelid = '\"Order_total_idx\"'::regclass"
        ),
        ["true"]
    );
    let name = "20240301000000_blocked";
    add_migration(
        &dir,
        name,
        "/* waits for the open transaction */\nCREATE INDEX CONCURRENTLY \"Order_id_total_idx\" ON \"Order\"(\"id\", \"total\");\n",
    );
    let holder = hold(
        &env,
        &db,
        "writer",
        "BEGIN; INSERT INTO \"Order\" (total) VALUES (1); SELECT pg_sleep(60);",
    );
    wait_until(Duration::from_secs(10), "the open transaction", || {
        (env.query(
            &db,
            "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = 'writer' AND state = 'active'",
        ) == ["1"])
            .then_some(())
    });
    let cut = env.run(&["tenant", "migrate", &slug, "--statement-timeout", "1s"]);
    end_holder(&env, &db, "writer", holder);
    let cut = cut.code(1);
    assert!(cut.stderr.contains("recorded as failed"), "{}", cut.stderr);
    let status = env
        .run(&["tenant", "status", &slug, "--output", "json"])
        .code(1)
        .json();
    assert_eq!(find(&status, &slug)["failed"], serde_json::json!([name]));
}

/// Third pass. A one-statement script Prisma sends as it is, which cannot
/// run in a transaction block and which no list names (REINDEX SCHEMA), is
/// applied as Prisma applies it; and a folder Prisma orders otherwise than
/// bytes (punctuation before digits: `1_init` before `10_tag`) is refused
/// before anything is applied.
#[test]
fn one_statement_scripts_go_alone_and_prismas_collation_order_is_respected() {
    let env = TestEnv::new();
    let (dir, slug, db) = one_tenant(&env, "reindex", "");
    add_migration(
        &dir,
        "20240102000000_reindex",
        "-- Reindex\nREINDEX SCHEMA public;\n",
    );
    env.run(&["tenant", "migrate", &slug]).ok();
    let status = prisma(&env, &dir, &db, &["migrate", "status"]).ok();
    assert!(status.stdout.contains("up to date"), "{}", status.stdout);

    let env = TestEnv::new();
    let dir = schema(&env, "order");
    std::fs::rename(
        dir.join("migrations/20240101000000_orders"),
        dir.join("migrations/1_init"),
    )
    .expect("rename");
    add_migration(
        &dir,
        "2_note",
        "ALTER TABLE \"Order\" ADD COLUMN note text;\n",
    );
    add_migration(
        &dir,
        "10_tag",
        "ALTER TABLE \"Order\" ADD COLUMN tag text;\n",
    );
    env.write_config(toml("order", ""));
    env.run(&["master", "migrate"]).ok();
    let run = env.run(&["tenant", "create", &env.slug("order")]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("10_tag") && run.stderr.contains("1_init"),
        "{}",
        run.stderr
    );
    assert!(!env.database_exists(&env.db("order")));
}

/// Third pass. An interrupt during `tenant create` cancels the migration
/// on the server, as `tenant migrate` does: the script does not go on to
/// commit behind an exited process, Prisma's row says rolled back (the
/// server undid it whole), the create is left failed, exit 130, and a
/// rerun finishes it.
#[test]
fn an_interrupted_create_cancels_its_migration_on_the_server() {
    let env = TestEnv::new();
    let dir = schema(&env, "slow");
    add_migration(
        &dir,
        "20240102000000_slow",
        "SELECT pg_sleep(30);\nCREATE TABLE after_sleep (x int);\n",
    );
    env.write_config(toml("slow", ""));
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("slow");
    let db = env.db("slow");
    // In place: the migration runs in the tenant's own database (see
    // template.rs for an interrupt during a template's build).
    let child = env.spawn(&["tenant", "create", &slug, "--no-template"]);
    wait_until(Duration::from_secs(30), "the slow migration to run", || {
        (!env
            .query(
                "postgres",
                &format!(
                    "SELECT pid::text FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()"
                ),
            )
            .is_empty())
        .then_some(())
    });
    for _ in 0..2 {
        assert!(
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = crate::support::wait_with_deadline(child, Duration::from_secs(30));
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        env.query(&db, "SELECT to_regclass('after_sleep')::text")
            .iter()
            .all(String::is_empty),
        "the script went on after the interrupt"
    );
    assert_eq!(
        env.query(
            &db,
            "SELECT (rolled_back_at IS NOT NULL)::text FROM _prisma_migrations WHERE migration_name = '20240102000000_slow'"
        ),
        ["true"]
    );
    // Fixed, the rerun finishes it.
    std::fs::write(
        dir.join("migrations/20240102000000_slow/migration.sql"),
        "CREATE TABLE after_sleep (x int);\n",
    )
    .expect("rewrite");
    env.run(&["tenant", "create", &slug]).ok();
    assert_eq!(
        env.query(&db, "SELECT to_regclass('after_sleep')::text"),
        ["after_sleep"]
    );
}
