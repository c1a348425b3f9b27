//! Everything tenantctl shows: data on stdout (tables for people, JSON for
//! machines), progress, prompts, warnings and errors on stderr.
//!
//! Every line of data goes through [`line`], so a reader that goes away
//! (`tenantctl ... | head -1`) is noticed once, never panics, and stops the
//! run from starting more tenants (see [`stdout_closed`]).

pub mod ci;
pub mod confirm;
pub mod github;
pub mod junit;
pub mod markdown;
pub mod progress;
pub mod report;
pub mod sink;

use std::fmt::Display;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

// What domain modules show is escaped and formatted by the leaf `text`;
// re-exported here so printing code has one place to import from.
pub use crate::text::{format_bytes, format_duration, join_versions, shown};

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// A table for people
    Table,
    /// One JSON document at the end
    Json,
    /// One JSON object per line, each printed as soon as it is known
    Jsonl,
    /// `JUnit` XML at the end, each tenant a test case (fleet commands)
    Junit,
}

impl OutputMode {
    pub const ALL: [Self; 4] = [Self::Table, Self::Json, Self::Jsonl, Self::Junit];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Json => "json",
            Self::Jsonl => "jsonl",
            Self::Junit => "junit",
        }
    }

    /// What each mode is for, as `--help` lists it.
    pub fn about(self) -> &'static str {
        match self {
            Self::Table => "A table for people",
            Self::Json => "One JSON document at the end",
            Self::Jsonl => "One JSON object per line, each printed as soon as it is known",
            Self::Junit => "JUnit XML at the end, each tenant a test case (fleet commands only)",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a write to stdout has failed because nobody reads it any more.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

/// Writes one line of data to stdout. Returns false, and writes nothing
/// more from then on, once stdout is closed.
pub fn line(text: impl Display) -> bool {
    if stdout_closed() {
        return false;
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
            false
        }
        Err(err) => {
            // A full disk or an I/O error is a failure to report, not a
            // reader that went away.
            let _ = STDOUT_ERROR.set(err.kind());
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
            false
        }
    }
}

static STDOUT_ERROR: std::sync::OnceLock<std::io::ErrorKind> = std::sync::OnceLock::new();

/// Why writing to stdout failed, when it was not a closed pipe.
pub fn stdout_error() -> Option<std::io::ErrorKind> {
    STDOUT_ERROR.get().copied()
}

/// Whether a person is likely watching stderr, so a progress bar is worth
/// drawing: stderr is a terminal, `TERM` is not `dumb`, and no CI system
/// says it runs us (a pseudo-terminal in Buildkite or `docker run -t` is a
/// terminal nobody watches, and a log of redraws is unreadable).
pub fn person_watching() -> bool {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return false;
    }
    if std::env::var_os("TERM").is_some_and(|t| t == "dumb") {
        return false;
    }
    // `--verbose` writes a line per statement there: a bar would be drawn
    // over and over between them.
    !ci::in_ci() && !crate::statement_log::enabled()
}

/// Writes one line to stderr; a closed stderr is ignored, never a panic.
pub fn warn(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The version of the JSON contract (docs/src/json.md): every JSON object
/// tenantctl prints at top level carries it as `schema_version`, and it
/// changes only when a field is removed or changes meaning.
pub const SCHEMA_VERSION: u64 = 1;

/// A document or line with `schema_version` first, then the value's own
/// fields; serialized straight from the value (never through
/// `serde_json::Value`), so a setting's number keeps every digit.
#[derive(Serialize)]
struct Versioned<'a, T: ?Sized> {
    schema_version: u64,
    #[serde(flatten)]
    body: &'a T,
}

/// `value` as JSON text with its `schema_version`: pretty (a document) or
/// on one line (a JSON Lines line). Every value tenantctl prints is an
/// object; anything else is printed as it is.
pub fn versioned<T: Serialize + ?Sized>(value: &T, pretty: bool) -> serde_json::Result<String> {
    let with = Versioned {
        schema_version: SCHEMA_VERSION,
        body: value,
    };
    let text = if pretty {
        serde_json::to_string_pretty(&with)
    } else {
        serde_json::to_string(&with)
    };
    text.or_else(|_| {
        if pretty {
            serde_json::to_string_pretty(value)
        } else {
            serde_json::to_string(value)
        }
    })
}

/// Prints JSON on stdout: pretty for `json`, one line for `jsonl`, with
/// its `schema_version`.
pub fn print_json<T: Serialize + ?Sized>(mode: OutputMode, value: &T) {
    match versioned(value, mode != OutputMode::Jsonl) {
        Ok(text) => {
            line(text);
        }
        Err(err) => warn(format!("error: cannot encode the result as JSON: {err}")),
    }
}

/// A command's JSON document, the one `--output json` prints: printed on
/// stdout in `json` mode, and kept for `--report-file` whatever the mode
/// (see [`sink`]). Commands call it once, with their final result, then
/// print their table or JSON lines as before.
pub fn document<T: Serialize + ?Sized>(mode: OutputMode, value: &T) {
    document_with(mode, value, None);
}

/// [`document`], with what the summary file, the annotations and `JUnit`
/// read of a fleet run or an error (`facts`: its tenants' outcomes);
/// other documents tell them nothing but that the command ran.
pub fn document_with<T: Serialize + ?Sized>(
    mode: OutputMode,
    value: &T,
    facts: Option<serde_json::Value>,
) {
    match versioned(value, true) {
        Ok(text) => {
            sink::keep(&text, facts);
            if mode == OutputMode::Json {
                line(text);
            }
        }
        Err(err) => warn(format!("error: cannot encode the result as JSON: {err}")),
    }
}

/// A table with our look and the given header.
pub fn table<I, S>(headers: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers);
    table
}

/// A command that fails before it has a report still leaves one JSON
/// object, so a machine reading it always gets JSON:
/// `{"schema_version": 1, "error": "...", "kind": "usage" | "failure" |
/// "interrupted"}`: on stdout with `--output json`/`jsonl`, in the report
/// file whatever the mode, and as a failed test case with `--output junit`.
pub fn print_json_error(mode: OutputMode, err: &anyhow::Error, message: &str) {
    let kind = if crate::error::is_interrupt(err) {
        "interrupted"
    } else if crate::error::is_usage(err) {
        "usage"
    } else {
        "failure"
    };
    error_document(mode, message, kind);
}

/// [`print_json_error`] for an error known only by its message and kind.
pub fn error_document(mode: OutputMode, message: &str, kind: &str) {
    let value = serde_json::json!({ "error": message, "kind": kind });
    document_with(mode, &value, Some(value.clone()));
    match mode {
        OutputMode::Jsonl => print_json(mode, &value),
        OutputMode::Junit => {
            if let Some(xml) = sink::with_document(junit::render) {
                line(xml);
            }
        }
        OutputMode::Json | OutputMode::Table => {}
    }
}
