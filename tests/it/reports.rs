//! Reports for CI: `--report-file` on every exit path, `--output junit`,
//! `--summary-file`, GitHub annotations, and no progress bar where nobody
//! watches. A tenant's error text is hostile here: XML and Markdown markup,
//! a workflow command on a line of its own, a control character.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use quick_xml::events::Event;
use serde_json::{Value, json};

use crate::support::{Run, TestEnv, find, wait_with_deadline};
use crate::trust_interrupt::{Held, Holding, kill, wait_for_lock_wait};

/// What tenant b's failing migration raises: everything that could break
/// out of XML, Markdown or a workflow command.
const HOSTILE: &str = "bad <x> & ]]> \"q\" 'a' |pipe| `tick`\n::add-mask::x\n::stop-commands::y";

/// Tenants a and b on `two-step`, plus a migration that fails on b only
/// with [`HOSTILE`] (and a control character); returns the env, the folder
/// and the slugs.
fn failing_fleet() -> (TestEnv, String, Vec<String>) {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    let raised = HOSTILE.replace('\'', "''").replace('\n', "\\n");
    std::fs::write(
        dir.join("20250101000003_fails_on_b.sql"),
        format!(
            "DO $$ BEGIN IF current_database() = '{}' THEN \
             RAISE EXCEPTION E'{raised}\\x01end'; END IF; END $$;",
            env.db("b")
        ),
    )
    .expect("write migration");
    (env, dir.to_str().expect("utf-8").to_owned(), slugs)
}

fn path_in(env: &TestEnv, name: &str) -> PathBuf {
    env.workdir.path().join(name)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read the report file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// A test case as JUnit XML holds it.
#[derive(Debug, Default)]
struct Case {
    name: String,
    classname: String,
    /// `failure`, `error` or `skipped`, with the element's text.
    outcome: Option<(String, String, String)>,
}

/// Parses JUnit XML with a real XML reader: the root's counts and the
/// test cases.
fn parse_junit(xml: &str) -> (Vec<(String, String)>, Vec<Case>) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut root = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut inside: Option<(String, String)> = None;
    let mut text = String::new();
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("not XML: {e}: {xml}"));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let attrs: Vec<(String, String)> = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("attribute");
                        (
                            String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8"),
                            a.unescape_value().expect("unescape").into_owned(),
                        )
                    })
                    .collect();
                let get = |k: &str| {
                    attrs
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                match e.name().as_ref() {
                    b"testsuites" => root = attrs.clone(),
                    b"testcase" => cases.push(Case {
                        name: get("name"),
                        classname: get("classname"),
                        outcome: None,
                    }),
                    tag @ (b"failure" | b"error" | b"skipped") => {
                        let tag = String::from_utf8(tag.to_vec()).expect("utf-8");
                        inside = Some((tag.clone(), get("message")));
                        text.clear();
                        if let Some(case) = cases.last_mut() {
                            case.outcome = Some((tag, get("message"), String::new()));
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => text.push_str(&t.decode().expect("utf-8")),
            // quick-xml reports each entity reference on its own.
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().expect("char ref") {
                    text.push(c);
                } else {
                    let name = r.decode().expect("utf-8");
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .unwrap_or_else(|| panic!("unknown entity {name}"));
                    text.push_str(resolved);
                }
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::End(e) => {
                if let Some((tag, message)) =
                    inside.take_if(|(tag, _)| tag.as_bytes() == e.name().as_ref())
                    && let Some(case) = cases.last_mut()
                {
                    case.outcome = Some((tag, message, text.clone()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (root, cases)
}

#[test]
fn junit_report_summary_and_annotations_of_a_failed_run() {
    let (env, dir, slugs) = failing_fleet();
    let report = path_in(&env, "report.json");
    let summary = path_in(&env, "summary.md");
    let report_s = report.to_str().expect("utf-8");
    let summary_s = summary.to_str().expect("utf-8");
    let args = [
        "tenant",
        "migrate",
        "--all",
        "--tenant-migrations",
        &dir,
        "--output",
        "junit",
        "--report-file",
        report_s,
        "--summary-file",
        summary_s,
    ];
    let run = env
        .run_with(&args, |c| {
            c.env("GITHUB_ACTIONS", "true");
        })
        .code(1);

    // stdout: JUnit XML a real parser reads, counts and names right, the
    // hostile error intact but for the control character.
    let (root, cases) = parse_junit(&run.stdout);
    let attr = |k: &str| {
        root.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(attr("tests"), Some("2"), "{}", run.stdout);
    assert_eq!(attr("failures"), Some("1"), "{}", run.stdout);
    assert_eq!(attr("errors"), Some("0"));
    assert_eq!(attr("skipped"), Some("0"));
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [slugs[0].as_str(), slugs[1].as_str()]);
    assert!(
        cases
            .iter()
            .all(|c| c.classname == "tenantctl.migrate.default")
    );
    assert!(cases[0].outcome.is_none(), "{:?}", cases[0]);
    let (tag, message, text) = cases[1].outcome.clone().expect("b failed");
    assert_eq!(tag, "failure");
    assert!(!message.contains('\n'), "{message:?}");
    assert!(text.contains(HOSTILE), "{text:?}");
    assert!(text.contains("end") && !text.contains('\u{1}'), "{text:?}");
    assert!(!run.stdout.contains('\u{1}'));

    // The report file: the JSON document, versioned, owner-only.
    let doc = read_json(&report);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["summary"], json!({"ok": 1, "failed": 1, "skipped": 0}));
    assert_eq!(find(&doc, &slugs[1])["status"], "failed");
    assert!(
        find(&doc, &slugs[1])["error"]
            .as_str()
            .expect("error")
            .contains(HOSTILE)
    );
    assert_eq!(mode_of(&report), 0o600);

    // The summary: counts and b's row, with no markup from the error.
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        md.starts_with("### tenantctl tenant migrate: failed\n"),
        "{md}"
    );
    assert!(md.contains("| 1 | 1 | 0 | 0 |"), "{md}");
    let row = md
        .lines()
        .find(|l| l.contains(&tenantctl::output::markdown::escape(&slugs[1])))
        .expect("b's row");
    assert_eq!(row.matches('|').count(), 5, "{row}");
    for markup in ["<x>", "`tick`", "\n::", "]]>"] {
        assert!(!md.contains(markup), "{markup:?} in {md}");
    }
    assert_eq!(mode_of(&summary), 0o600);

    // One annotation, for b, its error on the same line.
    let annotations: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(annotations.len(), 1, "{}", run.stderr);
    assert!(
        annotations[0].starts_with(&format!(
            "::error title=tenantctl tenant migrate%3A tenant {}::",
            slugs[1]
        )),
        "{}",
        annotations[0]
    );
    assert!(annotations[0].contains("%0A::add-mask::x%0A::stop-commands::y"));

    // A second step appends to the summary; the report is replaced.
    let first = std::fs::read_to_string(&report).expect("report");
    env.run(&[
        "tenant",
        "status",
        "--all",
        "--summary-file",
        summary_s,
        "--report-file",
        report_s,
    ]);
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert_eq!(md.matches("### tenantctl ").count(), 2, "{md}");
    assert!(md.contains("### tenantctl tenant status: "), "{md}");
    assert_ne!(std::fs::read_to_string(&report).expect("report"), first);
    assert_eq!(read_json(&report)["schema_version"], 1);
}

#[test]
fn junit_is_refused_where_there_is_no_fleet_and_the_report_says_why() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let report = path_in(&env, "r.json");
    let run = env
        .run(&[
            "tenant",
            "list",
            "--output",
            "junit",
            "--report-file",
            report.to_str().expect("utf-8"),
        ])
        .code(2);
    let error: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(error.len(), 1, "{}", run.stderr);
    assert!(
        error[0].starts_with("error: --output junit reports fleet runs"),
        "{}",
        error[0]
    );
    let doc = read_json(&report);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["kind"], "usage");
    assert_eq!(doc["error"], error[0].trim_start_matches("error: "));
    // The JUnit on stdout shows the refusal as a failed test.
    let (_, cases) = parse_junit(&run.stdout);
    assert_eq!(cases.len(), 1);
    assert_eq!(
        cases[0].outcome.as_ref().map(|o| o.0.as_str()),
        Some("failure")
    );

    // A single create is no fleet either; with --from-file it is.
    let slug = env.slug("one");
    env.run(&["tenant", "create", &slug, "--output", "junit"])
        .code(2);
    assert!(!env.database_exists(&env.db("one")));
}

#[test]
fn report_file_on_usage_errors_and_refused_paths() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a"]);
    let dir = dir.to_str().expect("utf-8");
    // A flag clap refuses: the error object all the same.
    let report = path_in(&env, "usage.json");
    env.run(&[
        "tenant",
        "migrate",
        "--bogus",
        "--report-file",
        report.to_str().expect("utf-8"),
    ])
    .code(2);
    let doc = read_json(&report);
    assert_eq!(
        (doc["schema_version"].clone(), doc["kind"].clone()),
        (json!(1), json!("usage"))
    );

    // From the environment, for an error the command finds.
    let report = path_in(&env, "env.json");
    env.run_with(&["tenant", "migrate"], |c| {
        c.env("TENANTCTL_REPORT_FILE", &report);
    })
    .code(2);
    assert_eq!(read_json(&report)["kind"], "usage");

    // A path that cannot be written is refused before any tenant is
    // touched: one line, exit 2, nothing migrated.
    std::fs::write(
        Path::new(dir).join("20250101000003_more.sql"),
        "ALTER TABLE items ADD COLUMN note text;",
    )
    .expect("write migration");
    let before = env.applied(&env.db("a"));
    for bad in [
        "/nonexistent-dir/r.json".to_owned(),
        env.workdir.path().to_str().expect("utf-8").to_owned(),
    ] {
        let run = env
            .run(&[
                "tenant",
                "migrate",
                &slugs[0],
                "--tenant-migrations",
                dir,
                "--report-file",
                &bad,
            ])
            .code(2);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.starts_with("error: --report-file "),
            "{}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
    assert_eq!(env.applied(&env.db("a")), before);
    // A summary path through a symlink is refused too.
    let link = path_in(&env, "summary-link.md");
    std::os::unix::fs::symlink(path_in(&env, "elsewhere.md"), &link).expect("symlink");
    let run = env
        .run(&[
            "tenant",
            "migrate",
            &slugs[0],
            "--tenant-migrations",
            dir,
            "--summary-file",
            link.to_str().expect("utf-8"),
        ])
        .code(2);
    assert!(run.stderr.contains("is a symbolic link"), "{}", run.stderr);
    assert!(!path_in(&env, "elsewhere.md").exists());
    assert_eq!(env.applied(&env.db("a")), before);

    // `tenant url --show-password` would put the password in the file.
    let run = env
        .run(&[
            "tenant",
            "url",
            &slugs[0],
            "--show-password",
            "--report-file",
            report.to_str().expect("utf-8"),
        ])
        .code(2);
    assert!(
        run.stderr.contains("--show-password with --report-file"),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&report).expect("report");
    if let Some(password) = crate::support::base_password() {
        assert!(!text.contains(&password));
    }
    // `tenant psql` prints no report: the flag is refused, not ignored.
    env.run(&[
        "tenant",
        "psql",
        &slugs[0],
        "--report-file",
        report.to_str().expect("utf-8"),
    ])
    .code(2);
}

#[test]
fn a_symlinked_report_path_is_replaced_not_followed_and_a_kept_file_keeps_its_mode() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let target = path_in(&env, "target.txt");
    std::fs::write(&target, "precious").expect("write");
    let link = path_in(&env, "report.json");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    env.run(&[
        "tenant",
        "list",
        "--report-file",
        link.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        "precious"
    );
    assert!(
        !std::fs::symlink_metadata(&link)
            .expect("stat")
            .file_type()
            .is_symlink()
    );
    let doc = read_json(&link);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["tenants"][0]["slug"], env.slug("a"));
    assert_eq!(mode_of(&link), 0o600);
    // A report the operator made readable stays readable.
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    env.run(&[
        "tenant",
        "list",
        "--report-file",
        link.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(mode_of(&link), 0o644);
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(env.workdir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn report_file_on_an_interrupt() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["a", "b"]);
    std::fs::write(
        dir.join("20250101000003_more.sql"),
        "ALTER TABLE items ADD COLUMN note text;",
    )
    .expect("write migration");
    let report = path_in(&env, "interrupted.json");
    let summary = path_in(&env, "interrupted.md");
    let holding = Holding::start(&env, &env.db("b"), Held::TableLock);
    let child = env
        .cmd()
        .args([
            "tenant",
            "migrate",
            "--all",
            "--concurrency",
            "1",
            "--tenant-migrations",
            dir.to_str().expect("utf-8"),
            "--report-file",
            report.to_str().expect("utf-8"),
            "--summary-file",
            summary.to_str().expect("utf-8"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    wait_for_lock_wait(&env, &env.db("b"));
    kill("-INT", pid);
    let run = wait_with_deadline(child, Duration::from_secs(30));
    drop(holding);
    assert_eq!(run.code, 130, "{}", run.stderr);
    let doc = read_json(&report);
    assert_eq!(doc["interrupted"], true, "{doc}");
    assert_eq!(find(&doc, &slugs[0])["status"], "ok");
    assert_eq!(find(&doc, &slugs[1])["status"], "interrupted");
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        md.starts_with("### tenantctl tenant migrate: interrupted"),
        "{md}"
    );
}

#[test]
fn report_file_when_stdout_is_closed() {
    let env = TestEnv::new();
    env.with_tenants(&["a", "b", "c"]);
    let report = path_in(&env, "closed.json");
    let mut child = env
        .cmd()
        .args([
            "tenant",
            "status",
            "--all",
            "--output",
            "jsonl",
            "--concurrency",
            "1",
        ])
        .args(["--report-file", report.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Nobody reads stdout: its pipe is closed before anything is written.
    drop(child.stdout.take());
    let run: Run = wait_with_deadline(child, Duration::from_secs(30));
    assert_eq!(run.code, 141, "{}", run.stderr);
    let doc = read_json(&report);
    assert_eq!(doc["schema_version"], 1);
    assert!(
        doc["tenants"].as_array().is_some_and(|t| !t.is_empty()),
        "{doc}"
    );
}

#[test]
fn a_command_that_fails_outright_is_annotated() {
    let env = TestEnv::new();
    let run = env
        .run_with(&["tenant", "migrate", "--all"], |c| {
            c.env("GITHUB_ACTIONS", "true")
                .env(
                    "POSTGRES_BASE_URL",
                    "postgresql://nobody:sekrit@127.0.0.1:1",
                )
                .env(
                    "MASTER_DATABASE_URL",
                    "postgresql://nobody:sekrit@127.0.0.1:1/m",
                );
        })
        .code(1);
    let annotation = run
        .stderr
        .lines()
        .find(|l| l.starts_with("::error title=tenantctl tenant migrate::"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(!annotation.contains("sekrit"), "{annotation}");
}

/// Under a pseudo-terminal, as Buildkite or `docker run -t` give one: with
/// CI set no progress bar is drawn (no carriage returns, no cursor
/// escapes), and with NO_COLOR nothing is coloured.
#[test]
fn no_progress_bar_in_ci_and_no_colour_with_no_color() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["a", "b"]);
    let dir = dir.to_str().expect("utf-8");
    let args = ["tenant", "migrate", "--all", "--tenant-migrations", dir];
    let drawn = in_terminal_with(&env, &args, &[]);
    assert!(
        drawn.stdout.contains("/2 tenants"),
        "the bar is drawn without CI: {:?}",
        drawn.stdout
    );
    for (name, value) in [("CI", "true"), ("BUILDKITE", "true"), ("TERM", "dumb")] {
        let run = in_terminal_with(&env, &args, &[(name, value)]);
        assert!(run.stdout.contains("2 ok, 0 failed"), "{:?}", run.stdout);
        assert!(!run.stdout.contains("tenants "), "{name}: {:?}", run.stdout);
        // `script` turns each \n into \r\n; no other \r, no escapes.
        let bare = run.stdout.replace("\r\n", "\n");
        assert!(!bare.contains('\r'), "{name}: {bare:?}");
        assert!(!bare.contains('\u{1b}'), "{name}: {bare:?}");
    }
    // CI=false is no CI.
    let run = in_terminal_with(&env, &args, &[("CI", "false")]);
    assert!(run.stdout.contains("/2 tenants"), "{:?}", run.stdout);
    // NO_COLOR: no SGR (colour) sequence anywhere, bar or table.
    let run = in_terminal_with(&env, &args, &[("NO_COLOR", "1")]);
    let sgr = run.stdout.match_indices("\u{1b}[").any(|(i, _)| {
        run.stdout[i + 2..]
            .chars()
            .find(|c| !c.is_ascii_digit() && *c != ';')
            == Some('m')
    });
    assert!(!sgr, "{:?}", run.stdout);
}

/// [`crate::terminal::in_terminal`] with variables of the test's own.
fn in_terminal_with(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Run {
    crate::terminal::in_terminal_env(env, args, "", vars)
}

/// A value serde_json's `Value` cannot hold (`1e400`, 30 digits) reaches
/// stdout and the report file as stored: the report is serialized from
/// the run itself (through `Value`, `settings set --output json` used to
/// panic on it). And a document that is not a fleet run (`tenant list`,
/// whose rows have statuses of their own) is never annotated.
#[test]
fn huge_numbers_reach_the_report_digit_for_digit_and_only_fleet_runs_are_annotated() {
    let env = TestEnv::new();
    env.with_tenants(&["a"]);
    let slug = env.slug("a");
    let report = path_in(&env, "huge.json");
    let report_s = report.to_str().expect("utf-8");
    // jsonb stores 1e400 as its 401 digits.
    let stored = format!("\"value\": 1{}", "0".repeat(400));
    for output in ["table", "json", "jsonl", "junit"] {
        let run = env
            .run(&[
                "tenant",
                "settings",
                "set",
                &slug,
                "huge",
                "1e400",
                "--output",
                output,
                "--report-file",
                report_s,
            ])
            .ok();
        let text = std::fs::read_to_string(&report).expect("report");
        assert!(text.contains(&stored), "{output}: {text}");
        if output == "json" {
            assert!(run.stdout.contains(&stored), "{}", run.stdout);
        }
    }
    let big = "123456789012345678901234567890";
    env.run(&["tenant", "settings", "set", &slug, "big", big])
        .ok();
    env.run(&[
        "tenant",
        "settings",
        "get",
        &slug,
        "big",
        "--report-file",
        report_s,
    ])
    .ok();
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(text.contains(&format!("\"value\": {big}")), "{text}");

    env.exec(
        &env.master,
        &format!("UPDATE \"Company\" SET status = 'failed' WHERE slug = '{slug}'"),
    );
    let run = env.run_with(&["tenant", "list"], |c| {
        c.env("GITHUB_ACTIONS", "true");
    });
    assert!(!run.stderr.contains("::error"), "{}", run.stderr);
}
