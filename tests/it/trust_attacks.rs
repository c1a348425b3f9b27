//! What a hostile pass found in the first version of issue 15's fixes:
//! checks made after the point of no return, writes AFTER triggers undo,
//! a run record acted on through a repointed row, a shard that splits rows
//! sharing a database, another master named as a tenant's database.

use std::time::Duration;

use crate::support::{Gate, TestEnv, find, wait_with_deadline};

fn rows(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        r#"SELECT slug || '=' || "dbName" || '=' || status FROM "Company" ORDER BY slug"#,
    )
}

/// What `DROP DATABASE` would refuse is found before the master commits:
/// the row stays as it was.
#[test]
fn drop_checks_the_database_can_go_before_the_master_commits() {
    let env = TestEnv::new();
    env.with_tenants(&["tpl", "far"]);
    let (tpl, far) = (env.slug("tpl"), env.slug("far"));
    let before = rows(&env);

    // A template: DROP DATABASE refuses it.
    env.exec(
        "postgres",
        &format!("ALTER DATABASE \"{}\" IS_TEMPLATE true", env.db("tpl")),
    );
    let run = env.run(&["tenant", "drop", &tpl, "--yes"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("template"), "{}", run.stderr);
    env.exec(
        "postgres",
        &format!("ALTER DATABASE \"{}\" IS_TEMPLATE false", env.db("tpl")),
    );

    // A server that refuses tenantctl's login.
    env.exec(
        &env.master,
        &format!(r#"UPDATE "Company" SET "dbServer" = 'bad' WHERE slug = '{far}'"#),
    );
    let mut bad = url::Url::parse(&env.base_url).expect("url");
    bad.set_password(Some("not-the-password"))
        .expect("password");
    for keep_row in [false, true] {
        let mut args = vec!["tenant", "drop", far.as_str(), "--yes"];
        if keep_row {
            args.push("--keep-row");
        }
        let run = env.run_with(&args, |c| {
            c.env("POSTGRES_BASE_URL_BAD", bad.as_str());
        });
        assert_eq!(run.code, 1, "{}", run.all());
        assert!(!run.all().contains("not-the-password"));
    }
    env.exec(
        &env.master,
        &format!(r#"UPDATE "Company" SET "dbServer" = NULL WHERE slug = '{far}'"#),
    );
    assert_eq!(rows(&env), before, "no row deleted or marked");
    assert!(env.database_exists(&env.db("tpl")));
    assert!(env.database_exists(&env.db("far")));
}

/// AFTER triggers run after RETURNING: the row is read again as the
/// transaction would commit it.
#[test]
fn writes_an_after_trigger_undoes_are_refused_before_anything_irreversible() {
    // drop: a trigger that puts the deleted row back.
    let env = TestEnv::new();
    env.with_tenants(&["back"]);
    let slug = env.slug("back");
    env.exec(
        &env.master,
        r#"CREATE FUNCTION back() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO "Company" SELECT OLD.*; RETURN NULL; END $$;
           CREATE TRIGGER back AFTER DELETE ON "Company" FOR EACH ROW EXECUTE FUNCTION back();"#,
    );
    let run = env.run(&["tenant", "drop", &slug, "--yes", "--output", "json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(env.database_exists(&env.db("back")));

    // drop --keep-row: a trigger that sets the status back.
    let env = TestEnv::new();
    env.with_tenants(&["undo"]);
    let slug = env.slug("undo");
    env.exec(
        &env.master,
        r#"CREATE FUNCTION undo() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN IF NEW.status = 'dropped' THEN
                  UPDATE "Company" SET status = 'active' WHERE id = NEW.id; END IF;
                RETURN NULL; END $$;
           CREATE TRIGGER undo AFTER UPDATE ON "Company" FOR EACH ROW EXECUTE FUNCTION undo();"#,
    );
    let run = env.run(&["tenant", "drop", &slug, "--yes", "--keep-row"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(env.database_exists(&env.db("undo")));
    assert_eq!(env.status_of(&slug), ["active"]);

    // create: a trigger that points the new row at another company's
    // database (a slug-less master, where the row is found by database).
    let env = TestEnv::new();
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"tenants\"\n[master.columns]\ndb_name = \"database_name\"\n",
    )
    .expect("config");
    env.exec(
        &env.master,
        r#"CREATE TABLE tenants (id bigserial PRIMARY KEY, name text NOT NULL, database_name text NOT NULL);"#,
    );
    env.run(&["master", "migrate"]).ok();
    let victim = env.slug("victim");
    env.run(&["tenant", "create", &victim]).ok();
    let victim_db = env.db("victim");
    let migrated = env.applied(&victim_db);
    let evil = env.slug("evil");
    env.exec(
        &env.master,
        &format!(
            r#"CREATE FUNCTION evil() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN UPDATE tenants SET database_name = '{victim_db}' WHERE id = NEW.id; RETURN NULL; END $$;
               CREATE TRIGGER evil AFTER INSERT ON tenants FOR EACH ROW
                 WHEN (NEW.name = '{evil}') EXECUTE FUNCTION evil();"#
        ),
    );
    let run = env.run(&["tenant", "create", &evil]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert_eq!(
        env.query(&env.master, "SELECT count(*)::text FROM tenants"),
        ["1"],
        "nothing recorded"
    );
    assert_eq!(env.applied(&victim_db), migrated);
    assert!(!env.database_exists(&env.db("evil")));
}

/// `revert --run` takes back what the run did to the database it changed;
/// a row that names another database now is skipped, that one untouched.
#[test]
fn revert_run_never_reverts_a_database_the_run_did_not_change() {
    let env = TestEnv::new();
    let dir = env.fixture("reversible");
    let dir = dir.to_str().expect("utf-8");
    // Tenants at 4; the run under test applies 5.
    let held = env.workdir.path().join("held");
    std::fs::create_dir_all(&held).expect("held");
    let files = [
        "20250101000005_indexes.up.sql",
        "20250101000005_indexes.down.sql",
    ];
    for file in files {
        std::fs::rename(std::path::Path::new(dir).join(file), held.join(file)).expect("hold");
    }
    let slugs = env.tenants_with(std::path::Path::new(dir), &["a", "b"]);
    for file in files {
        std::fs::rename(held.join(file), std::path::Path::new(dir).join(file)).expect("back");
    }
    let report = env
        .run(&[
            "tenant",
            "migrate",
            "--all",
            "--tenant-migrations",
            dir,
            "--output",
            "json",
        ])
        .ok()
        .json();
    let run_id = report["run_id"].as_i64().expect("run id").to_string();
    // b is repointed at a copy made after the run (the application's).
    let copy = format!("copy_{}", env.token);
    env.exec(
        "postgres",
        &format!("CREATE DATABASE \"{copy}\" TEMPLATE \"{}\"", env.db("b")),
    );
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = '{copy}' WHERE slug = '{}'"#,
            slugs[1]
        ),
    );
    let copy_before = env.applied(&copy);
    let run = env.run(&[
        "tenant",
        "revert",
        "--run",
        &run_id,
        "--yes",
        "--tenant-migrations",
        dir,
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    let b = find(&report, &slugs[1]);
    assert_eq!(b["status"], "skipped", "{b}");
    assert!(
        b["error"].as_str().is_some_and(|e| e.contains("now names")),
        "{b}"
    );
    assert_eq!(env.applied(&copy), copy_before, "the copy untouched");
    assert_eq!(find(&report, &slugs[0])["status"], "ok");
}

/// Shards agree which of the rows sharing a database works on it: over
/// every shard the database is touched once.
#[test]
fn shards_never_split_rows_sharing_a_database() {
    let env = TestEnv::new();
    let names = ["a", "b", "c", "d", "e", "f"];
    env.with_tenants(&names);
    env.exec(&env.master, r#"DROP INDEX "Company_dbName_key""#);
    let db = env.db("a");
    env.exec(
        &env.master,
        &format!(r#"UPDATE "Company" SET "dbName" = '{db}'"#),
    );
    env.exec(&db, "CREATE TABLE hits (n int)");
    for shard in ["0/3", "1/3", "2/3"] {
        env.run(&[
            "tenant",
            "sql",
            "--all",
            "--shard",
            shard,
            "--yes",
            "-c",
            "INSERT INTO hits VALUES (1)",
        ]);
    }
    assert_eq!(env.query(&db, "SELECT count(*)::text FROM hits"), ["1"]);
}

/// A row that names a database holding tenantctl's master migrations
/// (another installation's master) never gets it dropped.
#[test]
fn drop_refuses_another_master() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let other = TestEnv::new();
    other.run(&["master", "migrate"]).ok();
    env.exec(&env.master, r#"DROP INDEX "Company_dbName_key""#);
    env.exec(
        &env.master,
        &format!(
            r#"INSERT INTO "Company" (id, slug, name, "dbName", status) VALUES ('zz', 'zz', 'zz', '{}', 'active')"#,
            other.master
        ),
    );
    let run = env.run(&["tenant", "drop", "zz", "--yes"]).code(2);
    assert!(run.stderr.contains("master"), "{}", run.stderr);
    assert!(env.database_exists(&other.master));
}

/// Another company's row that comes to name a database while `create`
/// provisions it: create does not mark it active.
#[test]
fn create_does_not_finish_a_database_another_row_came_to_name() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    env.exec(&env.master, r#"DROP INDEX "Company_dbName_key""#);
    let gate = Gate::new(&env);
    let dir = env.tenant_schema_plus("gated", "99990101000000_gate.sql", &gate.sql());
    let slug = env.slug("cr");
    let child = env.spawn(&["tenant", "create", &slug, "--tenant-migrations", &dir]);
    gate.wait_for(&env, 1);
    env.exec(
        &env.master,
        &format!(
            r#"INSERT INTO "Company" (id, slug, name, "dbName", status) VALUES ('app', 'app', 'app', '{}', 'active')"#,
            env.db("cr")
        ),
    );
    let open = gate.open(&env);
    let run = wait_with_deadline(child, Duration::from_secs(60));
    drop(open);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("came to name it"), "{}", run.stderr);
    assert_eq!(env.status_of(&slug), ["failed"]);
}

/// `tenant exec` reads each row again when its turn comes, as every fleet
/// command does.
#[test]
fn exec_skips_a_row_deleted_before_its_turn() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b"]);
    let child = env.spawn(&[
        "tenant",
        "exec",
        "--all",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--",
        "sh",
        "-c",
        "sleep 2; echo $PGDATABASE",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    env.exec(
        &env.master,
        &format!(r#"DELETE FROM "Company" WHERE slug = '{}'"#, env.slug("b")),
    );
    let run = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    assert_eq!(find(&report, &env.slug("a"))["status"], "ok");
    assert_eq!(
        find(&report, &env.slug("b"))["status"],
        "skipped",
        "{report}"
    );
}

/// A second hostile pass: statements that blind the dry run's checks or
/// act on the whole server are refused; built-ins that run SQL text are
/// named as unverified.
#[test]
fn dry_runs_refuse_discard_checkpoint_load_and_name_sql_text_runners() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    for script in [
        "INSERT INTO users (email, name) VALUES ('x@example.com', 'x'); DISCARD SEQUENCES",
        "discard all",
        "CHECKPOINT",
        "LOAD 'auto_explain'",
    ] {
        let run = env.run(&["tenant", "sql", &slug, "--dry-run", "-c", script]);
        assert_eq!(run.code, 2, "{script}: {}", run.all());
        assert_eq!(run.stderr.lines().count(), 1, "{script}: {}", run.stderr);
    }
    for (script, named) in [
        (
            "SELECT query_to_xml('SELECT 1', true, true, '')",
            "query_to_xml",
        ),
        (
            "SELECT * FROM pg_catalog.TS_STAT('SELECT to_tsvector(''a'')')",
            "TS_STAT",
        ),
    ] {
        let run = env.run(&[
            "tenant",
            "sql",
            &slug,
            "--dry-run",
            "--output",
            "json",
            "-c",
            script,
        ]);
        assert_eq!(run.code, 0, "{script}: {}", run.all());
        let report = run.json();
        let unverified = find(&report, &slug)["unverified"].to_string();
        assert!(
            unverified.to_lowercase().contains(&named.to_lowercase()),
            "{script}: {unverified}"
        );
    }
}

/// `tenant exec`'s children do not outlast an interrupt's grace period:
/// the group gets SIGTERM (then SIGKILL), the tenant is reported
/// interrupted, the report printed, exit 130.
#[test]
fn exec_children_are_stopped_when_the_grace_period_ends() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b"]);
    let child = exec_a_sleeping_child(&env);
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // Well under the child's two minutes: the grace period, then the stop.
    let run = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(run.code, 130, "{}", run.all());
    let report = run.json();
    let statuses: Vec<&str> = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect();
    assert!(statuses.contains(&"interrupted"), "{report}");
    assert!(!statuses.contains(&"ok"), "{report}");
}

/// A view configured as the companies table can narrow `--all` by
/// itself: the report names the table, says it is a view and which file
/// named it.
#[test]
fn a_view_as_the_companies_table_is_stated_by_the_report() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b", "c"]);
    env.exec(
        &env.master,
        &format!(
            r#"CREATE VIEW few AS SELECT * FROM "Company" WHERE slug <> '{}'"#,
            env.slug("c")
        ),
    );
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[master]\ntable = \"few\"\n",
    )
    .expect("config");
    let run = env.run(&["tenant", "status", "--all"]).ok();
    let footer = run
        .stdout
        .lines()
        .find(|l| l.starts_with("selected "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        footer.contains("in few (a view, named in ") && footer.contains("tenantctl.toml"),
        "{}",
        run.stdout
    );
    let json = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .ok()
        .json();
    let table = json["selection"]["table"].as_str().unwrap_or_default();
    assert!(table.starts_with("few (a view"), "{json}");
    // The seed's own table, unconfigured: nothing added.
    std::fs::remove_file(env.workdir.path().join("tenantctl.toml")).expect("rm");
    let json = env
        .run(&["tenant", "status", "--all", "--output", "json"])
        .ok()
        .json();
    assert!(json["selection"].get("table").is_none(), "{json}");
}

/// One interrupt delivered twice at once (`timeout` signals the process
/// and its group) is one interrupt, with its grace period: not the second
/// interrupt that quits at once.
#[test]
fn a_signal_delivered_twice_at_once_is_one_interrupt() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let child = exec_a_sleeping_child(&env);
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("sh")
            .args(["-c", "kill -TERM $1; kill -TERM $1", "_", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let run = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(!run.stderr.contains("interrupted again"), "{}", run.stderr);
    assert!(
        run.stderr.contains("giving those in flight"),
        "{}",
        run.stderr
    );
}

/// `tenant exec --all --concurrency 1 --output json` whose child sleeps two
/// minutes, returned once the first child has started.
fn exec_a_sleeping_child(env: &TestEnv) -> std::process::Child {
    let marker = env.workdir.path().join("started");
    let script = format!("touch {}; sleep 120", marker.display());
    let child = env.spawn(&[
        "tenant",
        "exec",
        "--all",
        "--concurrency",
        "1",
        "--output",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    crate::support::wait_until(Duration::from_secs(30), "the first child", || {
        marker.exists().then_some(())
    });
    child
}
