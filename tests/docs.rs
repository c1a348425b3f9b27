//! The book and the README, checked without a database: every relative link
//! and `#anchor` resolves (mdBook 0.5 checks neither), every page is in
//! SUMMARY.md, and every `tenantctl` command line in a code block (the CI
//! pipelines included) parses with tenantctl's own command line.
//!
//! Flags the issue-20 contract adds (labels, report files, ...) land from
//! other branches; until they do, `BOOK_CONTRACT_PENDING=1` lets lines that
//! name one of them fail to parse, and says which. Without it every line
//! must parse.

#![allow(clippy::pedantic, reason = "tests favour directness")]

mod bookdoc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The flags and subcommands of the shared contract for issue 20.
const CONTRACT: &[&str] = &[
    "--label",
    "--failed-in",
    "--report-file",
    "--summary-file",
    "--check",
    "junit",
    "completions",
    "man",
    "--verbose",
    "-v",
];

fn pending_allowed() -> bool {
    std::env::var("BOOK_CONTRACT_PENDING").is_ok_and(|v| v == "1")
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The links among `paths` that lead nowhere, and how many were checked.
fn broken_links(paths: &[PathBuf]) -> (Vec<String>, usize) {
    let pages: HashMap<PathBuf, bookdoc::Page> = paths
        .iter()
        .map(|p| (normalize(p), bookdoc::read(p)))
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages.values() {
        for link in &page.links {
            let dest = link.dest.as_str();
            if dest.contains("://") || dest.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = dest.split_once('#').unwrap_or((dest, ""));
            let target = if file.is_empty() {
                normalize(&page.path)
            } else {
                normalize(&page.path.parent().expect("a folder").join(file))
            };
            let at = format!("{}:{}: {dest}", page.path.display(), link.line);
            if !target.exists() {
                broken.push(format!("{at}: no file {}", target.display()));
            } else if !anchor.is_empty() {
                match pages.get(&target) {
                    Some(p) if p.ids.contains(anchor) => {}
                    Some(_) => broken.push(format!("{at}: no heading with id #{anchor}")),
                    None => broken.push(format!("{at}: an anchor into a file that is not a page")),
                }
            }
        }
    }
    broken.sort();
    (broken, checked)
}

#[test]
fn every_link_and_anchor_resolves() {
    let (broken, checked) = broken_links(&bookdoc::pages());
    assert!(
        checked > 100,
        "only {checked} links found: is the parser reading the pages?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_missing_page_or_heading_is_a_broken_link() {
    let dir = std::env::temp_dir().join(format!("tenantctl-links-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("guide")).expect("a scratch folder");
    std::fs::write(
        dir.join("a.md"),
        "# A\n\n## Here\n\n[ok](guide/b.md#there) [ok](#here) [gone](c.md) [no id](guide/b.md#nowhere)\n\n```sh\n[not a link](d.md)\n```\n",
    )
    .expect("write a page");
    std::fs::write(
        dir.join("guide/b.md"),
        "# B\n\n## There\n\n[up](../a.md#here) [bad](../a.md#there)\n",
    )
    .expect("write a page");
    let (broken, checked) = broken_links(&[dir.join("a.md"), dir.join("guide/b.md")]);
    std::fs::remove_dir_all(&dir).expect("remove the scratch folder");
    let what: Vec<&str> = broken
        .iter()
        .map(|b| b.rsplit(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(checked, 6, "{broken:?}");
    assert_eq!(
        what,
        [
            format!("no file {}", dir.join("c.md").display()).as_str(),
            "no heading with id #nowhere",
            "no heading with id #there",
        ],
        "{broken:?}"
    );
}

#[test]
fn a_broken_anchor_is_caught() {
    // The check above is only as good as its ids: mdBook's for a heading
    // with code, punctuation and a repeat.
    let dir = std::env::temp_dir().join(format!("tenantctl-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let path = dir.join("p.md");
    std::fs::write(&path, "# A `tenantctl tenant url <slug|id>` (x)/y\n\n## Same\n\n## Same\n\n[l](#same-1) [m](q.md)\n").expect("write a page");
    let page = bookdoc::read(&path);
    std::fs::remove_dir_all(&dir).expect("remove the scratch folder");
    let mut ids: Vec<_> = page.ids.iter().cloned().collect();
    ids.sort();
    assert_eq!(ids, ["a-tenantctl-tenant-url-slugid-xy", "same", "same-1"]);
    assert_eq!(
        page.links
            .iter()
            .map(|l| l.dest.as_str())
            .collect::<Vec<_>>(),
        ["#same-1", "q.md"]
    );
}

#[test]
fn every_page_is_in_the_summary() {
    let src = bookdoc::root().join("docs/src");
    let summary = bookdoc::read(&src.join("SUMMARY.md"));
    let listed: Vec<PathBuf> = summary
        .links
        .iter()
        .map(|l| normalize(&src.join(&l.dest)))
        .collect();
    let missing: Vec<String> = bookdoc::pages()
        .into_iter()
        .filter(|p| p.starts_with(&src) && !p.ends_with("SUMMARY.md"))
        .filter(|p| !listed.contains(&normalize(p)))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "pages SUMMARY.md does not list: {missing:?}"
    );
    assert!(
        listed.iter().any(|p| p.ends_with("json.md")),
        "SUMMARY.md links the JSON contract"
    );
}

/// The command line as the book writes it, with no variable of this
/// process's standing in for a flag it leaves out: a CI job running the
/// suite with `TENANTCTL_SHARD=auto` or an empty `TENANTCTL_LABEL` (as a
/// pipeline may set for its deploy) made every line fail.
fn parse_as_written(args: &[String]) -> Result<tenantctl::cli::Cli, clap::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    fn no_env(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.env(None)).mut_subcommands(no_env)
    }
    let matches = no_env(tenantctl::cli::Cli::command()).try_get_matches_from(
        std::iter::once("tenantctl".to_string()).chain(args.iter().cloned()),
    )?;
    tenantctl::cli::Cli::from_arg_matches(&matches)
}

#[test]
fn every_command_line_in_the_book_parses() {
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    let mut parsed = 0;
    for path in bookdoc::pages() {
        let page = bookdoc::read(&path);
        for block in &page.blocks {
            // Every command of a line: `tenantctl a && tenantctl b` checked
            // only its first.
            let commands = bookdoc::shell_lines(block).into_iter().flat_map(|line| {
                line.split(" && ")
                    .flat_map(|c| c.split(" || "))
                    .flat_map(|c| c.split("; "))
                    .map(str::trim)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            });
            for line in commands {
                let Some(mut args) = bookdoc::tenantctl_args(&line) else {
                    continue;
                };
                // `--shard auto` reads the CI job's variables as it parses,
                // which this process has or not depending on where the
                // suite runs: read it as the job would (as `$X` reads 1).
                for i in 1..args.len() {
                    if args[i] == "auto" && args[i - 1] == "--shard" {
                        args[i] = "0/1".into();
                    }
                }
                let at = format!("{}:{}: {line}", path.display(), block.line);
                match parse_as_written(&args) {
                    Ok(_) => parsed += 1,
                    Err(e)
                        if matches!(
                            e.kind(),
                            clap::error::ErrorKind::DisplayHelp
                                | clap::error::ErrorKind::DisplayVersion
                        ) =>
                    {
                        parsed += 1
                    }
                    Err(e) => {
                        let names_contract = args.iter().any(|a| {
                            CONTRACT
                                .iter()
                                .any(|c| a == c || a.starts_with(&format!("{c}=")))
                        });
                        let first = e.to_string().lines().next().unwrap_or_default().to_string();
                        if names_contract && pending_allowed() {
                            pending.push(format!("{at}\n    {first}"));
                        } else {
                            failures.push(format!("{at}\n    {first}"));
                        }
                    }
                }
            }
        }
    }
    if !pending.is_empty() {
        eprintln!(
            "lines left to the contract's flags (BOOK_CONTRACT_PENDING=1):\n{}",
            pending.join("\n")
        );
    }
    assert!(
        parsed > 40,
        "only {parsed} command lines parsed: is the extraction working?"
    );
    assert!(
        failures.is_empty(),
        "command lines tenantctl does not accept:\n{}",
        failures.join("\n")
    );
}

#[test]
fn shell_lines_are_read_as_a_shell_would() {
    let words = |l: &str| bookdoc::shell_words(l);
    assert_eq!(
        words("tenantctl a 'b c' \"d $X\" > f # c"),
        ["tenantctl", "a", "b c", "d 1"]
    );
    assert_eq!(
        words("tenantctl --shard \"$((CI_NODE_INDEX - 1))/$CI_NODE_TOTAL\" 2> e"),
        ["tenantctl", "--shard", "0/1"]
    );
    assert_eq!(
        words("tenantctl --shard ${{ matrix.shard }}/4 | x"),
        ["tenantctl", "--shard", "1/4"]
    );
    let block = bookdoc::Block {
        info: vec!["yaml".into()],
        text: "      - run: >\n          tenantctl a\n          --b c\n        x: y\n      - run: tenantctl d \\\n          e\n".into(),
        line: 1,
    };
    let lines = bookdoc::shell_lines(&block);
    assert!(
        lines.contains(&"tenantctl a --b c".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"tenantctl d  e".to_string())
            || lines.contains(&"tenantctl d e".to_string()),
        "{lines:?}"
    );
}
