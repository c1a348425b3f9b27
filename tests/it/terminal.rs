//! What tenantctl does only on a terminal, run inside a pseudo-terminal
//! made by util-linux `script`: the progress bar (and `--quiet` hiding
//! it), drop's type-the-slug prompt, and sql's confirmation naming the
//! tenant count.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Run, TestEnv, wait_with_deadline};

/// `'...'` for sh.
fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs tenantctl with stdin, stdout and stderr on a pseudo-terminal,
/// typing `input` into it; `stdout` holds everything the terminal showed
/// (both streams, and the typed input echoed).
fn in_terminal(env: &TestEnv, args: &[&str], input: &str) -> Run {
    in_terminal_env(env, args, input, &[])
}

/// [`in_terminal`] with these variables set for tenantctl.
pub(crate) fn in_terminal_env(
    env: &TestEnv,
    args: &[&str],
    input: &str,
    vars: &[(&str, &str)],
) -> Run {
    let mut line = quoted(env!("CARGO_BIN_EXE_tenantctl"));
    for arg in args {
        line.push(' ');
        line.push_str(&quoted(arg));
    }
    let mut cmd = Command::new("script");
    env.configure(&mut cmd);
    // -e: script exits with the command's status; -f: flush as it goes.
    let mut child = cmd
        .args(["-qefc", &line, "/dev/null"])
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("type the input");
    drop(stdin);
    wait_with_deadline(child, Duration::from_secs(60))
}

#[test]
fn progress_bar_shows_on_a_terminal_and_quiet_hides_it() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["a", "b"]);
    let dir = dir.to_str().expect("utf-8");
    let args = ["tenant", "migrate", "--all", "--tenant-migrations", dir];
    let shown = in_terminal(&env, &args, "").ok();
    assert!(shown.stdout.contains("/2 tenants"), "{:?}", shown.stdout);
    assert!(
        shown.stdout.contains("2 ok, 0 failed"),
        "{:?}",
        shown.stdout
    );

    let mut quiet = args.to_vec();
    quiet.push("--quiet");
    let hidden = in_terminal(&env, &quiet, "").ok();
    assert!(!hidden.stdout.contains("tenants"), "{:?}", hidden.stdout);
    assert!(
        hidden.stdout.contains("2 ok, 0 failed"),
        "{:?}",
        hidden.stdout
    );
}

#[test]
fn drop_asks_for_the_slug_on_a_terminal() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    let slugs = env.tenants_with(&dir, &["kept", "gone"]);

    // A wrong answer changes nothing.
    let refused = in_terminal(&env, &["tenant", "drop", &slugs[0]], "kept\n");
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stdout
            .contains(&format!("Type {} to continue", slugs[0])),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stdout
            .contains("not confirmed; nothing was changed"),
        "{}",
        refused.stdout
    );
    assert!(env.database_exists(&env.db("kept")));
    assert_eq!(env.status_of(&slugs[0]), ["active"]);

    // The slug typed back goes ahead.
    let confirmed = in_terminal(
        &env,
        &["tenant", "drop", &slugs[1]],
        &format!("{}\n", slugs[1]),
    )
    .ok();
    assert!(
        confirmed.stdout.contains(&format!(
            "drop database {} of tenant {}",
            env.db("gone"),
            slugs[1]
        )),
        "{}",
        confirmed.stdout
    );
    assert!(!env.database_exists(&env.db("gone")));
    assert!(env.status_of(&slugs[1]).is_empty(), "row deleted");
}

#[test]
fn sql_on_several_tenants_asks_once_saying_how_many() {
    let env = TestEnv::new();
    let dir = env.fixture("two-step");
    env.tenants_with(&dir, &["a", "b"]);
    let args = [
        "tenant",
        "sql",
        "--all",
        "-c",
        "CREATE TABLE confirmed_marker (id int)",
    ];
    let marker = "SELECT coalesce(to_regclass('confirmed_marker')::text, '')";

    let refused = in_terminal(&env, &args, "no\n");
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("in 2 tenant databases"),
        "{}",
        refused.stdout
    );
    for name in ["a", "b"] {
        assert_eq!(env.query(&env.db(name), marker), [""], "{name}");
    }

    let confirmed = in_terminal(&env, &args, "yes\n").ok();
    assert_eq!(
        confirmed.stdout.matches("in 2 tenant databases").count(),
        1,
        "asked once: {}",
        confirmed.stdout
    );
    for name in ["a", "b"] {
        assert_eq!(
            env.query(&env.db(name), marker),
            ["confirmed_marker"],
            "{name}"
        );
    }
}

#[test]
fn revert_asks_once_saying_how_many_tenants_and_which_versions() {
    let env = TestEnv::new();
    let dir = env.fixture("reversible");
    env.tenants_with(&dir, &["a", "b", "c"]);
    let dir = dir.to_str().expect("utf-8");
    let args = [
        "tenant",
        "revert",
        "--all",
        "--to",
        "20250101000003",
        "--tenant-migrations",
        dir,
    ];
    let versions = "20250101000005, 20250101000004";

    let refused = in_terminal(&env, &args, "yes\n");
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("revert 3 tenant(s)") && refused.stdout.contains(versions),
        "{}",
        refused.stdout
    );
    for name in ["a", "b", "c"] {
        assert_eq!(env.applied(&env.db(name)).len(), 5, "{name} untouched");
    }

    let confirmed = in_terminal(&env, &args, "revert\n").ok();
    assert_eq!(
        confirmed.stdout.matches("Type revert to continue").count(),
        1,
        "asked once: {}",
        confirmed.stdout
    );
    for name in ["a", "b", "c"] {
        assert_eq!(env.applied(&env.db(name)).len(), 3, "{name} reverted");
    }
}
