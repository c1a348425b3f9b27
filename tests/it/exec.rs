//! `tenant exec`: each child's environment, its output captured and the
//! password masked in every spelling, timeouts, and `--interactive`.

use std::process::Command;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::support::{RoleUrls, Run, TestEnv, base_password, find, role_with_password};

#[test]
fn exec_gives_each_child_its_database_url_in_the_environment_only() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    let script = r#"tr '\0' ' ' < /proc/$$/cmdline; echo; psql "$DATABASE_URL" -Atc 'select current_database()'; echo "$TENANT_SLUG|$TENANT_DB_NAME|$TENANT_ID|${POSTGRES_BASE_URL:-unset}"; echo to-stderr >&2"#;
    let run = env
        .run(&[
            "tenant", "exec", "--all", "--output", "json", "--", "sh", "-c", script,
        ])
        .ok();
    let report = run.json();
    for (name, slug) in ["a", "b"].iter().zip(&slugs) {
        let tenant = find(&report, slug);
        let stdout = tenant["stdout"].as_str().expect("stdout");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[1],
            env.db(name),
            "psql reached the tenant's own database: {stdout}"
        );
        assert_eq!(
            lines[2],
            format!(
                "{slug}|{}|{}|unset",
                env.db(name),
                tenant["id"].as_str().expect("id")
            ),
            "tenant variables set; the server root's URL not passed on"
        );
        assert_eq!(tenant["stderr"], "to-stderr\n");
        assert_eq!(tenant["exit_code"], 0);
        if let Some(password) = base_password() {
            assert!(
                !lines[0].contains(&password),
                "password in the child's argv: {}",
                lines[0]
            );
        }
    }
    if let Some(password) = base_password() {
        assert!(!run.all().contains(&password));
    }

    // Table mode streams each child's lines prefixed with its slug.
    let run = env
        .run(&[
            "tenant",
            "exec",
            &slugs[0],
            "--concurrency",
            "2",
            "--",
            "sh",
            "-c",
            "echo hello; echo oops >&2",
        ])
        .ok();
    assert!(
        run.stdout.contains(&format!("{} | hello", slugs[0])),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(&format!("{} | oops", slugs[0])),
        "{}",
        run.stderr
    );
}

#[test]
fn exec_failure_and_timeout_fail_only_their_tenant() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    let script = format!(r#"test "$TENANT_SLUG" != "{}""#, slugs[1]);
    let run = env.run(&[
        "tenant", "exec", "--all", "--output", "json", "--", "sh", "-c", &script,
    ]);
    assert_eq!(run.code, 1);
    let report = run.json();
    assert_eq!(
        report["summary"],
        serde_json::json!({"ok": 1, "failed": 1, "skipped": 0})
    );
    assert_eq!(find(&report, &slugs[1])["exit_code"], 1);
    assert_eq!(find(&report, &slugs[0])["status"], "ok");

    // The shell's own child (the sleep) must die with it, and what was
    // printed before the kill is kept.
    let marker = format!("{}.{}", 40 + std::process::id() % 50, env.token.len());
    let script = format!("echo started; sleep {marker}; echo never");
    let started = Instant::now();
    let run = env.run(&[
        "tenant",
        "exec",
        &slugs[0],
        "--timeout",
        "500ms",
        "--output",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(run.code, 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the child was not killed in time"
    );
    let tenant = run.json()["tenants"][0].clone();
    assert!(
        tenant["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{tenant}"
    );
    assert_eq!(tenant["stdout"], "started\n");
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&format!("sleep {marker}")))
        .collect();
    assert!(
        survivors.is_empty(),
        "grandchild survived the timeout: {survivors:?}"
    );
}

#[test]
fn exec_output_never_shows_the_password() {
    let Some(password) = base_password() else {
        return; // trust/peer auth: nothing to leak
    };
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    // A tool that echoes its connection string, as failing ORMs do.
    let script = r#"echo "connecting to $DATABASE_URL"; echo "failed: $DATABASE_URL" >&2; exit 3"#;
    // Concurrency 1 and one tenant, but no terminal (a CI log): the output
    // still goes through tenantctl and is redacted.
    for (output, concurrency) in [("table", "4"), ("json", "4"), ("table", "1")] {
        let run = env.run(&[
            "tenant",
            "exec",
            &slugs[0],
            "--output",
            output,
            "--concurrency",
            concurrency,
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(run.code, 1);
        assert!(
            !run.all().contains(&password),
            "password leaked:\n{}",
            run.all()
        );
        assert!(run.all().contains(&env.db("a")), "{}", run.all());
        assert!(run.all().contains(":***@"), "{}", run.all());
    }
}

#[test]
fn exec_keeps_output_when_a_background_process_holds_the_pipes() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    let started = Instant::now();
    let run = env
        .run(&[
            "tenant",
            "exec",
            &slugs[0],
            "--output",
            "json",
            "--",
            "sh",
            "-c",
            "echo hello; sleep 6 &",
        ])
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the background process"
    );
    assert_eq!(run.json()["tenants"][0]["stdout"], "hello\n");
}

#[test]
fn exec_redacts_even_a_short_password_inside_a_url() {
    let env = TestEnv::new();
    let role = format!("short_{}", env.token);
    env.exec(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD 'p9'"),
    );
    let mut url = url::Url::parse(&env.base_url).expect("base url");
    url.set_username(&role).expect("user");
    url.set_password(Some("p9")).expect("password");
    let base = url.to_string();
    let mut master = url.clone();
    master.set_path(&format!("/{}", env.master));
    let configure = |c: &mut std::process::Command| {
        c.env("POSTGRES_BASE_URL", &base)
            .env("MASTER_DATABASE_URL", master.as_str());
    };
    assert_eq!(env.run_with(&["master", "migrate"], configure).code, 0);
    let slug = env.slug("short");
    assert_eq!(
        env.run_with(&["tenant", "create", &slug], configure).code,
        0
    );
    let run = env.run_with(
        &[
            "tenant",
            "exec",
            &slug,
            "--",
            "sh",
            "-c",
            "echo \"$DATABASE_URL\"",
        ],
        configure,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(":***@") && !run.stdout.contains(":p9@"),
        "{}",
        run.stdout
    );
}

/// `master migrate` and `tenant create <slug(name)>` as that role.
fn tenant_as(env: &TestEnv, urls: &RoleUrls, name: &str) -> String {
    env.run_with(&["master", "migrate"], urls.configure()).ok();
    let slug = env.slug(name);
    env.run_with(&["tenant", "create", &slug], urls.configure())
        .ok();
    slug
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), stdin,
/// stdout and stderr all the terminal; what it printed comes back in
/// `stdout`, with `\r\n` line ends. Exit status 124 means it timed out.
fn in_pty(env: &TestEnv, args: &[&str], configure: impl FnOnce(&mut Command)) -> Run {
    let binary = env.cmd();
    let mut line = shell_quote(env!("CARGO_BIN_EXE_tenantctl"));
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    // A bounded wait: a child stuck on the terminal (a pager, a prompt)
    // fails the test instead of hanging it.
    let mut cmd = Command::new("timeout");
    for (key, value) in binary.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.current_dir(env.workdir.path())
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .args(["-k", "5", "60", "script", "-qec", &line, "/dev/null"]);
    configure(&mut cmd);
    Run::from(
        cmd.output()
            .expect("run script (util-linux) for a pseudo-terminal"),
    )
}

/// RFC 3986's reserved characters, space and `%`: a password "partially
/// encoded" has only these encoded, and non-ASCII left as it is.
const RESERVED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b':')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'[')
    .add(b']')
    .add(b'@')
    .add(b'!')
    .add(b'$')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b';')
    .add(b'=');

/// `%2F` -> `%2f`.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|c| c.to_ascii_lowercase()));
        }
    }
    out
}

#[test]
fn exec_child_reaches_its_tenant_through_pg_variables_not_the_operators() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    let user = url::Url::parse(&env.base_url)
        .expect("base url")
        .username()
        .to_owned();
    let user = percent_encoding::percent_decode_str(&user)
        .decode_utf8_lossy()
        .into_owned();
    let script = r#"psql -XtAc 'select current_database(), current_user'; test "$PGPASSWORD" != operator-password && echo not-the-operators-password; echo "${PGAPPNAME:-unset}|${PGSERVICE:-unset}|${PGOPTIONS:-unset}|$PGDATABASE""#;
    let run = env
        .run_with(
            &[
                "tenant", "exec", &slugs[0], "--output", "json", "--", "sh", "-c", script,
            ],
            |c| {
                // The operator's own libpq settings, pointing elsewhere.
                c.env("PGHOST", "bogus.invalid")
                    .env("PGPORT", "1")
                    .env("PGDATABASE", "nowhere")
                    .env("PGUSER", "nobody")
                    .env("PGPASSWORD", "operator-password")
                    .env("PGAPPNAME", "operator")
                    .env("PGSERVICE", "operator-service");
            },
        )
        .ok();
    let tenant = run.json()["tenants"][0].clone();
    assert_eq!(
        tenant["stdout"],
        format!(
            "{}|{user}\nnot-the-operators-password\nunset|unset|unset|{}\n",
            env.db("a"),
            env.db("a")
        ),
        "{tenant}"
    );

    // Query parameters with a libpq variable are passed on decoded.
    let base = format!(
        "{}/?sslmode=prefer&application_name=from%20the%20url&connect_timeout=9",
        env.base_url
    );
    let run = env
        .run_with(
            &[
                "tenant",
                "exec",
                &slugs[0],
                "--output",
                "json",
                "--",
                "sh",
                "-c",
                r#"psql -XtAc "select current_setting('application_name')"; echo "$PGSSLMODE|$PGCONNECT_TIMEOUT""#,
            ],
            |c| {
                c.env("POSTGRES_BASE_URL", &base);
            },
        )
        .ok();
    assert_eq!(
        run.json()["tenants"][0]["stdout"],
        "from the url\nprefer|9\n"
    );
}

#[test]
fn exec_database_url_is_postgresql_whatever_the_base_url_spelling() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    let rest = env
        .base_url
        .split_once("://")
        .expect("base url has a scheme")
        .1;
    let base = format!("postgres://{rest}");
    let run = env
        .run_with(
            &[
                "tenant",
                "exec",
                &slugs[0],
                "--output",
                "json",
                "--",
                "sh",
                "-c",
                r#"echo "$DATABASE_URL"; psql -XtAc 'select current_database()' "$DATABASE_URL""#,
            ],
            |c| {
                c.env("POSTGRES_BASE_URL", &base).env(
                    "MASTER_DATABASE_URL",
                    format!("postgres://{rest}/{}", env.master),
                );
            },
        )
        .ok();
    let stdout = run.json()["tenants"][0]["stdout"]
        .as_str()
        .expect("stdout")
        .to_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("postgresql://") && lines[0].ends_with(&format!("/{}", env.db("a"))),
        "{stdout}"
    );
    assert_eq!(lines[1], env.db("a"), "{stdout}");
}

#[test]
fn exec_never_shows_the_password_in_any_spelling() {
    let env = TestEnv::new();
    let password = "s3cret p@ss:w/rd?#%41+ Grüße";
    let urls = role_with_password(&env, "spell", password);
    let slug = tenant_as(&env, &urls, "spell");

    let full = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
    let partial = utf8_percent_encode(password, RESERVED).to_string();
    let form: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
    let spellings = [
        password.to_owned(),
        lower_hex(&full),
        full.clone(),
        lower_hex(&partial),
        partial.clone(),
        form.clone(),
        password.replace(' ', "+"),
    ];
    // What a child may print, one spelling per line, each labelled.
    let said = [
        format!("upper: {full}"),
        format!("lower: {}", lower_hex(&full)),
        format!("partial: {partial}"),
        format!("form: {form}"),
        format!("plus: {}", password.replace(' ', "+")),
        format!("other-url: mysql://someone:{full}@elsewhere:3306/x"),
        format!(
            "other-url-lower: redis://:{}@cache:6379/0",
            lower_hex(&partial)
        ),
        format!("conn: host=elsewhere password='{password}' user=x"),
        format!(
            "json: {}",
            serde_json::json!({ "user": "x", "password": password })
        ),
    ];
    std::fs::write(env.workdir.path().join("said.txt"), said.join("\n") + "\n").expect("write");
    let script = r#"cat said.txt; echo "env: $PGPASSWORD"; echo "PGPASSWORD=$PGPASSWORD"; echo "url: $DATABASE_URL"; printf '%s%s\n' "$(head -c 100000 /dev/zero | tr '\0' x)" "$DATABASE_URL"; cat said.txt >&2; env | grep PASS >&2; printf 'last: %s' "$PGPASSWORD""#;
    for output in ["table", "json", "jsonl"] {
        let run = env.run_with(
            &[
                "tenant", "exec", &slug, "--output", output, "--", "sh", "-c", script,
            ],
            urls.configure(),
        );
        assert_eq!(run.code, 0, "{output}: {}", run.stderr);
        for spelling in &spellings {
            assert!(
                !run.all().contains(spelling.as_str()),
                "{output}: the password leaked as {spelling:?}"
            );
        }
        for label in [
            "upper: ***",
            "lower: ***",
            "partial: ***",
            "form: ***",
            "plus: ***",
            "other-url: mysql://someone:***@elsewhere:3306/x",
            "other-url-lower: redis://:***@cache:6379/0",
            "conn: host=elsewhere password='***' user=x",
            "env: ***",
            "PGPASSWORD=***",
            "last: ***",
        ] {
            assert!(
                run.all().contains(label),
                "{output}: {label:?} missing:\n{}",
                run.all()
            );
        }
        let url = format!("postgresql://{}:***@", urls.role);
        assert!(run.all().contains(&format!("url: {url}")), "{output}");
        assert!(run.all().contains(&format!("xx{url}")), "{output}");
        let json = if output == "table" {
            r#"json: {"user":"x","password":"***"}"#
        } else {
            r#"json: {\"user\":\"x\",\"password\":\"***\"}"#
        };
        assert!(run.all().contains(json), "{output}: {}", run.all());
    }
}

#[test]
fn exec_short_common_password_is_masked_in_urls_but_not_in_words() {
    let env = TestEnv::new();
    let urls = role_with_password(&env, "common", "tenant");
    let slug = tenant_as(&env, &urls, "common");
    let script = r#"echo "tenant $TENANT_SLUG is ready in $TENANT_DB_NAME"; echo "url: $DATABASE_URL"; echo "PGPASSWORD=$PGPASSWORD"; echo "{\"password\": \"$PGPASSWORD\"}"; echo "the tenant password is $PGPASSWORD""#;
    for output in ["table", "json"] {
        let run = env
            .run_with(
                &[
                    "tenant", "exec", &slug, "--output", output, "--", "sh", "-c", script,
                ],
                urls.configure(),
            )
            .ok();
        let all = run.all();
        for expected in [
            format!("tenant {slug} is ready in {}", env.db("common")),
            format!("url: postgresql://{}:***@", urls.role),
            "PGPASSWORD=***".to_owned(),
            "the tenant password is tenant".to_owned(),
        ] {
            assert!(all.contains(&expected), "{output}: {expected:?} in\n{all}");
        }
        assert!(!all.contains(":tenant@"), "{output}: {all}");
        assert!(!all.contains("PGPASSWORD=tenant"), "{output}: {all}");
        let json = if output == "table" {
            r#"{"password": "***"}"#
        } else {
            r#"{\"password\": \"***\"}"#
        };
        assert!(all.contains(json), "{output}: {all}");
    }
}

#[test]
fn exec_interactive_is_refused_without_a_terminal_or_with_two_tenants() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    let run = env
        .run(&[
            "tenant",
            "exec",
            &slugs[0],
            "--interactive",
            "--",
            "sh",
            "-c",
            "echo ran",
        ])
        .code(2);
    assert!(run.stderr.contains("terminal"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!run.stdout.contains("ran"), "{}", run.stdout);

    // On a terminal, but two tenants.
    let run = in_pty(
        &env,
        &[
            "tenant",
            "exec",
            "--all",
            "--interactive",
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
        |_| {},
    )
    .code(2);
    assert!(
        run.stdout.contains("exactly one tenant") && run.stdout.contains("has 2"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.trim().lines().count(), 1, "{}", run.stdout);
    assert!(!run.stdout.contains("ran"), "{}", run.stdout);
}

#[test]
fn exec_interactive_gives_the_child_the_terminal_and_no_progress_bar() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    let script = r#"sleep 0.3; if test -t 0 && test -t 1 && test -t 2; then echo child-has-the-terminal; fi; psql -XtA -P pager=off -c 'select current_database()'"#;
    let run = in_pty(
        &env,
        &[
            "tenant",
            "exec",
            &slugs[0],
            "--interactive",
            "--",
            "sh",
            "-c",
            script,
        ],
        |_| {},
    )
    .ok();
    assert!(
        run.stdout.contains("child-has-the-terminal\r\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&env.db("a")), "{}", run.stdout);
    // Straight to the terminal, not through tenantctl's prefixing.
    assert!(!run.stdout.contains(" | child-has"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("tenants"),
        "a progress bar drew:\n{}",
        run.stdout
    );
}

#[test]
fn exec_without_interactive_on_a_terminal_captures_and_redacts() {
    let env = TestEnv::new();
    let password = "pty-s3cret with spaces/and:colons";
    let urls = role_with_password(&env, "pty", password);
    let slug = tenant_as(&env, &urls, "pty");
    let script = r#"if test -t 1; then echo child-has-the-terminal; else echo child-is-captured; fi; echo "url: $DATABASE_URL"; echo "pw: $PGPASSWORD""#;
    // One tenant, concurrency 1, a terminal on every end: still captured.
    let run = in_pty(
        &env,
        &[
            "tenant",
            "exec",
            &slug,
            "--concurrency",
            "1",
            "--",
            "sh",
            "-c",
            script,
        ],
        urls.configure(),
    )
    .ok();
    let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
    assert!(
        !run.stdout.contains(password) && !run.stdout.contains(&encoded),
        "the password leaked on the terminal"
    );
    assert!(
        run.stdout.contains(&format!("{slug} | child-is-captured")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("{slug} | pw: ***")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("{slug} | url: postgresql://{}:***@", urls.role)),
        "{}",
        run.stdout
    );
}
