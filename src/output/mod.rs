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
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// A table for people
    Table,
    /// One JSON document at the end
    Json,
    /// One JSON object per line, each printed as soon as it is known
    Jsonl,
}

/// Exit status when stdout was closed before everything was printed: the
/// shell's own status for a process ended by SIGPIPE.
pub const EXIT_STDOUT_CLOSED: u8 = 141;

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

/// Text from the master or a tenant (a slug, a name, an error) made safe for
/// a terminal: control characters, which could move the cursor, recolour
/// the screen or forge a line, are shown escaped (`\n`, `\u{1b}`).
pub fn shown(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_owned()
    }
}

/// `850ms`, `1.2s`, `3m 05s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// `812 B`, `7.6 MB`, `1.2 GB` (powers of 1024).
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    #[allow(clippy::cast_precision_loss, reason = "a size shown with one decimal")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Migration versions as `1, 2, 3`.
pub fn join_versions(versions: &[i64]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("acme"), "acme");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(shown("tab\there\r"), "tab\\there\\r");
        assert_eq!(shown("Zürich"), "Zürich");
    }

    #[test]
    fn durations_and_versions() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(join_versions(&[1, 20]), "1, 20");
        assert_eq!(format_bytes(812), "812 B");
        assert_eq!(format_bytes(8_000_000), "7.6 MB");
    }
}
