//! The application's own master (issue 9): a Prisma-made `"Company"` and a
//! Laravel-style `tenants` table adopted without being altered, rows the
//! application inserted (no slug, upper-case statuses), database names of
//! either case and with hyphens.

use crate::support::TestEnv;

/// The SQL Prisma's `migrate deploy` generates for the seed's model.
const PRISMA_MASTER: &str = r#"
CREATE TYPE "CompanyStatus" AS ENUM ('ACTIVE', 'SUSPENDED');
CREATE TABLE "Company" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "dbName" TEXT NOT NULL,
    "status" "CompanyStatus" NOT NULL DEFAULT 'ACTIVE',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "Company_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "Company_dbName_key" ON "Company"("dbName");
CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY, "checksum" VARCHAR(64) NOT NULL,
    "migration_name" VARCHAR(255) NOT NULL, "applied_steps_count" INTEGER NOT NULL DEFAULT 0);
INSERT INTO "_prisma_migrations" VALUES ('m1', 'abc', '20240101_init', 1);
"#;

/// Everything about a table's definition that adopting it must not change.
fn definition(env: &TestEnv, table: &str) -> Vec<String> {
    env.query(
        &env.master,
        &format!(
            "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
               SELECT attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull
                      || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS x
               FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped
               UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '{table}'::regclass
               UNION ALL SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = '{table}'::regclass
               UNION ALL SELECT tgname FROM pg_trigger WHERE tgrelid = '{table}'::regclass
             ) t"
        ),
    )
}

/// A Prisma master with three companies the application inserted: two
/// ACTIVE (with empty databases of their own), one SUSPENDED.
fn prisma_master(env: &TestEnv) -> [String; 3] {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(&env.master, PRISMA_MASTER);
    let dbs = [
        format!("db_greencity_{}", env.token),
        format!("db_riverside_{}", env.token),
        format!("db_paused_{}", env.token),
    ];
    for (n, (db, status)) in dbs
        .iter()
        .zip(["ACTIVE", "ACTIVE", "SUSPENDED"])
        .enumerate()
    {
        env.exec("postgres", &format!("CREATE DATABASE \"{db}\""));
        env.exec(
            &env.master,
            &format!(
                r#"INSERT INTO "Company" ("id", "name", "dbName", "status", "updatedAt")
                   VALUES ('clx{n}app', 'Company {n}', '{db}', '{status}', now())"#
            ),
        );
    }
    dbs
}

/// What `master migrate` finds in the Prisma master (every run says so).
const ADOPTED: &str = r#"adopted the existing companies table in master_{T}, changing nothing in it; found:
  companies table: Company
  id: column "id" (text)
  database name: column "dbName" (text)
  slug: none
  name: column "name" (text)
  status: column "status" ("CompanyStatus")
  lifecycle (provisioning, failed, dropped): kept in tenantctl's own tenantctl.lifecycle table
  new companies: kept in tenantctl's own tenantctl.claims until their database is ready, then inserted (the application never sees one that is not ready)
  server: kept in tenantctl's own tenantctl.placement table (none recorded: default)
"#;

/// A Prisma master as [`prisma_master`] makes it, adopted by `master
/// migrate`; returns the companies' databases and the definitions of
/// "Company" and "_prisma_migrations" from before.
fn adopted_prisma_master(env: &TestEnv) -> ([String; 3], Vec<String>, Vec<String>) {
    let dbs = prisma_master(env);
    let company = definition(env, "\"Company\"");
    let prisma = definition(env, "\"_prisma_migrations\"");
    env.expect(&["master", "migrate"])
        .stdout(format!(
            "{ADOPTED}\
             created tenantctl's own tenantctl.lifecycle table (each company's lifecycle)\n\
             created tenantctl's own tenantctl.placement table (each tenant's server)\n"
        ))
        .run();
    (dbs, company, prisma)
}

#[test]
fn a_prisma_master_is_adopted_unchanged() {
    let env = TestEnv::new();
    let (_, company, prisma) = adopted_prisma_master(&env);
    // And again, idempotent: nothing more created.
    env.expect(&["master", "migrate"]).stdout(ADOPTED).run();
    assert_eq!(definition(&env, "\"Company\""), company);
    assert_eq!(definition(&env, "\"_prisma_migrations\""), prisma);
    assert_eq!(
        env.query(
            &env.master,
            "SELECT count(*)::text FROM \"_prisma_migrations\""
        ),
        ["1"]
    );

    // list: rows without a slug, by id.
    let list = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    assert!(list[0]["slug"].is_null(), "{list}");
}

#[test]
fn on_an_adopted_prisma_master_migrate_all_skips_suspended_companies_and_records_its_run() {
    let env = TestEnv::new();
    let (dbs, _, _) = adopted_prisma_master(&env);
    // migrate --all: the two ACTIVE ones, never the SUSPENDED one.
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(report["summary"]["ok"], 2, "{report}");
    assert!(!env.applied(&dbs[0]).is_empty());
    assert!(!env.applied(&dbs[1]).is_empty());
    assert!(
        env.query(
            &dbs[2],
            "SELECT tablename::text FROM pg_tables WHERE tablename = '_sqlx_migrations'"
        )
        .is_empty(),
        "the SUSPENDED company was migrated"
    );
    // The run is recorded in tenantctl's own tables beside "Company".
    let id = report["run_id"].as_i64().expect("run id").to_string();
    let recorded = env
        .run(&["tenant", "runs", &id, "--output", "json"])
        .ok()
        .json();
    let mut dbs_changed: Vec<&str> = recorded["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["db_name"].as_str().expect("db name"))
        .collect();
    dbs_changed.sort_unstable();
    assert_eq!(
        dbs_changed,
        [dbs[0].as_str(), dbs[1].as_str()],
        "{recorded}"
    );
    assert_eq!(
        env.query(
            &env.master,
            &format!("SELECT count(*)::text FROM tenantctl.run_tenants WHERE run_id = {id}")
        ),
        ["2"]
    );
    // The embedded schema is plain migrations: taking the run back is
    // refused, and nothing changes.
    let applied = env.applied(&dbs[0]);
    let refused = env
        .run(&["tenant", "revert", "--run", &id, "--yes"])
        .code(2);
    assert!(
        refused.stderr.contains("no down script"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.applied(&dbs[0]), applied);
}

#[test]
fn on_an_adopted_prisma_master_a_created_tenant_is_reached_by_name_id_and_database() {
    let env = TestEnv::new();
    let (dbs, company, _) = adopted_prisma_master(&env);
    env.run(&["tenant", "migrate", "--all"]).ok();

    // create: a row the application would accept.
    let slug = env.slug("acme");
    let created = env
        .run(&[
            "tenant",
            "create",
            &slug,
            "--name",
            "Acme Corp",
            "--output",
            "json",
        ])
        .ok()
        .json();
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 36, "a UUID id: {id}");
    let row = env.query(
        &env.master,
        &format!(
            r#"SELECT concat_ws('|', name, "dbName", status::text, ("updatedAt" IS NOT NULL)::text)
               FROM "Company" WHERE id = '{id}'"#
        ),
    );
    assert_eq!(row, [format!("Acme Corp|{}|ACTIVE|true", env.db("acme"))]);
    assert_eq!(
        env.query(
            &env.master,
            "SELECT count(*)::text FROM tenantctl.lifecycle"
        ),
        ["0"],
        "an active tenant leaves no bookkeeping row"
    );

    // status, settings by id and by database name, exec, sql.
    // Rows in the master's order, by id: acme's is a generated uuid.
    env.expect(&["tenant", "status", "--all"])
        .stdout_in_any_order()
        .stdout(
            "
            ┌───────────┬──────────────────┬─────────┬────────┬────────────────┬─────────┬──────┐
            │ tenant    ┆ db name          ┆ server  ┆ result ┆ latest         ┆ pending ┆ time │
            ╞═══════════╪══════════════════╪═════════╪════════╪════════════════╪═════════╪══════╡
            │ Acme Corp ┆ tenant_acme_{T}  ┆ default ┆ ok     ┆ 20240101000006 ┆ 0       ┆ {ms} │
            │ Company 0 ┆ db_greencity_{T} ┆ default ┆ ok     ┆ 20240101000006 ┆ 0       ┆ {ms} │
            │ Company 1 ┆ db_riverside_{T} ┆ default ┆ ok     ┆ 20240101000006 ┆ 0       ┆ {ms} │
            └───────────┴──────────────────┴─────────┴────────┴────────────────┴─────────┴──────┘
            3 ok, 0 failed, 0 skipped
            selected 3 of the master's 4 companies: --all, status active (by default)
            ",
        )
        .run();
    env.run(&["tenant", "settings", "set", "clx0app", "theme", "dark"])
        .ok();
    env.expect(&["tenant", "settings", "get", &dbs[0], "theme"])
        .stdout("\"dark\"\n")
        .run();
    env.expect(&[
        "tenant",
        "exec",
        "clx1app",
        "--",
        "sh",
        "-c",
        "echo $TENANT_DB_NAME",
    ])
    .stdout(
        "
        Company 1 | db_riverside_{T}
        ┌───────────┬──────────────────┬─────────┬────────┬──────┬──────┐
        │ tenant    ┆ db name          ┆ server  ┆ result ┆ exit ┆ time │
        ╞═══════════╪══════════════════╪═════════╪════════╪══════╪══════╡
        │ Company 1 ┆ db_riverside_{T} ┆ default ┆ ok     ┆ 0    ┆ {ms} │
        └───────────┴──────────────────┴─────────┴────────┴──────┴──────┘
        1 ok, 0 failed, 0 skipped
        selected 1 of the master's 4 companies: named clx1app
        ",
    )
    .run();
    let sql = env
        .run(&[
            "tenant",
            "sql",
            "--all",
            "--yes",
            "-c",
            "SELECT 1 AS one",
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(sql["summary"]["ok"], 3, "{sql}");

    // The table has no slug column: the new tenant is addressed by its
    // name, id or database name, and by the slug it was created with (the
    // database that slug derives), as `create` told the operator.
    for (key, named) in [
        (slug.as_str(), "acme-{T}"),
        ("Acme Corp", "Acme Corp"),
        (&id, "{acme_id}"),
    ] {
        let table = "
            ┌───────────┬─────────────────┬─────────┬────────┬────────────────┬─────────┬──────┐
            │ tenant    ┆ db name         ┆ server  ┆ result ┆ latest         ┆ pending ┆ time │
            ╞═══════════╪═════════════════╪═════════╪════════╪════════════════╪═════════╪══════╡
            │ Acme Corp ┆ tenant_acme_{T} ┆ default ┆ ok     ┆ 20240101000006 ┆ 0       ┆ {ms} │
            └───────────┴─────────────────┴─────────┴────────┴────────────────┴─────────┴──────┘
            1 ok, 0 failed, 0 skipped
            selected 1 of the master's 4 companies: named {named}
            ";
        env.expect(&["tenant", "status", key])
            .with(&id, "{acme_id}")
            .stdout(table.replace("{named}", named))
            .run();
    }
    // drop --keep-row would leave a row the application reads as ACTIVE
    // with no database: refused, nothing changed; a plain drop deletes it.
    env.expect(&["tenant", "drop", &env.db("acme"), "--keep-row", "--yes"])
        .stderr(
            "error: --keep-row: the master's Company cannot mark a company dropped: its status \
             column \"status\" has no value for dropped, so the row would still look live to the \
             application; map one of the application's inactive statuses in tenantctl.toml \
             (`[master.statuses]` dropped = \"...\"), or drop without --keep-row (the row is \
             deleted); nothing was changed\n",
        )
        .status(2)
        .run();
    assert!(env.database_exists(&env.db("acme")));
    env.run(&["tenant", "drop", &env.db("acme"), "--yes"]).ok();
    assert!(!env.database_exists(&env.db("acme")));
    assert_eq!(
        env.query(
            &env.master,
            &format!(r#"SELECT count(*)::text FROM "Company" WHERE id = '{id}'"#)
        ),
        ["0"]
    );
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        report["summary"]["ok"], 2,
        "dropped is not in --all: {report}"
    );

    // doctor: the dropped tenant's row is gone with its database; nothing
    // else is wrong with these tenants. (A row an older tenantctl kept
    // with --keep-row, which the application still reads as ACTIVE, is
    // reported: app_edges.)
    let doctor = env.run(&["doctor", "--output", "json"]).json();
    let ours: Vec<&serde_json::Value> = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| {
            f["db_name"]
                .as_str()
                .is_some_and(|d| d.contains(&env.token))
        })
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    assert_eq!(definition(&env, "\"Company\""), company);
}

#[test]
fn create_on_a_prisma_master_resumes_after_a_failure_and_never_suspends() {
    let env = TestEnv::new();
    prisma_master(&env);
    env.run(&["master", "migrate"]).ok();
    let slug = env.slug("broken");
    let broken = env.fixture("broken");
    let broken = broken.to_str().expect("utf-8");
    env.run(&["tenant", "create", &slug, "--tenant-migrations", broken])
        .code(1);
    // Failed, and kept out of the application's table until finished.
    let lifecycle = env.query(&env.master, "SELECT lifecycle FROM tenantctl.claims");
    assert_eq!(lifecycle, ["failed"]);
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        ["3"],
        "only the application's own three companies"
    );
    let list = env.run(&["tenant", "list", "--status", "failed", "--output", "json"]);
    assert_eq!(
        list.json()["tenants"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.stdout
    );
    // Not selected by --all while failed.
    let report = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(report["summary"]["ok"], 2, "{report}");
    // Rerun once the broken migration is fixed: it finishes the job.
    let fixed = env.workdir.path().join("fixed");
    std::fs::create_dir_all(&fixed).expect("dir");
    for entry in std::fs::read_dir(broken).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), fixed.join(entry.file_name())).expect("copy");
    }
    std::fs::write(fixed.join("20250101000002_broken.sql"), "SELECT 1;").expect("fix");
    env.run(&[
        "tenant",
        "create",
        &slug,
        "--tenant-migrations",
        fixed.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        env.query(
            &env.master,
            "SELECT ((SELECT count(*) FROM tenantctl.lifecycle) + (SELECT count(*) FROM tenantctl.claims))::text"
        ),
        ["0"]
    );
    assert_eq!(
        env.query(&env.master, r#"SELECT count(*)::text FROM "Company""#),
        ["4"]
    );
}

#[test]
fn a_laravel_style_table_through_tenantctl_toml() {
    let env = TestEnv::new();
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        &env.master,
        "CREATE SCHEMA app;
         CREATE TABLE app.tenants (
             id bigserial PRIMARY KEY,
             name varchar(255) NOT NULL,
             database_name varchar(63) NOT NULL UNIQUE,
             plan text NOT NULL,
             created_at timestamp NULL,
             updated_at timestamp NULL)",
    );
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"app.tenants\"\n[master.columns]\ndb_name = \"database_name\"\n",
    )
    .expect("write tenantctl.toml");
    let before = definition(&env, "app.tenants");
    let run = env.run(&["master", "migrate"]).ok();
    assert!(run.stdout.contains("database_name"), "{}", run.stdout);

    // `plan` is required and has no default: create says so, changes nothing.
    let slug = env.slug("acme");
    let run = env.run(&["tenant", "create", &slug]).code(2);
    assert!(
        run.stderr.contains("plan") && run.stderr.contains("--column"),
        "{}",
        run.stderr
    );
    assert!(!env.database_exists(&env.db("acme")));
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM app.tenants"),
        ["0"]
    );

    env.run(&["tenant", "create", &slug, "--column", "plan=pro"])
        .ok();
    assert_eq!(
        env.query(
            &env.master,
            "SELECT concat_ws('|', plan, database_name) FROM app.tenants"
        ),
        [format!("pro|{}", env.db("acme"))]
    );
    let report = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .ok()
        .json();
    assert_eq!(report["summary"]["ok"], 1, "{report}");
    let id = report["tenants"][0]["id"].as_str().expect("id").to_owned();
    env.run(&["tenant", "settings", "set", &id, "k", "1"]).ok();
    env.run(&["tenant", "drop", &id, "--yes"]).ok();
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM app.tenants"),
        ["0"]
    );
    assert_eq!(definition(&env, "app.tenants"), before);

    // A table the configuration names that is not there is one clear error.
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"app.nope\"\n",
    )
    .expect("write");
    let run = env.run(&["tenant", "list"]).code(2);
    assert!(run.stderr.contains("app.nope"), "{}", run.stderr);
}

#[test]
fn all_matching_none_of_the_companies_is_not_a_silent_success() {
    let env = TestEnv::new();
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(&env.master, PRISMA_MASTER);
    env.exec(
        &env.master,
        r#"INSERT INTO "Company" ("id", "name", "dbName", "status", "updatedAt")
           VALUES ('a', 'A', 'db_a_x', 'SUSPENDED', now()), ('b', 'B', 'db_b_x', 'SUSPENDED', now())"#,
    );
    let run = env.run(&["tenant", "migrate", "--all"]).code(2);
    assert!(run.stderr.contains("SUSPENDED (2)"), "{}", run.stderr);
    assert!(!run.stdout.contains("0 ok"), "{}", run.stdout);
}

#[test]
fn database_names_of_either_case_and_with_hyphens_work_end_to_end() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let names = [
        format!("blue-sky-{}", env.token),
        format!("GreenCity{}", env.token),
    ];
    for (n, db) in names.iter().enumerate() {
        let slug = env.slug(&format!("odd{n}"));
        env.run(&["tenant", "create", &slug, "--db-name", db]).ok();
        assert!(env.database_exists(db), "{db}");
        env.run(&["tenant", "settings", "set", &slug, "k", "1"])
            .ok();
        let sql = env
            .run(&[
                "tenant",
                "sql",
                &slug,
                "-c",
                "SELECT current_database() AS db",
                "--output",
                "json",
            ])
            .ok()
            .json();
        assert!(sql.to_string().contains(db.as_str()), "{sql}");
        let exec = env
            .run(&[
                "tenant",
                "exec",
                db,
                "--",
                "sh",
                "-c",
                "echo \"$DATABASE_URL\"",
            ])
            .ok();
        assert!(exec.stdout.contains(&format!("/{db}")), "{}", exec.stdout);
        env.run(&["tenant", "migrate", &slug]).ok();
        env.run(&["tenant", "drop", &slug, "--yes"]).ok();
        assert!(!env.database_exists(db), "{db}");
    }
    let report = env.run(&["tenant", "list", "--output", "json"]).ok().json()["tenants"].clone();
    assert_eq!(report.as_array().map(Vec::len), Some(0));

    for bad in [
        "a b",
        "a\"b",
        "a'b",
        "a/b",
        "a%b",
        "a?b",
        "a#b",
        "a.b",
        "postgres",
        "template1",
    ] {
        let slug = env.slug("bad");
        let run = env
            .run(&["tenant", "create", &slug, "--db-name", bad])
            .code(2);
        assert!(run.stderr.contains("--db-name"), "{bad}: {}", run.stderr);
    }
    let run = env
        .run(&["tenant", "create", &env.slug("m"), "--db-name", &env.master])
        .code(2);
    assert!(run.stderr.contains("master"), "{}", run.stderr);
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM \"Company\""),
        ["0"]
    );
}
