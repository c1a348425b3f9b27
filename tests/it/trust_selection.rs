//! What a run selected and why (issue 15, items 9 and 10): the
//! prerequisites `just test` installs on a fresh machine, and every fleet
//! report stating its selection and where each part of it came from.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, tempdir::TempDir};

/// A folder of links to every program on PATH except `hidden`, with `fakes`
/// (name, shell script) in their place: a machine that lacks some tools,
/// or where `id` says we are not root and `cargo` has no network.
fn bin_dir_without(root: &Path, hidden: &[&str], fakes: &[(&str, &str)]) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("create bin");
    let path = std::env::var_os("PATH").expect("PATH");
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if hidden.contains(&name_str.as_ref())
                || fakes.iter().any(|(fake, _)| *fake == name_str)
            {
                continue;
            }
            let link = bin.join(&name);
            if !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    for (name, script) in fakes {
        let file = bin.join(name);
        std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).expect("write fake");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// Runs scripts/prereqs.sh with only `bin` on PATH and a HOME of its own
/// (whose .cargo/bin holds nothing), so what is hidden is really absent.
fn prereqs(home: &Path, bin: &Path, args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prereqs.sh");
    Run::from(
        Command::new(script)
            .args(args)
            .env("PATH", bin)
            .env("HOME", home)
            .env_remove("LIBCLANG_PATH")
            .output()
            .expect("run prereqs.sh"),
    )
}

const SQLX_INSTALL: &str = "cargo install --locked sqlx-cli --version 0.8.6 --no-default-features --features postgres,rustls";

#[test]
fn prereqs_find_sqlx_cli_missing_and_name_the_command_that_installs_it() {
    let dir = TempDir::new("prereqs-sqlx");
    let bin = bin_dir_without(dir.path(), &["sqlx"], &[]);
    // --check installs nothing: one line naming sqlx-cli and its command.
    for mode in ["test", "ci", "bench"] {
        let run = prereqs(dir.path(), &bin, &[mode, "--check"]).code(1);
        assert_eq!(
            run.stderr,
            format!(
                "prereqs: missing sqlx-cli 0.8.6 (the revert tests and the bench compare with it): install it with: {SQLX_INSTALL}\n"
            ),
            "{mode}"
        );
    }
    // The demo does not need it: nothing is missing.
    let run = prereqs(dir.path(), &bin, &["demo", "--check"]).ok();
    assert_eq!(run.stderr, "");
    // Installing with no network: cargo fails, one line says what to run.
    let offline = TempDir::new("prereqs-offline");
    let bin = bin_dir_without(
        offline.path(),
        &["sqlx"],
        &[("cargo", "echo 'error: could not resolve crates.io' >&2; exit 101")],
    );
    let run = prereqs(offline.path(), &bin, &["test"]).code(1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert_eq!(
        lines[0],
        format!(
            "prereqs: installing sqlx-cli 0.8.6 (the revert tests and the bench compare with it): {SQLX_INSTALL}"
        )
    );
    assert!(
        lines[1].starts_with("prereqs: could not install sqlx-cli 0.8.6 (no network? its output is in ")
            && lines[1].ends_with(&format!("): run: {SQLX_INSTALL}")),
        "{}",
        lines[1]
    );
}

#[test]
fn prereqs_say_apt_needs_root_instead_of_failing_halfway() {
    let dir = TempDir::new("prereqs-noroot");
    // Not root, and PostgreSQL's pg_virtualenv absent.
    let bin = bin_dir_without(dir.path(), &["pg_virtualenv"], &[("id", "echo 1000")]);
    for mode in ["test", "demo", "ci"] {
        let run = prereqs(dir.path(), &bin, &[mode]).code(1);
        assert_eq!(
            run.stderr,
            "prereqs: missing PostgreSQL (pg_virtualenv) (throwaway clusters for the tests, the demo and the bench), and installing it needs root: run: sudo apt-get install -y postgresql postgresql-common\n",
            "{mode}"
        );
    }
    let run = prereqs(dir.path(), &bin, &["test", "--check"]).code(1);
    assert!(
        run.stderr
            .contains("missing PostgreSQL (pg_virtualenv) (throwaway clusters for the tests, the demo and the bench): install it with: apt-get install -y postgresql postgresql-common"),
        "{}",
        run.stderr
    );
    // A mode it does not know is a usage error.
    prereqs(dir.path(), &bin, &["deploy"]).code(2);
}

#[test]
fn prereqs_pass_quietly_when_everything_is_there() {
    let dir = TempDir::new("prereqs-all");
    let bin = bin_dir_without(dir.path(), &[], &[]);
    for mode in ["test", "demo", "bench", "ci"] {
        let run = prereqs(dir.path(), &bin, &[mode]).ok();
        assert_eq!(run.stderr, "", "{mode}");
    }
}
