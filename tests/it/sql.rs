//! `tenant sql`: what it refuses before connecting, what it runs, how its
//! result sets come back, and the no-transaction migrations that share its
//! statement splitting.

use sqlx::Connection as _;
use tenantctl::connect::SessionLimits;
use tenantctl::script::{Script, ScriptRun};
use tenantctl::servers::ServerName;

use crate::support::{Run, TestEnv, block_on, find};

/// One tenant (two-step schema) with an empty `marker (x int)` table;
/// returns its slug and database.
fn tenant_with_marker(env: &TestEnv) -> (String, String) {
    let dir = env.fixture("two-step");
    let slug = env.tenants_with(&dir, &["a"]).remove(0);
    let db = env.db("a");
    env.exec(&db, "CREATE TABLE marker (x int)");
    (slug, db)
}

/// Rows in the tenant's marker table, read on a connection of our own.
fn markers(env: &TestEnv, db: &str) -> String {
    env.query(db, "SELECT count(*)::text FROM marker").remove(0)
}

/// Whether a relation exists, read on a connection of our own.
fn relation_exists(env: &TestEnv, db: &str, name: &str) -> bool {
    !env.query(db, &format!("SELECT to_regclass('{name}')::text"))[0].is_empty()
}

/// `tenant sql` against a server that cannot be reached: anything but a
/// refusal before connecting ends in a connection error (exit 1).
fn sql_offline(env: &TestEnv, script: &str) -> Run {
    env.run_with(&["tenant", "sql", "acme", "--dry-run", "-c", script], |c| {
        c.env("POSTGRES_BASE_URL", "postgresql://nobody@127.0.0.1:1")
            .env(
                "MASTER_DATABASE_URL",
                "postgresql://nobody@127.0.0.1:1/master",
            );
    })
}

/// Asserts a usage error (exit 2) told in exactly one line on stderr, with
/// nothing on stdout, and returns that line.
#[track_caller]
fn usage_error(run: &Run) -> String {
    assert_eq!(
        run.code, 2,
        "expected a usage error\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert_eq!(run.stdout, "", "nothing on stdout");
    lines[0].to_owned()
}

/// Cells of a table line drawn by comfy-table, trimmed.
fn cells(line: &str) -> Vec<String> {
    line.split(['│', '┆', '|'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether stdout has a table line whose cells are exactly these.
fn has_line(stdout: &str, expected: &[&str]) -> bool {
    stdout.lines().any(|l| cells(l) == expected)
}

#[test]
fn sql_dry_run_of_a_script_that_commits_is_refused_and_changes_nothing() {
    // Issue 7: `begin` here is a table name, the COMMIT is real. The old
    // lexer took `begin` for a block opener, missed the COMMIT, and the
    // "dry run" committed the table and the row.
    let env = TestEnv::new();
    let (slug, db) = tenant_with_marker(&env);
    let script = "CREATE TABLE begin (x int); INSERT INTO marker VALUES (1); COMMIT; BEGIN; SELECT count(*) FROM marker";
    for dry_run in [true, false] {
        let mut args = vec!["tenant", "sql", &slug, "-c", script];
        if dry_run {
            args.push("--dry-run");
        }
        let run = env.run(&args);
        let line = usage_error(&run);
        assert!(
            line.contains("statement 3") && line.contains("COMMIT"),
            "names the statement: {line}"
        );
        assert_eq!(markers(&env, &db), "0");
        assert!(!relation_exists(&env, &db, "begin"));
    }
}

#[test]
fn sql_refuses_transaction_control_in_every_spelling_before_connecting() {
    let env = TestEnv::new();
    let spellings = [
        "begin",
        "BEGIN",
        "Begin Work",
        "begin transaction isolation level serializable",
        "start transaction",
        "START TRANSACTION READ ONLY",
        "commit",
        "COMMIT WORK",
        "commit and chain",
        "end",
        "END TRANSACTION",
        "rollback",
        "ROLLBACK WORK",
        "abort",
        "ABORT",
        "savepoint x",
        "SAVEPOINT x",
        "release x",
        "RELEASE SAVEPOINT x",
        "rollback to x",
        "ROLLBACK TO SAVEPOINT x",
        "rollback work to savepoint x",
        "prepare transaction 'x'",
        "PREPARE TRANSACTION 'x'",
        "commit prepared 'x'",
        "ROLLBACK PREPARED 'x'",
    ];
    // Each placement, and which statement the transaction control is.
    let placements: [(&str, usize); 8] = [
        ("{}", 1),
        ("INSERT INTO marker VALUES (1); {}; SELECT 1", 2),
        (
            "/* a comment; COMMIT; /* nested */ */ -- another; BEGIN\n{}",
            1,
        ),
        (";;{};;", 1),
        ("SELECT 1;\r{};\rSELECT 2;\r", 2),
        // A `--` comment ends at a carriage return.
        ("SELECT 1 --just a comment\r;{}", 2),
        ("SELECT $$ ; $$;\n\t{}\n", 2),
        ("CREATE TABLE begin (commit int);\r\n  {} ;\r\n", 2),
    ];
    for tc in spellings {
        for (placement, number) in placements {
            let script = placement.replace("{}", tc);
            let run = sql_offline(&env, &script);
            let line = usage_error(&run);
            assert!(
                line.contains("transaction control")
                    && line.contains(&format!("statement {number}"))
                    && line.contains(tc),
                "{script:?}: {line}"
            );
        }
    }
}

#[test]
fn sql_allows_what_only_looks_like_transaction_control() {
    let env = TestEnv::new();
    let (slug, db) = tenant_with_marker(&env);
    let allowed = [
        (
            r#"CREATE TABLE begin (commit int, rollback text, "end" text); INSERT INTO begin VALUES (1, 'savepoint', 'release'); SELECT commit, rollback, "end" FROM begin"#,
            serde_json::json!([["1", "savepoint", "release"]]),
        ),
        (
            r"SELECT E'it\'s; COMMIT; BEGIN' AS e",
            serde_json::json!([["it's; COMMIT; BEGIN"]]),
        ),
        (
            "SELECT $$; COMMIT; $$ AS d, $tag$ROLLBACK; $$ still$tag$ AS t",
            serde_json::json!([["; COMMIT; ", "ROLLBACK; $$ still"]]),
        ),
        (
            "CREATE FUNCTION atomic_f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 40 + 2; END; SELECT atomic_f() AS v",
            serde_json::json!([["42"]]),
        ),
        (
            "PREPARE q AS SELECT 6 * 7 AS answer; EXECUTE q",
            serde_json::json!([["42"]]),
        ),
        (
            "DO $$ BEGIN PERFORM 1; END $$; SELECT 'done' AS d",
            serde_json::json!([["done"]]),
        ),
        (
            "-- CRLF line endings\r\nINSERT INTO marker VALUES (1);\r\nSELECT count(*) AS begin FROM marker;\r\n",
            serde_json::json!([["1"]]),
        ),
    ];
    for (script, rows) in allowed {
        let run = env.run(&[
            "tenant",
            "sql",
            &slug,
            "--dry-run",
            "-c",
            script,
            "--output",
            "json",
        ]);
        assert_eq!(run.code, 0, "{script}: {}", run.stderr);
        let report = run.json();
        let tenant = find(&report, &slug);
        assert_eq!(tenant["rolled_back"], true, "{script}");
        let last = tenant["result_sets"]
            .as_array()
            .and_then(|sets| sets.last())
            .unwrap_or_else(|| panic!("{script}: no result sets in {report}"));
        assert_eq!(last["rows"], rows, "{script}");
    }
    // Every one was a dry run.
    assert!(!relation_exists(&env, &db, "begin"));
    assert_eq!(markers(&env, &db), "0");
    assert!(
        env.query(
            &db,
            "SELECT proname::text FROM pg_proc WHERE proname = 'atomic_f'"
        )
        .is_empty()
    );
}

#[test]
fn sql_refuses_copy_to_or_from_the_client_and_server_side_copy_in_a_dry_run() {
    let env = TestEnv::new();
    for (script, direction) in [
        ("COPY marker FROM STDIN", "STDIN"),
        ("copy marker (x) from stdin with (format csv)", "STDIN"),
        ("SELECT 1; copy marker to stdout", "STDOUT"),
        ("COPY (SELECT 1) TO STDOUT", "STDOUT"),
    ] {
        let line = usage_error(&sql_offline(&env, script));
        assert!(
            line.contains("COPY") && line.contains(direction),
            "{script}: {line}"
        );
    }

    // COPY to or from a file or program on the server: a dry run cannot
    // undo what it does there, so refuses it (trust_dry_run.rs has the real
    // runs); nothing is touched.
    let (slug, db) = tenant_with_marker(&env);
    for script in [
        "COPY (SELECT 1) TO '/dev/null'",
        "COPY marker FROM PROGRAM 'echo 7'",
    ] {
        let run = env.run(&["tenant", "sql", &slug, "--dry-run", "-c", script]);
        let line = usage_error(&run);
        assert!(line.contains("--dry-run refuses"), "{script}: {line}");
    }
    assert_eq!(markers(&env, &db), "0");
}

#[test]
fn sql_that_does_not_parse_or_has_no_statements_is_a_usage_error() {
    let env = TestEnv::new();
    // Offline: refused before any connection.
    for (script, expected) in [
        (
            "INSERT INTO marker VALUES (1);\nSELECT 'selct';\n  selct 2",
            r#"syntax error at or near "selct" at line 3, column 3"#,
        ),
        ("SELECT 1 FROM", "syntax error at end of input"),
        (
            "SELECT 1;\nSELECT 'unterminated",
            "unterminated quoted string",
        ),
        (
            "SELECT $$ never closed",
            "unterminated dollar-quoted string",
        ),
        ("", "no statements"),
        ("   \n\t", "no statements"),
        ("-- only a comment\n/* and another */", "no statements"),
        (";;", "no statements"),
    ] {
        let line = usage_error(&sql_offline(&env, script));
        assert!(line.contains(expected), "{script:?}: {line}");
    }

    // Against a real tenant: nothing ran.
    let (slug, db) = tenant_with_marker(&env);
    let run = env.run(&[
        "tenant",
        "sql",
        &slug,
        "-c",
        "INSERT INTO marker VALUES (1); SELEC 1",
    ]);
    let line = usage_error(&run);
    assert!(
        line.contains(r#"syntax error at or near "SELEC""#),
        "{line}"
    );
    assert_eq!(markers(&env, &db), "0");

    let file = env.workdir.path().join("empty.sql");
    std::fs::write(&file, "-- nothing to see\n").expect("write");
    let line =
        usage_error(&env.run(&["tenant", "sql", &slug, "-f", file.to_str().expect("utf-8")]));
    assert!(line.contains("no statements"), "{line}");
}

#[test]
fn sql_dry_run_leaves_nothing_behind() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    for name in ["a", "b"] {
        env.exec(&env.db(name), "CREATE TABLE marker (x int)");
    }
    let script = "CREATE TABLE dry (x int); INSERT INTO dry VALUES (1); INSERT INTO marker VALUES (1), (2); CREATE SEQUENCE dry_seq; SELECT count(*) AS n FROM marker";
    let run = env
        .run(&["tenant", "sql", "--all", "--dry-run", "-c", script])
        .ok();
    assert!(
        run.stdout
            .contains("dry run: every transaction was rolled back"),
        "{}",
        run.stdout
    );
    let report = env
        .run(&[
            "tenant",
            "sql",
            "--all",
            "--dry-run",
            "-c",
            script,
            "--output",
            "json",
        ])
        .ok()
        .json();
    for (name, slug) in ["a", "b"].iter().zip(&slugs) {
        let tenant = find(&report, slug);
        assert_eq!(tenant["rolled_back"], true);
        assert_eq!(tenant["rows_affected"], 1 + 2 + 1);
        assert_eq!(tenant["result_sets"][4]["rows"], serde_json::json!([["2"]]));
        let db = env.db(name);
        assert_eq!(markers(&env, &db), "0");
        assert!(!relation_exists(&env, &db, "dry"));
        assert!(!relation_exists(&env, &db, "dry_seq"));
    }
}

#[test]
fn sql_procedures_and_do_blocks_cannot_end_the_transaction() {
    // What PostgreSQL itself does: inside the transaction block tenant sql
    // opens, COMMIT in a procedure or DO block is an error (2D000), so the
    // tenant fails and nothing is committed.
    let env = TestEnv::new();
    let (slug, db) = tenant_with_marker(&env);
    for script in [
        "DO $$ BEGIN INSERT INTO marker VALUES (1); COMMIT; END $$",
        "CREATE PROCEDURE commits() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO marker VALUES (1); COMMIT; END $$; CALL commits()",
    ] {
        for dry_run in [true, false] {
            let mut args = vec!["tenant", "sql", &slug, "-c", script, "--output", "json"];
            if dry_run {
                args.push("--dry-run");
            }
            let run = env.run(&args).code(1);
            let report = run.json();
            let error = find(&report, &slug)["error"].as_str().unwrap_or("");
            assert!(
                error.contains("invalid transaction termination") && error.contains("2D000"),
                "{error}"
            );
            assert_eq!(markers(&env, &db), "0");
        }
    }
}

#[test]
fn the_second_wall_catches_a_script_that_ends_its_transaction() {
    // The parser check stops these before they reach a tenant; run them
    // through the library as if it had not, and the check of the server's
    // own state after the script must catch each one.
    let env = TestEnv::new();
    let (name, connector) = env.scratch_db("wall");
    let db = name.as_str().to_owned();
    env.exec(&db, "CREATE TABLE marker (x int)");
    block_on(async {
        for (sql, dry_run) in [
            (
                "INSERT INTO marker VALUES (1); COMMIT; BEGIN; SELECT 1",
                true,
            ),
            ("INSERT INTO marker VALUES (2); COMMIT", true),
            (
                "INSERT INTO marker VALUES (3); ROLLBACK; BEGIN; INSERT INTO marker VALUES (30)",
                false,
            ),
            (
                "INSERT INTO marker VALUES (4); COMMIT AND CHAIN; INSERT INTO marker VALUES (40)",
                false,
            ),
        ] {
            let script = Script::parse(sql).expect("parses");
            assert!(script.check_single_transaction().is_err(), "{sql}");
            let mut conn = connector
                .connect_tenant(&ServerName::default(), &name, &SessionLimits::default())
                .await
                .expect("connect");
            let mut run = ScriptRun::default();
            let err = script
                .run_in_transaction(&mut conn, dry_run, &mut run)
                .await
                .expect_err(sql);
            assert_eq!(
                tenantctl::error::render(&err),
                "the script ended its transaction; changes may have been committed",
                "{sql}"
            );
            assert!(run.transaction_ended && !run.rolled_back, "{sql}");
            let _ = conn.close().await;
        }

        // A script that leaves the transaction alone passes the wall.
        let mut conn = connector
            .connect_tenant(&ServerName::default(), &name, &SessionLimits::default())
            .await
            .expect("connect");
        let mut run = ScriptRun::default();
        Script::parse("INSERT INTO marker VALUES (5)")
            .expect("parses")
            .run_in_transaction(&mut conn, false, &mut run)
            .await
            .expect("runs");
        assert!(!run.transaction_ended && !run.rolled_back);

        // A statement that returned no rows and no longer prepares (its table
        // is gone) keeps unknown columns; the transaction is unharmed.
        let mut run = ScriptRun::default();
        Script::parse(
            "CREATE TABLE gone (a int); SELECT a FROM gone; DROP TABLE gone; SELECT 1 AS still",
        )
        .expect("parses")
        .run_in_transaction(&mut conn, true, &mut run)
        .await
        .expect("runs");
        assert!(run.rolled_back);
        let columns: Vec<Vec<String>> = run.result_sets.iter().map(|s| s.columns.clone()).collect();
        assert_eq!(columns, [vec![], vec![], vec![], vec!["still".to_owned()]]);
        let _ = conn.close().await;
    });
    // The scripts committed 1, 2 and 4 themselves, and rolled 3 back; what
    // followed their own transaction control (30, 40) tenantctl did not
    // commit.
    assert_eq!(
        env.query(
            &db,
            "SELECT string_agg(x::text, ',' ORDER BY x) FROM marker"
        ),
        ["1,2,4,5"]
    );
}

#[test]
fn sql_result_sets_keep_their_own_columns() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    for name in ["a", "b"] {
        env.exec(
            &env.db(name),
            "CREATE TABLE marker (x int); INSERT INTO items VALUES (1, 'one')",
        );
    }
    // The tenants' schemas differ.
    env.exec(
        &env.db("b"),
        "ALTER TABLE items ADD COLUMN extra text DEFAULT 'e'",
    );
    let script = "SELECT 1 AS a; SELECT 'x' AS b, 2 AS c, NULL AS d; SELECT * FROM items ORDER BY id; SELECT x FROM marker WHERE false; INSERT INTO marker VALUES (5), (6)";

    let report = env
        .run(&[
            "tenant",
            "sql",
            "--all",
            "--dry-run",
            "-c",
            script,
            "--output",
            "json",
        ])
        .ok()
        .json();
    let expected = |items_columns: serde_json::Value, items_row: serde_json::Value| {
        serde_json::json!([
            {"statement": 1, "columns": ["a"], "rows": [["1"]], "rows_affected": 1},
            {"statement": 2, "columns": ["b", "c", "d"], "rows": [["x", "2", null]], "rows_affected": 1},
            {"statement": 3, "columns": items_columns, "rows": [items_row], "rows_affected": 1},
            // No rows, yet its columns are known.
            {"statement": 4, "columns": ["x"], "rows": [], "rows_affected": 0},
            {"statement": 5, "columns": [], "rows": [], "rows_affected": 2},
        ])
    };
    let a = find(&report, &slugs[0]);
    assert_eq!(
        a["result_sets"],
        expected(
            serde_json::json!(["id", "label"]),
            serde_json::json!(["1", "one"])
        )
    );
    assert_eq!(a["rows_affected"], 5);
    let b = find(&report, &slugs[1]);
    assert_eq!(
        b["result_sets"],
        expected(
            serde_json::json!(["id", "label", "extra"]),
            serde_json::json!(["1", "one", "e"])
        )
    );

    // Tables: one per statement and shape, each with a tenant column.
    let run = env
        .run(&["tenant", "sql", "--all", "--dry-run", "-c", script])
        .ok();
    let out = &run.stdout;
    for header in [
        &["tenant", "a"][..],
        &["tenant", "b", "c", "d"],
        &["tenant", "id", "label"],
        &["tenant", "id", "label", "extra"],
        &["tenant", "x"],
    ] {
        assert!(has_line(out, header), "no table headed {header:?}:\n{out}");
    }
    for slug in &slugs {
        assert!(has_line(out, &[slug, "1"]), "{out}");
        assert!(has_line(out, &[slug, "x", "2", "NULL"]), "{out}");
    }
    assert!(has_line(out, &[&slugs[0], "1", "one"]), "{out}");
    assert!(has_line(out, &[&slugs[1], "1", "one", "e"]), "{out}");
    let position = |text: &str| out.find(text).unwrap_or_else(|| panic!("{text}:\n{out}"));
    assert!(
        position("statement 1") < position("statement 2")
            && position("statement 2") < position("statement 3"),
        "{out}"
    );
    assert!(out.contains("dry run: every transaction was rolled back"));
}

#[test]
fn sql_dry_run_changes_nothing_and_errors_roll_back_one_tenant() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    let insert = "INSERT INTO items VALUES (1, 'one'); INSERT INTO items VALUES (2, 'two')";

    let report = env
        .run(&[
            "tenant",
            "sql",
            "--all",
            "--dry-run",
            "-c",
            insert,
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(find(&report, &slugs[0])["rows_affected"], 2);
    assert_eq!(find(&report, &slugs[0])["rolled_back"], true);
    for name in ["a", "b"] {
        assert_eq!(
            env.query(&env.db(name), "SELECT count(*)::text FROM items"),
            ["0"]
        );
    }

    // Several tenants and no terminal: refused without --yes, nothing changes.
    let run = env.run(&["tenant", "sql", "--all", "-c", insert]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(
        env.query(&env.db("a"), "SELECT count(*)::text FROM items"),
        ["0"]
    );

    // b already has row 2: its second statement fails and its first is undone.
    env.exec(&env.db("b"), "INSERT INTO items VALUES (2, 'existing')");
    let run = env.run(&[
        "tenant", "sql", "--all", "--yes", "-c", insert, "--output", "json",
    ]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let b = find(&report, &slugs[1]);
    let error = b["error"].as_str().expect("error");
    assert!(
        error.contains("statement 2") && error.contains("duplicate key") && error.contains("23505"),
        "{error}"
    );
    assert_eq!(
        env.query(
            &env.db("b"),
            "SELECT string_agg(label, ',' ORDER BY id) FROM items"
        ),
        ["existing"]
    );
    assert_eq!(
        env.query(
            &env.db("a"),
            "SELECT string_agg(label, ',' ORDER BY id) FROM items"
        ),
        ["one,two"]
    );

    // A SQL error reports the statement, the server's message and its
    // position in the script.
    let run = env.run(&[
        "tenant",
        "sql",
        &slugs[0],
        "-c",
        "SELECT 1; SELECT nope FROM items",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 1);
    let error = run.json()["tenants"][0]["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(
        error.contains("statement 2")
            && error.contains(r#"column "nope" does not exist"#)
            && error.contains("at character 18"),
        "{error}"
    );
}

#[test]
fn sql_rows_come_back_with_a_tenant_column() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    let query = "SELECT current_database() AS db, NULL::text AS nothing";
    let run = env
        .run(&["tenant", "sql", "--all", "--yes", "-c", query])
        .ok();
    assert!(
        has_line(&run.stdout, &["tenant", "db", "nothing"]),
        "{}",
        run.stdout
    );
    for (name, slug) in ["a", "b"].iter().zip(&slugs) {
        assert!(
            has_line(&run.stdout, &[slug, &env.db(name), "NULL"]),
            "{}",
            run.stdout
        );
    }
    let file = env.workdir.path().join("q.sql");
    std::fs::write(&file, query).expect("write");
    let report = env
        .run(&[
            "tenant",
            "sql",
            &slugs[1],
            "-f",
            file.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        report["tenants"][0]["result_sets"],
        serde_json::json!([{
            "statement": 1,
            "columns": ["db", "nothing"],
            "rows": [[env.db("b"), null]],
            "rows_affected": 1,
        }])
    );
}

#[test]
fn no_transaction_migration_runs_its_statements_one_by_one() {
    // Sent whole, the two CREATE INDEX CONCURRENTLY would run in one
    // implicit transaction block, where PostgreSQL refuses them.
    let env = TestEnv::new();
    let dir = env.fixture("no-transaction");
    let slug = env.tenants_with(&dir, &["a"]).remove(0);
    let db = env.db("a");
    assert_eq!(env.applied(&db), [20_250_101_000_001, 20_250_101_000_002]);
    assert_eq!(
        env.query(
            &db,
            "SELECT string_agg(c.relname::text, ',' ORDER BY c.relname) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = 'items'::regclass AND i.indisvalid AND NOT i.indisprimary"
        ),
        ["items_label,items_label_id"]
    );

    // A statement that fails is named; what ran before it stays, and the
    // migration is not recorded.
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "-- no-transaction\nCREATE INDEX CONCURRENTLY items_id ON items (id);\n\nCREATE INDEX CONCURRENTLY nope ON missing_table (x);\n",
    )
    .expect("write");
    let run = env.migrate_all(dir.to_str().expect("utf-8")).code(1);
    let report = run.json();
    let error = find(&report, &slug)["error"].as_str().unwrap_or("");
    assert!(
        error.contains("20250101000003")
            && error.contains("statement 2")
            && error.contains("missing_table"),
        "{error}"
    );
    assert_eq!(env.applied(&db), [20_250_101_000_001, 20_250_101_000_002]);
    assert_eq!(
        env.query(&db, "SELECT to_regclass('items_id')::text"),
        ["items_id"]
    );
}
