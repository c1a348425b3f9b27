//! What tenantctl writes into a master it does not own, and what it does
//! when the master changes under it: a column that stores something else,
//! two rows naming one database, a write that touches nothing, a master
//! that refuses only at COMMIT, and the application writing at the same
//! moment as `drop` and `create`.

use std::time::Duration;

use crate::support::{Gate, TestEnv, wait_until, wait_with_deadline};

/// A short name unique to this test, for `--db-name` (the token).
fn short(env: &TestEnv, suffix: &str) -> String {
    format!("{}_{suffix}", env.token)
}

/// An adopted master: "Company" with a serial id, a slug and `db_type` as
/// its database-name column (no UNIQUE on it, as many applications have),
/// `before` run before the table is made and `after` after; then `master
/// migrate` adopts it.
fn adopted(env: &TestEnv, db_type: &str, before: &str, after: &str) {
    env.exec("postgres", &format!("CREATE DATABASE \"{}\"", env.master));
    env.exec(
        &env.master,
        &format!(
            r#"{before}
               CREATE TABLE "Company" (id serial PRIMARY KEY, slug text UNIQUE NOT NULL,
                                       "dbName" {db_type} NOT NULL);
               {after}"#
        ),
    );
    env.run(&["master", "migrate"]).ok();
}

/// Lets two rows of tenantctl's own "Company" name one database, as an
/// application's table without that index would.
fn without_unique_db_names(env: &TestEnv) {
    env.exec(&env.master, r#"DROP INDEX "Company_dbName_key""#);
}

fn rows(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        r#"SELECT slug || '=' || "dbName"::text FROM "Company" ORDER BY id"#,
    )
}

/// A column that cannot hold the database name exactly (a `varchar(n)`
/// that cuts it short, a domain over one, a trigger that rewrites it)
/// refuses the create before anything is recorded or created, and the
/// tenant it would have collided with is never touched.
#[test]
fn a_database_name_the_column_would_change_is_refused_before_anything_is_created() {
    let shapes: [(&str, &str, &str); 4] = [
        ("varchar(LEN)", "", ""),
        ("char(LEN)", "", ""),
        (
            "short_name",
            "CREATE DOMAIN short_name AS varchar(LEN);",
            "",
        ),
        (
            "text",
            r#"CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN NEW."dbName" := left(NEW."dbName", LEN); RETURN NEW; END $$;"#,
            r#"CREATE TRIGGER cut BEFORE INSERT OR UPDATE ON "Company"
                 FOR EACH ROW EXECUTE FUNCTION cut();"#,
        ),
    ];
    for (db_type, before, after) in shapes {
        let env = TestEnv::new();
        let first = short(&env, "a");
        let second = short(&env, "ab");
        let len = first.len().to_string();
        adopted(
            &env,
            &db_type.replace("LEN", &len),
            &before.replace("LEN", &len),
            after,
        );
        let a = env.slug("a");
        let b = env.slug("ab");
        env.run(&["tenant", "create", &a, "--db-name", &first]).ok();
        let migrated = env.applied(&first);
        assert!(!migrated.is_empty());
        let before = rows(&env);
        let run = env.run(&["tenant", "create", &b, "--db-name", &second]);
        assert_ne!(run.code, 0, "{db_type}: {}", run.all());
        assert!(
            run.stderr.contains("\"dbName\"") && run.stderr.contains("cannot hold"),
            "{db_type}: the error names the column and why: {}",
            run.stderr
        );
        assert_eq!(rows(&env), before, "{db_type}: no row was recorded");
        assert!(
            !env.database_exists(&second),
            "{db_type}: nothing was created"
        );
        // A second try cannot "finish" anything onto the first's database,
        // and dropping the new slug cannot reach it.
        assert_ne!(
            env.run(&["tenant", "create", &b, "--db-name", &second])
                .code,
            0
        );
        let dropped = env.run(&["tenant", "drop", &b, "--yes"]);
        assert_ne!(dropped.code, 0, "{db_type}: {}", dropped.all());
        assert!(env.database_exists(&first), "{db_type}: a's database");
        assert_eq!(env.applied(&first), migrated, "{db_type}: a untouched");
        assert_eq!(rows(&env), before, "{db_type}");
    }
}

/// The same with the derived name: a slug whose `tenant_<slug>` the column
/// would cut to an existing tenant's name.
#[test]
fn a_derived_database_name_cut_to_another_tenants_is_refused() {
    let env = TestEnv::new();
    let a = env.slug("a");
    let len = env.db("a").len();
    adopted(&env, &format!("varchar({len})"), "", "");
    env.run(&["tenant", "create", &a]).ok();
    let b = format!("{a}b");
    let before = rows(&env);
    let run = env.run(&["tenant", "create", &b, "--output", "json"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot hold"))
    );
    assert_eq!(rows(&env), before);
    assert!(env.database_exists(&env.db("a")));
}

/// Makes `b` and `c` name `a`'s database, as an application bug or a
/// restore might.
fn share_a_with_b_and_c(env: &TestEnv) -> (String, String, String, String) {
    env.with_tenants(&["a", "b", "c"]);
    without_unique_db_names(env);
    let (a, b, c) = (env.slug("a"), env.slug("b"), env.slug("c"));
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = '{}' WHERE slug IN ('{b}', '{c}')"#,
            env.db("a")
        ),
    );
    (a, b, c, env.db("a"))
}

#[test]
fn two_rows_naming_one_database_are_never_dropped_and_worked_on_once() {
    let env = TestEnv::new();
    let (a, b, c, db) = share_a_with_b_and_c(&env);

    for victim in [&a, &b, &c] {
        let run = env.run(&["tenant", "drop", victim, "--yes"]).code(2);
        assert!(
            run.stderr.contains("also named by") && run.stderr.contains("company"),
            "{}",
            run.stderr
        );
        let others: Vec<&String> = [&a, &b, &c].into_iter().filter(|s| s != &victim).collect();
        for other in others {
            assert!(
                run.stderr.contains(other.as_str()),
                "names {other}: {}",
                run.stderr
            );
        }
    }
    assert!(env.database_exists(&db));
    assert_eq!(rows(&env).len(), 3, "no row removed");

    let doctor = env.run(&["doctor", "--output", "json"]).code(1).json();
    let shared: Vec<&str> = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "shared_database")
        .filter_map(|f| f["slug"].as_str())
        .collect();
    assert_eq!(shared.len(), 3, "{doctor}");

    // A fleet run works on the database once, under the first selected,
    // and says why the others were not.
    let run = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .code(1);
    let report = run.json();
    let verdicts: Vec<(String, String)> = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().unwrap_or_default().to_owned(),
                t["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let ok = verdicts.iter().filter(|(_, s)| s == "ok").count();
    let skipped: Vec<&(String, String)> = verdicts.iter().filter(|(_, s)| s == "skipped").collect();
    assert_eq!((ok, skipped.len()), (1, 2), "{report}");
    for (slug, _) in skipped {
        let t = crate::support::find(&report, slug);
        assert!(
            t["error"]
                .as_str()
                .is_some_and(|e| e.contains("worked on once")),
            "{t}"
        );
    }
    assert!(run.stderr.contains("worked on once"), "{}", run.stderr);

    // A new tenant may not claim the name either.
    let run = env
        .run(&["tenant", "create", &env.slug("d"), "--db-name", &db])
        .code(1);
    assert!(run.stderr.contains("already belongs"), "{}", run.stderr);
}

/// Two server names for one physical server: a row on each naming one
/// database is one database.
#[test]
fn one_database_under_two_server_names_is_shared() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b"]);
    without_unique_db_names(&env);
    let (a, b) = (env.slug("a"), env.slug("b"));
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = '{}', "dbServer" = 'twin' WHERE slug = '{b}'"#,
            env.db("a")
        ),
    );
    let twin = env.base_url.replace("127.0.0.1", "localhost");
    let run = env.run_with(&["tenant", "drop", &b, "--yes"], |c| {
        c.env("POSTGRES_BASE_URL_TWIN", &twin);
    });
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains(&a), "{}", run.stderr);
    assert!(env.database_exists(&env.db("a")));
}

#[test]
fn revert_refuses_a_shared_database() {
    let env = TestEnv::new();
    let dir = env.fixture("reversible");
    let dir = dir.to_str().expect("utf-8");
    let slugs = env.tenants_with(std::path::Path::new(dir), &["a", "b"]);
    without_unique_db_names(&env);
    env.exec(
        &env.master,
        &format!(
            r#"UPDATE "Company" SET "dbName" = '{}' WHERE slug = '{}'"#,
            env.db("a"),
            slugs[1]
        ),
    );
    let before = env.applied(&env.db("a"));
    let run = env.run(&[
        "tenant",
        "revert",
        "--all",
        "--to",
        "20250101000003",
        "--yes",
        "--tenant-migrations",
        dir,
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stdout.contains("shared_database"), "{}", run.stdout);
    assert_eq!(env.applied(&env.db("a")), before, "nothing reverted");
}

/// A write to the master that touches nothing (a soft-delete trigger, a
/// rule, a trigger that skips updates) is a failure, and the database is
/// still there.
#[test]
fn a_delete_or_update_that_touches_nothing_drops_nothing() {
    let cases = [
        (
            "soft delete",
            r#"CREATE FUNCTION soft() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RETURN NULL; END $$;
               CREATE TRIGGER soft BEFORE DELETE ON "Company" FOR EACH ROW EXECUTE FUNCTION soft();"#,
            false,
        ),
        (
            "skipped update",
            r#"CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RETURN NULL; END $$;
               CREATE TRIGGER frozen BEFORE UPDATE ON "Company" FOR EACH ROW EXECUTE FUNCTION frozen();"#,
            true,
        ),
        (
            "rule",
            r#"CREATE RULE soft AS ON DELETE TO "Company" DO INSTEAD NOTHING;"#,
            false,
        ),
    ];
    for (label, sql, keep_row) in cases {
        let env = TestEnv::new();
        env.with_tenants(&["soft"]);
        let slug = env.slug("soft");
        env.exec(&env.master, sql);
        let mut args = vec!["tenant", "drop", slug.as_str(), "--yes", "--output", "json"];
        if keep_row {
            args.push("--keep-row");
        }
        let run = env.run(&args);
        assert_eq!(run.code, 1, "{label}: {}", run.all());
        assert!(
            !run.stdout.contains("\"deleted\"") && !run.stdout.contains("\"kept\""),
            "{label}: {}",
            run.stdout
        );
        assert!(
            env.database_exists(&env.db("soft")),
            "{label}: database kept"
        );
        assert_eq!(env.status_of(&slug), ["active"], "{label}: row as it was");
    }
}

/// A master that would refuse only at COMMIT (a deferred foreign key, a
/// deferred constraint trigger) refuses before the database is dropped.
#[test]
fn a_master_that_refuses_at_commit_leaves_the_database() {
    let cases = [
        (
            "deferred foreign key",
            r#"CREATE TABLE orders (company_id text REFERENCES "Company"(id) DEFERRABLE INITIALLY DEFERRED);
               INSERT INTO orders SELECT id FROM "Company";"#,
            false,
        ),
        (
            "deferred constraint trigger",
            r#"CREATE FUNCTION no() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'the application keeps its companies'; END $$;
               CREATE CONSTRAINT TRIGGER no AFTER UPDATE OR DELETE ON "Company"
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no();"#,
            true,
        ),
    ];
    for (label, sql, keep_row) in cases {
        let env = TestEnv::new();
        env.with_tenants(&["b"]);
        let slug = env.slug("b");
        env.exec(&env.master, sql);
        let mut args = vec!["tenant", "drop", slug.as_str(), "--yes"];
        if keep_row {
            args.push("--keep-row");
        }
        let run = env.run(&args);
        assert_eq!(run.code, 1, "{label}: {}", run.all());
        assert!(
            !run.stderr.contains("was dropped"),
            "{label}: {}",
            run.stderr
        );
        assert!(env.database_exists(&env.db("b")), "{label}: database kept");
        assert_eq!(env.status_of(&slug), ["active"], "{label}: row as it was");
    }
}

/// The application swaps two companies' databases while `drop` waits for
/// the row: the drop acts on what the row says after the wait, and here
/// refuses, since that is not what the operator confirmed.
#[test]
fn drop_rereads_the_row_under_its_lock_and_refuses_a_changed_one() {
    use std::io::Write as _;

    let env = TestEnv::new();
    env.with_tenants(&["a", "b"]);
    without_unique_db_names(&env);
    let (a, b) = (env.slug("a"), env.slug("b"));
    let (db_a, db_b) = (env.db("a"), env.db("b"));
    // The application: psql reading its statements one by one from a pipe,
    // so the swap's transaction stays open until the test commits it.
    let mut app = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &env.master_url()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    let mut to_app = app.stdin.take().expect("stdin");
    writeln!(
        to_app,
        r#"BEGIN; UPDATE "Company" SET "dbName" = CASE slug WHEN '{a}' THEN '{db_b}' ELSE '{db_a}' END WHERE slug IN ('{a}', '{b}');"#
    )
    .expect("swap");
    wait_until(Duration::from_secs(30), "the swap", || {
        let open = env.query(
            "postgres",
            &format!(
                "SELECT pid::text FROM pg_stat_activity WHERE datname = '{}' AND state = 'idle in transaction'",
                env.master
            ),
        );
        (!open.is_empty()).then_some(())
    });
    let child = env.spawn(&["tenant", "drop", &a, "--yes"]);
    wait_until(Duration::from_secs(30), "drop waiting on the row", || {
        let waiting = env.query(
            "postgres",
            &format!(
                "SELECT pid::text FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
                env.master
            ),
        );
        (!waiting.is_empty()).then_some(())
    });
    writeln!(to_app, "COMMIT;").expect("commit");
    drop(to_app);
    assert!(app.wait().expect("psql").success());
    let run = wait_with_deadline(child, Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("changed since it was read"),
        "{}",
        run.stderr
    );
    assert!(env.database_exists(&db_a), "a's old database (now b's)");
    assert!(env.database_exists(&db_b));
    assert_eq!(rows(&env).len(), 2);
}

/// A migration folder whose last migration waits at the gate, so a
/// create stays in provisioning until the test opens it.
fn gated(env: &TestEnv, gate: &Gate) -> String {
    env.tenant_schema_plus("gated", "99990101000000_gate.sql", &gate.sql())
}

/// `drop` of a slug whose `create` is still provisioning waits for it,
/// then drops what the row names: never a row without a database nor a
/// database without a row.
#[test]
fn create_and_drop_of_one_slug_never_leave_half_a_tenant() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let gate = Gate::new(&env);
    let dir = gated(&env, &gate);
    let slug = env.slug("race");
    // In place: the gate holds the migration in the tenant's own database.
    let create = env.spawn(&[
        "tenant",
        "create",
        &slug,
        "--tenant-migrations",
        &dir,
        "--no-template",
    ]);
    gate.wait_for(&env, 1);
    let drop = env.spawn(&[
        "tenant",
        "drop",
        &slug,
        "--yes",
        "--tenant-migrations",
        &dir,
    ]);
    // The drop waits for the create's locks: the database is untouched.
    std::thread::sleep(Duration::from_millis(800));
    assert!(env.database_exists(&env.db("race")));
    let open = gate.open(&env);
    let created = wait_with_deadline(create, Duration::from_secs(60));
    let dropped = wait_with_deadline(drop, Duration::from_secs(60));
    drop_gate(open);
    assert_eq!(created.code, 0, "{}", created.all());
    assert_eq!(dropped.code, 0, "{}", dropped.all());
    assert!(!env.database_exists(&env.db("race")));
    assert!(rows(&env).is_empty(), "{:?}", rows(&env));
}

fn drop_gate(open: crate::support::OpenGate) {
    drop(open);
}

/// The application deletes the row while its database is provisioned:
/// `create` fails, says what is left, and records no "active". (On a table
/// that cannot say "provisioning" there is no row yet to delete: the same
/// for its claim removed by hand, and for a row of the application's that
/// takes the database's name meanwhile.)
#[test]
fn a_row_deleted_during_provisioning_is_not_marked_active() {
    for statuses in [
        ["provisioning", "ACTIVE", "failed"],
        ["provisioning", "ACTIVE", "SUSPENDED"],
    ] {
        for meddle in ["delete", "take the name"] {
            let claims = statuses[2] == "SUSPENDED";
            if !claims && meddle == "take the name" {
                continue;
            }
            let env = TestEnv::new();
            env.orm_master(&statuses);
            env.run(&["master", "migrate"]).ok();
            let gate = Gate::new(&env);
            let dir = gated(&env, &gate);
            let slug = env.slug("gone");
            let create = env.spawn(&["tenant", "create", &slug, "--tenant-migrations", &dir]);
            gate.wait_for(&env, 1);
            match (claims, meddle) {
                (false, _) => env.exec(&env.master, r#"DELETE FROM "Company""#),
                (true, "delete") => env.exec(&env.master, "DELETE FROM tenantctl.claims"),
                (true, _) => env.exec(
                    &env.master,
                    &format!(
                        r#"INSERT INTO "Company" (id, slug, name, "dbName", status, "updatedAt")
                           VALUES ('app1', 'app-made', 'App', '{}', 'ACTIVE', now())"#,
                        env.db("gone")
                    ),
                ),
            }
            let open = gate.open(&env);
            let run = wait_with_deadline(create, Duration::from_secs(60));
            drop_gate(open);
            assert_eq!(run.code, 1, "{statuses:?} {meddle}: {}", run.all());
            let why = match (claims, meddle) {
                (false, _) => "was deleted while",
                (true, "delete") => "its claim was removed",
                (true, _) => "came to name it",
            };
            assert!(
                run.stderr.contains(why),
                "{statuses:?} {meddle}: {}",
                run.stderr
            );
            assert!(
                env.query(
                    &env.master,
                    "SELECT lifecycle FROM tenantctl.lifecycle WHERE lifecycle = 'active'"
                )
                .is_empty()
            );
            // Nothing of ours became a row of the application's.
            let rows = env.query(&env.master, r#"SELECT id FROM "Company""#);
            assert!(
                rows.is_empty() || rows == ["app1"],
                "{statuses:?} {meddle}: {rows:?}"
            );
        }
    }
}

/// A row left in provisioning that names another company's database is
/// never finished onto it.
#[test]
fn create_never_finishes_onto_a_database_another_row_names() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    without_unique_db_names(&env);
    let b = env.slug("b");
    env.exec(
        &env.master,
        &format!(
            r#"INSERT INTO "Company" (id, slug, name, "dbName", status, "updatedAt")
               VALUES ('bbb', '{b}', 'b', '{}', 'provisioning', now())"#,
            env.db("a")
        ),
    );
    let before = env.applied(&env.db("a"));
    let run = env.run(&["tenant", "create", &b]).code(1);
    assert!(run.stderr.contains("refusing to finish"), "{}", run.stderr);
    assert_eq!(env.applied(&env.db("a")), before);
    assert_eq!(env.status_of(&b), ["provisioning"]);
}

/// A fleet run reads each company again when its turn comes: one deleted,
/// repointed or given another status while an earlier tenant was busy is
/// skipped with the reason, and its old database is not touched.
#[test]
fn rows_changed_during_a_run_are_skipped_when_their_turn_comes() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b", "c", "d"]);
    let gate = Gate::new(&env);
    let dir = gated(&env, &gate);
    let other = short(&env, "other");
    env.exec("postgres", &format!("CREATE DATABASE \"{other}\""));
    let before_b = env.applied(&env.db("b"));
    let child = env.spawn(&[
        "tenant",
        "migrate",
        "--all",
        "--concurrency",
        "1",
        "--tenant-migrations",
        &dir,
        "--output",
        "json",
    ]);
    // a is at the gate; meanwhile the application changes the others.
    assert_eq!(gate.wait_for(&env, 1), [env.db("a")]);
    let (b, c, d) = (env.slug("b"), env.slug("c"), env.slug("d"));
    env.exec(
        &env.master,
        &format!(
            r#"DELETE FROM "Company" WHERE slug = '{b}';
               UPDATE "Company" SET "dbName" = '{other}' WHERE slug = '{c}';
               UPDATE "Company" SET status = 'failed' WHERE slug = '{d}';"#
        ),
    );
    // Past the time a row read ahead stays good.
    std::thread::sleep(Duration::from_millis(1500));
    let open = gate.open(&env);
    let run = wait_with_deadline(child, Duration::from_secs(60));
    drop_gate(open);
    assert_eq!(run.code, 1, "{}", run.all());
    let report = run.json();
    assert_eq!(
        crate::support::find(&report, &env.slug("a"))["status"],
        "ok"
    );
    for (slug, why) in [
        (&b, "no longer in the master"),
        (&c, "changed since"),
        (&d, "status"),
    ] {
        let t = crate::support::find(&report, slug);
        assert_eq!(t["status"], "skipped", "{t}");
        assert!(t["error"].as_str().is_some_and(|e| e.contains(why)), "{t}");
    }
    assert_eq!(
        env.applied(&env.db("b")),
        before_b,
        "b's database untouched"
    );
    assert!(
        env.query(&other, "SELECT to_regclass('_sqlx_migrations')::text")
            .iter()
            .all(|r| r.is_empty()),
        "the new database untouched"
    );
}

/// Creates of different slugs asking for one database name at once: one
/// gets it, the others are refused; never two rows naming it.
#[test]
fn concurrent_creates_never_give_one_database_to_two_rows() {
    for round in 0..2 {
        let env = TestEnv::new();
        adopted(&env, "text", "", "");
        let db = short(&env, "one");
        let children: Vec<_> = (0..4)
            .map(|i| {
                let slug = env.slug(&format!("s{i}"));
                env.spawn(&["tenant", "create", &slug, "--db-name", &db])
            })
            .collect();
        let runs: Vec<_> = children
            .into_iter()
            .map(|c| wait_with_deadline(c, Duration::from_secs(120)))
            .collect();
        let ok = runs.iter().filter(|r| r.code == 0).count();
        assert_eq!(
            ok,
            1,
            "round {round}: {:?}",
            runs.iter().map(|r| r.all()).collect::<Vec<_>>()
        );
        let naming = env.query(
            &env.master,
            &format!(r#"SELECT slug FROM "Company" WHERE "dbName" = '{db}'"#),
        );
        assert_eq!(naming.len(), 1, "round {round}: {naming:?}");
    }
}
