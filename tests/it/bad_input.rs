//! Bad input: one clear error line, a non-zero exit, nothing changed, and
//! never a password.

use crate::support::{TestEnv, password};

#[test]
fn missing_and_malformed_base_url() {
    let env = TestEnv::new();
    env.expect(&["tenant", "list"])
        .env_remove("POSTGRES_BASE_URL")
        .stderr(
            "error: POSTGRES_BASE_URL is not set: set it (or pass --base-url) to the server root, \
             e.g. postgresql://user:password@localhost:5432\n",
        )
        .status(2)
        .run();

    for (bad, error) in [
        (
            "localhost:5432",
            r#"scheme "localhost", expected postgres or postgresql"#,
        ),
        (
            "mysql://u:s3cr3t-pw@h:3306",
            r#"scheme "mysql", expected postgres or postgresql"#,
        ),
        ("postgres://u:s3cr3t-pw@:5432", "empty host"),
        ("not a url", "relative URL without a base"),
    ] {
        let error = format!(
            "error: POSTGRES_BASE_URL is not a valid PostgreSQL URL ({error}); \
             expected postgresql://user:password@host:5432\n"
        );
        let run = env
            .expect(&["tenant", "list"])
            .env("POSTGRES_BASE_URL", bad)
            .stderr(error)
            .status(2)
            .run();
        assert!(!run.stderr.contains("s3cr3t-pw"), "{}", run.stderr);
    }
}

#[test]
fn base_url_naming_a_database_is_rejected() {
    let env = TestEnv::new();
    let run = env
        .expect(&["tenant", "list"])
        .env(
            "POSTGRES_BASE_URL",
            "postgresql://app:s3cr3t-pw@localhost:5432/appdb",
        )
        .stderr(
            "error: POSTGRES_BASE_URL names a database (\"appdb\"); give the server root only, \
             e.g. postgresql://app:***@localhost:5432/\n",
        )
        .status(2)
        .run();
    assert!(!run.stderr.contains("s3cr3t-pw"), "{}", run.stderr);
}

#[test]
fn unreachable_server_names_host_and_port() {
    let env = TestEnv::new();
    let run = env
        .expect(&["tenant", "list"])
        .env(
            "POSTGRES_BASE_URL",
            "postgresql://app:s3cr3t-pw@127.0.0.1:1",
        )
        .env_remove("MASTER_DATABASE_URL")
        .stderr(
            "error: connect to database master on 127.0.0.1:1: error communicating with database: \
             Connection refused (os error 111)\n",
        )
        .status(1)
        .run();
    assert!(!run.stderr.contains("s3cr3t-pw"), "{}", run.stderr);
}

#[test]
fn wrong_password_never_appears() {
    let env = TestEnv::new();
    let mut url = url::Url::parse(&env.base_url).expect("base url");
    url.set_password(Some("Wr0ng-Pa55")).expect("set password");
    let run = env
        .expect(&["tenant", "list"])
        .env("POSTGRES_BASE_URL", url.as_str())
        .env_remove("MASTER_DATABASE_URL")
        .stderr(
            "error: connect to database master on {host}:{port}: password authentication failed \
             for user \"{user}\" (SQLSTATE 28P01)\n",
        )
        .status(1)
        .run();
    assert!(!run.all().contains("Wr0ng-Pa55"), "{}", run.all());
}

#[test]
fn invalid_slugs_change_nothing() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let long = "a".repeat(41);
    for (bad, error) in [
        ("Acme", "\"Acme\""),
        ("acme corp", "\"acme corp\""),
        ("acme'--", "\"acme'--\""),
        ("a\"b", r#""a\"b""#),
        (long.as_str(), &format!("\"{long}\"")),
        ("-acme", "\"-acme\""),
        ("", "\"\""),
    ] {
        env.expect(&["tenant", "create", "--", bad])
            .stderr(format!(
                "error: invalid slug {error}: use 1 to 40 lowercase letters, digits and hyphens, \
                 starting with a letter or digit\n"
            ))
            .status(2)
            .run();
    }
    env.expect(&[
        "tenant",
        "create",
        &env.slug("ok"),
        "--db-name",
        "Bad\"Name",
    ])
    .stderr(
        r#"error: --db-name: database name "Bad\"Name" is not a safe identifier (only ASCII letters, digits, _ and -)
"#,
    )
    .status(2)
    .run();
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        ["0"]
    );
    let created = env.query(
        "postgres",
        &format!(
            "SELECT datname::text FROM pg_database WHERE strpos(datname, '{}') > 0 AND datname <> '{}'",
            env.token, env.master
        ),
    );
    assert!(created.is_empty(), "no database created: {created:?}");
}

#[test]
fn unsafe_db_name_in_master_fails_only_that_tenant() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["good", "evil"]);
    let dir = dir.to_str().expect("utf-8 path");
    let evil = env.slug("evil");
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = 'x"; DROP DATABASE {}; --' WHERE slug = '{evil}'"#,
            env.master
        ),
    );
    // A new migration, so the good tenant has something to do.
    std::fs::write(
        format!("{dir}/20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write");

    let run = env.migrate_all(dir);
    assert_eq!(run.code, 1);
    let report = run.json();
    assert_eq!(report["summary"]["ok"], 1);
    assert_eq!(
        env.applied(&env.db("good")).last(),
        Some(&20_250_101_000_003)
    );
    assert_eq!(report["summary"]["failed"], 1);
    let evil_report = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["slug"] == evil)
        .expect("evil reported");
    assert_eq!(evil_report["status"], "failed");
    let evil_id = evil_report["id"].as_str().expect("id").to_owned();
    assert!(
        evil_report["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a safe identifier"))
    );
    assert!(env.database_exists(&env.master), "master survived");
    assert!(
        run.stderr.contains(&evil),
        "failure line names the tenant: {}",
        run.stderr
    );

    // Single-tenant commands refuse it the same way.
    env.expect(&["tenant", "settings", "list", &evil])
        .with(evil_id, "{evil_id}")
        .stderr(
            r#"error: tenant evil-{T} (x"; DROP DATABASE master_{T}; --): company {evil_id}: refusing its "dbName" from the master's Company: database name "x\"; DROP DATABASE master_{T}; --" is not a safe identifier (only ASCII letters, digits, _ and -); fix that row
"#,
        )
        .status(1)
        .run();
}

#[test]
fn duplicate_slug_and_unknown_tenant() {
    let env = TestEnv::new();
    env.with_tenants(&["dup"]);
    env.expect(&["tenant", "create", &env.slug("dup")])
        .stderr("error: tenant dup-{T} already exists (status active, id {uuid})\n")
        .status(1)
        .run();
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        ["1"]
    );

    for args in [
        &["tenant", "migrate", "no-such-tenant"][..],
        &["tenant", "settings", "list", "no-such-tenant"],
        &["tenant", "status", "no-such-tenant"],
    ] {
        env.expect(args)
            .stderr(
                "error: unknown tenant \"no-such-tenant\": no company has that slug, id, database name \
                 or (without a slug) name (see `tenantctl tenant list`)\n",
            )
            .status(1)
            .run();
    }
}

#[test]
fn master_not_migrated_says_what_to_do() {
    let env = TestEnv::new();
    // No master database at all.
    env.expect(&["tenant", "list"])
        .stderr(
            "error: the master database master_{T} does not exist yet; run `tenantctl master migrate` \
             first: connect to database master_{T} on {host}:{port}: database \"master_{T}\" does not \
             exist (SQLSTATE 3D000)\n",
        )
        .status(1)
        .run();
    // A master database someone created, without the "Company" table.
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    for args in [
        &["tenant", "list"][..],
        &["tenant", "migrate", "--all"],
        &["tenant", "settings", "list", "acme"],
    ] {
        env.expect(args)
            .stderr(
                "error: the master database has no \"Company\" table; run `tenantctl master migrate` \
                 first, or name the companies table in tenantctl.toml ([master] table = ...)\n",
            )
            .status(1)
            .run();
    }
}

#[test]
fn no_password_in_any_output_of_a_full_session() {
    let password = password();
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("quiet");
    let mut everything = String::new();
    for args in [
        &["tenant", "create", slug.as_str()][..],
        &["tenant", "list"],
        &["tenant", "migrate", "--all", "--output", "json"],
        &["tenant", "status", "--all"],
        &["tenant", "settings", "set", slug.as_str(), "k", "v"],
        &["tenant", "migrate", "nobody"],
    ] {
        everything.push_str(&env.run(args).all());
    }
    assert!(
        !everything.contains(&password),
        "password leaked:\n{everything}"
    );
}

#[test]
fn password_in_a_query_parameter_is_used_and_never_shown() {
    let password = password();
    let env = TestEnv::new();
    let mut url = url::Url::parse(&env.base_url).expect("base url");
    url.set_password(None).expect("strip password");
    url.query_pairs_mut().append_pair("password", &password);
    let base = url.to_string();
    let configure = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env_remove("MASTER_DATABASE_URL")
            .env_remove("PGPASSWORD");
    };
    let mut master = url.clone();
    master.set_path(&format!("/{}", env.master));
    let master_migrate = env.run_with(
        &["master", "migrate", "--master-url", master.as_str()],
        configure,
    );
    assert_eq!(master_migrate.code, 0, "{}", master_migrate.stderr);
    let slug = env.slug("qp");
    let run = env.run_with(&["tenant", "create", &slug], |c| {
        configure(c);
        c.env("MASTER_DATABASE_URL", master.as_str());
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown = env
        .expect(&["tenant", "url", &slug])
        .configure(|c| {
            configure(c);
            c.env("MASTER_DATABASE_URL", master.as_str());
        })
        .stdout("postgresql://{user}:***@{host}:{port}/tenant_qp_{T}\n")
        .run();
    assert!(!shown.all().contains(&password), "{}", shown.all());
    assert!(!shown.stdout.contains("password="), "{}", shown.stdout);

    // A database named in the query counts as naming a database.
    let mut with_db = url.clone();
    with_db.query_pairs_mut().append_pair("dbname", "postgres");
    let run = env
        .expect(&["tenant", "list"])
        .env("POSTGRES_BASE_URL", with_db.as_str())
        .stderr(
            "error: POSTGRES_BASE_URL names a database (\"postgres\"); give the server root only, \
             e.g. postgresql://{user}:***@{host}:{port}/\n",
        )
        .status(2)
        .run();
    assert!(!run.stderr.contains(&password), "{}", run.stderr);
}
