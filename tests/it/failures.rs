//! Migrations that go wrong, and tenants that went wrong underneath us.

use crate::support::{TestEnv, find};

#[test]
fn failing_migration_rolls_back_that_tenant_only() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["fine", "clash"]);
    let dir = dir.to_str().expect("utf-8 path");
    // Someone created a table by hand in one tenant; the next migration
    // creates a marker table and then collides with it.
    env.exec(&env.db("clash"), "CREATE TABLE audit (id int)");
    std::fs::write(
        format!("{dir}/20250101000003_audit.sql"),
        "CREATE TABLE marker (id int);\nCREATE TABLE audit (id bigint PRIMARY KEY);",
    )
    .expect("write migration");

    let run = env.migrate_all(dir);
    assert_eq!(run.code, 1);
    let report = run.json();
    assert_eq!(report["summary"]["ok"], 1);
    assert_eq!(report["summary"]["failed"], 1);
    let clash = find(&report, &env.slug("clash"));
    let error = clash["error"].as_str().expect("error");
    assert!(
        error.contains("20250101000003_audit") && error.contains("already exists"),
        "{error}"
    );
    assert_eq!(
        find(&report, &env.slug("fine"))["applied"],
        serde_json::json!([20_250_101_000_003_i64])
    );

    // The failed tenant kept nothing of the failed migration.
    let marker = "SELECT coalesce(to_regclass('marker')::text, '')";
    assert_eq!(env.query(&env.db("clash"), marker), [""]);
    assert_eq!(env.applied(&env.db("clash")).len(), 2);
    assert_eq!(env.query(&env.db("fine"), marker), ["marker"]);
}

#[test]
fn broken_migration_during_create_leaves_failed_and_rerun_finishes() {
    let env = TestEnv::new();
    let broken = env.fixture("broken");
    let good = env.fixture("two-step");
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("phoenix");
    let run = env.run(&[
        "tenant",
        "create",
        &slug,
        "--tenant-migrations",
        broken.to_str().expect("utf-8"),
        // In place: the database is made and half migrated (a template's
        // failed build leaves nothing: see template.rs).
        "--no-template",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("20250101000002_broken"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("tenantctl tenant create {slug}")),
        "{}",
        run.stderr
    );
    let status = format!(r#"SELECT status FROM "Company" WHERE slug = '{slug}'"#);
    assert_eq!(env.query(&env.master, &status), ["failed"]);
    assert_eq!(
        env.query(
            &env.db("phoenix"),
            "SELECT coalesce(to_regclass('half_done')::text, '')"
        ),
        [""],
        "the broken migration was rolled back"
    );

    // The broken file is fixed (replaced by the good folder's second migration).
    let run = env
        .run(&[
            "tenant",
            "create",
            &slug,
            "--tenant-migrations",
            good.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .ok();
    let json = run.json();
    assert_eq!(json["resumed"], true);
    assert_eq!(json["applied"], serde_json::json!([20_250_101_000_002_i64]));
    assert_eq!(env.query(&env.master, &status), ["active"]);
}

#[test]
fn edited_migration_is_a_checksum_mismatch_naming_tenant_and_version() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let dir_str = dir.to_str().expect("utf-8 path");
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("drift");
    env.run(&["tenant", "create", &slug, "--tenant-migrations", dir_str])
        .ok();
    std::fs::write(
        dir.join("20250101000001_items.sql"),
        "CREATE TABLE items (id bigint PRIMARY KEY, label text);",
    )
    .expect("edit migration");
    // And a new one: the drift must stop the run although there is work
    // to do, and nothing of the new migration may be applied.
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write migration");
    let run = env.run(&["tenant", "migrate", "--all", "--tenant-migrations", dir_str]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(&slug), "{}", run.stderr);
    assert!(
        run.stderr.contains("20250101000001") && run.stderr.contains("checksum mismatch"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.applied(&env.db("drift")),
        [20_250_101_000_001, 20_250_101_000_002]
    );
    assert_eq!(
        env.query(
            &env.db("drift"),
            "SELECT coalesce(to_regclass('more')::text, '')"
        ),
        [""]
    );
}

#[test]
fn tenant_database_dropped_by_hand_fails_only_that_tenant() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["kept", "gone"]);
    let dir = dir.to_str().expect("utf-8 path");
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
    std::fs::write(
        format!("{dir}/20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write");

    let run = env.migrate_all(dir);
    assert_eq!(run.code, 1);
    let report = run.json();
    let gone = find(&report, &env.slug("gone"));
    assert_eq!(gone["status"], "failed");
    assert!(
        gone["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing")),
        "{gone}"
    );
    assert_eq!(find(&report, &env.slug("kept"))["status"], "ok");
    assert_eq!(env.applied(&env.db("kept")).len(), 3);
}

#[test]
fn orm_created_master_with_enum_status_is_adopted() {
    let env = TestEnv::new();
    env.orm_master(&["provisioning", "active", "failed", "dropped"]);
    env.exec(
        &env.master,
        r#"INSERT INTO "Company" VALUES ('c1', 'legacy', 'Legacy Ltd', 'nowhere', 'active', now(), now())"#,
    );
    let list = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    assert_eq!(list[0]["slug"], "legacy");
    assert_eq!(list[0]["status"], "active");
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("fresh");
    env.run(&["tenant", "create", &slug]).ok();
    assert_eq!(env.status_of(&slug), ["active"]);
}

#[test]
fn percent_encoded_credentials_and_query_parameters_are_kept() {
    let env = TestEnv::new();
    let role = format!("role_{}", env.token);
    let password = "p@ss/w:rd%?&";
    env.exec(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD '{password}'"),
    );
    let mut url = url::Url::parse(&env.base_url).expect("base url");
    url.set_username(&role).expect("user");
    url.set_password(Some(password)).expect("password");
    url.set_query(Some("sslmode=prefer&application_name=ignored"));
    let base = url.to_string();
    let master = {
        let mut m = url.clone();
        m.set_path(&format!("/{}", env.master));
        m.to_string()
    };
    let run = env.run_with(&["master", "migrate"], |c| {
        c.env("POSTGRES_BASE_URL", &base)
            .env("MASTER_DATABASE_URL", &master);
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    let slug = env.slug("enc");
    let run = env.run_with(&["tenant", "create", &slug], |c| {
        c.env("POSTGRES_BASE_URL", &base)
            .env("MASTER_DATABASE_URL", &master);
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.all().contains(password));
    assert_eq!(
        env.query(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = '{}'",
                env.db("enc")
            )
        ),
        [role]
    );
}

#[test]
fn sslmode_in_the_base_url_reaches_every_connection() {
    let env = TestEnv::new();
    // A server of this test's own, which has no TLS at all.
    let server = crate::support::server::PrivateServer::start(&env.token);
    let plain = format!("{}/?sslmode=disable", server.base_url());
    let require = format!("{}/?sslmode=require", server.base_url());
    let master = format!("{}/master", server.base_url());
    let run = |base: &str, master: Option<&str>, args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", base);
            match master {
                Some(m) => c.env("MASTER_DATABASE_URL", m),
                None => c.env_remove("MASTER_DATABASE_URL"),
            };
        })
    };
    run(&plain, None, &["master", "migrate"]).ok();
    run(&plain, None, &["tenant", "create", "acme"]).ok();

    // The master derived from the base URL keeps its sslmode.
    let refused = run(&require, None, &["tenant", "list"]).code(1);
    assert!(refused.stderr.contains("TLS"), "{}", refused.stderr);
    // So does every tenant connection, with a master URL of its own.
    let report = run(
        &require,
        Some(&master),
        &["tenant", "status", "--all", "--output", "json"],
    )
    .code(1)
    .json();
    let acme = find(&report, "acme");
    assert_eq!(acme["status"], "failed", "{acme}");
    assert!(
        acme["error"].as_str().is_some_and(|e| e.contains("TLS")),
        "{acme}"
    );
    // And creating a database (the maintenance connection).
    let created = run(&require, Some(&master), &["tenant", "create", "globex"]).code(1);
    assert!(created.stderr.contains("TLS"), "{}", created.stderr);
}
