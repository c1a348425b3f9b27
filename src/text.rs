//! Text made fit to show: what came from a database escaped for a terminal,
//! sizes, durations and version lists formatted. A leaf: domain types use
//! it for their `Display` without knowing anything of how output is printed.

use std::time::Duration;

/// Text from the master or a tenant (a slug, a name, an error) made safe for
/// a terminal: control characters, which could move the cursor, recolour
/// the screen or forge a line, are shown escaped (`\n`, `\u{1b}`), and so
/// are the invisible ones that make text read as other text (a zero-width
/// space in `users\u{200b}`, a right-to-left override that shows `nimda`
/// as `admin`, a line separator).
pub fn shown(text: &str) -> String {
    if text.chars().any(hidden) {
        text.chars()
            .map(|c| {
                if hidden(c) {
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

/// A control character, or one that shows nothing yet changes how the text
/// around it reads: Unicode's format characters (zero-width, bidirectional
/// embeddings, overrides and isolates, the byte-order mark) and the line
/// and paragraph separators.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
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
    fn invisible_characters_that_change_how_text_reads_are_escaped() {
        assert_eq!(shown("users\u{200b}"), "users\\u{200b}");
        assert_eq!(shown("\u{202e}nimda"), "\\u{202e}nimda");
        assert_eq!(shown("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(shown("\u{feff}x"), "\\u{feff}x");
        assert_eq!(
            shown("عربي"),
            "عربي",
            "right-to-left letters themselves are text"
        );
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
