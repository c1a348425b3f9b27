//! What an adversarial pass broke (issue 7): secrets in `.env` and raw
//! URLs, timeouts outside what PostgreSQL reads, numbers rounded, NULLs in
//! the master, racing creates, shards over named tenants, closed stdout,
//! control characters, JSON errors.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use crate::support::{Run, TestEnv, base_password};

/// A password-authenticated role of this test (the support fails the test
/// if the server does not ask for passwords); returns its name.
fn password_role(env: &TestEnv, password: &str) -> String {
    crate::support::role_with_password(env, "role", password).role
}

/// A raw URL written by hand, password not percent-encoded.
fn raw_url(env: &TestEnv, user: &str, password: &str, db: &str) -> String {
    let url = url::Url::parse(&env.base_url).expect("base url");
    format!(
        "postgresql://{user}:{password}@{}:{}/{db}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    )
}

#[test]
fn a_broken_env_file_names_file_line_and_variable_never_the_value() {
    let env = TestEnv::new();
    for (contents, line, var) in [
        (
            "POSTGRES_BASE_URL=\"postgresql://postgres:Sup3rSecretPW@localhost:5432\n".to_owned(),
            1,
            "POSTGRES_BASE_URL",
        ),
        (
            "# settings\nTENANTCTL_CONCURRENCY=4\n\nexport MASTER_DATABASE_URL='postgresql://u:Sup3rSecretPW@h/master\n"
                .to_owned(),
            4,
            "MASTER_DATABASE_URL",
        ),
        (
            "A=1\nB=\"unterminated Sup3rSecretPW\nC=3\n".to_owned(),
            2,
            "B",
        ),
        // Errors inside a value: dotenvy's text is the value alone.
        ("A=1\nDB_PASSWORD=Sup3rSecretPW=x y\n".to_owned(), 2, "DB_PASSWORD"),
        (
            "# POSTGRES_BASE_URL=postgresql://u:Sup3rSecretPW x@h\nA=1\nPOSTGRES_BASE_URL=postgresql://u:Sup3rSecretPW x@h\n"
                .to_owned(),
            3,
            "POSTGRES_BASE_URL",
        ),
    ] {
        std::fs::write(env.workdir.path().join(".env"), &contents).expect("write .env");
        let run = env
            .expect(&["tenant", "list"])
            .stderr(format!(
                "error: {{workdir}}/.env line {line} ({var}): cannot be parsed; check its quoting \
                 (values with spaces or # need quotes, and every quote must be closed)\n"
            ))
            .status(2)
            .run();
        assert!(!run.all().contains("Sup3rSecretPW"), "{}", run.all());
        assert!(!run.all().contains("postgresql://"), "{}", run.all());
    }
}

#[test]
fn passwords_with_reserved_characters_work_unencoded_and_never_show() {
    let env = TestEnv::new();
    for (n, password) in [
        "S3cret/Tail",
        "S3c?ret#Tail",
        "p@ss/w@rd/Tail",
        "Tail:a/b?c#d",
    ]
    .into_iter()
    .enumerate()
    {
        let role = password_role(&env, password);
        let base = raw_url(&env, &role, password, "");
        let master = raw_url(&env, &role, password, &env.master);
        // A working connection: the password was read as a password.
        let run = env.run_with(&["master", "migrate"], |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", &master);
        });
        assert_eq!(run.code, 0, "{password}: {}", run.all());
        assert!(!run.all().contains("Tail"), "{}", run.all());
        // A wrong one: the error shows none of it, nor its tail.
        let wrong = password.replace("Tail", "Wrong");
        let run = env.run_with(&["tenant", "list"], |c| {
            c.env("POSTGRES_BASE_URL", raw_url(&env, &role, &wrong, ""))
                .env(
                    "MASTER_DATABASE_URL",
                    raw_url(&env, &role, &wrong, &env.master),
                );
        });
        assert_eq!(run.code, 1, "{}", run.all());
        assert!(
            run.stderr.contains("password authentication failed"),
            "{}",
            run.stderr
        );
        assert!(!run.all().contains("Wrong"), "{}", run.all());
        // A URL that names a database after such a password is refused
        // without echoing it.
        let run = env.run_with(&["tenant", "list"], |c| {
            c.env("POSTGRES_BASE_URL", raw_url(&env, &role, password, "app"));
        });
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(!run.all().contains("Tail"), "{}", run.all());
        env.exec(
            "postgres",
            &format!("DROP DATABASE \"{}\" WITH (FORCE)", env.master),
        );
        env.exec("postgres", &format!("DROP ROLE \"{role}\""));
        let _ = n;
    }
    // A password whose end cannot be told (an `@` before a `?`): refused,
    // and none of it shown.
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env(
            "POSTGRES_BASE_URL",
            raw_url(&env, "someone", "p@ss?w#Tail", ""),
        );
    });
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("ambiguous"), "{}", run.stderr);
    assert!(
        !run.all().contains("Tail") && !run.all().contains("ss?w"),
        "{}",
        run.all()
    );
}

/// The line clap ends a usage error with.
const MORE: &str = "For more information, try '--help'.\n";

#[test]
fn server_timeouts_outside_postgres_range_are_usage_errors_naming_the_flag() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let too_small = "must be at least 1ms: PostgreSQL counts whole milliseconds and reads 0 as no \
                     timeout";
    let too_large = "must be at most 2147483647ms (about 24 days), PostgreSQL's limit";
    for (flag, name, goods) in [
        ("--lock-timeout", "LOCK_TIMEOUT", ["1ms", "1500us", "24d"]),
        (
            "--statement-timeout",
            "STATEMENT_TIMEOUT",
            ["5s", "2m", "24d"],
        ),
    ] {
        for (bad, why) in [
            ("1ns", too_small),
            ("500us", too_small),
            ("999us", too_small),
            ("1y", too_large),
            ("25d", too_large),
            ("2147483648ms", too_large),
        ] {
            env.expect(&["tenant", "migrate", "--all", flag, bad])
                .stderr(format!(
                    "error: invalid value '{bad}' for '{flag} <{name}>': {why}\n\n{MORE}"
                ))
                .status(2)
                .run();
        }
        // Values within the server's range work.
        for good in goods {
            env.run(&["tenant", "migrate", "--all", flag, good]).ok();
        }
    }
    env.expect(&["tenant", "migrate", "--all"])
        .env("TENANTCTL_LOCK_TIMEOUT", "500us")
        .stderr(format!(
            "error: invalid value '500us' for '--lock-timeout <LOCK_TIMEOUT>': {too_small}\n\n{MORE}"
        ))
        .status(2)
        .run();
}

#[test]
fn a_migrations_folder_with_two_files_of_one_version_is_refused() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let dir = env.workdir.path().join("dup");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("20240201000001_a.sql"),
        "CREATE TABLE dup_a (x int);",
    )
    .expect("write");
    std::fs::write(
        dir.join("020240201000001_b.sql"),
        "CREATE TABLE dup_b (x int);",
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");
    for args in [
        vec!["tenant", "migrate", "--all", "--tenant-migrations", dir],
        vec!["tenant", "status", "--all", "--tenant-migrations", dir],
    ] {
        env.expect(&args)
            .stderr(
                "error: {workdir}/dup: 020240201000001_b.sql and 20240201000001_a.sql both have \
                 version 20240201000001; give one of them another version\n",
            )
            .status(2)
            .run();
    }
    let tables = env.query(
        &env.db("a"),
        "SELECT tablename::text FROM pg_tables WHERE tablename LIKE 'dup_%'",
    );
    assert!(tables.is_empty(), "{tables:?}");
}

#[test]
fn settings_keep_every_digit_typed() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    for (key, typed) in [
        ("big", "12345678901234567890123"),
        ("precise", "0.1000000000000000055511151231257827"),
        ("nested", r#"{"limit": 98765432109876543210.5}"#),
        ("huge", "1e400"),
    ] {
        env.run(&["tenant", "settings", "set", &slug, key, typed])
            .ok();
        let stored = env.query(
            &env.db("a"),
            &format!("SELECT value::text FROM settings WHERE key = '{key}'"),
        );
        let expected = env.query("postgres", &format!("SELECT '{typed}'::jsonb::text"));
        assert_eq!(stored, expected, "{key}");
        env.expect(&["tenant", "settings", "get", &slug, key])
            .stdout(format!("{}\n", expected[0]))
            .run();
        // In the JSON document too, digit for digit.
        let json = env
            .run(&["tenant", "settings", "get", &slug, key, "--output", "json"])
            .ok();
        assert!(
            json.stdout
                .contains(&format!("\"value\": {}\n", expected[0])),
            "{}",
            json.stdout
        );
    }
    // Something that is not JSON is stored as a string.
    env.run(&["tenant", "settings", "set", &slug, "theme", "dark mode"])
        .ok();
    env.expect(&["tenant", "settings", "get", &slug, "theme"])
        .stdout("\"dark mode\"\n")
        .run();
}

#[test]
fn a_missing_setting_is_one_error_and_json_says_so() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    env.expect(&["tenant", "settings", "get", &slug, "nosuch"])
        .stderr("error: tenant a-{T} (tenant_a_{T}): no setting \"nosuch\"\n")
        .status(1)
        .run();
    let run = env
        .expect(&[
            "tenant", "settings", "get", &slug, "nosuch", "--output", "json",
        ])
        .stdout(
            r#"
            {
              "schema_version": 1,
              "error": "tenant a-{T} (tenant_a_{T}): no setting \"nosuch\"",
              "kind": "failure"
            }
            "#,
        )
        .stderr("error: tenant a-{T} (tenant_a_{T}): no setting \"nosuch\"\n")
        .status(1)
        .run();
    let json = run.json();
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("nosuch")),
        "{json}"
    );
    assert_eq!(json["kind"], "failure");
    assert!(json.get("key").is_none(), "{json}");
}

#[test]
fn null_columns_in_the_master_fail_their_row_only() {
    let env = TestEnv::new();
    env.with_tenants(&["good", "other"]);
    env.exec(
        &env.master,
        r#"ALTER TABLE "Company" ALTER COLUMN "dbName" DROP NOT NULL, ALTER COLUMN name DROP NOT NULL;
           INSERT INTO "Company" (id, slug, name, "dbName", status, "updatedAt")
             VALUES ('broken-db-row', 'nulldb', 'No database', NULL, 'active', now()),
                    ('nameless-row', 'noname', NULL, 'tenant_never_created', 'dropped', now())"#,
    );
    // list: every row shown, the broken one named by id and column.
    let run = env.run(&["tenant", "list", "--output", "json"]).code(1);
    let rows = run.json()["tenants"].clone();
    assert_eq!(rows.as_array().map(Vec::len), Some(4), "{rows}");
    assert!(run.stderr.contains("broken-db-row"), "{}", run.stderr);
    assert!(run.stderr.contains("\"dbName\" is NULL"), "{}", run.stderr);
    // migrate --all: the others migrate, the broken row fails by itself.
    let run = env
        .run(&["tenant", "migrate", "--all", "--output", "json"])
        .code(1);
    let report = run.json();
    assert_eq!(report["summary"]["ok"], 2, "{report}");
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    let broken = crate::support::find(&report, "nulldb");
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken-db-row") && e.contains("dbName")),
        "{broken}"
    );
    // Named by id, the good tenants are unaffected.
    env.run(&["tenant", "status", &env.slug("good")]).ok();
    // doctor reports it.
    let run = env.run(&["doctor", "--output", "json"]).code(1);
    let findings = run.json()["findings"].clone();
    assert!(
        findings
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["kind"] == "invalid_db_name" && f["slug"] == "nulldb"),
        "{findings}"
    );
}

#[test]
fn concurrent_creates_of_one_slug_wait_for_each_other_and_never_mark_failed() {
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    // A migration slow enough that every run starts while the first works.
    let dir = env.workdir.path().join("slow");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("20250101000001_slow.sql"),
        "SELECT pg_sleep(2); CREATE TABLE items (id int);",
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");
    for round in 0..2 {
        let slug = env.slug(&format!("race{round}"));
        let children: Vec<_> = (0..4)
            .map(|_| {
                env.spawn(&[
                    "tenant",
                    "create",
                    &slug,
                    "--output",
                    "json",
                    "--tenant-migrations",
                    dir,
                ])
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| Run::from(c.wait_with_output().expect("wait")))
            .collect();
        // One run does the work; the others wait for it and report its
        // result, or (started after it finished) find the tenant exists.
        // None fails otherwise, and none marks the company failed.
        let worked = runs
            .iter()
            .filter(|r| r.code == 0 && r.json()["concurrent"] == false)
            .count();
        assert_eq!(worked, 1, "exactly one run did the work");
        for run in &runs {
            let fine = (run.code == 0 && run.json()["concurrent"].is_boolean())
                || (run.code == 1 && run.stderr.contains("already exists (status active"));
            assert!(fine, "{}", run.all());
        }
        assert_eq!(env.status_of(&slug), ["active"]);
        assert!(env.database_exists(&env.db(&format!("race{round}"))));
    }
}

#[test]
fn a_shard_never_filters_tenants_named_explicitly() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b", "c", "d"]);
    let slugs: Vec<String> = ["a", "b", "c", "d"].iter().map(|n| env.slug(n)).collect();
    env.run(&["tenant", "settings", "set", "--all", "theme", "dark"])
        .ok();
    for shard in ["0/2", "1/2", "3/4"] {
        for slug in &slugs {
            let run = env
                .run_with(&["tenant", "settings", "get", slug, "theme"], |c| {
                    c.env("TENANTCTL_SHARD", shard);
                })
                .ok();
            assert_eq!(run.stdout.trim(), "\"dark\"", "{shard} {slug}");
        }
        let mut args = vec!["tenant", "status", "--output", "json", "--shard", shard];
        args.extend(slugs.iter().map(String::as_str));
        let report = env.run(&args).ok().json();
        assert_eq!(report["summary"]["ok"], 4, "{shard}: {report}");
    }
    // --all is still split: the shards of 2 add up to the whole, once each.
    let mut seen = Vec::new();
    for shard in ["0/2", "1/2"] {
        let report = env
            .run(&[
                "tenant", "status", "--all", "--output", "json", "--shard", shard,
            ])
            .ok()
            .json();
        for t in report["tenants"].as_array().expect("tenants") {
            seen.push(t["slug"].as_str().expect("slug").to_owned());
        }
    }
    seen.sort();
    let mut expected = slugs.clone();
    expected.sort();
    assert_eq!(seen, expected);
}

/// Starts the command, reads one line of stdout, closes the pipe, and
/// returns how the process ended.
fn read_one_line_then_close(env: &TestEnv, args: &[&str]) -> (String, Run) {
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    {
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read a line");
    }
    let out = child.wait_with_output().expect("wait");
    (first, Run::from(out))
}

#[test]
fn a_closed_stdout_never_panics_and_exits_141() {
    let env = TestEnv::new();
    let names: Vec<String> = (0..12).map(|n| format!("p{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    env.with_tenants(&names);
    let (first, run) = read_one_line_then_close(
        &env,
        &[
            "tenant",
            "status",
            "--all",
            "--output",
            "jsonl",
            "--concurrency",
            "1",
        ],
    );
    assert!(first.starts_with('{'), "{first}");
    assert_eq!(run.code, 141, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    let (first, run) = read_one_line_then_close(
        &env,
        &[
            "tenant",
            "exec",
            &env.slug("p0"),
            "--",
            "seq",
            "1",
            "200000",
        ],
    );
    assert!(first.ends_with("| 1\n"), "{first}");
    assert_eq!(run.code, 141, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn control_characters_from_the_master_are_escaped() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    env.exec(
        &env.master,
        "INSERT INTO \"Company\" (id, slug, name, \"dbName\", status, \"updatedAt\")
           VALUES ('evil-row', E'evil\\x1b[2J', E'Evil\\nforged line\\r', 'tenant_not_there', 'active', now())",
    );
    let run = env.run(&["tenant", "list"]).ok();
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
    assert!(!run.stdout.contains('\r'), "{:?}", run.stdout);
    assert!(run.stdout.contains("evil\\u{1b}[2J"), "{}", run.stdout);
    assert!(run.stdout.contains("Evil\\nforged line"), "{}", run.stdout);
    let run = env.run(&["tenant", "migrate", "--all"]).code(1);
    assert!(!run.all().contains('\u{1b}'), "{:?}", run.all());
}

#[test]
fn json_output_reports_an_early_failure_as_json() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let run = env
        .run(&["tenant", "migrate", "nosuch-tenant", "--output", "json"])
        .code(1);
    let json = run.json();
    assert_eq!(json["kind"], "failure");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("nosuch-tenant")),
        "{json}"
    );
    let run = env
        .run_with(&["tenant", "list", "--output", "json"], |c| {
            c.env_remove("POSTGRES_BASE_URL");
        })
        .code(2);
    assert_eq!(run.json()["kind"], "usage");
    // A command line clap refuses, with the password in the environment.
    let run = env
        .run(&[
            "tenant", "migrate", "--all", "--output", "json", "--shard", "5/2",
        ])
        .code(2);
    assert_eq!(run.json()["kind"], "usage", "{}", run.all());
    let password = base_password().expect("the test server needs a password");
    assert!(!run.all().contains(&password), "{}", run.all());
}

#[test]
fn doctor_knows_another_master_from_an_orphan_and_a_row_naming_the_master() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    // A second master on the same server (a staging copy, say).
    let other_master = format!("{}_staging", env.master);
    let run = env.run_with(&["master", "migrate"], |c| {
        c.env("MASTER_DATABASE_URL", env.db_url(&other_master));
    });
    assert_eq!(run.code, 0, "{}", run.all());
    env.exec(
        &env.master,
        &format!(
            "INSERT INTO \"Company\" (id, slug, name, \"dbName\", status, \"updatedAt\")
               VALUES ('m-row', 'points-at-master', 'x', '{}', 'active', now())",
            env.master
        ),
    );
    let run = env.run(&["doctor", "--output", "json"]).code(1);
    let findings = run.json()["findings"].clone();
    let findings = findings.as_array().expect("findings");
    assert!(
        !findings
            .iter()
            .any(|f| f["db_name"] == other_master.as_str()),
        "{findings:?}"
    );
    let row = findings
        .iter()
        .find(|f| f["slug"] == "points-at-master")
        .expect("the row naming the master is reported");
    assert_eq!(row["kind"], "invalid_db_name", "{row}");
    assert!(
        row["detail"].as_str().is_some_and(|d| d.contains("master")),
        "{row}"
    );
}

#[test]
fn the_postgres_database_is_needed_only_to_create_or_drop_and_template1_stands_in() {
    let env = TestEnv::new();
    let server = crate::support::server::PrivateServer::start(&env.token);
    server.exec(
        "postgres",
        "CREATE ROLE app LOGIN CREATEDB PASSWORD 'app-Pw-1'; REVOKE CONNECT ON DATABASE postgres FROM PUBLIC",
    );
    let base = server.url_as("app", "app-Pw-1");
    let as_app = |args: &[&str]| {
        env.run_with(args, |c| {
            c.env("POSTGRES_BASE_URL", &base)
                .env("MASTER_DATABASE_URL", format!("{base}/master"));
        })
    };
    // CONNECT on postgres revoked: template1 stands in for CREATE DATABASE.
    as_app(&["master", "migrate"]).ok();
    as_app(&["tenant", "create", "acme"]).ok();
    // Commands that create nothing never need either.
    server.exec(
        "postgres",
        "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC",
    );
    as_app(&["master", "migrate"]).ok();
    as_app(&["tenant", "migrate", "--all"]).ok();
    let run = as_app(&["doctor", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    // Creating one needs neither either: the master lives on this server
    // as the same role, so its own connection checks the name and clones
    // the template there.
    let run = as_app(&["tenant", "create", "globex"]).ok();
    assert!(!run.all().contains("app-Pw-1"), "{}", run.all());
    // (The set's template was built by the first create, while template1
    // could still be reached.)
}

#[test]
fn the_base_urls_query_parameters_reach_the_connection() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    let show = |base: &str| {
        env.run_with(
            &[
                "tenant",
                "sql",
                &slug,
                "-c",
                "SELECT current_setting('application_name')",
                "--output",
                "json",
            ],
            |c| {
                c.env("POSTGRES_BASE_URL", base);
            },
        )
        .ok()
        .json()["tenants"][0]["result_sets"][0]["rows"][0][0]
            .clone()
    };
    // A tenant session is named `tenantctl <pid>-<n>`, to be found by
    // that name alone when an interrupt cancels it.
    let own = show(&env.base_url);
    let own = own.as_str().unwrap_or_default();
    assert!(
        own.strip_prefix("tenantctl ")
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, n)| pid.parse::<u32>().is_ok() && n.parse::<u64>().is_ok()),
        "{own}"
    );
    assert_eq!(
        show(&format!("{}/?application_name=deploy-42", env.base_url)),
        "deploy-42"
    );
}
