//! Every secret tenantctl holds, not only the one in use (issue 15, items 4
//! and 5): a child of `tenant exec` (and `tenant psql`) inherits no other
//! server's URL, whichever way it was configured (`POSTGRES_BASE_URL_<NAME>`,
//! `url_env` in tenantctl.toml, `MASTER_DATABASE_URL`, a `.env` file); every
//! configured server's password is masked in what children print, in every
//! spelling, JSON escapes included; and tenantctl's own messages name no
//! server's password.

use std::path::Path;
use std::process::Command;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::support::{RoleUrls, Run, TestEnv, role_with_password};

/// The tenant's own password (its server's role): non-ASCII, quotes, what
/// Go escapes, a backslash, a literal `%41` and an emoji.
const TENANT_PW: &str = "S\u{e9}cr\u{eb}t p%41ss\"w'rd&<>\\\u{1F600}";
/// The master's role (its own URL, `MASTER_DATABASE_URL`).
const MASTER_PW: &str = "m\u{e4}ster-\"pw\"&<\\>-\u{1F511}";
/// Configured but unreachable servers: from `POSTGRES_BASE_URL_EU2`, from
/// `url_env = "EU3_DB_URL"`, and from `POSTGRES_BASE_URL_EU4` in a `.env`.
const EU2_PW: &str = "eu2-P\u{e4}sswort&<>\"\\\u{1F600}";
const EU3_PW: &str = "eu3 s\u{eb}cret/\u{fc}+\"x<y";
const EU4_PW: &str = "eu4-dotenv-pw-\u{df}&\"'";

/// What RFC 3986 reserves, plus space and `%`: a "partially encoded"
/// password has only these encoded, and non-ASCII left as it is.
const RESERVED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b':')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'@')
    .add(b'&')
    .add(b'\'')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'\\');

fn encoded(password: &str) -> String {
    utf8_percent_encode(password, NON_ALPHANUMERIC).to_string()
}

/// JSON string contents: `escape` says which characters become `\uXXXX`
/// (besides control characters); `"` and `\` are always escaped.
fn json_escaped(password: &str, escape: impl Fn(char) -> bool, upper: bool) -> String {
    let mut out = String::new();
    for c in password.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' || escape(c) => {
                let mut units = [0; 2];
                for unit in c.encode_utf16(&mut units).iter() {
                    out.push_str(&if upper {
                        format!("\\u{unit:04X}")
                    } else {
                        format!("\\u{unit:04x}")
                    });
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Every way a program may print a password, labelled.
fn spellings(password: &str) -> Vec<(&'static str, String)> {
    let full = encoded(password);
    let form: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
    let serde = serde_json::to_string(password).expect("json");
    vec![
        ("plain", password.to_owned()),
        ("upper", full.clone()),
        ("lower", lower_hex(&full)),
        (
            "partial",
            utf8_percent_encode(password, RESERVED).to_string(),
        ),
        ("form", form),
        ("serde", serde[1..serde.len() - 1].to_owned()),
        ("python", json_escaped(password, |c| !c.is_ascii(), false)),
        ("java", json_escaped(password, |c| !c.is_ascii(), true)),
        (
            "go",
            json_escaped(password, |c| matches!(c, '&' | '<' | '>'), false),
        ),
        ("all", json_escaped(password, |_| true, false)),
    ]
}

fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        out.push_str(&rest[i..i + 3].to_ascii_lowercase());
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// A master and one tenant, each reached as a role of its own with a
/// hostile password, plus three servers that are configured but never
/// reached: eu2 from the environment, eu3 through `url_env`, eu4 from a
/// `.env` file in the working directory.
struct Setup {
    env: TestEnv,
    tenant: RoleUrls,
    master: RoleUrls,
    slug: String,
}

impl Setup {
    fn new(name: &str) -> Self {
        let env = TestEnv::new();
        let tenant = role_with_password(&env, &format!("{name}t"), TENANT_PW);
        let master = role_with_password(&env, &format!("{name}m"), MASTER_PW);
        let setup = Self {
            slug: env.slug(name),
            env,
            tenant,
            master,
        };
        // The tenant is made before the other servers exist, so that
        // placement never picks one of them.
        setup.plain(&["master", "migrate"]).ok();
        setup.plain(&["tenant", "create", &setup.slug]).ok();
        std::fs::write(
            setup.env.workdir.path().join("tenantctl.toml"),
            "[servers.eu3]\nurl_env = \"EU3_DB_URL\"\naccepts_new = false\n",
        )
        .expect("write tenantctl.toml");
        std::fs::write(
            setup.env.workdir.path().join(".env"),
            format!(
                "POSTGRES_BASE_URL_EU4=postgresql://eu4user:{}@10.9.9.8:5432\n",
                encoded(EU4_PW)
            ),
        )
        .expect("write .env");
        setup
    }

    fn base(&self, cmd: &mut Command) {
        cmd.env("POSTGRES_BASE_URL", &self.tenant.base)
            .env("MASTER_DATABASE_URL", &self.master.master);
    }

    /// Before the other servers are configured.
    fn plain(&self, args: &[&str]) -> Run {
        self.env.run_with(args, |cmd| self.base(cmd))
    }

    /// With every server configured, and more of the operator's
    /// environment a child must not see.
    fn run(&self, args: &[&str]) -> Run {
        self.env.run_with(args, |cmd| {
            self.base(cmd);
            cmd.env(
                "POSTGRES_BASE_URL_EU2",
                format!("postgresql://eu2user:{}@10.9.9.9:5432", encoded(EU2_PW)),
            )
            .env(
                "EU3_DB_URL",
                format!(
                    "postgres://10.9.9.7:5432/?user=eu3user&password={}",
                    encoded(EU3_PW)
                ),
            )
            .env("OPS_EU2_PASSWORD", EU2_PW)
            .env("TENANTCTL_CONNECT_TIMEOUT", "2s")
            .env("PGSERVICE", "operators-own");
        })
    }

    fn others(&self) -> [(&'static str, &'static str); 4] {
        [
            ("master", MASTER_PW),
            ("eu2", EU2_PW),
            ("eu3", EU3_PW),
            ("eu4", EU4_PW),
        ]
    }

    fn all_passwords(&self) -> [(&'static str, &'static str); 5] {
        let [a, b, c, d] = self.others();
        [("tenant", TENANT_PW), a, b, c, d]
    }
}

/// Every JSON string in the output (a JSON document or JSON lines),
/// decoded: what a reader of the report gets.
fn decoded_strings(stdout: &str) -> String {
    fn collect(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    match serde_json::from_str::<serde_json::Value>(stdout) {
        Ok(value) => collect(&value, &mut out),
        Err(_) => {
            for line in stdout.lines() {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON lines ({e}): {line}"));
                collect(&value, &mut out);
            }
        }
    }
    out
}

/// Fails if any spelling of any of these passwords is in the text.
#[track_caller]
fn assert_no_password(passwords: &[(&str, &str)], what: &str, text: &str) {
    for (server, password) in passwords {
        for (how, spelling) in spellings(password) {
            assert!(
                !text.contains(&spelling),
                "{what}: {server}'s password ({how}: {spelling:?}) shows in:\n{text}"
            );
        }
    }
}

/// The variables `env` printed with a value: a withheld variable other
/// than libpq's is set empty (a dotenv loader would fill an unset one back
/// from the project's `.env`), which gives the child nothing.
fn variable_names(env_output: &str) -> Vec<&str> {
    env_output
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn exec_children_inherit_no_other_servers_variables() {
    let s = Setup::new("envs");
    for output in ["table", "json"] {
        let run = s
            .run(&["tenant", "exec", &s.slug, "--output", output, "--", "env"])
            .ok();
        let stdout = if output == "json" {
            decoded_strings(&run.stdout)
        } else {
            run.stdout
                .lines()
                .filter_map(|l| l.split_once(" | ").map(|(_, rest)| rest))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let names = variable_names(&stdout);
        for gone in [
            "POSTGRES_BASE_URL",
            "POSTGRES_BASE_URL_EU2",
            "POSTGRES_BASE_URL_EU4",
            "EU3_DB_URL",
            "MASTER_DATABASE_URL",
            "OPS_EU2_PASSWORD",
            "TENANTCTL_CONNECT_TIMEOUT",
            "PGSERVICE",
        ] {
            assert!(
                !names.contains(&gone),
                "{output}: the child got {gone}:\n{stdout}"
            );
        }
        // Its own connection is all there.
        for own in [
            "DATABASE_URL",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "TENANT_SLUG",
        ] {
            assert!(names.contains(&own), "{output}: no {own}:\n{stdout}");
        }
        assert!(
            stdout.contains(&format!("PGDATABASE={}", s.env.db("envs"))),
            "{stdout}"
        );
        assert!(stdout.contains("PGPASSWORD=***"), "{stdout}");
        assert_no_password(&s.all_passwords(), output, &run.all());
        assert_no_password(&s.all_passwords(), output, &stdout);
    }
}

/// A `psql` first on the PATH that prints its environment instead.
fn fake_psql(dir: &Path) -> String {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let psql = bin.join("psql");
    std::fs::write(&psql, "#!/bin/sh\nenv\n").expect("write psql");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&psql, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn tenant_psql_inherits_no_other_servers_variables() {
    let s = Setup::new("psql");
    let path = fake_psql(s.env.workdir.path());
    let run = s
        .env
        .run_with(&["tenant", "psql", &s.slug], |cmd| {
            s.base(cmd);
            cmd.env(
                "POSTGRES_BASE_URL_EU2",
                format!("postgresql://eu2user:{}@10.9.9.9:5432", encoded(EU2_PW)),
            )
            .env(
                "EU3_DB_URL",
                format!("postgresql://eu3user:{}@10.9.9.7", encoded(EU3_PW)),
            )
            .env("PATH", &path);
        })
        .ok();
    let names = variable_names(&run.stdout);
    for gone in [
        "POSTGRES_BASE_URL",
        "POSTGRES_BASE_URL_EU2",
        "POSTGRES_BASE_URL_EU4",
        "EU3_DB_URL",
        "MASTER_DATABASE_URL",
    ] {
        assert!(!names.contains(&gone), "psql got {gone}:\n{}", run.stdout);
    }
    assert!(names.contains(&"PGPASSWORD"), "{}", run.stdout);
    assert_no_password(&s.others(), "psql", &run.all());
}

#[test]
fn exec_masks_every_servers_password_in_every_spelling() {
    let s = Setup::new("said");
    // The child learns the other passwords from a file (it inherits none
    // of them) and prints each in every spelling, to stdout and stderr,
    // then fails so that the failure lines are printed too.
    let mut said = Vec::new();
    for (server, password) in s.all_passwords() {
        for (how, spelling) in spellings(password) {
            said.push(format!("{server} {how}: {spelling}"));
        }
        said.push(format!(
            "{server} url: postgresql://someone:{}@elsewhere:5432/x",
            encoded(password)
        ));
        said.push(format!(
            "{server} key: {}",
            serde_json::json!({ "password": password })
        ));
    }
    std::fs::write(
        s.env.workdir.path().join("said.txt"),
        said.join("\n") + "\n",
    )
    .expect("write");
    let script = "cat said.txt; cat said.txt >&2; exit 3";
    for output in ["table", "json", "jsonl"] {
        let run = s
            .run(&[
                "tenant", "exec", &s.slug, "--output", output, "--", "sh", "-c", script,
            ])
            .code(1);
        let shown = if output == "table" {
            run.all()
        } else {
            decoded_strings(&run.stdout) + &run.stderr
        };
        assert_no_password(&s.all_passwords(), output, &run.all());
        assert_no_password(&s.all_passwords(), output, &shown);
        for (server, _) in s.all_passwords() {
            for (how, _) in spellings(TENANT_PW) {
                let line = format!("{server} {how}: ***");
                assert!(shown.contains(&line), "{output}: no {line:?} in\n{shown}");
            }
            let url = format!("{server} url: postgresql://someone:***@elsewhere:5432/x");
            assert!(shown.contains(&url), "{output}: no {url:?} in\n{shown}");
            let key = format!(r#"{server} key: {{"password":"***"}}"#);
            assert!(shown.contains(&key), "{output}: no {key:?} in\n{shown}");
        }
    }
}

#[test]
fn exec_masks_the_password_as_real_json_encoders_print_it() {
    let s = Setup::new("enc");
    // Python's json.dumps (non-ASCII as \uXXXX, surrogate pairs), the same
    // with ensure_ascii off, Go's escapes of & < > (which Python can be
    // made to print), and node's JSON.stringify; each for the tenant's own
    // password (PGPASSWORD) and the master's (from a file).
    std::fs::write(s.env.workdir.path().join("master.txt"), MASTER_PW).expect("write");
    let python = r#"
import json, os
go = lambda s: json.dumps(s, ensure_ascii=False).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
for name, pw in (("own", os.environ["PGPASSWORD"]), ("master", open("master.txt", encoding="utf-8").read())):
    print(name, "python:", json.dumps(pw))
    print(name, "unicode:", json.dumps(pw, ensure_ascii=False))
    print(name, "go:", go(pw))
    print(name, "dict:", json.dumps({"password": pw, "user": "x"}))
    print(name, "bytes:", pw.encode())
"#;
    let node = r#"
const fs = require("fs");
for (const [name, pw] of [["own", process.env.PGPASSWORD], ["master", fs.readFileSync("master.txt", "utf8")]]) {
  console.log(name, "node:", JSON.stringify(pw));
  console.error(name, "node-err:", JSON.stringify({ password: pw }));
}
"#;
    let have_node = Command::new("node").arg("--version").output().is_ok();
    for output in ["table", "json"] {
        let run = s
            .run(&[
                "tenant", "exec", &s.slug, "--output", output, "--", "python3", "-c", python,
            ])
            .ok();
        let shown = if output == "table" {
            run.all()
        } else {
            decoded_strings(&run.stdout)
        };
        assert_no_password(&s.all_passwords(), output, &run.all());
        assert_no_password(&s.all_passwords(), output, &shown);
        for name in ["own", "master"] {
            for line in [
                format!("{name} python: \"***\""),
                format!("{name} unicode: \"***\""),
                format!("{name} go: \"***\""),
                format!(r#"{name} dict: {{"password": "***", "user": "x"}}"#),
                format!("{name} bytes: b'***'"),
            ] {
                assert!(shown.contains(&line), "{output}: no {line:?} in\n{shown}");
            }
        }
        if have_node {
            let run = s
                .run(&[
                    "tenant", "exec", &s.slug, "--output", output, "--", "node", "-e", node,
                ])
                .ok();
            let shown = if output == "table" {
                run.all()
            } else {
                decoded_strings(&run.stdout)
            };
            assert_no_password(&s.all_passwords(), output, &shown);
            for name in ["own", "master"] {
                for line in [
                    format!("{name} node: \"***\""),
                    format!(r#"{name} node-err: {{"password":"***"}}"#),
                ] {
                    assert!(shown.contains(&line), "{output}: no {line:?} in\n{shown}");
                }
            }
        }
    }
}

#[test]
fn tenantctls_own_output_names_no_servers_password() {
    let s = Setup::new("own");
    let mut runs = vec![
        s.run(&["server", "list"]),
        s.run(&["server", "list", "--output", "json"]),
        s.run(&["doctor"]),
        s.run(&["doctor", "--output", "json"]),
        s.run(&["tenant", "list", "--output", "json"]),
        s.run(&["tenant", "url", &s.slug]),
        s.run(&["tenant", "status", "--all", "--output", "json"]),
        s.run(&["tenant", "create", &s.env.slug("x2"), "--server", "eu2"]),
        s.run(&[
            "tenant",
            "create",
            &s.env.slug("x3"),
            "--server",
            "eu3",
            "--output",
            "json",
        ]),
        s.run(&["tenant", "create", &s.env.slug("x4"), "--server", "eu4"]),
    ];
    // A malformed URL for another server, and the master unreachable.
    runs.push(s.env.run_with(&["server", "list"], |cmd| {
        s.base(cmd);
        cmd.env(
            "POSTGRES_BASE_URL_EU5",
            format!("postgresql://u:{}@[bad", encoded(EU2_PW)),
        );
    }));
    runs.push(s.env.run_with(&["tenant", "list"], |cmd| {
        s.base(cmd);
        cmd.env(
            "MASTER_DATABASE_URL",
            format!("postgresql://m:{}@127.0.0.1:1/master", encoded(MASTER_PW)),
        );
    }));
    for run in &runs {
        assert_no_password(&s.all_passwords(), "tenantctl", &run.all());
        if run.stdout.starts_with('{') {
            assert_no_password(
                &s.all_passwords(),
                "tenantctl JSON",
                &decoded_strings(&run.stdout),
            );
        }
    }
}

/// The real tool's path, found on the PATH.
fn real(tool: &str) -> String {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} on the PATH"))
        .display()
        .to_string()
}

#[test]
fn a_moves_pg_dump_and_pg_restore_get_only_their_own_connection() {
    use crate::servers::TwoServers;
    use crate::support::base_password;
    use std::os::unix::fs::PermissionsExt as _;

    let two = TwoServers::new();
    let env = &two.env;
    let dir = env.workdir.path().join("m");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("20250101000001_t.sql"), "CREATE TABLE t (x int);").expect("write");
    two.run(&["master", "migrate"]).ok();
    let slug = env.slug("mv");
    two.create(&slug, "default", dir.to_str().expect("utf-8"));

    // Tools that keep their environment, then do the real work; the
    // restore then prints other servers' passwords (as a tool might print
    // a connection string it was given) and fails, so its words end up
    // in tenantctl's error message.
    let bin = env.workdir.path().join("pg-bin");
    std::fs::create_dir_all(&bin).expect("dir");
    let said = bin.join("said.txt");
    let mut lines = Vec::new();
    for password in [EU3_PW, EU4_PW] {
        lines.push(format!(
            "pg_restore: could not connect: {}",
            serde_json::to_string(password).expect("json")
        ));
        lines.push(format!(
            "pg_restore: \"{}\"",
            json_escaped(password, |c| !c.is_ascii(), false)
        ));
    }
    std::fs::write(&said, lines.join("\n") + "\n").expect("write");
    for (tool, then) in [
        ("pg_dump", format!("exec {} \"$@\"", real("pg_dump"))),
        (
            "pg_restore",
            format!("cat > /dev/null; cat {} >&2; exit 1", said.display()),
        ),
    ] {
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then exec {} --version; fi\nenv > {}/{tool}.env\n{then}\n",
                real(tool),
                bin.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(
        env.workdir.path().join("tenantctl.toml"),
        "[servers.eu3]\nurl_env = \"EU3_DB_URL\"\naccepts_new = false\n",
    )
    .expect("write");
    std::fs::write(
        env.workdir.path().join(".env"),
        format!(
            "POSTGRES_BASE_URL_EU4=postgresql://eu4user:{}@10.9.9.8:5432\n",
            encoded(EU4_PW)
        ),
    )
    .expect("write .env");
    let run = two
        .run_with(
            &[
                "tenant",
                "move",
                &slug,
                "--to",
                "eu2",
                "--pg-bin",
                bin.to_str().expect("utf-8"),
            ],
            |cmd| {
                cmd.env(
                    "EU3_DB_URL",
                    format!("postgresql://eu3user:{}@10.9.9.7", encoded(EU3_PW)),
                );
            },
        )
        .code(1);
    assert!(run.stderr.contains("pg_restore failed"), "{}", run.stderr);
    assert!(run.stderr.contains("***"), "{}", run.stderr);
    let base = base_password().expect("password");
    let eu2 = crate::support::server::SUPERUSER_PASSWORD;
    assert_no_password(
        &[
            ("eu3", EU3_PW),
            ("eu4", EU4_PW),
            ("default", &base),
            ("eu2", eu2),
        ],
        "move",
        &run.all(),
    );
    for (tool, own, foreign) in [
        ("pg_dump", &base, eu2),
        ("pg_restore", &eu2.to_owned(), &*base),
    ] {
        let seen = std::fs::read_to_string(bin.join(format!("{tool}.env"))).expect("env file");
        let names = variable_names(&seen);
        for gone in [
            "POSTGRES_BASE_URL",
            "POSTGRES_BASE_URL_EU2",
            "POSTGRES_BASE_URL_EU4",
            "EU3_DB_URL",
            "MASTER_DATABASE_URL",
        ] {
            assert!(!names.contains(&gone), "{tool} got {gone}:\n{seen}");
        }
        assert!(
            seen.contains(&format!("PGPASSWORD={own}")),
            "{tool}: {seen}"
        );
        assert_no_password(
            &[("eu3", EU3_PW), ("eu4", EU4_PW), ("other end", foreign)],
            tool,
            &seen,
        );
    }
}
