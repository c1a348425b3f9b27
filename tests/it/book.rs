//! The book's runnable examples, run: every ```console block of a page,
//! `$ ` line by line in order, against a fresh master holding the demo's
//! fleet (`just demo`: tenants acme, green-city and riverside), through
//! bash in a scratch folder with `tenantctl` on PATH. Each line must exit
//! 0, or N where it ends in `# exits N`; each output line shown under it
//! must appear in what it printed (box drawing and runs of spaces aside,
//! since a slug made unique per test widens a table; `…` stands for any
//! text). Slugs the book uses become this test's own (`acme` is
//! `acme-{token}`, `tenant_acme` is `tenant_acme_{token}`), so every
//! database a page makes is this test's and is dropped after it.
//!
//! A block marked `console,contract` uses flags of issue 20's contract that
//! other branches add; it runs like any other unless BOOK_CONTRACT_PENDING=1
//! (set only on a branch without them), which skips it, saying so.

#[path = "../bookdoc/mod.rs"]
mod bookdoc;

use std::process::Command;

use crate::support::TestEnv;

/// The slugs the book's runnable examples may use.
const SLUGS: &[&str] = &["acme", "green-city", "riverside", "blue-sky", "harbour"];

/// What a page's runnable lines will be run with: each line, its expected
/// exit status and output lines, and whether its block waits on the contract.
pub(crate) struct Example {
    pub(crate) line: String,
    pub(crate) status: i32,
    pub(crate) output: Vec<String>,
    pub(crate) contract: bool,
    pub(crate) at: String,
}

pub(crate) fn examples(page: &str) -> Vec<Example> {
    let path = bookdoc::root().join("docs/src").join(page);
    let parsed = bookdoc::read(&path);
    let mut out: Vec<Example> = Vec::new();
    for block in parsed.blocks.iter().filter(|b| b.lang() == "console") {
        for line in block.text.lines() {
            if let Some(command) = line.strip_prefix("$ ") {
                let status = command
                    .rsplit_once("# exits ")
                    .map_or(0, |(_, n)| n.trim().parse().expect("`# exits N`"));
                out.push(Example {
                    line: command.to_string(),
                    status,
                    output: Vec::new(),
                    contract: block.has("contract"),
                    at: format!("{page}:{}", block.line),
                });
            } else if !line.trim().is_empty() {
                let last = out.last_mut().expect("output after a `$ ` line");
                last.output.push(line.to_string());
            }
        }
    }
    out
}

/// `acme` as this test's slug, `tenant_acme` and `db_x` as its databases.
fn localize(env: &TestEnv, text: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(word).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c| !word(c)).unwrap_or(rest.len());
        let w = &rest[..end];
        if SLUGS.contains(&w) {
            out.push_str(&env.slug(w));
        } else if (w.starts_with("tenant_") || w.starts_with("db_")) && w.len() > 4 {
            out.push_str(&format!("{w}_{}", env.token));
        } else {
            out.push_str(w);
        }
        rest = &rest[end..];
    }
    out
}

/// Box drawing dropped and white space collapsed.
fn flatten(text: &str) -> String {
    text.chars()
        .map(|c| {
            if ('\u{2500}'..='\u{257f}').contains(&c) {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether one line of `printed` holds the parts of `expected` (split at
/// `…`) in order, each where a word starts and ends unless a `…` stands
/// on that side: `3` is not found in `13`, nor `ok` in `token`.
pub(crate) fn shows(printed: &str, expected: &str) -> bool {
    let parts: Vec<String> = expected.split('…').map(flatten).collect();
    let last = parts.len() - 1;
    printed.lines().map(flatten).any(|line| {
        let word = |at: Option<char>, edge: Option<char>| {
            !(at.is_some_and(char::is_alphanumeric) && edge.is_some_and(char::is_alphanumeric))
        };
        let mut from = 0;
        parts.iter().enumerate().all(|(k, part)| {
            let found = line[from..].match_indices(part.as_str()).find(|(at, _)| {
                let start = from + at;
                let end = start + part.len();
                (k > 0 || word(line[..start].chars().next_back(), part.chars().next()))
                    && (k < last || word(line[end..].chars().next(), part.chars().next_back()))
            });
            match found {
                Some((at, _)) => {
                    from += at + part.len();
                    true
                }
                None => false,
            }
        })
    })
}

fn run_page(page: &str) {
    let examples = examples(page);
    assert!(!examples.is_empty(), "{page} has no runnable example");
    let env = TestEnv::new();
    env.run(&["master", "migrate"]).ok();
    for (slug, name) in [
        ("acme", "Acme Corp"),
        ("green-city", "Green City Council"),
        ("riverside", "riverside"),
    ] {
        env.run(&["tenant", "create", &env.slug(slug), "--name", name])
            .ok();
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tenantctl"))
        .parent()
        .expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pending = std::env::var("BOOK_CONTRACT_PENDING").is_ok_and(|v| v == "1");
    for example in examples {
        if example.contract && pending {
            eprintln!(
                "{}: left to the contract's flags: {}",
                example.at, example.line
            );
            continue;
        }
        let line = localize(&env, &example.line);
        let mut cmd = Command::new("bash");
        env.configure(&mut cmd);
        let output = cmd
            .args(["-c", &line])
            .env("PATH", &path)
            .env_remove("CI")
            .env_remove("GITHUB_ACTIONS")
            .output()
            .expect("run bash");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            output.status.code(),
            Some(example.status),
            "{}: `{line}` exited otherwise than the book says; it printed:\n{printed}",
            example.at
        );
        for expected in &example.output {
            let expected = localize(&env, expected);
            assert!(
                shows(&printed, &expected),
                "{}: `{line}` did not print the line the book shows:\n  {expected}\nit printed:\n{printed}",
                example.at
            );
        }
    }
}

macro_rules! pages {
    ($($name:ident => $page:literal),* $(,)?) => {
        $(#[test]
        fn $name() {
            run_page($page);
        })*

        pub(crate) const PAGES: &[&str] = &[$($page),*];
    };
}

pages! {
    book_guide_intro => "guide/README.md",
    book_setup => "guide/setup.md",
    book_create => "guide/create.md",
    book_migrate => "guide/migrate.md",
    book_inspect => "guide/inspect.md",
    book_fix => "guide/fix.md",
    book_drop => "guide/drop.md",
    book_templates => "guide/templates.md",
    book_move => "guide/move.md",
    book_ci => "ci.md",
}

#[test]
fn book_every_page_with_examples_is_run() {
    let src = bookdoc::root().join("docs/src");
    let with_examples: Vec<String> = bookdoc::pages()
        .iter()
        .filter(|p| p.starts_with(&src))
        .filter(|p| {
            bookdoc::read(p)
                .blocks
                .iter()
                .any(|b| b.lang() == "console")
        })
        .map(|p| {
            p.strip_prefix(&src)
                .expect("in docs/src")
                .display()
                .to_string()
        })
        .collect();
    let missing: Vec<&String> = with_examples
        .iter()
        .filter(|p| !PAGES.contains(&p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "pages with ```console examples no test runs: {missing:?}"
    );
}

#[test]
fn book_example_lines_are_matched_as_documented() {
    assert!(shows("│ acme   ┆ ok ┆ 95ms │\n", "acme ok"));
    assert!(shows(
        "created tenant a (id 1-2, database d): x\n",
        "created tenant a (id …, database d)…"
    ));
    assert!(!shows("created tenant b (id 1)\n", "created tenant a…"));
    assert!(
        !shows("ok\nacme\n", "acme ok"),
        "one line must hold all of it"
    );
}
