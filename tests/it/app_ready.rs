//! The application never sees a company that is not ready. On a master
//! whose table cannot say "provisioning" or "failed" (the Prisma kit's
//! `ACTIVE`/`SUSPENDED` enum; a table with no status at all), a new
//! company waits in tenantctl's own claims until its database is ready,
//! and `drop --keep-row` never leaves a live-looking row behind.

use crate::support::TestEnv;
use crate::support::prisma::{client, example, prisma};

const FAILING: &str = "20990101000000_fails.sql";

/// The kit's Prisma master, set up by the application's own migrations,
/// then adopted.
fn kit_master(env: &TestEnv) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    prisma(env, &example("master"), &env.master, &["migrate", "deploy"]).ok();
    env.run(&["master", "migrate"]).ok();
}

/// Another shape: a slug, no status column at all.
fn statusless_master(env: &TestEnv) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        &env.master,
        r#"CREATE TABLE "Company" (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
             slug text NOT NULL UNIQUE, name text NOT NULL, "dbName" text NOT NULL UNIQUE)"#,
    );
    env.run(&["master", "migrate"]).ok();
}

fn company_rows(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        r#"SELECT "dbName" FROM "Company" ORDER BY "dbName""#,
    )
}

#[test]
fn a_failed_create_is_invisible_to_the_prisma_client_until_a_rerun_finishes_it() {
    let env = TestEnv::new();
    kit_master(&env);
    let good = env.slug("good");
    env.run(&["tenant", "create", &good]).ok();
    let bad = env.slug("bad");
    let broken = env.tenant_schema_plus("broken", FAILING, "SELECT 1/0;");
    let failed = env
        .run(&[
            "tenant",
            "create",
            &bad,
            "--tenant-migrations",
            &broken,
            "--no-template",
        ])
        .code(1);
    assert!(
        failed
            .stderr
            .contains(&format!("tenantctl tenant create {bad}")),
        "{}",
        failed.stderr
    );
    // The database was made, and is not the application's business yet.
    assert!(env.database_exists(&env.db("bad")));
    assert_eq!(company_rows(&env), [env.db("good")]);
    let listed = client(&env, &[]).ok();
    assert!(listed.stdout.contains("1 companies"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&env.db("bad")), "{}", listed.stdout);

    // tenantctl still knows it, as failed, with no id yet.
    let list = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    let row = list
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["slug"] == bad.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(row["status"], "failed");
    assert!(row["id"].is_null(), "{row}");
    // doctor reports the unfinished create, not its database as an orphan.
    let doctor = env.run(&["doctor", "--output", "json"]).code(1).json();
    let ours: Vec<&serde_json::Value> = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["db_name"] == env.db("bad").as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{doctor}");
    assert_eq!(ours[0]["kind"], "create_unfinished", "{doctor}");
    assert!(
        ours[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("division by zero")),
        "{doctor}"
    );
    // Commands that need the tenant say what to do.
    let refused = env.run(&["tenant", "status", &bad]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("not created yet") && refused.stderr.contains("tenant create"),
        "{}",
        refused.stderr
    );

    // Fixed, the rerun finishes it: the row appears, active, to the app.
    std::fs::write(std::path::Path::new(&broken).join(FAILING), "SELECT 1;").expect("fix");
    env.run(&[
        "tenant",
        "create",
        &bad,
        "--tenant-migrations",
        &broken,
        "--no-template",
    ])
    .ok();
    assert_eq!(company_rows(&env), [env.db("bad"), env.db("good")]);
    let listed = client(&env, &[]).ok();
    assert!(listed.stdout.contains("2 companies"), "{}", listed.stdout);
    assert_eq!(
        env.query(
            &env.master,
            r#"SELECT DISTINCT status::text FROM "Company""#
        ),
        ["ACTIVE"]
    );
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM tenantctl.claims"),
        ["0"]
    );
    env.run(&[
        "tenant",
        "status",
        &env.db("bad"),
        "--tenant-migrations",
        &broken,
    ])
    .ok();
}

#[test]
fn a_create_refused_by_the_table_is_refused_before_any_database_is_made() {
    // A column the app requires and tenantctl cannot fill: the check runs
    // before the claim, so nothing is claimed or created.
    let env = TestEnv::new();
    statusless_master(&env);
    env.exec(
        &env.master,
        r#"ALTER TABLE "Company" ADD COLUMN plan text NOT NULL"#,
    );
    let slug = env.slug("acme");
    let run = env.run(&["tenant", "create", &slug]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("plan"), "{}", run.stderr);
    assert!(!env.database_exists(&env.db("acme")));
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM tenantctl.claims"),
        ["0"]
    );
    env.run(&["tenant", "create", &slug, "--column", "plan=pro"])
        .ok();
    assert_eq!(
        env.query(&env.master, r#"SELECT plan FROM "Company""#),
        ["pro"]
    );
}

#[test]
fn drop_gives_up_a_failed_create_with_its_database() {
    for statusless in [false, true] {
        let env = TestEnv::new();
        if statusless {
            statusless_master(&env);
        } else {
            kit_master(&env);
        }
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
        assert!(env.database_exists(&env.db("bad")));
        env.run(&["tenant", "drop", &bad, "--yes"]).ok();
        assert!(
            !env.database_exists(&env.db("bad")),
            "statusless {statusless}"
        );
        assert!(company_rows(&env).is_empty());
        let list = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
        assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
        // The slug is free again.
        env.run(&["tenant", "create", &bad]).ok();
        assert_eq!(company_rows(&env), [env.db("bad")]);
    }
}

#[test]
fn drop_keep_row_refuses_a_table_that_cannot_say_dropped_and_uses_a_mapped_status() {
    for statusless in [false, true] {
        let env = TestEnv::new();
        if statusless {
            statusless_master(&env);
        } else {
            kit_master(&env);
        }
        let slug = env.slug("acme");
        env.run(&["tenant", "create", &slug]).ok();
        // The kit's table has no slug column: the database name finds it.
        let db = env.db("acme");
        let refused = env
            .run(&["tenant", "drop", &db, "--keep-row", "--yes"])
            .code(2);
        assert!(
            refused.stderr.contains("[master.statuses]")
                && refused.stderr.contains("nothing was changed"),
            "{}",
            refused.stderr
        );
        assert!(env.database_exists(&env.db("acme")));
        assert_eq!(company_rows(&env), [env.db("acme")]);
        if statusless {
            // Nothing to map: without --keep-row it goes.
            env.run(&["tenant", "drop", &db, "--yes"]).ok();
            assert!(company_rows(&env).is_empty());
            continue;
        }
        std::fs::write(
            env.workdir.path().join("tenantctl.toml"),
            "[master.statuses]\nactive = \"ACTIVE\"\ndropped = \"SUSPENDED\"\n",
        )
        .expect("write tenantctl.toml");
        env.run(&["tenant", "drop", &db, "--keep-row", "--yes"])
            .ok();
        assert!(!env.database_exists(&env.db("acme")));
        assert_eq!(
            env.query(&env.master, r#"SELECT status::text FROM "Company""#),
            ["SUSPENDED"]
        );
        // The app's client sees it as the app's own inactive status.
        let listed = client(&env, &[]).ok();
        assert!(listed.stdout.contains("SUSPENDED"), "{}", listed.stdout);
    }
}
