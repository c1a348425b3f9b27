//! Loading `.env` without ever echoing it: the file holds
//! `POSTGRES_BASE_URL` with its password, and dotenvy's own parse error
//! quotes the offending line whole.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `.env` file read at start-up and what it changed: a setting from a
/// file in some parent directory (`TENANTCTL_SHARD=1/4`) can narrow a
/// deploy, so where each value came from is kept to be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The file, as found (absolute: it is the working directory's or a
    /// parent's).
    pub path: PathBuf,
    /// Variables the file set, in the file's order.
    pub set: Vec<String>,
    /// Variables the file names that the environment already held, which
    /// win and were left as they were.
    pub kept: Vec<String>,
}

impl Loaded {
    /// The line stderr gets: the file and the names it set, never a value
    /// (the file holds passwords).
    pub fn describe(&self) -> String {
        let mut text = format!(
            "note: loaded {}, which sets {}",
            crate::text::shown(&self.path.display().to_string()),
            if self.set.is_empty() {
                "nothing".to_owned()
            } else {
                self.set.join(", ")
            }
        );
        if !self.kept.is_empty() {
            let _ = write!(
                text,
                " ({} already set in the environment, which wins)",
                self.kept.join(", ")
            );
        }
        text
    }
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// The `.env` file [`load`] read, if any.
pub fn loaded() -> Option<&'static Loaded> {
    LOADED.get()
}

/// The `.env` file that set this variable, if one did (rather than the
/// process's real environment).
pub fn file_that_set(variable: &str) -> Option<&'static Path> {
    loaded()
        .filter(|l| l.set.iter().any(|v| v == variable))
        .map(|l| l.path.as_path())
}

/// Loads the first `.env` found in the working directory or its parents,
/// as dotenvy does; variables already in the environment win. A missing
/// file is fine. A broken one is an error naming the file, the line and the
/// variable, never the value. What it set is kept for [`loaded`].
pub fn load() -> Result<Option<&'static Loaded>, String> {
    let Some(path) = find() else {
        return Ok(None);
    };
    // Which of the file's variables the environment already holds, read
    // before dotenvy sets the others (with dotenvy's own test of "set"). A
    // parse error stops this walk; dotenvy's load below reports it.
    let mut set: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    if let Ok(items) = dotenvy::from_path_iter(&path) {
        for (name, _) in items.map_while(Result::ok) {
            if set.contains(&name) || kept.contains(&name) {
                continue;
            }
            if std::env::var(&name).is_ok() {
                kept.push(name);
            } else {
                set.push(name);
            }
        }
    }
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(Some(LOADED.get_or_init(|| Loaded { path, set, kept }))),
        Err(dotenvy::Error::LineParse(text, _)) => Err(describe_parse_error(
            &path,
            &std::fs::read_to_string(&path).unwrap_or_default(),
            &text,
        )),
        Err(dotenvy::Error::Io(err)) => Err(format!("{}: {}", path.display(), err.kind())),
        Err(_) => Err(format!("{}: cannot be read", path.display())),
    }
}

fn find() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|dir| dir.join(".env"))
        .find(|candidate| candidate.is_file())
}

/// `.env line 3 (POSTGRES_BASE_URL): cannot be parsed; ...`. `text` is
/// what dotenvy was reading when it failed: the rest of an assignment, or
/// only its value; the line named is the first one, not a comment, where
/// that text stands, and the variable is taken from that line's start.
fn describe_parse_error(path: &Path, contents: &str, text: &str) -> String {
    let found = failing_line(contents, text);
    let mut message = path.display().to_string();
    if let Some((number, line)) = found {
        let _ = write!(message, " line {number}");
        if let Some(variable) = variable_name(line) {
            let _ = write!(message, " ({variable})");
        }
    }
    message.push_str(
        ": cannot be parsed; check its quoting (values with spaces or # need quotes, and every quote must be closed)",
    );
    message
}

/// The number and text of the first line, not a comment, holding `text`.
fn failing_line<'a>(contents: &'a str, text: &str) -> Option<(usize, &'a str)> {
    if text.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(offset) = contents[from..].find(text) {
        let at = from + offset;
        let start = contents[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = contents[at..].find('\n').map_or(contents.len(), |i| at + i);
        let line = &contents[start..end];
        if !line.trim_start().starts_with('#') {
            return Some((contents[..start].matches('\n').count() + 1, line));
        }
        from = end;
    }
    None
}

/// The variable a `.env` line assigns, if the line starts like an
/// assignment (`NAME=` or `export NAME=`).
fn variable_name(text: &str) -> Option<&str> {
    let line = text.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let name = &line[..end];
    // Only a name followed by `=`: a line that is not an assignment may be
    // a pasted secret, and none of it is shown.
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && line[end..].trim_start().starts_with('=');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_and_variable_but_not_the_value() {
        let contents = "A=1\n# comment\nPOSTGRES_BASE_URL=\"postgresql://u:S3cret@h:5432\n";
        let text = "POSTGRES_BASE_URL=\"postgresql://u:S3cret@h:5432\n";
        let message = describe_parse_error(Path::new(".env"), contents, text);
        assert!(
            message.starts_with(".env line 3 (POSTGRES_BASE_URL): "),
            "{message}"
        );
        assert!(!message.contains("S3cret"), "{message}");
        assert!(!message.contains("postgresql"), "{message}");
    }

    #[test]
    fn the_line_and_name_come_from_the_assignment_never_the_value() {
        for (contents, text, line, name) in [
            (
                "DB_PASSWORD=Hunter2Secret=x y\n",
                "Hunter2Secret=x y",
                1,
                "DB_PASSWORD",
            ),
            (
                "A=1\nPOSTGRES_BASE_URL=postgresql://u:S3cret Tail@h\n",
                "postgresql://u:S3cret Tail@h",
                2,
                "POSTGRES_BASE_URL",
            ),
            ("# X=a b\nB=2\nX=a b\n", "a b", 3, "X"),
        ] {
            let message = describe_parse_error(Path::new(".env"), contents, text);
            assert!(
                message.starts_with(&format!(".env line {line} ({name}): ")),
                "{message}"
            );
            for secret in ["Hunter2Secret", "S3cret", "Tail"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }

    #[test]
    fn reads_variable_names() {
        assert_eq!(variable_name("export  DB_URL='x"), Some("DB_URL"));
        assert_eq!(variable_name("A.B=1"), Some("A.B"));
        assert_eq!(variable_name("=oops"), None);
        assert_eq!(variable_name("'quoted'=1"), None);
        assert_eq!(variable_name("S3cretPasteWithoutEquals"), None);
        assert_eq!(variable_name("postgresql://u:pw@h"), None);
    }
}
