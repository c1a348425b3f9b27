//! The file `tenant create --from-file` reads: one tenant a line, as CSV
//! with a header or as JSON Lines, read and checked whole before anything
//! is created, so a bad line is refused with its line number while the
//! master and the servers are still untouched.
//!
//! Fields (CSV header names, JSON keys): `slug` (required), `name`,
//! `db_name`, `server`; any other is a value for that column of the
//! master's companies table, as `--column NAME=VALUE` gives one (whether
//! the table has it is checked against the master, before anything is
//! created). An empty CSV cell, or a JSON `null`, is a field not given.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dbname::DbName;
use crate::error::UsageError;
use crate::servers::ServerName;
use crate::tenant::Slug;
use crate::text::shown;

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 20;

/// The fields tenantctl reads itself; every other one names a column.
pub const FIELDS: [&str; 4] = ["slug", "name", "db_name", "server"];

/// One tenant of the file.
#[derive(Debug, Clone)]
pub struct FileLine {
    /// Where it starts in the file, counting from 1 (a CSV's header is
    /// line 1).
    pub number: usize,
    pub slug: Slug,
    pub name: Option<String>,
    pub db: Option<DbName>,
    pub server: Option<ServerName>,
    /// Values for columns of the companies table, by column name.
    pub columns: Vec<(String, String)>,
}

impl FileLine {
    /// The database name this line asks for, or the one its slug derives.
    pub fn db_or_default(&self) -> DbName {
        self.db
            .clone()
            .unwrap_or_else(|| self.slug.default_db_name())
    }
}

/// A file read whole.
#[derive(Debug)]
pub struct TenantFile {
    /// How it was shown to the operator: its path, or `standard input`.
    pub label: String,
    pub lines: Vec<FileLine>,
    /// Each column name the file gives values for, with the first line
    /// that names it (a CSV's header: line 1).
    pub columns: Vec<(String, usize)>,
}

impl TenantFile {
    /// Refuses the file, each problem on a line of its own, naming its
    /// line; nothing was created.
    pub fn refuse(&self, problems: &[(usize, String)]) -> UsageError {
        refusal(&self.label, problems)
    }
}

/// The two formats a file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Jsonl,
}

/// Reads and checks `path` (`-`: standard input). `check` adds the
/// problems of a line only the caller can see (an unknown server, the
/// master's own database name).
pub fn read(
    path: &Path,
    check: &dyn Fn(&FileLine) -> Vec<String>,
) -> Result<TenantFile, UsageError> {
    let (label, bytes) = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|e| UsageError(format!("--from-file -: cannot read standard input: {e}")))?;
        ("standard input".to_owned(), bytes)
    } else {
        let label = shown(&path.display().to_string());
        let bytes = std::fs::read(path)
            .map_err(|e| UsageError(format!("--from-file {label}: cannot read it: {e}")))?;
        (label, bytes)
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| UsageError(format!("--from-file {label}: not UTF-8 text")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (raws, mut problems, columns) = match format_of(path, text) {
        Format::Csv => read_csv(text),
        Format::Jsonl => read_jsonl(text),
    };
    let mut lines = Vec::new();
    for raw in raws {
        match line_of(raw) {
            Ok(line) => {
                problems.extend(check(&line).into_iter().map(|p| (line.number, p)));
                lines.push(line);
            }
            Err((number, problem)) => problems.push((number, problem)),
        }
    }
    problems.extend(duplicates(&lines));
    if problems.is_empty() && lines.is_empty() {
        problems.push((
            1,
            "no tenants in it: give a CSV header and a line per tenant, or one JSON object a line"
                .to_owned(),
        ));
    }
    if !problems.is_empty() {
        return Err(refusal(&label, &problems));
    }
    Ok(TenantFile {
        label,
        lines,
        columns,
    })
}

fn refusal(label: &str, problems: &[(usize, String)]) -> UsageError {
    let mut problems = problems.to_vec();
    problems.sort_by_key(|(line, _)| *line);
    let mut text: Vec<String> = problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|(line, problem)| format!("{label} line {line}: {problem}"))
        .collect();
    if problems.len() > MAX_PROBLEMS {
        text.push(format!(
            "{label}: {} more problem(s) not listed",
            problems.len() - MAX_PROBLEMS
        ));
    }
    text.push(format!(
        "{label}: refused before anything was created; fix the line(s) above and run again"
    ));
    UsageError(text.join("\n"))
}

/// By the extension (`.csv`; `.jsonl`, `.ndjson`), else by the content: a
/// first non-blank character `{` is JSON Lines, anything else a CSV.
fn format_of(path: &Path, text: &str) -> Format {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Format::Csv,
        Some("jsonl" | "ndjson") => Format::Jsonl,
        _ if text.trim_start().starts_with('{') => Format::Jsonl,
        _ => Format::Csv,
    }
}

/// A line's fields as the file gave them, not yet checked.
struct Raw {
    number: usize,
    fields: Vec<(String, Option<String>)>,
}

type Read = (Vec<Raw>, Vec<(usize, String)>, Vec<(String, usize)>);

fn read_csv(text: &str) -> Read {
    let mut problems = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::Headers)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_owned).collect(),
        Err(err) => return (Vec::new(), vec![(1, csv_problem(&err))], Vec::new()),
    };
    for (i, header) in headers.iter().enumerate() {
        if header.is_empty() {
            problems.push((1, format!("the header's field {} has no name", i + 1)));
        } else if headers[..i].contains(header) {
            problems.push((1, format!("the header names {} twice", shown(header))));
        }
    }
    if !headers.iter().any(|h| h == "slug") {
        problems.push((
            1,
            format!(
                "the header has no slug field (it names {}); the first line of a CSV names the fields: slug, and optionally name, db_name, server and columns of the companies table",
                shown(&headers.join(","))
            ),
        ));
    }
    if !problems.is_empty() {
        return (Vec::new(), problems, Vec::new());
    }
    let columns = headers
        .iter()
        .filter(|h| !FIELDS.contains(&h.as_str()))
        .map(|h| (h.clone(), 1))
        .collect();
    let mut raws = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let number = line_at(text, record.position());
                let fields = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.clone(), (!v.is_empty()).then(|| v.to_owned())))
                    .collect();
                raws.push(Raw { number, fields });
            }
            Err(err) => {
                let number = line_at(text, err.position());
                problems.push((number, csv_problem(&err)));
            }
        }
    }
    (raws, problems, columns)
}

/// The line a record starts on, counted from its byte offset (the
/// reader's own line count leaves out the blank lines it skips).
fn line_at(text: &str, position: Option<&csv::Position>) -> usize {
    let mut at = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
    // Its position is where the reader began to look for it: before the
    // blank lines it then skipped.
    while matches!(text.as_bytes().get(at), Some(b'\n' | b'\r')) {
        at += 1;
    }
    let before = text.as_bytes().get(..at).unwrap_or(text.as_bytes());
    // The newlines before it, plus one: its own line.
    before.split(|b| *b == b'\n').count()
}

/// A CSV reader's error in the operator's terms (its own message names a
/// record and a byte offset, and could quote nothing of the line).
fn csv_problem(err: &csv::Error) -> String {
    match err.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} field(s) where the header has {expected_len}"),
        _ => format!("not CSV: {err}"),
    }
}

fn read_jsonl(text: &str) -> Read {
    let mut raws = Vec::new();
    let mut problems = Vec::new();
    let mut columns: Vec<(String, usize)> = Vec::new();
    for (i, text) in text.lines().enumerate() {
        let number = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(object) => object,
            Err(err) => {
                problems.push((
                    number,
                    format!(
                        "not a JSON object (one a line): {}",
                        err.to_string().split(" at line").next().unwrap_or_default()
                    ),
                ));
                continue;
            }
        };
        let mut fields = Vec::new();
        let mut bad = false;
        for (key, value) in object {
            let value = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_)
                    if !FIELDS.contains(&key.as_str()) =>
                {
                    Some(value.to_string())
                }
                _ => {
                    problems.push((number, format!("{}: give a string", shown(&key))));
                    bad = true;
                    continue;
                }
            };
            if !FIELDS.contains(&key.as_str()) && !columns.iter().any(|(c, _)| *c == key) {
                columns.push((key.clone(), number));
            }
            fields.push((key, value));
        }
        if !bad {
            raws.push(Raw { number, fields });
        }
    }
    (raws, problems, columns)
}

/// Checks one line's fields and makes it a [`FileLine`].
fn line_of(raw: Raw) -> Result<FileLine, (usize, String)> {
    let number = raw.number;
    let fail = |problem: String| (number, problem);
    let (mut slug, mut name, mut db, mut server) = (None, None, None, None);
    let mut columns = Vec::new();
    for (key, value) in raw.fields {
        let Some(value) = value else { continue };
        match key.as_str() {
            "slug" => slug = Some(Slug::parse(&value).map_err(|e| fail(e.to_string()))?),
            "name" => name = Some(value),
            "db_name" => {
                let parsed = DbName::parse(&value).map_err(|e| fail(format!("db_name: {e}")))?;
                if crate::dbname::is_tenantctls_own(parsed.as_str()) {
                    return Err(fail(format!(
                        "db_name: {parsed} is named like tenantctl's own databases (templates, drift's scratch databases); pick another name"
                    )));
                }
                db = Some(parsed);
            }
            "server" => {
                server = Some(ServerName::parse(&value).map_err(|e| fail(format!("server: {e}")))?);
            }
            _ => columns.push((key, value)),
        }
    }
    Ok(FileLine {
        number,
        slug: slug.ok_or_else(|| fail("no slug: every line needs one".to_owned()))?,
        name,
        db,
        server,
        columns,
    })
}

/// Two lines whose tenants would answer to one name (slug, name or
/// database name, either way round): the second could never be told from
/// the first, and `create` would refuse it halfway through the run.
fn duplicates(lines: &[FileLine]) -> Vec<(usize, String)> {
    let mut seen: BTreeMap<String, (usize, &'static str)> = BTreeMap::new();
    let mut problems = Vec::new();
    for line in lines {
        let db = line.db_or_default();
        let mut keys = vec![("slug", line.slug.as_str().to_owned())];
        if let Some(name) = &line.name {
            keys.push(("name", name.clone()));
        }
        keys.push(("database name", db.as_str().to_owned()));
        let mut own: Vec<&str> = Vec::new();
        for (what, key) in &keys {
            if own.contains(&key.as_str()) {
                continue;
            }
            own.push(key);
            match seen.get(key) {
                Some((other, its)) => {
                    problems.push((
                        line.number,
                        format!(
                            "{what} \"{}\" is also line {other}'s {its}: each tenant needs names of its own",
                            shown(key)
                        ),
                    ));
                    // One is enough to say what is wrong with the line.
                    break;
                }
                None => {
                    seen.insert(key.clone(), (line.number, what));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(name: &str, text: &str) -> Result<TenantFile, UsageError> {
        let dir = std::env::temp_dir().join(format!(
            "tenantctl-create-file-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&dir, text).expect("write");
        let read = read(&dir, &|_| Vec::new());
        let _ = std::fs::remove_file(&dir);
        read
    }

    #[test]
    fn csv_lines_are_numbered_from_the_header_and_blank_cells_are_absent() {
        let file = parsed(
            "a.csv",
            "slug,name,plan\nacme,,pro\n\n\"b-2\",\"B, Inc\",\n",
        )
        .expect("valid");
        let got: Vec<(usize, &str, Option<&str>)> = file
            .lines
            .iter()
            .map(|l| (l.number, l.slug.as_str(), l.name.as_deref()))
            .collect();
        assert_eq!(
            got,
            [(2, "acme", None), (4, "b-2", Some("B, Inc"))],
            "{file:?}"
        );
        assert_eq!(file.lines[0].columns, [("plan".into(), "pro".into())]);
        assert!(file.lines[1].columns.is_empty());
        assert_eq!(file.columns, [("plan".to_owned(), 1)]);
    }

    #[test]
    fn every_bad_line_is_named() {
        let err = parsed(
            "b.csv",
            "slug,db_name\nok,\nBad Slug,\nx,\"a b\"\ny\nok,\n,z\n",
        )
        .expect_err("refused")
        .0;
        for wanted in [
            "line 3: invalid slug",
            "line 4: db_name:",
            "line 5: 1 field(s) where the header has 2",
            "line 6: slug \"ok\" is also line 2's slug",
            "line 7: no slug",
        ] {
            assert!(err.contains(wanted), "{wanted} in {err}");
        }
        assert!(
            err.ends_with(
                "refused before anything was created; fix the line(s) above and run again"
            ),
            "{err}"
        );
    }

    #[test]
    fn jsonl_is_read_by_content_and_names_its_lines() {
        let file = parsed(
            "c.txt",
            "{\"slug\":\"a\",\"seats\":3}\n\n{\"slug\":\"b\",\"server\":null}\n",
        )
        .expect("valid");
        assert_eq!(file.lines[1].number, 3);
        assert_eq!(file.lines[0].columns, [("seats".into(), "3".into())]);
        let err = parsed(
            "d.jsonl",
            "{\"slug\":\"a\"}\n{\"slug\":1}\nnot json\n{\"slug\":\"c\",\"name\":\"a\"}\n",
        )
        .expect_err("refused")
        .0;
        for wanted in [
            "line 2: slug: give a string",
            "line 3: not a JSON object",
            "line 4: name \"a\" is also line 1's slug",
        ] {
            assert!(err.contains(wanted), "{wanted} in {err}");
        }
    }

    #[test]
    fn a_derived_database_name_counts_as_taken() {
        let err = parsed("e.csv", "slug,db_name\na-b,\nc,tenant_a_b\n")
            .expect_err("refused")
            .0;
        assert!(
            err.contains("line 3: database name \"tenant_a_b\" is also line 2's database name"),
            "{err}"
        );
        assert!(parsed("f.csv", "slug\n").is_err());
    }
}
