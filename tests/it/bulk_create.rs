//! `tenant create --from-file`: a file checked whole before anything is
//! created, lines that fail beside lines that are created, a rerun after
//! kill -9 that finishes the job, CSV and JSON Lines, two servers.

use std::path::PathBuf;
use std::time::Duration;

use crate::servers::TwoServers;
use crate::support::{Run, TestEnv, base_password, find, wait_until, wait_with_deadline};

/// Writes `text` into the test's directory as `name`.
fn file(env: &TestEnv, name: &str, text: &str) -> PathBuf {
    let path = env.workdir.path().join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

/// Nothing tenantctl printed holds the server's password.
#[track_caller]
fn no_password(run: &Run) {
    if let Some(password) = base_password() {
        assert!(
            !run.all().contains(&password),
            "password shown:\n{}",
            run.all()
        );
    }
}

fn companies(env: &TestEnv) -> Vec<String> {
    env.query(
        &env.master,
        r#"SELECT slug || ':' || status::text FROM "Company" ORDER BY slug"#,
    )
}

/// The test's databases on the default server.
fn databases(env: &TestEnv) -> Vec<String> {
    env.query(
        "postgres",
        &format!(
            "SELECT datname::text FROM pg_database WHERE strpos(datname, '{}') > 0 AND datname <> '{}' ORDER BY 1",
            env.token, env.master
        ),
    )
}

#[test]
fn a_bad_line_is_refused_before_anything_is_created_naming_its_line() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let (a, b) = (env.slug("a"), env.slug("b"));
    let bad = file(
        &env,
        "tenants.csv",
        &format!("slug,name,db_name\n{a},A,\n{b},B,\nNot A Slug,C,\n{a},D,\n"),
    );
    let run = env.run(&[
        "tenant",
        "create",
        "--from-file",
        bad.to_str().expect("utf-8"),
    ]);
    let run = run.code(2);
    no_password(&run);
    for wanted in [
        "tenants.csv line 4: invalid slug \"Not A Slug\"",
        &format!("tenants.csv line 5: slug \"{a}\" is also line 2's slug"),
        "refused before anything was created",
    ] {
        assert!(run.stderr.contains(wanted), "{wanted}:\n{}", run.stderr);
    }
    assert_eq!(run.stdout, "");
    assert!(companies(&env).is_empty(), "{:?}", companies(&env));
    assert!(databases(&env).is_empty(), "{:?}", databases(&env));

    // A field that is no column of the master's table, an unknown server, a
    // field count off, JSON that is not: each refused with its line.
    for (name, text, wanted) in [
        (
            "cols.csv",
            format!("slug,plann\n{a},pro\n"),
            "cols.csv line 1: field plann is neither one of slug, name, db_name, server nor a column of the master table",
        ),
        (
            "servers.jsonl",
            format!("{{\"slug\":\"{a}\"}}\n\n{{\"slug\":\"{b}\",\"server\":\"nowhere\"}}\n"),
            "servers.jsonl line 3: server: ",
        ),
        (
            "count.csv",
            format!("slug,name\n{a},A\n{b}\n"),
            "count.csv line 3: 1 field(s) where the header has 2",
        ),
        (
            "broken.jsonl",
            format!("{{\"slug\":\"{a}\"}}\n{{\"slug\":\"{b}\"\n"),
            "broken.jsonl line 2: not a JSON object",
        ),
        (
            "own.csv",
            format!("slug,dbName\n{a},x\n"),
            "own.csv line 1: field dbName: tenantctl fills that column itself",
        ),
    ] {
        let path = file(&env, name, &text);
        let run = env
            .run(&[
                "tenant",
                "create",
                "--from-file",
                path.to_str().expect("utf-8"),
            ])
            .code(2);
        assert!(run.stderr.contains(wanted), "{wanted}:\n{}", run.stderr);
        assert!(companies(&env).is_empty(), "{name}: {:?}", companies(&env));
        assert!(databases(&env).is_empty(), "{name}: {:?}", databases(&env));
    }

    // --from-file with a slug is refused by the parser, naming both.
    let run = env
        .run(&[
            "tenant",
            "create",
            &a,
            "--from-file",
            bad.to_str().expect("utf-8"),
        ])
        .code(2);
    assert!(run.stderr.contains("--from-file"), "{}", run.stderr);
}

#[test]
fn failing_lines_fail_alone_and_column_values_come_from_the_file() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    env.exec(
        &env.master,
        r#"ALTER TABLE "Company" ADD COLUMN plan text CHECK (plan IN ('free', 'pro'))"#,
    );
    let (ok, taken, refused, last) = (
        env.slug("ok"),
        env.slug("taken"),
        env.slug("refused"),
        env.slug("last"),
    );
    // A stranger's database already has the name the second line asks for.
    let stranger = format!("stranger_{}", env.token);
    env.exec("postgres", &format!("CREATE DATABASE \"{stranger}\""));
    let path = file(
        &env,
        "signups.csv",
        &format!(
            "slug,db_name,plan\n{ok},,pro\n{taken},{stranger},free\n{refused},,gold\n{last},,\n"
        ),
    );
    let run = env.run(&[
        "tenant",
        "create",
        "--from-file",
        path.to_str().expect("utf-8"),
        "--output",
        "json",
        "--concurrency",
        "2",
    ]);
    let run = run.code(1);
    no_password(&run);
    let json = run.json();
    assert_eq!(json["summary"]["ok"], 2, "{json}");
    assert_eq!(json["summary"]["failed"], 2, "{json}");
    let line = |slug: &str| find(&json, slug).clone();
    assert_eq!(line(&ok)["status"], "ok");
    assert_eq!(line(&ok)["result"], "created");
    assert_eq!(line(&ok)["line"], 2);
    assert_eq!(line(&ok)["db_name"], env.db("ok"));
    assert!(
        line(&ok)["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{json}"
    );
    assert_eq!(line(&last)["result"], "created");
    assert_eq!(line(&taken)["status"], "failed");
    assert!(
        line(&taken)["error"]
            .as_str()
            .is_some_and(|e| e.contains("already exists on the server")),
        "{json}"
    );
    assert_eq!(line(&refused)["status"], "failed");
    assert_eq!(line(&refused)["line"], 4);
    assert!(line(&refused)["result"].is_null(), "{json}");
    assert_eq!(
        env.query(
            &env.master,
            r#"SELECT slug || ':' || status::text || ':' || coalesce(plan, '-') FROM "Company" ORDER BY slug"#
        ),
        [format!("{last}:active:-"), format!("{ok}:active:pro")]
    );
    assert_eq!(
        env.applied(&env.db("ok")).len(),
        env.applied(&env.db("last")).len()
    );
    assert!(!env.applied(&env.db("ok")).is_empty());
    // The stranger's database was not adopted.
    assert!(
        env.query(
            &stranger,
            "SELECT count(*)::text FROM pg_tables WHERE schemaname = 'public'"
        ) == ["0"]
    );
}

#[test]
fn a_rerun_after_kill_9_finishes_every_tenant_once() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    let dir = env.workdir.path().join("slow");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("20250101000001_slow.sql"),
        "CREATE TABLE items (id bigint PRIMARY KEY); SELECT pg_sleep(0.3);",
    )
    .expect("write");
    let slugs: Vec<String> = (0..10).map(|i| env.slug(&format!("k{i}"))).collect();
    let jsonl: String = slugs
        .iter()
        .map(|s| format!("{{\"slug\":\"{s}\"}}\n"))
        .collect();
    let path = file(&env, "batch.jsonl", &jsonl);
    let args = [
        "tenant",
        "create",
        "--from-file",
        path.to_str().expect("utf-8"),
        "--tenant-migrations",
        dir.to_str().expect("utf-8"),
        "--concurrency",
        "2",
        "--output",
        "json",
    ];
    let mut child = env.spawn(&args);
    let active = r#"SELECT count(*)::text FROM "Company" WHERE status = 'active'"#;
    wait_until(Duration::from_secs(60), "some tenants active", || {
        let n: usize = env.query(&env.master, active)[0].parse().ok()?;
        (n >= 3).then_some(())
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    let done: usize = env.query(&env.master, active)[0].parse().expect("count");
    assert!(
        done < slugs.len(),
        "killed too late to test a rerun: {done}"
    );

    let run = wait_with_deadline(env.spawn(&args), Duration::from_secs(120)).ok();
    no_password(&run);
    let json = run.json();
    assert_eq!(json["summary"]["ok"], slugs.len(), "{json}");
    let results: Vec<String> = slugs
        .iter()
        .map(|s| find(&json, s)["result"].as_str().unwrap_or("?").to_owned())
        .collect();
    let present = results.iter().filter(|r| *r == "present").count();
    assert!(present >= done, "{results:?} with {done} done before");
    assert!(
        results
            .iter()
            .all(|r| ["present", "created", "finished"].contains(&r.as_str())),
        "{results:?}"
    );
    // Every tenant once, active, migrated; nothing duplicated.
    let all = companies(&env);
    assert_eq!(all.len(), slugs.len(), "{all:?}");
    for slug in &slugs {
        assert!(all.contains(&format!("{slug}:active")), "{slug}: {all:?}");
        let db = format!("tenant_{}", slug.replace('-', "_"));
        assert_eq!(env.applied(&db), [20_250_101_000_001_i64], "{db}");
    }
    assert_eq!(databases(&env).len(), slugs.len(), "{:?}", databases(&env));

    // A third run finds everything done: present, exit 0.
    let again = env.run(&args).ok();
    let json = again.json();
    for slug in &slugs {
        assert_eq!(find(&json, slug)["result"], "present", "{json}");
    }
}

#[test]
fn two_servers_by_line_or_least_placed_in_csv_and_jsonl() {
    let two = TwoServers::new();
    let env = &two.env;
    two.run(&["master", "migrate"]).ok();
    let s = |n: &str| env.slug(n);
    // Explicit servers first, then four that take turns, least placed
    // first (ties by name: default before eu2).
    let jsonl = format!(
        "{{\"slug\":\"{}\",\"server\":\"eu2\"}}\n{{\"slug\":\"{}\",\"server\":\"default\",\"name\":\"Bee\"}}\n{{\"slug\":\"{}\"}}\n{{\"slug\":\"{}\"}}\n",
        s("a"),
        s("b"),
        s("c"),
        s("d")
    );
    let path = file(env, "first.jsonl", &jsonl);
    let run = two
        .run(&[
            "tenant",
            "create",
            "--from-file",
            path.to_str().expect("utf-8"),
            "--per-server",
            "1",
        ])
        .ok();
    assert!(
        run.stdout.contains("4 ok, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    for (name, eu2) in [("a", true), ("b", false), ("c", false), ("d", true)] {
        assert_eq!(two.on_eu2(&env.db(name)), eu2, "{name}: {}", run.stdout);
        assert_eq!(env.database_exists(&env.db(name)), !eu2, "{name}");
        assert_eq!(
            two.placement(&s(name)),
            if eu2 { "eu2" } else { "" },
            "{name}"
        );
    }
    // The CSV: one line already done (same server) is present; a new one
    // goes to the least placed; one asking another server than its
    // company's is refused for that line alone.
    let csv = format!(
        "slug,server\n{},eu2\n{},\n{},default\n",
        s("a"),
        s("e"),
        s("d")
    );
    let path = file(env, "second.csv", &csv);
    let run = two.run(&[
        "tenant",
        "create",
        "--from-file",
        path.to_str().expect("utf-8"),
        "--output",
        "jsonl",
    ]);
    let run = run.code(1);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    let of = |slug: &str| {
        lines
            .iter()
            .find(|l| l["slug"] == slug)
            .unwrap_or_else(|| panic!("{slug} in {}", run.stdout))
            .clone()
    };
    assert_eq!(of(&s("a"))["result"], "present");
    assert_eq!(of(&s("a"))["server"], "eu2");
    assert_eq!(of(&s("e"))["result"], "created");
    assert_eq!(of(&s("d"))["status"], "failed");
    assert!(
        of(&s("d"))["error"]
            .as_str()
            .is_some_and(|e| e.contains("with server eu2, not the default")),
        "{}",
        run.stdout
    );
    assert_eq!(lines[3]["summary"]["failed"], 1, "{}", run.stdout);
    assert_eq!(
        two.placement(&s("e")),
        "",
        "default had 2, eu2 had 2: default by name"
    );
}
