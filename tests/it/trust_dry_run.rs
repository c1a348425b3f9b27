//! Issue 15, item 6: `tenant sql --dry-run` and the effects a rollback does
//! not undo. What the dry run refuses (before any tenant is touched), what
//! it names as beyond its word (functions not built into PostgreSQL, `DO`,
//! `CALL`), the sequences it reports advanced, and that a real run still
//! does all of it. Every state is checked afterwards on the server.

use sqlx::{Connection as _, Executor as _, Row as _};
use tenantctl::script::{NOT_UNDONE_BY_ROLLBACK, Script, ScriptRun};

use std::time::Duration;

use crate::support::{Run, TestEnv, base_url, block_on, find, wait_until, wait_with_deadline};

/// One tenant with `counter_seq` at 5 (used), an empty `marker (x int)`
/// table; returns its slug and database.
fn tenant(env: &TestEnv) -> (String, String) {
    let dir = env.fixture("two-step");
    let slug = env.tenants_with(&dir, &["a"]).remove(0);
    let db = env.db("a");
    env.exec(
        &db,
        "CREATE SEQUENCE counter_seq; SELECT setval('counter_seq', 5); CREATE TABLE marker (x int)",
    );
    (slug, db)
}

/// `counter_seq`'s last value, read on a connection of our own.
fn counter(env: &TestEnv, db: &str) -> String {
    env.query(db, "SELECT last_value::text FROM counter_seq")
        .remove(0)
}

fn markers(env: &TestEnv, db: &str) -> String {
    env.query(db, "SELECT count(*)::text FROM marker").remove(0)
}

fn relation_exists(env: &TestEnv, db: &str, name: &str) -> bool {
    !env.query(db, &format!("SELECT to_regclass('{name}')::text"))[0].is_empty()
}

/// `tenant sql SLUG -c SCRIPT` with `--dry-run` or not, in JSON or table.
fn sql(env: &TestEnv, slug: &str, script: &str, dry_run: bool, json: bool) -> Run {
    let mut args = vec!["tenant", "sql", slug, "-c", script];
    if dry_run {
        args.push("--dry-run");
    }
    if json {
        args.extend(["--output", "json"]);
    }
    env.run(&args)
}

/// A refusal as a usage error (exit 2): under `--output json` the JSON
/// error object on stdout, else [`usage_error`]'s one line; returns the
/// message.
#[track_caller]
fn refusal(run: &Run, json: bool) -> String {
    if !json {
        return usage_error(run);
    }
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let error = run.json();
    assert_eq!(error["kind"], "usage", "{error}");
    error["error"].as_str().expect("error").to_owned()
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

/// `unverified` and `sequences_advanced` of a one-tenant JSON report, after
/// checking it succeeded and rolled back.
fn caveats(run: &Run, slug: &str) -> (serde_json::Value, serde_json::Value) {
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let tenant = find(&report, slug);
    assert_eq!(tenant["rolled_back"], true, "{tenant}");
    (
        tenant["unverified"].clone(),
        tenant["sequences_advanced"].clone(),
    )
}

#[test]
fn dry_run_refuses_each_listed_function_in_any_spelling_before_connecting() {
    // Offline: a refusal is the only way to exit 2 here, anything that got
    // as far as connecting would fail with 1.
    let env = TestEnv::new();
    let shapes: [(&str, usize); 10] = [
        ("SELECT {}('x')", 1),
        ("select PG_CATALOG.{UP}('x', 1)", 1),
        (
            "SELECT 1;\nWITH c AS (SELECT \"{}\"('x') AS v) SELECT * FROM c",
            2,
        ),
        (
            "SELECT * FROM marker WHERE x IN (SELECT public.{}(x) FROM marker)",
            1,
        ),
        ("SELECT coalesce(lower({UP}('x')::text), 'y')", 1),
        ("CREATE TABLE t (a int);\nSELECT * FROM {}('x')", 2),
        ("INSERT INTO marker VALUES (1), ({}('x'))", 1),
        (
            "CREATE TABLE t (a bigint DEFAULT \"public\".\"{}\"('x'))",
            1,
        ),
        ("CREATE TABLE t (a bigint CHECK (a < {}('x')))", 1),
        ("SELECT 1;\nSELECT 2;\nUPDATE marker SET x = {UP}(x)", 3),
    ];
    for (i, (listed, why)) in NOT_UNDONE_BY_ROLLBACK.iter().enumerate() {
        let name = listed.strip_suffix('*').map_or_else(
            || (*listed).to_owned(),
            |prefix| format!("{prefix}_whatever"),
        );
        for (shape, number) in [shapes[i % shapes.len()], shapes[(i + 3) % shapes.len()]] {
            let script = shape
                .replace("{UP}", &name.to_uppercase())
                .replace("{}", &name);
            let run = env.run_with(
                &["tenant", "sql", "acme", "--dry-run", "-c", &script],
                |c| {
                    c.env("POSTGRES_BASE_URL", "postgresql://nobody@127.0.0.1:1")
                        .env(
                            "MASTER_DATABASE_URL",
                            "postgresql://nobody@127.0.0.1:1/master",
                        );
                },
            );
            let line = usage_error(&run);
            assert!(
                line.contains(&format!("statement {number} (line {number}"))
                    && line.to_lowercase().contains(&format!("{name}()"))
                    && line.contains(why)
                    && line.contains("a rollback does not undo that, so --dry-run refuses"),
                "{script:?}: {line}"
            );
        }
    }
}

#[test]
fn refused_dry_runs_leave_the_tenant_as_it_was() {
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    let out = std::env::temp_dir().join(format!("tenantctl-dry-{db}.lo"));
    // A session of ours, which pg_terminate_backend would end; its runtime
    // outlives the checks made between (which start runtimes of their own).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut victim = runtime.block_on(env.connect(&db));
    let pid: i32 = runtime
        .block_on(victim.fetch_one("SELECT pg_backend_pid()"))
        .expect("pid")
        .get(0);
    {
        for (script, named) in [
            ("SELECT setval('counter_seq', 1000000)", "setval()"),
            ("SELECT nextval('counter_seq')", "nextval()"),
            (
                "INSERT INTO marker SELECT 1 FROM PG_CATALOG.NEXTVAL('counter_seq')",
                "pg_catalog.nextval()",
            ),
            (
                "WITH c AS (SELECT \"setval\"('counter_seq', 42) AS v) SELECT v FROM c",
                "setval()",
            ),
            (
                "CREATE TABLE later (a bigint DEFAULT nextval('counter_seq'));\nINSERT INTO later DEFAULT VALUES",
                "nextval()",
            ),
            ("SELECT pg_advisory_lock(77)", "pg_advisory_lock()"),
            (
                "SELECT pg_try_advisory_lock_shared(1, 2)",
                "pg_try_advisory_lock_shared()",
            ),
            (
                &format!("SELECT pg_terminate_backend({pid})"),
                "pg_terminate_backend()",
            ),
            (
                &format!("SELECT pg_cancel_backend({pid})"),
                "pg_cancel_backend()",
            ),
            (
                &format!(
                    "SELECT lo_export(lo_from_bytea(0, 'secret'), '{}')",
                    out.display()
                ),
                "lo_export()",
            ),
            ("SELECT pg_reload_conf()", "pg_reload_conf()"),
        ] {
            for json in [false, true] {
                let line = refusal(&sql(&env, &slug, script, true, json), json);
                assert!(
                    line.contains("statement 1 (line 1") && line.contains(named),
                    "{script}: {line}"
                );
            }
            assert_eq!(counter(&env, &db), "5", "{script}");
            assert_eq!(markers(&env, &db), "0", "{script}");
            assert!(!relation_exists(&env, &db, "later"), "{script}");
        }
        // Still alive, holding no advisory lock, and no file was written.
    }
    let alive: i32 = runtime
        .block_on(victim.fetch_one("SELECT 1"))
        .expect("the session was not terminated")
        .get(0);
    assert_eq!(alive, 1);
    let _ = runtime.block_on(victim.close());
    assert_eq!(
        env.query(
            &db,
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        ["0"]
    );
    assert!(!out.exists());
}

#[test]
fn server_side_copy_is_refused_by_a_dry_run_and_done_by_a_real_one() {
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    let tmp = std::env::temp_dir();
    let written = tmp.join(format!("tenantctl-dry-{db}.csv"));
    let touched = tmp.join(format!("tenantctl-dry-{db}.touched"));
    let input = tmp.join(format!("tenantctl-dry-{db}.in"));
    std::fs::write(&input, "3\n4\n").expect("write input");
    let cases = [
        (
            format!("COPY (SELECT 1) TO '{}'", written.display()),
            "is COPY ... TO a file",
        ),
        (
            format!(
                "copy marker to program 'touch {}' with (format csv)",
                touched.display()
            ),
            "is COPY ... TO PROGRAM",
        ),
        (
            "SELECT 1;\nCOPY marker FROM PROGRAM 'echo 7'".to_owned(),
            "is COPY ... FROM PROGRAM",
        ),
        (
            format!("COPY marker (x) FROM '{}'", input.display()),
            "is COPY ... FROM a file",
        ),
    ];
    for (script, what) in &cases {
        let line = usage_error(&sql(&env, &slug, script, true, false));
        assert!(line.contains(what), "{script}: {line}");
    }
    assert!(!written.exists() && !touched.exists());
    assert_eq!(markers(&env, &db), "0");

    // Without --dry-run, each does what it says (the test server's role is
    // a superuser, on this machine).
    for (script, _) in &cases {
        sql(&env, &slug, script, false, false).ok();
    }
    assert!(written.exists() && touched.exists());
    assert_eq!(
        env.query(
            &db,
            "SELECT string_agg(x::text, ',' ORDER BY x) FROM marker"
        ),
        ["3,4,7"]
    );
    for file in [written, touched, input] {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn what_the_rollback_does_undo_is_not_refused_and_what_it_does_not_would_stay() {
    // set_config(..., false) and SET are session-level, yet made in a
    // transaction that rolls back they are reverted; LISTEN and NOTIFY act
    // at commit; _xact_ advisory locks end with the transaction. Checked on
    // the very connection the dry run used, which outlives it.
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    let undone = "SELECT set_config('work_mem', '77MB', false), set_config('lock_timeout', '7s', true);\n\
                  SET statement_timeout = '9s'; SET search_path = nowhere;\n\
                  LISTEN chan; NOTIFY chan; SELECT pg_notify('chan', 'x');\n\
                  SELECT pg_advisory_xact_lock(7), pg_try_advisory_xact_lock_shared(8)";
    block_on(async {
        let mut conn = env.connect(&db).await;
        // currval needs a nextval in this session first: done for real.
        conn.execute("SELECT nextval('counter_seq')")
            .await
            .expect("nextval");
        let before: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(',', current_setting('work_mem'), current_setting('lock_timeout'), \
             current_setting('statement_timeout'), current_setting('search_path'))",
        )
        .fetch_all(&mut conn)
        .await
        .expect("settings");
        // currval and lastval only read (and need this session's nextval).
        let script = Script::parse(format!(
            "SELECT currval('counter_seq'), lastval();\n{undone}"
        ))
        .expect("parses");
        script.check_dry_run().expect("nothing to refuse");
        let mut run = ScriptRun::default();
        script
            .run_in_transaction(&mut conn, true, &mut run)
            .await
            .expect("runs");
        assert!(run.rolled_back && !run.rollback_incomplete(), "{run:?}");
        let after: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(',', current_setting('work_mem'), current_setting('lock_timeout'), \
             current_setting('statement_timeout'), current_setting('search_path'))",
        )
        .fetch_all(&mut conn)
        .await
        .expect("settings");
        assert_eq!(after, before);
        let left: i64 = conn
            .fetch_one(
                "SELECT (SELECT count(*) FROM pg_listening_channels()) \
                 + (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
            )
            .await
            .expect("state")
            .get(0);
        assert_eq!(left, 0);

        // What the list refuses, run anyway through the library: the
        // sequence stays moved and the second wall reports it; the session
        // lock is given back by the cleanup every script run ends with on a
        // plain connection (nothing of a script's session outlives it).
        let script =
            Script::parse("SELECT pg_advisory_lock(9); SELECT setval('counter_seq', 1000000)")
                .expect("parses");
        assert!(script.check_dry_run().is_err());
        let mut run = ScriptRun::default();
        script
            .run_in_transaction(&mut conn, true, &mut run)
            .await
            .expect("runs");
        assert!(run.rolled_back);
        assert_eq!(run.sequences_advanced.len(), 1, "{run:?}");
        assert_eq!(run.sequences_advanced[0].sequence, "public.counter_seq");
        assert_eq!(run.sequences_advanced[0].before, Some(6));
        assert_eq!(run.sequences_advanced[0].after, Some(1_000_000));
        let held: i64 = conn
            .fetch_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            )
            .await
            .expect("locks")
            .get(0);
        assert_eq!(held, 0);
        let _ = conn.close().await;
    });
    assert_eq!(counter(&env, &db), "1000000");

    // Through the command: allowed, and plainly rolled back.
    env.exec(&db, "SELECT setval('counter_seq', 5)");
    let run = sql(&env, &slug, undone, true, false).ok();
    assert!(
        run.stdout
            .contains("dry run: every transaction was rolled back"),
        "{}",
        run.stdout
    );
    let (unverified, advanced) = caveats(&sql(&env, &slug, undone, true, true), &slug);
    assert_eq!(unverified, serde_json::json!([]));
    assert_eq!(advanced, serde_json::json!([]));
    assert_eq!(counter(&env, &db), "5");
}

#[test]
fn code_the_dry_run_cannot_vouch_for_is_named_in_the_table_and_json() {
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    env.exec(
        &db,
        "CREATE FUNCTION public.bump() RETURNS bigint LANGUAGE sql AS $$ SELECT setval('counter_seq', 1000000) $$; \
         CREATE SCHEMA util; CREATE FUNCTION util.noop(int) RETURNS int LANGUAGE sql AS 'SELECT $1'; \
         CREATE PROCEDURE public.proc() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO marker VALUES (1); END $$",
    );

    // A user function that calls setval: named, and the sequence it moved
    // reported; the report is true (the sequence did move).
    let (unverified, advanced) = caveats(&sql(&env, &slug, "SELECT bump()", true, true), &slug);
    assert_eq!(unverified, serde_json::json!(["public.bump()"]));
    assert_eq!(
        advanced,
        serde_json::json!([{"sequence": "public.counter_seq", "before": 5, "after": 1000000}])
    );
    assert_eq!(counter(&env, &db), "1000000");
    env.exec(&db, "SELECT setval('counter_seq', 5)");
    let run = sql(&env, &slug, "SELECT bump()", true, false).ok();
    let expected = format!(
        "dry run: {slug}: rolled back, but sequence public.counter_seq advanced (5 -> 1000000); a rollback does not undo it; \
         and the dry run cannot vouch for public.bump(): its effects outside the transaction, if any, remain"
    );
    assert!(run.stdout.lines().any(|l| l == expected), "{}", run.stdout);
    assert!(!run.stdout.contains("every transaction was rolled back"));
    env.exec(&db, "SELECT setval('counter_seq', 5)");

    for (script, named) in [
        ("SELECT util.noop(1)", serde_json::json!(["util.noop()"])),
        (
            "SELECT UTIL.NOOP(length(lower('XY'))) AS n",
            serde_json::json!(["util.noop()"]),
        ),
        (
            "WITH w AS (SELECT \"util\".\"noop\"(2) AS n) SELECT n FROM w",
            serde_json::json!(["util.noop()"]),
        ),
        // Created by the script itself: only the transaction knows it.
        (
            "CREATE FUNCTION made_here() RETURNS int LANGUAGE sql AS 'SELECT 1';\nSELECT made_here()",
            serde_json::json!(["public.made_here()"]),
        ),
        ("CALL proc()", serde_json::json!(["public.proc()"])),
        (
            "SELECT 1;\nDO $$ BEGIN PERFORM 1; END $$",
            serde_json::json!(["DO block (statement 2, line 2)"]),
        ),
        (
            "SELECT bump(), util.noop(3); DO $$ BEGIN END $$",
            serde_json::json!([
                "public.bump()",
                "util.noop()",
                "DO block (statement 2, line 1)"
            ]),
        ),
    ] {
        let (unverified, _) = caveats(&sql(&env, &slug, script, true, true), &slug);
        assert_eq!(unverified, named, "{script}");
        let run = sql(&env, &slug, script, true, false).ok();
        assert!(
            run.stdout
                .contains(&format!("dry run: {slug}: rolled back, but "))
                && run.stdout.contains("the dry run cannot vouch for")
                && !run.stdout.contains("every transaction was rolled back"),
            "{script}: {}",
            run.stdout
        );
        env.exec(&db, "SELECT setval('counter_seq', 5)");
    }
    assert_eq!(markers(&env, &db), "0");

    // PostgreSQL's own functions, however called, are vouched for.
    let plain = "SELECT lower('A'), now() > '2000-01-01', pg_catalog.upper('b'), count(*), \
                 extract(year FROM now()) > 2000 FROM marker"
        .to_owned();
    let (unverified, advanced) = caveats(&sql(&env, &slug, &plain, true, true), &slug);
    assert_eq!(unverified, serde_json::json!([]), "{plain}");
    assert_eq!(advanced, serde_json::json!([]));
    let run = sql(&env, &slug, &plain, true, false).ok();
    assert!(
        run.stdout
            .contains("dry run: every transaction was rolled back")
    );
}

#[test]
fn a_dry_run_insert_reports_the_sequences_it_advanced() {
    // The support engineer's case: INSERT into a serial table under
    // --dry-run is allowed, rolled back, and says the sequence moved.
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    env.exec(
        &db,
        "CREATE TABLE s_serial (id serial PRIMARY KEY, v text); \
         CREATE TABLE s_identity (id bigint GENERATED ALWAYS AS IDENTITY, v text); \
         CREATE SEQUENCE audit_seq; CREATE TABLE audit_log (n bigint); CREATE TABLE audited (v text); \
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit_log VALUES (nextval('audit_seq')); RETURN NEW; END $$; \
         CREATE TRIGGER audited_audit AFTER INSERT ON audited FOR EACH ROW EXECUTE FUNCTION audit()",
    );
    let moved = |sequence: &str, before: Option<i64>, after: i64| serde_json::json!({"sequence": sequence, "before": before, "after": after});
    for (script, expected) in [
        (
            "INSERT INTO s_serial (v) VALUES ('a'), ('b')",
            serde_json::json!([moved("public.s_serial_id_seq", None, 2)]),
        ),
        (
            "INSERT INTO s_serial (v) VALUES ('c') RETURNING id",
            serde_json::json!([moved("public.s_serial_id_seq", Some(2), 3)]),
        ),
        (
            "INSERT INTO s_identity (v) SELECT 'x' FROM generate_series(1, 3)",
            serde_json::json!([moved("public.s_identity_id_seq", None, 3)]),
        ),
        // Through a trigger, with no function call in the script.
        (
            "INSERT INTO audited VALUES ('x'); INSERT INTO s_serial (v) VALUES ('d')",
            serde_json::json!([
                moved("public.audit_seq", None, 1),
                moved("public.s_serial_id_seq", Some(3), 4)
            ]),
        ),
    ] {
        let (unverified, advanced) = caveats(&sql(&env, &slug, script, true, true), &slug);
        assert_eq!(advanced, expected, "{script}");
        // A write to a table with a trigger of its own is also named: the
        // trigger is code the script does not show.
        let written = if script.contains("audited") {
            serde_json::json!([
                "writes to public.audited, whose triggers or rules run code of their own"
            ])
        } else {
            serde_json::json!([])
        };
        assert_eq!(unverified, written, "{script}");
    }
    // The rows are gone, the sequences moved: what the report said.
    for table in ["s_serial", "s_identity", "audited", "audit_log"] {
        assert_eq!(
            env.query(&db, &format!("SELECT count(*)::text FROM {table}")),
            ["0"]
        );
    }
    assert_eq!(
        env.query(&db, "SELECT last_value::text FROM s_serial_id_seq"),
        ["4"]
    );
    let run = sql(
        &env,
        &slug,
        "INSERT INTO s_serial (v) VALUES ('e')",
        true,
        false,
    )
    .ok();
    let expected = format!(
        "dry run: {slug}: rolled back, but sequence public.s_serial_id_seq advanced (4 -> 5); a rollback does not undo it"
    );
    assert!(run.stdout.lines().any(|l| l == expected), "{}", run.stdout);
    assert!(!run.stdout.contains("every transaction was rolled back"));

    // What the rollback does undo is not reported: a restart is
    // transactional, and so is every nextval on the restarted sequence.
    for script in [
        "TRUNCATE s_serial RESTART IDENTITY; INSERT INTO s_serial (v) VALUES ('f')",
        "ALTER SEQUENCE s_serial_id_seq RESTART WITH 100; INSERT INTO s_serial (v) VALUES ('g')",
        "CREATE SEQUENCE fresh; CREATE TABLE t (id bigint DEFAULT 1); INSERT INTO marker VALUES (1)",
    ] {
        let (_, advanced) = caveats(&sql(&env, &slug, script, true, true), &slug);
        assert_eq!(advanced, serde_json::json!([]), "{script}");
        let run = sql(&env, &slug, script, true, false).ok();
        assert!(
            run.stdout
                .contains("dry run: every transaction was rolled back"),
            "{script}: {}",
            run.stdout
        );
    }
    assert_eq!(
        env.query(&db, "SELECT last_value::text FROM s_serial_id_seq"),
        ["5"]
    );
}

#[test]
fn without_dry_run_nothing_is_refused() {
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    let report = sql(
        &env,
        &slug,
        "SELECT setval('counter_seq', 1000000); SELECT pg_advisory_lock(5), pg_advisory_unlock(5); \
         INSERT INTO marker SELECT 1 FROM nextval('counter_seq')",
        false,
        true,
    )
    .ok()
    .json();
    let tenant = find(&report, &slug);
    assert_eq!(tenant["rolled_back"], false);
    assert_eq!(tenant["unverified"], serde_json::json!([]));
    assert_eq!(tenant["sequences_advanced"], serde_json::json!([]));
    assert_eq!(counter(&env, &db), "1000001");
    assert_eq!(markers(&env, &db), "1");
}

/// libpq's connection string for this test server and a database.
fn conninfo(db: &str) -> String {
    let url = url::Url::parse(&base_url()).expect("base url");
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    format!(
        "host={} port={} dbname={db} user={} password={}",
        url.host_str().unwrap_or("localhost"),
        url.port().unwrap_or(5432),
        decode(url.username()),
        decode(url.password().unwrap_or_default())
    )
}

#[test]
fn dblink_is_refused_by_a_dry_run_because_its_work_commits_on_its_own() {
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    // Debian's postgresql-15 carries the contrib modules.
    env.exec(&db, "CREATE EXTENSION dblink");
    let create = format!(
        "SELECT dblink_exec('{}', 'CREATE TABLE via_dblink (x int)')",
        conninfo(&db)
    );
    for (script, named) in [
        (create.clone(), "dblink_exec()"),
        (
            create.replace("dblink_exec(", "public.DBLINK_EXEC("),
            "public.dblink_exec()",
        ),
        (
            format!(
                "SELECT * FROM dblink('{}', 'SELECT 1') AS t(x int)",
                conninfo(&db)
            ),
            "dblink()",
        ),
        (
            format!("SELECT dblink_connect('c', '{}')", conninfo(&db)),
            "dblink_connect()",
        ),
        (
            "SELECT dblink_send_query('c', 'SELECT 1')".to_owned(),
            "dblink_send_query()",
        ),
    ] {
        let line = usage_error(&sql(&env, &slug, &script, true, false));
        assert!(
            line.contains(named) && line.contains("commit on their own"),
            "{script}: {line}"
        );
        assert!(!relation_exists(&env, &db, "via_dblink"));
    }

    // Why: run through the library as if the refusal were not there, the
    // rollback leaves the table dblink made.
    block_on(async {
        let mut conn = env.connect(&db).await;
        let mut run = ScriptRun::default();
        Script::parse(create.as_str())
            .expect("parses")
            .run_in_transaction(&mut conn, true, &mut run)
            .await
            .expect("runs");
        assert!(run.rolled_back);
        let _ = conn.close().await;
    });
    assert!(relation_exists(&env, &db, "via_dblink"));
    env.exec(&db, "DROP TABLE via_dblink");

    // A real run does what it is asked.
    sql(&env, &slug, &create, false, false).ok();
    assert!(relation_exists(&env, &db, "via_dblink"));
}

#[test]
fn sequences_the_application_moves_meanwhile_are_not_blamed_on_the_script() {
    // The dry run waits on a lock the test holds; meanwhile "the
    // application" (another session) advances counter_seq. The script
    // itself used no sequence, so none is reported.
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut holder = runtime.block_on(env.connect(&db));
    runtime
        .block_on(holder.execute("SELECT pg_advisory_lock(4242)"))
        .expect("lock");
    let child = env.spawn(&[
        "tenant",
        "sql",
        &slug,
        "--dry-run",
        "--output",
        "json",
        "-c",
        "SELECT pg_advisory_xact_lock(4242); INSERT INTO marker VALUES (1)",
    ]);
    wait_until(
        Duration::from_secs(20),
        "the dry run to wait on the lock",
        || {
            (env.query(
                &db,
                "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND objid = 4242 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ) == ["1"])
            .then_some(())
        },
    );
    env.exec(&db, "SELECT nextval('counter_seq'), nextval('counter_seq')");
    runtime
        .block_on(holder.execute("SELECT pg_advisory_unlock(4242)"))
        .expect("unlock");
    let run = wait_with_deadline(child, Duration::from_secs(30));
    let (unverified, advanced) = caveats(&run, &slug);
    assert_eq!(advanced, serde_json::json!([]));
    assert_eq!(unverified, serde_json::json!([]));
    assert_eq!(counter(&env, &db), "7");
    assert_eq!(markers(&env, &db), "0");
    let _ = runtime.block_on(holder.close());
}

#[test]
fn writes_to_a_foreign_table_are_named_as_beyond_the_dry_run() {
    // A foreign data wrapper writes on another server: postgres_fdw rolls
    // its remote transaction back with ours, others may not, and the
    // remote side's sequences and triggers are out of sight. Here the
    // "other server" is the tenant itself, through postgres_fdw.
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    let url = url::Url::parse(&base_url()).expect("base url");
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .replace('\'', "''")
    };
    env.exec(
        &db,
        &format!(
            "CREATE EXTENSION postgres_fdw; \
             CREATE SERVER loopback FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '{}', port '{}', dbname '{db}'); \
             CREATE USER MAPPING FOR CURRENT_USER SERVER loopback OPTIONS (user '{}', password '{}'); \
             CREATE FOREIGN TABLE ft (x int) SERVER loopback OPTIONS (table_name 'marker')",
            url.host_str().unwrap_or("localhost"),
            url.port().unwrap_or(5432),
            decode(url.username()),
            decode(url.password().unwrap_or_default()),
        ),
    );
    for (script, named) in [
        (
            "INSERT INTO ft VALUES (1)",
            serde_json::json!(["writes to foreign table public.ft"]),
        ),
        (
            "WITH d AS (DELETE FROM public.ft RETURNING x) SELECT count(*) FROM d",
            serde_json::json!(["writes to foreign table public.ft"]),
        ),
        (
            "UPDATE \"ft\" SET x = 2; INSERT INTO marker VALUES (3)",
            serde_json::json!(["writes to foreign table public.ft"]),
        ),
        ("SELECT count(*) FROM ft", serde_json::json!([])),
        ("INSERT INTO marker VALUES (1)", serde_json::json!([])),
    ] {
        let (unverified, _) = caveats(&sql(&env, &slug, script, true, true), &slug);
        assert_eq!(unverified, named, "{script}");
    }
    assert_eq!(markers(&env, &db), "0");
}

#[test]
fn a_failed_dry_run_still_reports_the_sequences_it_advanced() {
    // The second INSERT fails on the key the first one drew from the
    // sequence: the tenant fails, its transaction is rolled back, and the
    // sequence stays moved, which the report says.
    let env = TestEnv::new();
    let (slug, db) = tenant(&env);
    env.exec(&db, "CREATE TABLE s_serial (id serial PRIMARY KEY, v text)");
    let script = "INSERT INTO s_serial (v) VALUES ('a'); INSERT INTO s_serial (id, v) SELECT max(id), 'dup' FROM s_serial";
    let run = sql(&env, &slug, script, true, true).code(1);
    let report = run.json();
    let tenant = find(&report, &slug);
    assert!(
        tenant["error"]
            .as_str()
            .is_some_and(|e| e.contains("statement 2") && e.contains("23505")),
        "{tenant}"
    );
    assert_eq!(
        tenant["sequences_advanced"],
        serde_json::json!([{"sequence": "public.s_serial_id_seq", "before": null, "after": 1}])
    );
    let run = sql(&env, &slug, script, true, false).code(1);
    let expected = format!(
        "dry run: {slug}: rolled back, but sequence public.s_serial_id_seq advanced (1 -> 2); a rollback does not undo it"
    );
    assert!(run.stdout.lines().any(|l| l == expected), "{}", run.stdout);
    assert_eq!(env.query(&db, "SELECT count(*)::text FROM s_serial"), ["0"]);
}
