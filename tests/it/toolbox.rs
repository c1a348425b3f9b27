//! The operator's toolbox: settings across tenants, url, psql, drop,
//! baseline and doctor (`tenant sql` has sql.rs, `tenant exec` exec.rs).

use crate::support::{TestEnv, base_password, find};

#[test]
fn settings_across_tenants_url_and_psql() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "c"]);
    let report = env
        .run(&[
            "tenant",
            "settings",
            "set",
            "--all",
            "plan",
            r#"{"tier":"pro"}"#,
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(report["summary"]["ok"], 3);
    env.run(&[
        "tenant", "settings", "set", &slugs[0], &slugs[1], "theme", "dark",
    ])
    .ok();
    let got = env.run(&[
        "tenant", "settings", "get", "--all", "theme", "--output", "json",
    ]);
    assert_eq!(got.code, 1, "c has no theme");
    let got = got.json();
    assert_eq!(find(&got, &slugs[1])["value"], "dark");
    assert_eq!(find(&got, &slugs[2])["status"], "failed");
    env.expect(&["tenant", "settings", "get", &slugs[0], &slugs[1], "plan"])
        .stdout(
            r#"
            ┌────────┬──────────────┬─────────┬────────┬──────┬─────────────────┬──────┐
            │ tenant ┆ db name      ┆ server  ┆ result ┆ key  ┆ value           ┆ time │
            ╞════════╪══════════════╪═════════╪════════╪══════╪═════════════════╪══════╡
            │ a-{T}  ┆ tenant_a_{T} ┆ default ┆ ok     ┆ plan ┆ {"tier": "pro"} ┆ {ms} │
            │ b-{T}  ┆ tenant_b_{T} ┆ default ┆ ok     ┆ plan ┆ {"tier": "pro"} ┆ {ms} │
            └────────┴──────────────┴─────────┴────────┴──────┴─────────────────┴──────┘
            2 ok, 0 failed, 0 skipped
            selected 2 of the master's 3 companies: named a-{T}, b-{T}
            "#,
        )
        .run();
    env.expect(&["tenant", "settings", "set", "--all", &slugs[0], "k", "v"])
        .stderr("error: name tenants or pass --all, not both (got a-{T})\n")
        .status(2)
        .run();

    let url = env
        .expect(&["tenant", "url", &slugs[0]])
        .stdout("postgresql://{user}:***@{host}:{port}/tenant_a_{T}\n")
        .run();
    if let Some(password) = base_password() {
        assert!(!url.stdout.contains(&password), "{}", url.stdout);
        env.expect(&["tenant", "url", &slugs[0], "--show-password"])
            .with(password, "{password}")
            .stdout("postgresql://{user}:{password}@{host}:{port}/tenant_a_{T}\n")
            .run();
    }

    let psql = env
        .run(&[
            "tenant",
            "psql",
            &slugs[2],
            "--",
            "-Atc",
            "select current_database()",
        ])
        .ok();
    assert_eq!(psql.stdout.trim(), env.db("c"));
}

#[test]
fn drop_asks_keeps_or_deletes_the_row_and_never_touches_the_master() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b", "evil"]);

    let run = env.run(&["tenant", "drop", &slugs[0]]);
    assert_eq!(run.code, 2, "no terminal and no --yes: {}", run.stderr);
    assert!(env.database_exists(&env.db("a")));

    env.run(&["tenant", "drop", &slugs[0], "--yes"]).ok();
    assert!(!env.database_exists(&env.db("a")));
    let count = |slug: &str| {
        env.query(
            &env.master,
            &format!(r#"SELECT status FROM "Company" WHERE slug = '{slug}'"#),
        )
    };
    assert!(count(&slugs[0]).is_empty(), "row deleted");

    // Sessions open on the database do not stop the drop.
    crate::support::block_on(async {
        let _open = env.connect(&env.db("b")).await;
        env.run(&["tenant", "drop", &slugs[1], "--yes", "--keep-row"])
            .ok();
    });
    assert!(!env.database_exists(&env.db("b")));
    assert_eq!(count(&slugs[1]), ["dropped"]);

    // A row naming the master is refused; so is a database no row names.
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = '{}' WHERE slug = '{}'"#,
            env.master, slugs[2]
        ),
    );
    env.expect(&["tenant", "drop", &slugs[2], "--yes"])
        .stderr("error: database master_{T} is the master database, not a tenant database\n")
        .status(1)
        .run();
    assert!(env.database_exists(&env.master));
    // No command takes a database name to drop: only a company's slug or id,
    // so a database no company names cannot be reached.
    let stranger = format!("tenant_stranger_{}", env.token);
    env.exec("postgres", &format!("CREATE DATABASE \"{stranger}\""));
    env.expect(&["tenant", "drop", &stranger, "--yes"])
        .stderr(
            "error: unknown tenant \"tenant_stranger_{T}\": no company has that slug, id, database \
             name or (without a slug) name (see `tenantctl tenant list`)\n",
        )
        .status(1)
        .run();
    assert!(env.database_exists(&stranger));
}

#[test]
fn drop_changes_nothing_when_the_master_refuses_the_new_status() {
    let env = TestEnv::new();
    env.with_tenants(&["keep"]);
    let slug = env.slug("keep");
    // A master that refuses changes to its rows (an application's trigger,
    // a missing privilege): the database must not be dropped either.
    env.exec(
        &env.master,
        r#"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'company rows are kept by the application'; END $$;
           CREATE TRIGGER refuse BEFORE UPDATE OR DELETE ON "Company"
             FOR EACH ROW EXECUTE FUNCTION refuse();"#,
    );
    for args in [vec!["--yes", "--keep-row"], vec!["--yes"]] {
        let mut all = vec!["tenant", "drop", slug.as_str()];
        all.extend(args);
        let run = env.run(&all);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("company rows are kept by the application"),
            "the reason is given: {}",
            run.stderr
        );
        assert!(
            env.database_exists(&env.db("keep")),
            "database dropped although the row could not be changed"
        );
        assert_eq!(env.status_of(&slug), ["active"]);
    }
}

#[test]
fn baseline_adopts_a_database_then_migrate_applies_only_later_migrations() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.run(&["master", "migrate"]).ok();
    // A database whose schema another tool created.
    let legacy = format!("legacy_{}", env.token);
    env.exec("postgres", &format!("CREATE DATABASE \"{legacy}\""));
    env.exec(
        &legacy,
        "CREATE TABLE items (id bigint PRIMARY KEY, label text NOT NULL);
         CREATE TABLE settings (key text PRIMARY KEY, value jsonb NOT NULL, \"updatedAt\" timestamptz NOT NULL DEFAULT now());",
    );
    let slug = env.slug("legacy");
    env.exec(
        &env.master,
        &format!(r#"INSERT INTO "Company" VALUES ('legacy-id', '{slug}', 'Legacy', '{legacy}', 'active', now(), now())"#),
    );
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");

    let bad = env.run(&[
        "tenant",
        "baseline",
        &slug,
        "--to",
        "42",
        "--tenant-migrations",
        dir,
    ]);
    assert_eq!(bad.code, 2);
    let report = env
        .run(&[
            "tenant",
            "baseline",
            &slug,
            "--to",
            "20250101000002",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    assert_eq!(
        report["tenants"][0]["recorded"],
        serde_json::json!([20_250_101_000_001_i64, 20_250_101_000_002_i64])
    );
    let report = env
        .run(&[
            "tenant",
            "migrate",
            &slug,
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    assert_eq!(
        report["tenants"][0]["applied"],
        serde_json::json!([20_250_101_000_003_i64])
    );
    // sqlx itself would agree: the recorded checksums match the files.
    let status = env
        .run(&[
            "tenant",
            "status",
            &slug,
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
        .ok()
        .json();
    assert_eq!(status["tenants"][0]["problems"], serde_json::json!([]));

    // Recorded differently: refused, nothing added.
    env.exec(
        &legacy,
        "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 20250101000001",
    );
    let run = env.run(&[
        "tenant",
        "baseline",
        &slug,
        "--to",
        "20250101000003",
        "--output",
        "json",
        "--tenant-migrations",
        dir,
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.json()["tenants"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("recorded differently"))
    );
}

#[test]
fn doctor_reports_each_problem_kind() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["fine", "gone", "stuck", "drift", "bad"]);
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "CREATE TABLE more (id int);",
    )
    .expect("write");
    let orphan = format!("tenant_orphan_{}", env.token);
    env.exec("postgres", &format!("CREATE DATABASE \"{orphan}\""));
    env.exec("postgres", &format!("DROP DATABASE \"{}\"", env.db("gone")));
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET status = 'failed' WHERE slug = '{}'"#,
            env.slug("stuck")
        ),
    );
    env.exec(
        &env.db("drift"),
        "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 20250101000001",
    );
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = 'Bad Name' WHERE slug = '{}'"#,
            env.slug("bad")
        ),
    );

    let run = env.run(&[
        "doctor",
        "--output",
        "json",
        "--tenant-migrations",
        dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let findings: Vec<(String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| {
            f["db_name"]
                .as_str()
                .is_some_and(|d| d.contains(&env.token))
                || f["slug"].as_str().is_some_and(|s| s.contains(&env.token))
        })
        .map(|f| {
            (
                f["kind"].as_str().expect("kind").to_owned(),
                f["db_name"].as_str().expect("db").to_owned(),
            )
        })
        .collect();
    let has = |kind: &str, db: &str| findings.iter().any(|(k, d)| k == kind && d == db);
    assert!(has("orphan_database", &orphan), "{findings:?}");
    assert!(has("missing_database", &env.db("gone")), "{findings:?}");
    assert!(has("stuck", &env.db("stuck")), "{findings:?}");
    assert!(has("migration_problem", &env.db("drift")), "{findings:?}");
    assert!(has("invalid_db_name", "Bad Name"), "{findings:?}");
    assert!(has("behind", &env.db("fine")), "{findings:?}");
    assert!(
        !findings
            .iter()
            .any(|(k, d)| d == &env.db("fine") && k != "behind"),
        "{findings:?}"
    );
    // Read-only: the orphan is still there, nothing was migrated.
    assert!(env.database_exists(&orphan));
    assert_eq!(env.applied(&env.db("fine")).len(), 2);
}
