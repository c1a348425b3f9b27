//! `--summary-file`: a Markdown summary of a run, appended to a file
//! (GitHub renders `$GITHUB_STEP_SUMMARY` on the run's page): the command,
//! its counts and time, what was selected, the run record, and a table of
//! the tenants that failed or were interrupted.
//!
//! Everything a tenant controls (slugs, error texts, the selection's
//! words) goes through [`escape`], so it can add no markup, link, mention
//! or HTML, and cannot break the table.

use std::fmt::Write as _;

use serde_json::Value;

use super::ci::RunInfo;

/// Rows of the failure table at most; the rest are counted.
const MAX_ROWS: usize = 100;
/// Characters of an error shown at most in the table.
const MAX_ERROR: usize = 500;

/// Text shown literally in Markdown (GitHub's flavour, tables included):
/// ASCII punctuation that could start markup (emphasis, code, links,
/// autolinks, HTML, math, mentions, table cells) as numeric character
/// references, line breaks as spaces, control characters dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            // Invisible and direction-changing characters (a right-to-left
            // override makes `deploy` read as other text): shown as their
            // references, as the terminal shows them escaped.
            c if is_invisible(c) => {
                let _ = write!(out, "&#x{:X};", u32::from(c));
            }
            // Punctuation that starts no markup, even in a table cell.
            '\'' | ',' | '-' | '/' | ';' | '"' | '=' | '?' | '%' => out.push(c),
            c if c.is_ascii_punctuation() => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Format characters that change how text around them reads without
/// showing themselves: bidirectional controls, zero-width characters,
/// the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

/// The summary of a run: from its JSON document, or (when the command
/// printed none) its command alone.
pub fn summary(document: Option<&Value>, info: &RunInfo) -> String {
    let mut out = String::new();
    // A fleet run's counts (doctor's `summary` counts findings instead).
    let counts = document
        .and_then(|d| d.get("summary"))
        .filter(|s| s.get("ok").is_some());
    let count = |key: &str| {
        counts
            .and_then(|c| c.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let error = document
        .and_then(|d| d.get("error"))
        .and_then(Value::as_str);
    let interrupted = document
        .and_then(|d| d.get("interrupted"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || document.and_then(|d| d.get("kind")).and_then(Value::as_str) == Some("interrupted");
    let verdict = if interrupted {
        "interrupted"
    } else if error.is_some() || count("failed") > 0 {
        "failed"
    } else {
        "ok"
    };
    let _ = writeln!(out, "### tenantctl {}: {verdict}\n", escape(&info.command));
    if counts.is_some() {
        let _ = writeln!(
            out,
            "| ok | failed | skipped | interrupted | time |\n|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} |\n",
            count("ok"),
            count("failed"),
            count("skipped"),
            count("interrupted"),
            escape(&crate::text::format_duration(info.elapsed)),
        );
    } else {
        let _ = writeln!(
            out,
            "Time: {}\n",
            escape(&crate::text::format_duration(info.elapsed))
        );
    }
    if let Some(error) = error {
        let _ = writeln!(out, "Error: {}\n", escape(error));
    }
    if let Some(selection) = &info.selection {
        let _ = writeln!(out, "Selection: {}\n", escape(selection));
    }
    let field = |key: &str| document.and_then(|d| d.get(key));
    let mut record = Vec::new();
    if let Some(id) = field("run_id").and_then(Value::as_i64) {
        record.push(format!("run {id}"));
    }
    if let Some(label) = field("label").and_then(Value::as_str) {
        record.push(format!("label {}", escape(label)));
    }
    if !record.is_empty() {
        let _ = writeln!(out, "Recorded as {}\n", record.join(", "));
    }
    failures(&mut out, document);
    out
}

/// The table of failed and interrupted tenants.
fn failures(out: &mut String, document: Option<&Value>) {
    let tenants = document
        .and_then(|d| d.get("tenants"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let failed: Vec<&Value> = tenants
        .iter()
        .filter(|t| {
            matches!(
                t.get("status").and_then(Value::as_str),
                Some("failed" | "interrupted")
            )
        })
        .collect();
    if failed.is_empty() {
        return;
    }
    out.push_str("| tenant | server | result | error |\n|---|---|---|---|\n");
    for tenant in failed.iter().take(MAX_ROWS) {
        let text = |key: &str| tenant.get(key).and_then(Value::as_str).unwrap_or_default();
        let handle = tenant
            .get("slug")
            .and_then(Value::as_str)
            .unwrap_or(text("id"));
        let error: String = text("error").chars().take(MAX_ERROR).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            escape(handle),
            escape(text("server")),
            escape(text("status")),
            escape(&error)
        );
    }
    if failed.len() > MAX_ROWS {
        let _ = writeln!(out, "\nand {} more", failed.len() - MAX_ROWS);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_text_adds_no_markup() {
        let shown = escape("a|b`c`<img src=x>\n# h [l](u) @team **x**");
        let mut bare = shown.clone();
        while let Some(start) = bare.find("&#") {
            let end = start + bare[start..].find(';').expect("an entity ends");
            bare.replace_range(start..=end, "");
        }
        for bad in ['|', '`', '<', '>', '\n', '#', '[', '(', '@', '*'] {
            assert!(!bare.contains(bad), "{bad:?} in {shown}");
        }
        assert!(shown.starts_with("a&#124;b"));
    }
}
