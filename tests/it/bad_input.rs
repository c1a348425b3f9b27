//! Bad input: one clear error line, a non-zero exit, nothing changed, and
//! never a password.

use crate::support::{TestEnv, password};

/// Asserts the error is one line on stderr and nothing on stdout.
#[track_caller]
fn one_error_line(run: &crate::support::Run) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, got:\n{}",
        run.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
}

#[test]
fn missing_and_malformed_base_url() {
    let env = TestEnv::new();
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env_remove("POSTGRES_BASE_URL");
    });
    assert_eq!(run.code, 2);
    one_error_line(&run);
    assert!(
        run.stderr.contains("POSTGRES_BASE_URL is not set"),
        "{}",
        run.stderr
    );

    for bad in [
        "localhost:5432",
        "mysql://u:s3cr3t-pw@h:3306",
        "postgres://u:s3cr3t-pw@:5432",
        "not a url",
    ] {
        let run = env.run_with(&["tenant", "list"], |c| {
            c.env("POSTGRES_BASE_URL", bad);
        });
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        one_error_line(&run);
        assert!(!run.stderr.contains("s3cr3t-pw"), "{}", run.stderr);
    }
}

#[test]
fn base_url_naming_a_database_is_rejected() {
    let env = TestEnv::new();
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env(
            "POSTGRES_BASE_URL",
            "postgresql://app:s3cr3t-pw@localhost:5432/appdb",
        );
    });
    assert_eq!(run.code, 2);
    one_error_line(&run);
    assert!(
        run.stderr.contains("names a database") && run.stderr.contains("appdb"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("s3cr3t-pw"), "{}", run.stderr);
}

#[test]
fn unreachable_server_names_host_and_port() {
    let env = TestEnv::new();
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env(
            "POSTGRES_BASE_URL",
            "postgresql://app:s3cr3t-pw@127.0.0.1:1",
        )
        .env_remove("MASTER_DATABASE_URL");
    });
    assert_eq!(run.code, 1);
    one_error_line(&run);
    assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cr3t-pw"), "{}", run.stderr);
}

#[test]
fn wrong_password_never_appears() {
    let env = TestEnv::new();
    let mut url = url::Url::parse(&env.base_url).expect("base url");
    url.set_password(Some("Wr0ng-Pa55")).expect("set password");
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env("POSTGRES_BASE_URL", url.as_str())
            .env_remove("MASTER_DATABASE_URL");
    });
    assert_eq!(run.code, 1);
    one_error_line(&run);
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("Wr0ng-Pa55"), "{}", run.all());
}

#[test]
fn invalid_slugs_change_nothing() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    for bad in [
        "Acme",
        "acme corp",
        "acme'--",
        "a\"b",
        &"a".repeat(41),
        "-acme",
        "",
    ] {
        let run = env.run(&["tenant", "create", "--", bad]);
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
        one_error_line(&run);
        assert!(run.stderr.contains("invalid slug"), "{}", run.stderr);
    }
    let run = env.run(&[
        "tenant",
        "create",
        &env.slug("ok"),
        "--db-name",
        "Bad\"Name",
    ]);
    assert_eq!(run.code, 2);
    one_error_line(&run);
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
    let run = env.run(&["tenant", "settings", "list", &evil]);
    assert_eq!(run.code, 1);
    one_error_line(&run);
}

#[test]
fn duplicate_slug_and_unknown_tenant() {
    let env = TestEnv::new();
    env.with_tenants(&["dup"]);
    let run = env.run(&["tenant", "create", &env.slug("dup")]);
    assert_eq!(run.code, 1);
    one_error_line(&run);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        ["1"]
    );

    for args in [
        &["tenant", "migrate", "no-such-tenant"][..],
        &["tenant", "settings", "list", "no-such-tenant"],
        &["tenant", "status", "no-such-tenant"],
    ] {
        let run = env.run(args);
        assert_eq!(run.code, 1, "{args:?}");
        one_error_line(&run);
        assert!(
            run.stderr.contains("unknown tenant \"no-such-tenant\""),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn master_not_migrated_says_what_to_do() {
    let env = TestEnv::new();
    // No master database at all.
    let run = env.run(&["tenant", "list"]);
    assert_eq!(run.code, 1);
    one_error_line(&run);
    assert!(
        run.stderr.contains("does not exist yet")
            && run.stderr.contains("tenantctl master migrate"),
        "{}",
        run.stderr
    );
    // A master database someone created, without the "Company" table.
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    for args in [
        &["tenant", "list"][..],
        &["tenant", "migrate", "--all"],
        &["tenant", "settings", "list", "acme"],
    ] {
        let run = env.run(args);
        assert_eq!(run.code, 1, "{args:?}");
        one_error_line(&run);
        assert!(
            run.stderr.contains("no \"Company\" table")
                && run.stderr.contains("tenantctl master migrate"),
            "{args:?}: {}",
            run.stderr
        );
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
    let shown = env.run_with(&["tenant", "url", &slug], |c| {
        configure(c);
        c.env("MASTER_DATABASE_URL", master.as_str());
    });
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("***") && !shown.all().contains(&password),
        "{}",
        shown.all()
    );
    assert!(!shown.stdout.contains("password="), "{}", shown.stdout);

    // A database named in the query counts as naming a database.
    let run = env.run_with(&["tenant", "list"], |c| {
        let mut with_db = url.clone();
        with_db.query_pairs_mut().append_pair("dbname", "postgres");
        c.env("POSTGRES_BASE_URL", with_db.as_str());
    });
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("names a database") && !run.stderr.contains(&password),
        "{}",
        run.stderr
    );
}
