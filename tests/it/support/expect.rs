//! Exact expectations for one run of the binary: the whole stdout, the whole
//! stderr and the exit status, compared after the parts that differ from run
//! to run are replaced by placeholders.
//!
//! A `contains` check lets a wrong line through (an extra warning, a second
//! error, a table with a row too many); comparing the whole output does not,
//! and the expected text in the test reads like what an operator sees.
//!
//! ```ignore
//! env.expect(&["tenant", "url", &slug])
//!     .stdout("postgresql://{user}:***@{host}:{port}/tenant_acme_{T}\n")
//!     .run();
//! ```
//!
//! What varies per run, and what stands for it in the expected text:
//! - `{T}`: the test's token ([`TestEnv::token`]), so `acme-{T}` is `env.slug("acme")`;
//! - `{workdir}`: the directory the binary runs in ([`TestEnv::workdir`]);
//! - `{host}`, `{port}`, `{user}`: the test server's address and user, as
//!   the base URL gives them (only where they stand as a whole, e.g.
//!   `{host}:{port}`, `"port": {port}`, `//{user}:***@`);
//! - `{uuid}`: any UUID (company ids), unless [`Expect::with`] names it;
//! - `{time}`: any RFC 3339 timestamp (`2026-12-05T13:44:25Z`);
//! - `{n} objects`: the size of `tenant drift`'s reference (`(147 objects)`),
//!   which follows the server's version (its built-in grants, plpgsql's
//!   objects), not the test;
//! - `{ms}`: a duration where it is a timing: a whole table cell
//!   (`93ms`, `1.2s`, `3m 05s`) or a JSON `"duration_ms"` value. A duration
//!   inside a message (a timeout's limit, say) is compared as it is.
//!
//! Tables (comfy-table's box drawing) are checked to be aligned as printed,
//! then re-padded from their trimmed cells before comparing, because a
//! placeholder is not as wide as what it stands for: the expected table is
//! written aligned for the placeholders.
//!
//! Expected text that starts with a newline is unindented (common leading
//! whitespace removed, the first newline and the last line's indentation
//! dropped), so a table can be written indented in the test.

use std::process::Command;

use super::{Run, TestEnv};

/// A change to the command before it runs.
type Configure<'a> = Box<dyn FnOnce(&mut Command) + 'a>;

/// A run of the binary and what it must print; see the module docs.
#[must_use = "nothing runs until `.run()`"]
pub struct Expect<'a> {
    env: &'a TestEnv,
    args: Vec<String>,
    configure: Vec<Configure<'a>>,
    stdout: String,
    stderr: String,
    status: i32,
    placeholders: Vec<(String, String)>,
    stderr_in_any_order: bool,
    stdout_in_any_order: bool,
}

impl TestEnv {
    /// The binary run with `args` in this test's environment (as
    /// [`TestEnv::run_with`]), expected to print nothing and exit 0 unless
    /// told otherwise.
    pub fn expect(&self, args: &[&str]) -> Expect<'_> {
        Expect {
            env: self,
            args: args.iter().map(|&a| a.to_owned()).collect(),
            configure: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            status: 0,
            placeholders: Vec::new(),
            stderr_in_any_order: false,
            stdout_in_any_order: false,
        }
    }
}

impl<'a> Expect<'a> {
    /// Sets an environment variable for this run.
    pub fn env(self, key: &str, value: impl AsRef<str>) -> Self {
        let (key, value) = (key.to_owned(), value.as_ref().to_owned());
        self.configure(move |c| {
            c.env(key, value);
        })
    }

    /// Removes an environment variable for this run.
    pub fn env_remove(self, key: &str) -> Self {
        let key = key.to_owned();
        self.configure(move |c| {
            c.env_remove(key);
        })
    }

    /// Any other change to the command, as [`TestEnv::run_with`] takes it.
    pub fn configure(mut self, f: impl FnOnce(&mut Command) + 'a) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// The whole stdout expected (default: nothing).
    pub fn stdout(mut self, text: impl AsRef<str>) -> Self {
        self.stdout = unindent(text.as_ref());
        self
    }

    /// The whole stderr expected (default: nothing).
    pub fn stderr(mut self, text: impl AsRef<str>) -> Self {
        self.stderr = unindent(text.as_ref());
        self
    }

    /// Compares stderr's lines whatever their order: each tenant's failure
    /// line is printed when that tenant finishes, and tenants run at once.
    /// Every line must still be there exactly, as often as expected.
    pub fn stderr_in_any_order(mut self) -> Self {
        self.stderr_in_any_order = true;
        self
    }

    /// Compares stdout's lines whatever their order: the rows of a fleet
    /// report whose order depends on ids the run generates (a uuid sorts
    /// anywhere). Every line must still be there exactly, as often as
    /// expected.
    pub fn stdout_in_any_order(mut self) -> Self {
        self.stdout_in_any_order = true;
        self
    }

    /// The exit status expected (default: 0).
    pub fn status(mut self, code: i32) -> Self {
        self.status = code;
        self
    }

    /// Shows `value` as `placeholder` wherever it occurs in the output
    /// (before the built-in placeholders apply): a company's id as
    /// `{acme_id}`, a run id, a version the server reports.
    pub fn with(mut self, value: impl Into<String>, placeholder: &str) -> Self {
        let value = value.into();
        assert!(!value.is_empty(), "an empty value for {placeholder}");
        self.placeholders.push((value, placeholder.to_owned()));
        self
    }

    /// Runs the binary and fails the test, showing expected against actual,
    /// unless status, stdout and stderr are all as expected. Returns the run
    /// as printed (not normalized) for further checks.
    #[track_caller]
    pub fn run(self) -> Run {
        let Self {
            env,
            args,
            configure,
            stdout,
            stderr,
            status,
            placeholders,
            stderr_in_any_order,
            stdout_in_any_order,
        } = self;
        let sorted = |text: &str| {
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort_unstable();
            lines.join("\n") + "\n"
        };
        let shown = shown_args(env, &args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = env.run_with(&args, |c| {
            for f in configure {
                f(c);
            }
        });
        let normalizer = Normalizer::new(env, placeholders);
        let mut report = String::new();
        if run.code != status {
            report.push_str(&format!(
                "exit status: expected {status}, got {}\n",
                run.code
            ));
        }
        for (name, expected, actual, any_order) in [
            ("stdout", &stdout, &run.stdout, stdout_in_any_order),
            ("stderr", &stderr, &run.stderr, stderr_in_any_order),
        ] {
            // A literal in the expected text that happens to be this run's
            // value (the test server at localhost:5432, say) stands for its
            // placeholder too.
            let expected = &normalizer.literals(expected);
            let expected = &if any_order {
                sorted(expected)
            } else {
                expected.clone()
            };
            let normalized = normalizer
                .normalize(actual)
                .map(|text| if any_order { sorted(&text) } else { text });
            match normalized {
                Err(problem) => {
                    report.push_str(&format!("{name}: {problem}\n--- as printed:\n{actual}\n"));
                }
                Ok(actual) if actual != *expected => {
                    report.push_str(&format!(
                        "{name} differs (- expected, + actual):\n{}--- actual, normalized:\n{actual}---\n",
                        diff(expected, &actual)
                    ));
                }
                Ok(_) => {}
            }
        }
        assert!(report.is_empty(), "tenantctl {shown}\n{report}");
        run
    }
}

/// The arguments for a failure message, without the test server's password
/// (a test may pass `--base-url`).
fn shown_args(env: &TestEnv, args: &[String]) -> String {
    let password = url::Url::parse(&env.base_url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .filter(|p| !p.is_empty());
    let joined = args.join(" ");
    match password {
        Some(password) => joined.replace(&password, "***"),
        None => joined,
    }
}

/// Replaces what varies per run with placeholders.
struct Normalizer {
    /// Literal replacements, applied in order.
    literal: Vec<(String, String)>,
    port: Option<String>,
}

impl Normalizer {
    fn new(env: &TestEnv, mut literal: Vec<(String, String)>) -> Self {
        let url = url::Url::parse(&env.base_url).ok();
        let host = url.as_ref().and_then(|u| u.host_str().map(str::to_owned));
        let user = url
            .as_ref()
            .map(|u| u.username().to_owned())
            .filter(|u| !u.is_empty());
        let port = url.as_ref().and_then(url::Url::port).map(|p| p.to_string());
        // The scratch directory holds the token: it goes first.
        let workdir = env.workdir.path().display().to_string();
        literal.push((workdir, "{workdir}".to_owned()));
        literal.push((env.token.clone(), "{T}".to_owned()));
        if let Some(user) = user {
            literal.push((format!("//{user}:"), "//{user}:".to_owned()));
            literal.push((format!("user \"{user}\""), "user \"{user}\"".to_owned()));
            literal.push((format!("//{user}@"), "//{user}@".to_owned()));
        }
        if let Some(host) = host {
            if let Some(port) = &port {
                literal.push((format!("{host}:{port}"), "{host}:{port}".to_owned()));
            }
            literal.push((
                format!("\"host\": \"{host}\""),
                "\"host\": \"{host}\"".to_owned(),
            ));
        }
        Self { literal, port }
    }

    /// `text` with this run's literal values replaced by their
    /// placeholders, and nothing else.
    fn literals(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (value, placeholder) in &self.literal {
            text = text.replace(value.as_str(), placeholder);
        }
        if let Some(port) = &self.port {
            text = replace_number(&text, port, "{port}");
        }
        text
    }

    fn normalize(&self, text: &str) -> Result<String, String> {
        for block in table_blocks(text) {
            aligned(&block)?;
        }
        let text = self.literals(text);
        let text = replace_words(&text, is_uuid, "{uuid}");
        let text = replace_words(&text, is_timestamp, "{time}");
        let text = json_durations(&text);
        let text = object_counts(&text);
        Ok(tables(&text))
    }
}

/// `number` where it stands alone (not part of a longer number).
fn replace_number(text: &str, number: &str, placeholder: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(number) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + number.len()..].chars().next();
        let alone = !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..at]);
        out.push_str(if alone { placeholder } else { number });
        rest = &rest[at + number.len()..];
    }
    out.push_str(rest);
    out
}

/// Each run of characters that can make up a UUID or timestamp, replaced
/// where `matches` says it is one (a trailing `:` or `.` is punctuation).
fn replace_words(text: &str, matches: fn(&str) -> bool, placeholder: &str) -> String {
    let word_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+');
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let core = word.trim_end_matches([':', '.']);
        if matches(core) {
            out.push_str(placeholder);
            out.push_str(&word[core.len()..]);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_uuid(word: &str) -> bool {
    let groups: Vec<&str> = word.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `2026-12-05T13:44:25Z`, with optional fractional seconds and an offset
/// instead of `Z`.
fn is_timestamp(word: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let Some((date, time)) = word.split_once('T') else {
        return false;
    };
    let date: Vec<&str> = date.split('-').collect();
    if !(date.len() == 3
        && date
            .iter()
            .zip([4, 2, 2])
            .all(|(p, n)| p.len() == n && digits(p)))
    {
        return false;
    }
    let (clock, zone_ok) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, true)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let zone = &time[at + 1..];
        (
            &time[..at],
            zone.len() == 5 && digits(&zone[..2]) && digits(&zone[3..]),
        )
    } else {
        return false;
    };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let clock: Vec<&str> = clock.split(':').collect();
    zone_ok
        && digits(fraction)
        && clock.len() == 3
        && clock.iter().all(|p| p.len() == 2 && digits(p))
}

/// `850ms`, `1.2s`, `3m 05s`: output's `format_duration`.
fn is_duration(cell: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some(ms) = cell.strip_suffix("ms") {
        return digits(ms);
    }
    if let Some((m, s)) = cell.split_once("m ") {
        return digits(m) && s.len() == 3 && s.ends_with('s') && digits(&s[..2]);
    }
    cell.strip_suffix('s')
        .and_then(|s| s.split_once('.'))
        .is_some_and(|(a, b)| digits(a) && b.len() == 1 && digits(b))
}

/// `(147 objects)` → `({n} objects)`.
fn object_counts(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(" objects)") {
        let head = &rest[..at];
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let open = at - digits;
        if digits > 0 && head[..open].ends_with('(') {
            out.push_str(&rest[..open]);
            out.push_str("{n}");
        } else {
            out.push_str(head);
        }
        out.push_str(" objects)");
        rest = &rest[at + " objects)".len()..];
    }
    out.push_str(rest);
    out
}

/// `"duration_ms": 83` → `"duration_ms": {ms}`, also in compact JSON.
fn json_durations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let key = "\"duration_ms\":";
    while let Some(at) = rest.find(key) {
        let after = &rest[at + key.len()..];
        let spaces = after.len() - after.trim_start_matches(' ').len();
        let value = &after[spaces..];
        let len = value.chars().take_while(char::is_ascii_digit).count();
        out.push_str(&rest[..at + key.len() + spaces]);
        if len > 0 {
            out.push_str("{ms}");
        }
        rest = &value[len..];
    }
    out.push_str(rest);
    out
}

/// Box-drawing characters that start and end each line of a table.
const TABLE_EDGES: [(char, char); 5] = [('┌', '┐'), ('│', '│'), ('╞', '╡'), ('├', '┤'), ('└', '┘')];

/// Characters where a column boundary falls, per kind of line.
const JUNCTIONS: [char; 5] = ['┬', '┆', '╪', '┼', '┴'];

fn is_table_line(line: &str) -> bool {
    let (Some(first), Some(last)) = (line.chars().next(), line.chars().next_back()) else {
        return false;
    };
    line.chars().count() > 1 && TABLE_EDGES.iter().any(|&(l, r)| first == l && last == r)
}

/// The tables in `text`, each as its lines.
fn table_blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.split('\n') {
        let table_line = is_table_line(line);
        match current.as_mut() {
            Some(block) if table_line && !line.starts_with('┌') => {
                block.push(line);
                if line.starts_with('└') {
                    blocks.extend(current.take());
                }
            }
            _ => {
                blocks.extend(current.take());
                if table_line && line.starts_with('┌') {
                    current = Some(vec![line]);
                }
            }
        }
    }
    blocks.extend(current);
    blocks
}

/// Where each column boundary falls on a line of a table.
fn boundaries(line: &str) -> Vec<usize> {
    line.chars()
        .enumerate()
        .filter(|&(_, c)| JUNCTIONS.contains(&c))
        .map(|(n, _)| n)
        .collect()
}

/// Every line of the table as wide as the first, its columns in line.
fn aligned(lines: &[&str]) -> Result<(), String> {
    let first = boundaries(lines[0]);
    let width = lines[0].chars().count();
    match lines
        .iter()
        .find(|line| line.chars().count() != width || boundaries(line) != first)
    {
        Some(line) => Err(format!("table not aligned at line {line:?}")),
        None => Ok(()),
    }
}

/// Each table re-padded from its trimmed cells (timing cells become `{ms}`).
fn tables(text: &str) -> String {
    let mut out: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut at = 0;
    for block in table_blocks(text) {
        // Blocks come in order; find where this one starts.
        while out[at] != block[0] {
            at += 1;
        }
        let repadded = table(&block);
        out.splice(at..at + block.len(), repadded);
        at += block.len();
    }
    out.join("\n")
}

fn table(lines: &[&str]) -> Vec<String> {
    // Each line: its trimmed cells, or (for a border) its fill character.
    let rows: Vec<Result<Vec<String>, char>> = lines
        .iter()
        .map(|line| {
            let inner: String = {
                let mut chars = line.chars();
                chars.next();
                chars.next_back();
                chars.collect()
            };
            if line.starts_with('│') {
                Ok(inner
                    .split('┆')
                    .map(|cell| {
                        let cell = cell.trim_matches(' ');
                        if is_duration(cell) { "{ms}" } else { cell }.to_owned()
                    })
                    .collect())
            } else {
                Err(inner.chars().next().unwrap_or('─'))
            }
        })
        .collect();
    let columns = rows
        .iter()
        .flatten()
        .map(Vec::len)
        .max()
        .unwrap_or_else(|| boundaries(lines[0]).len() + 1);
    let mut widths = vec![0; columns];
    for cells in rows.iter().flatten() {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    lines
        .iter()
        .zip(&rows)
        .map(|(line, row)| {
            let left = line.chars().next().unwrap_or(' ');
            let right = line.chars().next_back().unwrap_or(' ');
            match row {
                Ok(cells) => {
                    let padded: Vec<String> = cells
                        .iter()
                        .zip(&widths)
                        .map(|(cell, &w)| format!(" {cell:w$} "))
                        .collect();
                    format!("{left}{}{right}", padded.join("┆"))
                }
                Err(fill) => {
                    let junction = line
                        .chars()
                        .find(|c| JUNCTIONS.contains(c))
                        .unwrap_or(*fill);
                    let segments: Vec<String> = widths
                        .iter()
                        .map(|&w| fill.to_string().repeat(w + 2))
                        .collect();
                    format!("{left}{}{right}", segments.join(&junction.to_string()))
                }
            }
        })
        .collect()
}

/// Drops the first newline and the indentation common to every non-blank
/// line, when `text` starts with a newline; otherwise `text` as it is.
pub fn unindent(text: &str) -> String {
    let Some(body) = text.strip_prefix('\n') else {
        return text.to_owned();
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                &l[indent..]
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line diff (longest common subsequence): `  ` both, `- ` expected only,
/// `+ ` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.split('\n').collect();
    let b: Vec<&str> = actual.split('\n').collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[test]
fn normalizes_tables_timings_and_ids() {
    let printed = "\
┌──────────────────────────────────────┬─────────┬──────┐
│ id                                   ┆ slug    ┆ time │
╞══════════════════════════════════════╪═════════╪══════╡
│ 99cb3f55-1d3a-4443-99a4-79222e80c6c2 ┆ acme-t1 ┆ 93ms │
│ d859033b-2e2c-4be3-8874-f577152fe812 ┆ b-t1    ┆ 1.2s │
└──────────────────────────────────────┴─────────┴──────┘
2 tenant(s) at 2026-12-05T13:44:25Z: company 99cb3f55-1d3a-4443-99a4-79222e80c6c2: not 2026-12-05 nor 93ms
{\"duration_ms\": 83, \"duration_ms\":7}
";
    let expected = unindent(
        "
        ┌────────┬─────────┬──────┐
        │ id     ┆ slug    ┆ time │
        ╞════════╪═════════╪══════╡
        │ {uuid} ┆ acme-t1 ┆ {ms} │
        │ {uuid} ┆ b-t1    ┆ {ms} │
        └────────┴─────────┴──────┘
        2 tenant(s) at {time}: company {uuid}: not 2026-12-05 nor 93ms
        {\"duration_ms\": {ms}, \"duration_ms\":{ms}}
        ",
    );
    let normalizer = Normalizer {
        literal: Vec::new(),
        port: None,
    };
    let actual = normalizer.normalize(printed).expect("aligned");
    assert_eq!(actual, expected, "{}", diff(&expected, &actual));
    // A table printed out of line is an error, not something re-padding hides.
    let misaligned = printed.replacen("│ id   ", "│ id  ", 1);
    assert!(normalizer.normalize(&misaligned).is_err());
}

#[test]
fn expect_passes_on_the_exact_output() {
    let env = TestEnv::new();
    let run = env
        .expect(&["-V"])
        .stdout(format!("tenantctl {}\n", env!("CARGO_PKG_VERSION")))
        .run();
    assert_eq!(run.code, 0);
}

#[test]
#[should_panic(expected = "stdout differs")]
fn expect_fails_on_a_line_too_many() {
    TestEnv::new().expect(&["--version"]).stdout("").run();
}

#[test]
#[should_panic(expected = "exit status: expected 2, got 0")]
fn expect_fails_on_another_status() {
    TestEnv::new()
        .expect(&["-V"])
        .stdout(format!("tenantctl {}\n", env!("CARGO_PKG_VERSION")))
        .status(2)
        .run();
}

#[test]
#[should_panic(expected = "stderr differs")]
fn expect_fails_on_stderr_it_was_not_told_of() {
    TestEnv::new().expect(&["tenant"]).status(2).run();
}
