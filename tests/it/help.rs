//! `--help` of every command, kept as snapshots so an interface change is a
//! deliberate one: tests/snapshots/help/<command path>.txt, e.g.
//! `tenantctl-tenant-settings-set.txt`. The commands are found by walking
//! the binary's own `Commands:` lists, so a new command without a snapshot
//! fails here. `UPDATE_SNAPSHOTS=1` rewrites them (and removes the snapshots
//! of commands that are gone).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::support::{TestEnv, password};

fn snapshot_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help")
}

/// `tenantctl-tenant-create.txt` for `["tenant", "create"]`.
fn file_name(path: &[String]) -> String {
    let mut name = String::from("tenantctl");
    for part in path {
        name.push('-');
        name.push_str(part);
    }
    name + ".txt"
}

/// The subcommands a help page lists under `Commands:`, but `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            // A command's line starts two spaces in; a wrapped description
            // further in.
            let name = line.strip_prefix("  ")?.split(' ').next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .filter(|name| name != "help")
        .collect()
}

/// Every command's snapshot text, by file name, walking from `tenantctl`
/// down through each `Commands:` list. Help needs no database: the
/// environment is a test's only so the password can be looked for.
fn every_help_page(env: &TestEnv) -> BTreeMap<String, String> {
    let mut pages = BTreeMap::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = env.run_with(&args, |c| {
            c.env("COLUMNS", "100");
        });
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (0, ""),
            "tenantctl {}",
            args.join(" ")
        );
        for sub in subcommands(&run.stdout) {
            let mut child = path.clone();
            child.push(sub);
            pending.push(child);
        }
        let text = format!("$ tenantctl {}\n{}", args.join(" "), run.stdout);
        pages.insert(file_name(&path), text);
    }
    pages
}

fn snapshots() -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(snapshot_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| {
            let path = entry.expect("snapshot entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name")
                .to_owned();
            let text = std::fs::read_to_string(&path).expect("read snapshot");
            (name, text)
        })
        .collect()
}

#[test]
fn every_command_has_a_help_snapshot_and_every_snapshot_a_command() {
    let env = TestEnv::new();
    let pages = every_help_page(&env);
    // The walk really went down the tree: the deepest commands are there.
    for leaf in [
        "tenantctl-master-migrate.txt",
        "tenantctl-tenant-settings-set.txt",
        "tenantctl-server-list.txt",
        "tenantctl-doctor.txt",
    ] {
        assert!(pages.contains_key(leaf), "{leaf} not found by the walk");
    }
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot_dir()).expect("mkdir");
        for name in snapshots().keys() {
            if !pages.contains_key(name) {
                std::fs::remove_file(snapshot_dir().join(name)).expect("remove stale snapshot");
            }
        }
        for (name, text) in &pages {
            std::fs::write(snapshot_dir().join(name), text).expect("write snapshot");
        }
    }
    let commands: Vec<&String> = pages.keys().collect();
    let snapshotted = snapshots();
    let snapshotted: Vec<&String> = snapshotted.keys().collect();
    assert_eq!(
        commands, snapshotted,
        "the commands tenantctl lists (left) and the snapshots in tests/snapshots/help (right) \
         differ; rerun with UPDATE_SNAPSHOTS=1 if a command was added or removed on purpose"
    );
}

#[test]
fn help_of_every_command_matches_its_snapshot() {
    let env = TestEnv::new();
    let pages = every_help_page(&env);
    let password = password();
    let snapshotted = snapshots();
    let mut changed = Vec::new();
    for (name, text) in &pages {
        // The password from the environment must never appear in --help.
        assert!(!text.contains(&password), "{name} shows the password");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(snapshot_dir()).expect("mkdir");
            std::fs::write(snapshot_dir().join(name), text).expect("write snapshot");
            continue;
        }
        if snapshotted.get(name) != Some(text) {
            changed.push(format!(
                "{name}:\n{text}--- snapshot:\n{}",
                snapshotted.get(name).map_or("(none)", String::as_str)
            ));
        }
    }
    assert!(
        changed.is_empty(),
        "--help changed; rerun with UPDATE_SNAPSHOTS=1 if that is intended\n{}",
        changed.join("\n")
    );
}
