//! What a hostile pass found against issue 16's changes, each a test: a
//! pending create and a company that answer to one key, a `tenantctl`
//! schema someone else owns, our schema on the role's search path, two
//! creates of one slug on a table that cannot say "provisioning", a status
//! mapping that collides with a state left out, one server spelled two
//! ways.

use std::time::Duration;

use crate::support::prisma::{example, prisma};
use crate::support::{Gate, TestEnv, wait_with_deadline};

const FAILING: &str = "20990101000000_fails.sql";

fn kit_master(env: &TestEnv) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    prisma(env, &example("master"), &env.master, &["migrate", "deploy"]).ok();
    env.run(&["master", "migrate"]).ok();
}

fn app_company(env: &TestEnv, id: &str, name: &str, db: &str) {
    env.exec(
        &env.master,
        &format!(
            r#"INSERT INTO "Company" (id, name, "dbName", "updatedAt") VALUES ('{id}', '{name}', '{db}', now())"#
        ),
    );
}

#[test]
fn giving_up_a_failed_create_never_reaches_a_company_that_answers_to_the_same_key() {
    let env = TestEnv::new();
    kit_master(&env);
    let slug = env.slug("acme");
    // The application already has a company of that name: the slug would
    // address two companies, so create refuses it before anything is made.
    app_company(&env, "app1", &slug, &format!("app_db_{}", env.token));
    env.exec(
        "postgres",
        &format!("CREATE DATABASE \"app_db_{}\"", env.token),
    );
    let refused = env.run(&["tenant", "create", &slug]).code(2);
    assert!(
        refused.stderr.contains("already answers to it"),
        "{}",
        refused.stderr
    );
    assert!(!env.database_exists(&env.db("acme")));
    // --name the same: refused too.
    let other = env.slug("other");
    let refused = env
        .run(&["tenant", "create", &other, "--name", &slug])
        .code(2);
    assert!(refused.stderr.contains("--name"), "{}", refused.stderr);

    // A create that fails, then the application takes its database's name.
    let bad = env.slug("bad");
    let broken = env.tenant_schema_plus("broken", FAILING, "SELECT 1/0;");
    env.run(&[
        "tenant",
        "create",
        &bad,
        "--tenant-migrations",
        &broken,
        "--no-template",
    ])
    .code(1);
    app_company(&env, "app2", "App Two", &env.db("bad"));
    // `drop bad` now names both: refused, nothing dropped.
    let ambiguous = env.run(&["tenant", "drop", &bad, "--yes"]).code(2);
    assert!(
        ambiguous.stderr.contains("names both") && ambiguous.stderr.contains("--unfinished"),
        "{}",
        ambiguous.stderr
    );
    assert!(env.database_exists(&env.db("bad")));
    // --unfinished gives up the create only: the company keeps its row
    // and the database it names.
    let given_up = env
        .run(&["tenant", "drop", "--unfinished", &bad, "--yes"])
        .ok();
    assert!(given_up.stderr.contains("kept"), "{}", given_up.stderr);
    assert!(env.database_exists(&env.db("bad")));
    assert_eq!(
        env.query(&env.master, r#"SELECT id FROM "Company" ORDER BY id"#),
        ["app1", "app2"]
    );
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM tenantctl.claims"),
        ["0"]
    );
    // --unfinished never touches a company.
    env.run(&["tenant", "drop", "--unfinished", &slug, "--yes"])
        .code(2);
    assert!(env.database_exists(&format!("app_db_{}", env.token)));
}

#[test]
fn a_key_that_is_one_companys_name_and_anothers_database_is_ambiguous() {
    let env = TestEnv::new();
    kit_master(&env);
    let key = env.slug("acme");
    app_company(&env, "c1", &key, &format!("app_acme_{}", env.token));
    app_company(&env, "c2", "Zeta Corp", &env.db("acme"));
    for db in [format!("app_acme_{}", env.token), env.db("acme")] {
        env.exec("postgres", &format!("CREATE DATABASE \"{db}\""));
    }
    let run = env.run(&["tenant", "drop", &key, "--yes"]).code(1);
    assert!(run.stderr.contains("ambiguous"), "{}", run.stderr);
    assert!(env.database_exists(&env.db("acme")));
    assert!(env.database_exists(&format!("app_acme_{}", env.token)));
    // By id, each is reachable.
    env.run(&["tenant", "url", "c1"]).ok();
    env.run(&["tenant", "url", "c2"]).ok();
}

#[test]
fn a_tenantctl_schema_another_role_owns_is_refused_not_adopted() {
    for adopted in [false, true] {
        let env = TestEnv::new();
        if adopted {
            kit_master(&env);
            env.exec(&env.master, "DROP SCHEMA tenantctl CASCADE");
        } else {
            env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
        }
        let mallory = format!("mallory_{}", env.token);
        env.exec("postgres", &format!("CREATE ROLE \"{mallory}\""));
        env.exec(
            &env.master,
            &format!("CREATE SCHEMA tenantctl AUTHORIZATION \"{mallory}\""),
        );
        let run = env.run(&["master", "migrate"]).code(1);
        assert!(
            run.stderr.contains("belongs to role") && run.stderr.contains(&mallory),
            "{}",
            run.stderr
        );
        assert_eq!(
            env.query(
                &env.master,
                "SELECT count(*)::text FROM pg_class WHERE relnamespace = 'tenantctl'::regnamespace"
            ),
            ["0"],
            "adopted {adopted}: nothing of ours in it"
        );
        // Handed over to a trusted owner, it is used.
        env.exec(&env.master, "ALTER SCHEMA tenantctl OWNER TO CURRENT_USER");
        env.run(&["master", "migrate"]).ok();
        env.exec("postgres", &format!("DROP ROLE \"{mallory}\""));
    }
}

#[test]
fn our_schema_on_the_roles_search_path_does_not_take_the_applications_table() {
    let env = TestEnv::new();
    let role = crate::support::role_with_password(&env, "searcher", "searcher-pw");
    env.exec(
        "postgres",
        &format!(
            r#"ALTER ROLE "{}" SET search_path = tenantctl, public"#,
            role.role
        ),
    );
    let run = |args: &[&str]| env.run_with(args, role.configure());
    run(&["master", "migrate"]).ok();
    // Once more, now that the schema exists and is first on the path.
    run(&["master", "migrate"]).ok();
    assert_eq!(
        env.query(
            &env.master,
            r#"SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relname = 'Company'"#
        ),
        ["public"]
    );
    run(&["tenant", "create", &env.slug("a")]).ok();
    assert_eq!(
        env.query(
            &env.master,
            r#"SELECT count(*)::text FROM public."Company""#
        ),
        ["1"]
    );
}

#[test]
fn a_second_create_of_one_slug_on_a_claims_master_reports_the_first() {
    let env = TestEnv::new();
    kit_master(&env);
    let gate = Gate::new(&env);
    let dir = env.tenant_schema_plus("gated", "99990101000000_gate.sql", &gate.sql());
    let slug = env.slug("twice");
    let first = env.spawn(&[
        "tenant",
        "create",
        &slug,
        "--tenant-migrations",
        &dir,
        "--output",
        "json",
    ]);
    gate.wait_for(&env, 1);
    let second = env.spawn(&[
        "tenant",
        "create",
        &slug,
        "--tenant-migrations",
        &dir,
        "--output",
        "json",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let open = gate.open(&env);
    let first = wait_with_deadline(first, Duration::from_secs(60));
    let second = wait_with_deadline(second, Duration::from_secs(60));
    drop(open);
    assert_eq!(first.code, 0, "{}", first.all());
    assert_eq!(second.code, 0, "{}", second.all());
    assert_eq!(second.json()["concurrent"], true, "{}", second.stdout);
    assert_eq!(
        env.query(&env.master, r#"SELECT "dbName" FROM "Company""#),
        [env.db("twice")]
    );
}

#[test]
fn a_status_mapping_that_collides_with_a_state_left_out_is_refused() {
    for mapping in [
        "provisioning = \"ACTIVE\"",
        "failed = \"active\"",
        "dropped = \"Active\"",
    ] {
        let env = TestEnv::new();
        kit_master(&env);
        std::fs::write(
            env.workdir.path().join("tenantctl.toml"),
            format!("[master.statuses]\n{mapping}\n"),
        )
        .expect("write tenantctl.toml");
        let run = env.run(&["tenant", "list"]).code(2);
        assert!(
            run.stderr.contains("could not tell them apart") && run.stderr.contains("active"),
            "{mapping}: {}",
            run.stderr
        );
        let created = env.run(&["tenant", "create", &env.slug("c")]).code(2);
        assert!(
            !env.database_exists(&env.db("c")),
            "{mapping}: {}",
            created.stderr
        );
    }
}

#[test]
fn the_masters_tls_setting_holds_however_its_host_is_spelled() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let base = url::Url::parse(&env.base_url).expect("base url");
    let other_spelling = match base.host_str() {
        Some("localhost") => "127.0.0.1",
        Some("127.0.0.1") => "LOCALHOST",
        other => panic!("the test server's host {other:?} has no second spelling to try"),
    };
    let mut master = base.clone();
    master.set_host(Some(other_spelling)).expect("host");
    master.set_path(&format!("/{}", env.master));
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[servers.default]\nsslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/ca.pem\"\n",
    )
    .expect("write tenantctl.toml");
    // No such CA: verify-full must fail on the master too, whichever
    // spelling of the server's host its URL uses.
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env("MASTER_DATABASE_URL", master.as_str());
    });
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("connect to database"), "{}", run.stderr);
    assert!(!run.all().contains(&crate::support::password()));
    // Without the setting, the same URL works: the failure was the setting.
    std::fs::remove_file(env.workdir.path().join("tenantctl.toml")).expect("remove");
    env.run_with(&["tenant", "list"], |c| {
        c.env("MASTER_DATABASE_URL", master.as_str());
    })
    .ok();
}

/// Behind a transaction-mode PgBouncer nobody declared, `create`'s
/// session locks would stay on a pooled server connection (and block the
/// next create or drop of that name): the move between server processes
/// is noticed, the lock given back, and the command stops saying to
/// declare the pooler; declared in tenantctl.toml, it works.
#[test]
fn create_behind_an_undeclared_transaction_pooler_leaves_no_lock_behind() {
    use crate::support::pooler::PgBouncer;
    use crate::support::server::PrivateServer;

    const PW: &str = "app-Locks-pw1";
    let env = TestEnv::new();
    let server = PrivateServer::start(&format!("{}locks", env.token));
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{PW}'"),
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let bouncer = PgBouncer::start_with(
        &server,
        &format!("{}-locks", env.token),
        "transaction",
        &[("app", PW)],
        2,
        "server_round_robin = 1",
    );
    let base = bouncer.url_as("app", PW);
    let through = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    };
    through(&["master", "migrate"]).ok();
    // Two server connections to the master in the pool, taken in turn.
    crate::support::block_on(async {
        use sqlx::{Connection as _, Executor as _};
        let options: sqlx::postgres::PgConnectOptions =
            format!("{base}/master").parse().expect("url");
        let options = options.extra_float_digits(None);
        let mut a = sqlx::PgConnection::connect_with(&options).await.expect("a");
        let mut b = sqlx::PgConnection::connect_with(&options).await.expect("b");
        a.execute("BEGIN; SELECT 1").await.expect("a");
        b.execute("BEGIN; SELECT 1").await.expect("b");
        a.execute("COMMIT").await.expect("a");
        b.execute("COMMIT").await.expect("b");
        let _ = a.close().await;
        let _ = b.close().await;
    });
    let locks = |server: &PrivateServer| {
        crate::support::block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&format!("{}/master", server.base_url()))
                .await
                .expect("connect");
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                   AND database = (SELECT oid FROM pg_database WHERE datname = 'master')",
            )
            .fetch_one(&mut conn)
            .await
            .expect("count locks");
            let _ = conn.close().await;
            n
        })
    };
    // The lock itself, taken through the pool as create takes it: the
    // statement after it lands on the other server connection.
    crate::support::block_on(async {
        use sqlx::Connection as _;
        let options: sqlx::postgres::PgConnectOptions =
            format!("{base}/master").parse().expect("url");
        let mut conn = sqlx::PgConnection::connect_with(&options.extra_float_digits(None))
            .await
            .expect("connect");
        let slug = tenantctl::tenant::Slug::parse("acme").expect("slug");
        let err = tenantctl::companies::lock_slug(&mut conn, &slug)
            .await
            .expect_err("the lock cannot be kept across the pool");
        let text = tenantctl::error::render(&err);
        assert!(text.contains("does not declare"), "{text}");
        let _ = conn.close().await;
    });
    assert_eq!(
        locks(&server),
        0,
        "the lock was given back where it was taken"
    );
    let run = through(&["tenant", "create", "acme"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains(r#"pooler = "transaction""#),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(PW));
    assert_eq!(
        locks(&server),
        0,
        "a lock was left on a pooled server connection"
    );
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[servers.default]\npooler = \"transaction\"\n",
    )
    .expect("write tenantctl.toml");
    through(&["tenant", "create", "acme"]).ok();
    assert_eq!(locks(&server), 0);
}

/// Second pass. A key is looked up every way at once: one company's name
/// and another's exact database name or id is as ambiguous as a derived
/// one.
#[test]
fn a_key_that_is_one_companys_name_and_anothers_exact_database_or_id_is_ambiguous() {
    let env = TestEnv::new();
    kit_master(&env);
    let key = format!("acme_{}", env.token);
    let id_key = format!("acme2_{}", env.token);
    app_company(&env, "c1", "Alpha Inc", &key);
    app_company(&env, "c2", &key, &format!("b_{}", env.token));
    app_company(&env, &id_key, "Other", &format!("o_{}", env.token));
    app_company(&env, "c3", &id_key, &format!("c3_{}", env.token));
    for db in [
        key.clone(),
        format!("b_{}", env.token),
        format!("o_{}", env.token),
    ] {
        env.exec("postgres", &format!("CREATE DATABASE \"{db}\""));
    }
    for k in [&key, &id_key] {
        let run = env.run(&["tenant", "drop", k, "--yes"]).code(1);
        assert!(run.stderr.contains("ambiguous"), "{k}: {}", run.stderr);
    }
    assert!(env.database_exists(&key));
    assert!(env.database_exists(&format!("o_{}", env.token)));
}

/// Second pass. create refuses every handle another company answers to:
/// on resuming an unfinished create, for --db-name and the derived
/// database, and on a table with a slug column too (rows without a slug,
/// ids that look like slugs).
#[test]
fn create_refuses_handles_other_companies_answer_to_in_every_way() {
    let env = TestEnv::new();
    kit_master(&env);
    // Resuming: the application took the slug as a name meanwhile.
    let bad = env.slug("bad");
    let broken = env.tenant_schema_plus("broken", FAILING, "SELECT 1/0;");
    env.run(&[
        "tenant",
        "create",
        &bad,
        "--tenant-migrations",
        &broken,
        "--no-template",
    ])
    .code(1);
    app_company(&env, "app1", &bad, &format!("app1_{}", env.token));
    std::fs::write(std::path::Path::new(&broken).join(FAILING), "SELECT 1;").expect("fix");
    let run = env
        .run(&[
            "tenant",
            "create",
            &bad,
            "--tenant-migrations",
            &broken,
            "--no-template",
        ])
        .code(2);
    assert!(
        run.stderr.contains("already answers to it"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.query(&env.master, r#"SELECT id FROM "Company""#),
        ["app1"]
    );
    // --db-name, and the derived name, equal to another company's name.
    let globex = format!("globex_{}", env.token);
    app_company(&env, "old1", &globex, &format!("old1_{}", env.token));
    app_company(
        &env,
        "old2",
        &env.db("acme"),
        &format!("old2_{}", env.token),
    );
    let run = env
        .run(&["tenant", "create", &env.slug("newco"), "--db-name", &globex])
        .code(2);
    assert!(run.stderr.contains("database name"), "{}", run.stderr);
    assert!(!env.database_exists(&globex));
    let run = env.run(&["tenant", "create", &env.slug("acme")]).code(2);
    assert!(run.stderr.contains("database name"), "{}", run.stderr);
    assert!(!env.database_exists(&env.db("acme")));

    // A table with a slug column: a row without one, and a numeric id.
    let env = TestEnv::new();
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        &env.master,
        &format!(
            r#"CREATE TABLE tenants (id serial PRIMARY KEY, slug text UNIQUE, name text NOT NULL,
                 database_name text NOT NULL UNIQUE);
               INSERT INTO tenants (slug, name, database_name) VALUES (NULL, '{}', 'legacy_{}');"#,
            env.slug("acme"),
            env.token
        ),
    );
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"tenants\"\n",
    )
    .expect("write tenantctl.toml");
    env.run(&["master", "migrate"]).ok();
    for slug in [env.slug("acme"), "1".to_owned()] {
        let run = env.run(&["tenant", "create", &slug]).code(2);
        assert!(
            run.stderr.contains("already answers to it"),
            "{slug}: {}",
            run.stderr
        );
    }
}

/// Second pass. Trust in the `tenantctl` schema is not lent to a group's
/// other members, nor to objects other roles made in it or beside the
/// companies table under tenantctl's older names.
#[test]
fn objects_other_roles_own_are_never_trusted_with_tenantctls_records() {
    // A schema owned by a group the operator is in.
    let env = TestEnv::new();
    let ops = crate::support::role_with_password(&env, "ops", "ops-pw-1");
    let staff = format!("staff_{}", env.token);
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        "postgres",
        &format!(
            r#"CREATE ROLE "{staff}"; GRANT "{staff}" TO "{ops}";
               GRANT CREATE ON DATABASE "{m}" TO "{ops}""#,
            ops = ops.role,
            m = env.master
        ),
    );
    env.exec(
        &env.master,
        &format!(r#"CREATE SCHEMA tenantctl AUTHORIZATION "{staff}"; GRANT ALL ON SCHEMA public TO "{}""#, ops.role),
    );
    let run = env
        .run_with(&["master", "migrate"], ops.configure())
        .code(1);
    assert!(run.stderr.contains("belongs to role"), "{}", run.stderr);
    env.exec(&env.master, "DROP SCHEMA tenantctl");
    env.exec(
        "postgres",
        &format!(r#"DROP OWNED BY "{staff}"; DROP ROLE "{staff}""#),
    );

    // A table another role made inside a trusted schema, and an older
    // name beside the companies table another role owns.
    for legacy in [false, true] {
        let env = TestEnv::new();
        let mallory = format!("mallory_{}", env.token);
        env.run(&["master", "migrate"]).ok();
        env.exec("postgres", &format!(r#"CREATE ROLE "{mallory}""#));
        let (schema, table) = if legacy {
            ("public", "_tenantctl_placement")
        } else {
            ("tenantctl", "planted")
        };
        env.exec(
            &env.master,
            &format!(
                r#"GRANT CREATE, USAGE ON SCHEMA {schema} TO "{mallory}";
                   SET ROLE "{mallory}"; CREATE TABLE {schema}.{table} (company_id text); RESET ROLE;"#
            ),
        );
        let run = env.run(&["master", "migrate"]).code(1);
        assert!(
            run.stderr.contains(table) && run.stderr.contains(&mallory),
            "legacy {legacy}: {}",
            run.stderr
        );
        if legacy {
            assert_eq!(
                env.query(
                    &env.master,
                    "SELECT (to_regclass('tenantctl.placement') IS NULL)::text"
                ),
                ["true"]
            );
        }
        env.exec(&env.master, &format!("DROP TABLE {schema}.{table}"));
        env.exec(
            &env.master,
            &format!(r#"REVOKE ALL ON SCHEMA {schema} FROM "{mallory}""#),
        );
        env.exec("postgres", &format!(r#"DROP ROLE "{mallory}""#));
    }
}

/// Second pass. On a plain text status column a value no state is mapped
/// to reads as the state of that name, so mapping another state onto it
/// is refused too; --keep-row on a create that never finished is refused.
#[test]
fn text_status_collisions_and_keep_row_on_a_claim_are_refused() {
    let env = TestEnv::new();
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        &env.master,
        r#"CREATE TABLE "Company" (id text PRIMARY KEY, name text NOT NULL, "dbName" text NOT NULL UNIQUE, status text NOT NULL)"#,
    );
    for mapping in [
        "provisioning = \"ACTIVE\"",
        "dropped = \"active\"",
        "failed = \"provisioning\"",
    ] {
        std::fs::write(
            env.workdir.path().join("tenantctl.toml"),
            format!("[master.statuses]\nactive = \"active\"\n{mapping}\n"),
        )
        .expect("write tenantctl.toml");
        let run = env.run(&["master", "migrate"]);
        let run = if run.code == 0 {
            env.run(&["tenant", "list"])
        } else {
            run
        };
        assert_eq!(run.code, 2, "{mapping}: {}", run.all());
        assert!(
            run.stderr.contains("could not tell them apart"),
            "{mapping}: {}",
            run.stderr
        );
    }

    let env = TestEnv::new();
    kit_master(&env);
    let bad = env.slug("bad");
    let broken = env.tenant_schema_plus("broken", FAILING, "SELECT 1/0;");
    env.run(&[
        "tenant",
        "create",
        &bad,
        "--tenant-migrations",
        &broken,
        "--no-template",
    ])
    .code(1);
    let run = env
        .run(&["tenant", "drop", &bad, "--keep-row", "--yes"])
        .code(2);
    assert!(run.stderr.contains("no row to keep"), "{}", run.stderr);
    assert!(env.database_exists(&env.db("bad")));
}

/// Second pass. Behind an undeclared transaction pooler with one server
/// connection, a second create's lock would be granted again by the
/// session the first create's lock lives in: it is refused instead, and
/// the first create finishes.
#[test]
fn a_shared_server_connection_never_grants_one_slug_to_two_creates() {
    use crate::support::pooler::PgBouncer;
    use crate::support::server::PrivateServer;

    const PW: &str = "app-Twins-pw1";
    let env = TestEnv::new();
    let server = PrivateServer::start(&format!("{}twins", env.token));
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{PW}'"),
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let bouncer = PgBouncer::start_with(
        &server,
        &format!("{}-twins", env.token),
        "transaction",
        &[("app", PW)],
        1,
        "",
    );
    let base = bouncer.url_as("app", PW);
    let configure = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env("MASTER_DATABASE_URL", format!("{base}/master"));
    };
    env.run_with(&["master", "migrate"], configure).ok();
    let dir = env.workdir.path().join("slow");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("20240101000001_slow.sql"), "SELECT pg_sleep(3);").expect("write");
    let dir = dir.to_str().expect("utf-8").to_owned();
    let spawn = || {
        let mut cmd = env.cmd();
        configure(&mut cmd);
        cmd.args(["tenant", "create", "twin", "--tenant-migrations", &dir])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let first = spawn();
    std::thread::sleep(Duration::from_millis(1200));
    let second = wait_with_deadline(spawn(), Duration::from_secs(60));
    let first = wait_with_deadline(first, Duration::from_secs(60));
    assert_eq!(first.code, 0, "{}", first.all());
    assert_ne!(second.code, 0, "{}", second.all());
    assert!(
        second.stderr.contains("does not declare"),
        "{}",
        second.stderr
    );
}
