//! Everything tenantctl shows: data on stdout (tables for people, JSON for
//! machines), progress, prompts, warnings and errors on stderr.
//!
//! Every line of data goes through [`line`], so a reader that goes away
//! (`tenantctl ... | head -1`) is noticed once, never panics, and stops the
//! run from starting more tenants (see [`stdout_closed`]).

pub mod confirm;
pub mod progress;
pub mod report;

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
}

impl OutputMode {
    pub const ALL: [Self; 3] = [Self::Table, Self::Json, Self::Jsonl];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Json => "json",
            Self::Jsonl => "jsonl",
        }
    }

    /// What each mode is for, as `--help` lists it.
    pub fn about(self) -> &'static str {
        match self {
            Self::Table => "A table for people",
            Self::Json => "One JSON document at the end",
            Self::Jsonl => "One JSON object per line, each printed as soon as it is known",
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

/// Writes one line to stderr; a closed stderr is ignored, never a panic.
pub fn warn(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints JSON on stdout: pretty for `json`, one line for `jsonl`.
pub fn print_json<T: Serialize + ?Sized>(mode: OutputMode, value: &T) {
    let text = if mode == OutputMode::Jsonl {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    match text {
        Ok(text) => {
            line(text);
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

/// With `--output json`/`jsonl`, a command that fails before it has a
/// report still prints one JSON object on stdout, so a machine reading it
/// always gets JSON: `{"error": "...", "kind": "usage" | "failure" | "interrupted"}`.
pub fn print_json_error(mode: OutputMode, err: &anyhow::Error, message: &str) {
    if mode == OutputMode::Table {
        return;
    }
    let kind = if crate::error::is_interrupt(err) {
        "interrupted"
    } else if crate::error::is_usage(err) {
        "usage"
    } else {
        "failure"
    };
    print_json(mode, &serde_json::json!({ "error": message, "kind": kind }));
}
