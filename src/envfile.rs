//! Loading `.env` without ever echoing it: the file holds
//! `POSTGRES_BASE_URL` with its password, and dotenvy's own parse error
//! quotes the offending line whole.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Loads the first `.env` found in the working directory or its parents,
/// as dotenvy does; variables already in the environment win. A missing
/// file is fine. A broken one is an error naming the file, the line and the
/// variable, never the value.
pub fn load() -> Result<(), String> {
    let Some(path) = find() else {
        return Ok(());
    };
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(()),
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

/// `.env line 3 (POSTGRES_BASE_URL): cannot be parsed; ...`. `text` is the
/// part of the file dotenvy was reading, from the start of the assignment
/// that failed (it may run to the end of the file when a quote is left
/// open); the line named is the one that assignment starts on.
fn describe_parse_error(path: &Path, contents: &str, text: &str) -> String {
    let line = contents
        .find(text)
        .map(|start| contents[..start].matches('\n').count() + 1);
    let variable = variable_name(text);
    let mut message = path.display().to_string();
    if let Some(line) = line {
        let _ = write!(message, " line {line}");
    }
    if let Some(variable) = variable {
        let _ = write!(message, " ({variable})");
    }
    message.push_str(
        ": cannot be parsed; check its quoting (values with spaces or # need quotes, and every quote must be closed)",
    );
    message
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
    fn reads_variable_names() {
        assert_eq!(variable_name("export  DB_URL='x"), Some("DB_URL"));
        assert_eq!(variable_name("A.B=1"), Some("A.B"));
        assert_eq!(variable_name("=oops"), None);
        assert_eq!(variable_name("'quoted'=1"), None);
        assert_eq!(variable_name("S3cretPasteWithoutEquals"), None);
        assert_eq!(variable_name("postgresql://u:pw@h"), None);
    }
}
