//! Living beside the application (issue 16, items 4 and 5): the pooler and
//! TLS kept in tenantctl.toml rather than on the base URL the application
//! concatenates, tenants of a slug-less master addressed by what `create`
//! printed, the application's own statuses selectable, status mappings that
//! lose states refused, and doctor's findings naming tenant and id,
//! whatever tenantctl's own records say.

use crate::support::pooler::PgBouncer;
use crate::support::prisma::{example, prisma_with};
use crate::support::server::PrivateServer;
use crate::support::{Run, TestEnv};

const APP_PASSWORD: &str = "app-Edges-pw7";

/// A private server with role `app` (may create databases).
fn server_with_app(env: &TestEnv, name: &str) -> PrivateServer {
    let server = PrivateServer::start(&format!("{}{name}", env.token));
    server.exec(
        "postgres",
        &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"),
    );
    server
}

/// Rows of a query on a plain connection, first column as text.
fn query(url: &str, sql: &str) -> Vec<String> {
    crate::support::block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::postgres::PgConnection::connect(url)
            .await
            .expect("connect");
        let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        rows.into_iter().map(|(v,)| v.unwrap_or_default()).collect()
    })
}

/// tenantctl run in the test's directory with only the `.env` file there
/// for its URLs, as the application's own `.env` gives them.
fn with_dotenv(env: &TestEnv, args: &[&str]) -> Run {
    env.run_with(args, |c| {
        c.env_remove("POSTGRES_BASE_URL")
            .env_remove("MASTER_DATABASE_URL")
            .env_remove("DATABASE_URL");
    })
}

#[test]
fn the_seed_env_serves_the_app_and_tenantctl_behind_a_transaction_pooler_declared_in_the_toml() {
    let env = TestEnv::new();
    let server = server_with_app(&env, "seedenv");
    // Two server connections per database, handed out in turn: a client
    // that is not pinned sees its next transaction on the other one, which
    // tenantctl notices and refuses to go on with.
    let bouncer = PgBouncer::start_with(
        &server,
        &format!("{}-seedenv", env.token),
        "transaction",
        &[("app", APP_PASSWORD)],
        2,
        "server_round_robin = 1",
    );
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = bouncer.url_as("app", APP_PASSWORD);
    // The seed's .env: the server root with no query string, and the
    // master's URL as the application itself uses it.
    std::fs::write(
        env.workdir.path().join(".env"),
        format!(
            "POSTGRES_BASE_URL={base}\nMASTER_DATABASE_URL={base}/master\nDATABASE_URL={base}/master\n"
        ),
    )
    .expect("write .env");
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[servers.default]\npooler = \"transaction\"\n",
    )
    .expect("write tenantctl.toml");

    with_dotenv(&env, &["master", "migrate"]).ok();
    for slug in ["acme", "globex"] {
        with_dotenv(&env, &["tenant", "create", slug]).ok();
    }
    let more = env.tenant_schema_plus(
        "more",
        "29990101000001_more.sql",
        "CREATE TABLE more (x int);",
    );
    let warm = |db: &str| {
        // Both server connections of the pool open, so that it has two to
        // hand out in turn.
        let options: sqlx::postgres::PgConnectOptions =
            format!("{base}/{db}").parse().expect("url");
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
    let applied = |db: &str| {
        query(
            &format!("{}/{db}", server.base_url()),
            "SELECT version::text FROM _sqlx_migrations WHERE version = 29990101000001",
        )
        .len()
    };

    // Without the declaration the pooler is caught moving the connection,
    // and the message says where to declare it.
    std::fs::write(env.workdir.path().join("tenantctl.toml"), "").expect("empty toml");
    warm("tenant_acme");
    let run = with_dotenv(
        &env,
        &["tenant", "migrate", "acme", "--tenant-migrations", &more],
    )
    .code(1);
    assert!(
        run.all().contains("transaction-mode pooler")
            && run
                .all()
                .contains("pooler = \"transaction\" in tenantctl.toml [servers.default]"),
        "{}",
        run.all()
    );
    assert_eq!(applied("tenant_acme"), 0);

    // Declared in the file: every connection is pinned, as with
    // ?pgbouncer=true on the URL.
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[servers.default]\npooler = \"transaction\"\n",
    )
    .expect("write tenantctl.toml");
    warm("tenant_acme");
    warm("tenant_globex");
    let run = with_dotenv(
        &env,
        &[
            "tenant",
            "migrate",
            "--all",
            "--tenant-migrations",
            &more,
            "--output",
            "json",
        ],
    )
    .ok();
    assert!(!run.all().contains(APP_PASSWORD), "{}", run.all());
    assert_eq!((applied("tenant_acme"), applied("tenant_globex")), (1, 1));
    with_dotenv(
        &env,
        &["tenant", "settings", "set", "acme", "theme", "dark"],
    )
    .ok();
    let got = with_dotenv(&env, &["tenant", "settings", "get", "acme", "theme"]).ok();
    assert_eq!(got.stdout.trim(), "\"dark\"");
    // A child gets the tenant's URL with the pooler declared, as it did
    // with ?pgbouncer=true on the base URL.
    let exec = with_dotenv(
        &env,
        &[
            "tenant",
            "exec",
            "acme",
            "--",
            "sh",
            "-c",
            "echo \"$DATABASE_URL\"",
        ],
    )
    .ok();
    assert!(
        exec.stdout.contains("/tenant_acme?pgbouncer=true"),
        "{}",
        exec.stdout
    );
    // doctor has nothing to say about the base URL: it has no query.
    let doctor = with_dotenv(&env, &["doctor", "--tenant-migrations", &more]).ok();
    assert!(!doctor.stderr.contains("query string"), "{}", doctor.stderr);

    // The application, from the same .env, builds its tenant URL the
    // seed's way, by concatenation, and Prisma lands in that database.
    let app_db = "app_tenant_db";
    server.exec("postgres", &format!("CREATE DATABASE {app_db} OWNER app"));
    let database_url = format!("{base}/{app_db}");
    let deploy = prisma_with(
        &env,
        &example("tenant"),
        &database_url,
        &["migrate", "deploy"],
        |_| {},
    );
    assert!(deploy.code == 0, "{}", deploy.all());
    let tables = query(
        &format!("{}/{app_db}", server.base_url()),
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert!(
        tables[0].contains("_prisma_migrations") && tables[0].contains("Site"),
        "{tables:?}"
    );
    assert_eq!(
        query(
            &format!("{}/postgres", server.base_url()),
            "SELECT count(*)::text FROM pg_tables WHERE tablename = '_prisma_migrations'",
        ),
        ["0"]
    );
}

#[test]
fn a_base_url_with_a_query_string_gets_a_warning_from_doctor() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    // (Exit codes aside: other tests leave orphans on the shared server.)
    for base in [
        format!("{}/?sslmode=disable", env.base_url),
        format!("{}?application_name=x", env.base_url),
    ] {
        let run = env.run_with(&["doctor"], |c| {
            c.env("POSTGRES_BASE_URL", &base);
        });
        assert!(
            run.stderr
                .contains("warning: POSTGRES_BASE_URL has a query string")
                && run.stderr.contains("[servers.default]"),
            "{}",
            run.stderr
        );
    }
    let run = env.run(&["doctor"]);
    assert!(run.code == 0 || run.code == 1, "{}", run.all());
    assert!(!run.stderr.contains("query string"), "{}", run.stderr);
}

#[test]
fn tls_settings_in_the_toml_reach_the_connection_and_which_wins_is_as_documented() {
    let env = TestEnv::new();
    // A server of our own, without TLS.
    let server = server_with_app(&env, "tls");
    server.exec("postgres", "CREATE DATABASE master OWNER app");
    let base = server.url_as("app", APP_PASSWORD);
    let toml = |text: &str| {
        std::fs::write(env.workdir.path().join("tenantctl.toml"), text).expect("write toml");
    };
    let run = |query: &str, pgsslmode: Option<&str>, args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", format!("{base}/{query}"))
                .env("MASTER_DATABASE_URL", format!("{base}/master{query}"))
                .env_remove("PGSSLMODE");
            if let Some(mode) = pgsslmode {
                c.env("PGSSLMODE", mode);
            }
        })
    };
    toml("[servers.default]\nsslmode = \"disable\"\n");
    run("", None, &["master", "migrate"]).ok();
    run("", None, &["tenant", "create", "acme"]).ok();

    // require against a server without TLS: one clear line, no password.
    toml("[servers.default]\nsslmode = \"require\"\n");
    for args in [
        &["tenant", "list"][..],
        &["tenant", "settings", "get", "acme", "theme"][..],
    ] {
        let failed = run("", None, args).code(1);
        assert!(
            failed.stderr.contains("TLS")
                && failed.stderr.contains("127.0.0.1")
                && failed
                    .stderr
                    .contains("with sslmode require (from tenantctl.toml [servers.default])"),
            "{}",
            failed.stderr
        );
        assert!(!failed.all().contains(APP_PASSWORD), "{}", failed.all());
    }
    // The URL's own sslmode wins over the file's.
    run("?sslmode=disable", None, &["tenant", "list"]).ok();

    // PGSSLMODE alone is read, as libpq and sqlx read it...
    toml("");
    let failed = run("", Some("require"), &["tenant", "list"]).code(1);
    assert!(
        failed
            .stderr
            .contains("with sslmode require (from PGSSLMODE)"),
        "{}",
        failed.stderr
    );
    // ...and the file wins over it.
    toml("[servers.default]\nsslmode = \"disable\"\n");
    run("", Some("require"), &["tenant", "list"]).ok();
    // The URL's own require, with the file saying disable: the URL wins.
    let failed = run("?sslmode=require", None, &["tenant", "list"]).code(1);
    assert!(
        failed
            .stderr
            .contains("with sslmode require (from MASTER_DATABASE_URL's query)"),
        "{}",
        failed.stderr
    );
    // A child is handed the setting too.
    let exec = run(
        "",
        Some("require"),
        &[
            "tenant",
            "exec",
            "acme",
            "--",
            "sh",
            "-c",
            "echo \"$PGSSLMODE $DATABASE_URL\"",
        ],
    )
    .ok();
    assert!(
        exec.stdout.contains("disable postgresql://")
            && exec.stdout.contains("/tenant_acme?sslmode=disable"),
        "{}",
        exec.stdout
    );

    // With neither the URL nor the file setting it, PGSSLMODE is what
    // tenantctl connected with, and what the child is handed (its own PG*
    // variables are never passed on as such).
    toml("");
    let exec = run(
        "",
        Some("disable"),
        &[
            "tenant",
            "exec",
            "acme",
            "--",
            "sh",
            "-c",
            "echo \"$PGSSLMODE $DATABASE_URL\"",
        ],
    )
    .ok();
    assert!(
        exec.stdout.contains("disable postgresql://")
            && exec.stdout.contains("/tenant_acme?sslmode=disable"),
        "{}",
        exec.stdout
    );

    // A value libpq does not have is refused when the file is read.
    toml("[servers.default]\nsslmode = \"on\"\n");
    let refused = run("", None, &["tenant", "list"]).code(2);
    assert!(
        refused.stderr.contains("tenantctl.toml"),
        "{}",
        refused.stderr
    );
}

/// The seed's own `"Company"` as Prisma makes it: a name, no slug, an enum
/// status the application knows as ACTIVE and SUSPENDED.
const PRISMA_COMPANY: &str = r#"
CREATE TYPE "CompanyStatus" AS ENUM ('ACTIVE', 'SUSPENDED');
CREATE TABLE "Company" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "dbName" TEXT NOT NULL UNIQUE,
    "status" "CompanyStatus" NOT NULL DEFAULT 'ACTIVE',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);
"#;

/// A companies table with neither slug nor name nor status.
const BARE_COMPANY: &str = r#"
CREATE TABLE "Company" (
    "id" TEXT NOT NULL PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "dbName" TEXT NOT NULL UNIQUE
);
"#;

fn master_with(env: &TestEnv, sql: &str) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(&env.master, sql);
    env.run(&["master", "migrate"]).ok();
}

#[test]
fn a_slugless_master_addresses_a_tenant_by_what_create_printed() {
    // (table, --name given, the handle create must print)
    for (table, name) in [
        (PRISMA_COMPANY, None),
        (PRISMA_COMPANY, Some("Acme Corp")),
        (BARE_COMPANY, None),
    ] {
        let env = TestEnv::new();
        master_with(&env, table);
        let slug = env.slug("acme");
        let db = env.db("acme");
        let mut args = vec!["tenant", "create", slug.as_str()];
        if let Some(name) = name {
            args.extend(["--name", name]);
        }
        let created = env.run(&args).ok();
        let id = env.query(
            &env.master,
            &format!(r#"SELECT id FROM "Company" WHERE "dbName" = '{db}'"#),
        );
        let id = &id[0];
        let handle = match (table == BARE_COMPANY, name) {
            (true, _) => db.clone(),
            (false, Some(name)) => name.to_owned(),
            (false, None) => slug.clone(),
        };
        // The handle, the id once, the database and the server.
        assert!(
            created.stdout.starts_with(&format!(
                "created tenant {handle} (id {id}, database {db} on server default): applied "
            )),
            "{}",
            created.stdout
        );
        assert_eq!(created.stdout.matches(id.as_str()).count(), 1);
        let json = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
        assert_eq!(json[0]["db_name"], db.as_str(), "{json}");

        // What create printed, and the slug it was given, both work
        // everywhere a tenant is named.
        for key in [handle.as_str(), slug.as_str(), id.as_str(), db.as_str()] {
            env.run(&["tenant", "settings", "set", key, "theme", "dark"])
                .ok();
            let got = env.run(&["tenant", "settings", "get", key, "theme"]).ok();
            assert_eq!(got.stdout.trim(), "\"dark\"", "{key}");
            env.run(&["tenant", "status", key]).ok();
            env.run(&["tenant", "migrate", key]).ok();
            let url = env.run(&["tenant", "url", key]).ok();
            assert!(url.stdout.contains(&db), "{key}: {}", url.stdout);
        }
        let unknown = env
            .run(&["tenant", "settings", "get", "nobody-here", "theme"])
            .code(1);
        assert!(
            unknown.stderr.contains("unknown tenant"),
            "{}",
            unknown.stderr
        );
    }
}

#[test]
fn a_name_two_companies_share_is_refused_not_guessed() {
    let env = TestEnv::new();
    master_with(&env, PRISMA_COMPANY);
    env.run(&["tenant", "create", &env.slug("one"), "--name", "Same Name"])
        .ok();
    // tenantctl gives no second company a name another answers to...
    let refused = env
        .run(&["tenant", "create", &env.slug("two"), "--name", "Same Name"])
        .code(2);
    assert!(
        refused.stderr.contains("already answers to it"),
        "{}",
        refused.stderr
    );
    assert!(!env.database_exists(&env.db("two")));
    // ...but the application may: a shared name is refused, never guessed.
    env.exec(
        &env.master,
        &format!(
            r#"INSERT INTO "Company" (id, name, "dbName", "updatedAt") VALUES ('app2', 'Same Name', 'app_two_{}', now())"#,
            env.token
        ),
    );
    let run = env.run(&["tenant", "url", "Same Name"]).code(1);
    assert!(
        run.stderr.contains("ambiguous") && run.stderr.contains("by its id or database name"),
        "{}",
        run.stderr
    );
    // A row of the application's whose name is the slug tenantctl created
    // with: the slug now answers for two companies (by name, and by the
    // database it derives), so it is refused too; the database name and
    // the id still name one.
    env.exec(
        &env.master,
        &format!(
            r#"INSERT INTO "Company" (id, name, "dbName", "updatedAt") VALUES ('app1', '{}', 'app_db_{}', now())"#,
            env.slug("one"),
            env.token
        ),
    );
    let run = env.run(&["tenant", "url", &env.slug("one")]).code(1);
    assert!(run.stderr.contains("ambiguous"), "{}", run.stderr);
    let url = env.run(&["tenant", "url", &env.db("one")]).ok();
    assert!(url.stdout.contains(&env.db("one")), "{}", url.stdout);
    env.run(&["tenant", "url", "app1"]).ok();
}

#[test]
fn the_applications_own_statuses_can_be_listed_and_selected() {
    let env = TestEnv::new();
    master_with(&env, PRISMA_COMPANY);
    for which in ["live", "paused"] {
        env.run(&["tenant", "create", &env.slug(which)]).ok();
    }
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET status = 'SUSPENDED' WHERE "dbName" = '{}'"#,
            env.db("paused")
        ),
    );
    for spelled in ["SUSPENDED", "suspended"] {
        let list = env
            .run(&["tenant", "list", "--status", spelled, "--output", "json"])
            .ok()
            .json()["tenants"]
            .clone();
        let listed: Vec<&str> = list
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["db_name"].as_str().expect("db"))
            .collect();
        assert_eq!(listed, [env.db("paused").as_str()], "{spelled}");
    }
    let both = env
        .run(&[
            "tenant",
            "list",
            "--status",
            "SUSPENDED",
            "--status",
            "active",
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(both["tenants"].as_array().expect("rows").len(), 2);
    // A fleet command selects by it too, and says so.
    let run = env
        .run(&[
            "tenant",
            "migrate",
            "--status",
            "SUSPENDED",
            "--output",
            "json",
        ])
        .ok();
    assert!(run.stdout.contains(&env.db("paused")), "{}", run.stdout);
    assert!(!run.stdout.contains(&env.db("live")), "{}", run.stdout);
    assert!(run.stdout.contains("SUSPENDED"), "{}", run.stdout);

    // A value that is neither tenantctl's nor the column's: refused with
    // the valid ones, nothing run.
    for args in [
        &["tenant", "list", "--status", "ARCHIVED"][..],
        &["tenant", "migrate", "--status", "ARCHIVED"][..],
    ] {
        let refused = env.run(args).code(2);
        assert!(
            refused.stderr.contains("--status ARCHIVED")
                && refused.stderr.contains("ACTIVE, SUSPENDED")
                && refused
                    .stderr
                    .contains("provisioning, active, failed, dropped"),
            "{}",
            refused.stderr
        );
        assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    }

    // tenantctl's own table: its statuses only.
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let refused = env
        .run(&["tenant", "list", "--status", "SUSPENDED"])
        .code(2);
    assert!(
        refused.stderr.contains("--status SUSPENDED"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_status_mapping_that_loses_states_or_cannot_be_held_is_refused() {
    let env = TestEnv::new();
    master_with(&env, PRISMA_COMPANY);
    env.run(&["tenant", "create", &env.slug("a")]).ok();
    let before = env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#);
    for (toml, says) in [
        (
            "[master.statuses]\nprovisioning = \"SUSPENDED\"\nfailed = \"SUSPENDED\"\ndropped = \"SUSPENDED\"\n",
            "maps provisioning, failed, dropped to the same value \"SUSPENDED\"",
        ),
        (
            "[master.statuses]\nactive = \"ACTIVE\"\ndropped = \"active\"\n",
            "maps active, dropped to the same value",
        ),
        (
            "[master.statuses]\nactive = \"LIVE\"\n",
            "active = \"LIVE\": column \"status\"",
        ),
    ] {
        std::fs::write(env.workdir.path().join("tenantctl.toml"), toml).expect("write toml");
        for args in [
            &["tenant", "list"][..],
            &["tenant", "create", &env.slug("b")][..],
        ] {
            let refused = env.run(args).code(2);
            assert!(refused.stderr.contains(says), "{toml}: {}", refused.stderr);
            assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
        }
    }
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        before
    );
    assert!(!env.database_exists(&env.db("b")));
}

/// Records a lifecycle state for a company in tenantctl's own table, as
/// a drop that kept the row (or a failed create) leaves it, wherever this
/// version keeps that table.
fn record_lifecycle(env: &TestEnv, id: &str, lifecycle: &str) {
    env.exec(
        &env.master,
        &format!(
            "DO $$ DECLARE t text := coalesce(to_regclass('tenantctl.lifecycle')::text, to_regclass('public._tenantctl_lifecycle')::text); \
             BEGIN EXECUTE format('INSERT INTO %s (company_id, lifecycle) VALUES (%L, %L) \
             ON CONFLICT (company_id) DO UPDATE SET lifecycle = EXCLUDED.lifecycle', t, '{id}', '{lifecycle}'); END $$"
        ),
    );
}

fn record_dropped(env: &TestEnv, id: &str) {
    record_lifecycle(env, id, "dropped");
}

#[test]
fn doctor_names_tenant_and_id_and_reports_every_row_the_app_sees_without_a_database() {
    for table in [PRISMA_COMPANY, BARE_COMPANY] {
        let env = TestEnv::new();
        master_with(&env, table);
        for which in ["gone", "broken", "paused", "fine"] {
            env.run(&["tenant", "create", &env.slug(which)]).ok();
        }
        let id_of = |which: &str| {
            env.query(
                &env.master,
                &format!(
                    r#"SELECT id FROM "Company" WHERE "dbName" = '{}'"#,
                    env.db(which)
                ),
            )[0]
            .clone()
        };
        // tenantctl's records say dropped, the application's row says
        // nothing of the kind, and the database is gone.
        record_dropped(&env, &id_of("gone"));
        env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
        // Recorded failed: stuck, and its database missing too.
        record_lifecycle(&env, &id_of("broken"), "failed");
        env.exec(
            "postgres",
            &format!("DROP DATABASE \"{}\"", env.db("broken")),
        );
        if table == PRISMA_COMPANY {
            // One the application itself no longer shows: not a finding.
            env.exec(
                &env.master,
                &format!(
                    r#"UPDATE "Company" SET status = 'SUSPENDED' WHERE "dbName" = '{}'"#,
                    env.db("paused")
                ),
            );
            record_dropped(&env, &id_of("paused"));
            env.exec(
                "postgres",
                &format!("DROP DATABASE \"{}\"", env.db("paused")),
            );
        }

        let run = env.run(&["doctor", "--output", "json"]).code(1);
        let json = run.json();
        // (Orphans other tests leave on the shared server aside.)
        let findings: Vec<&serde_json::Value> = json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["kind"] != "orphan_database")
            .collect();
        assert_eq!(findings.len(), 3, "{json}");
        let broken: Vec<(&str, &str)> = findings
            .iter()
            .filter(|f| f["id"] == id_of("broken").as_str())
            .map(|f| {
                (
                    f["kind"].as_str().expect("kind"),
                    f["tenant"].as_str().expect("tenant"),
                )
            })
            .collect();
        let broken_handle = if table == BARE_COMPANY {
            env.db("broken")
        } else {
            env.slug("broken")
        };
        assert_eq!(
            broken,
            [
                ("stuck", broken_handle.as_str()),
                ("missing_database", broken_handle.as_str())
            ],
            "{json}"
        );
        // The command the stuck finding offers is one create accepts.
        let stuck = findings
            .iter()
            .find(|f| f["kind"] == "stuck")
            .expect("stuck");
        let offered = stuck["detail"].as_str().expect("detail");
        let command = offered
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("{offered}"));
        let args: Vec<&str> = command.split(' ').skip(1).collect();
        env.run(&args).ok();
        assert!(env.database_exists(&env.db("broken")));
        let f = findings
            .iter()
            .find(|f| f["id"] == id_of("gone").as_str())
            .expect("the dropped one");
        assert_eq!(f["kind"], "missing_database", "{json}");
        assert_eq!(f["id"], id_of("gone").as_str(), "{json}");
        let handle = if table == BARE_COMPANY {
            env.db("gone")
        } else {
            env.slug("gone")
        };
        assert_eq!(f["tenant"], handle.as_str(), "{json}");
        assert!(
            f["detail"]
                .as_str()
                .expect("detail")
                .contains("the application still sees"),
            "{json}"
        );
        let table_out = env.run(&["doctor"]).code(1);
        let row = table_out
            .stdout
            .lines()
            .find(|l| l.contains("missing_database") && l.contains(&env.db("gone")))
            .unwrap_or_else(|| panic!("{}", table_out.stdout));
        assert!(
            row.contains(&handle) && row.contains(&id_of("gone")),
            "{}",
            table_out.stdout
        );
    }
}

#[test]
fn doctor_findings_carry_tenant_and_id_on_tenantctls_own_master() {
    let env = TestEnv::new();
    env.with_tenants(&["lost"]);
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("lost")));
    let json = env.run(&["doctor", "--output", "json"]).code(1).json();
    let f = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] != "orphan_database")
        .expect("a finding");
    let id = env.query(
        &env.master,
        &format!(
            r#"SELECT id::text FROM "Company" WHERE slug = '{}'"#,
            env.slug("lost")
        ),
    );
    assert_eq!(f["kind"], "missing_database", "{json}");
    assert_eq!(f["tenant"], env.slug("lost").as_str(), "{json}");
    assert_eq!(f["id"], id[0].as_str(), "{json}");
}
