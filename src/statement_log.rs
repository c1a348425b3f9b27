//! `-v/--verbose`: each statement tenantctl sends, with where it went
//! (which tenant, the master, a server) and how long it took, on stderr.
//!
//! sqlx already times every statement and reports it as a `tracing` event
//! (target `sqlx::query`); connections normally switch that off. With
//! `--verbose` the connector switches it on ([`enabled`]) and this module
//! installs the one subscriber that prints those events. Where a statement
//! went comes from the span the runner enters around each tenant's work
//! and each scoped connection ([`scope`]): the event knows only its SQL.
//!
//! What is printed is what stdout and errors would show: every configured
//! password masked wherever it appears, and the literal after `PASSWORD`
//! (`ALTER ROLE ... PASSWORD '...'` in a script) masked whatever it is.
//! Bind parameters are never printed: sqlx reports the SQL text only.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::redact::{MASK, Redactor};

/// The field of a [`scope`] span that names where its statements go.
const WHERE: &str = "tenantctl_scope";

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Whether statements are being logged: connections made while this is
/// true report their statements.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Starts printing statements on stderr, masking what `redactor` knows.
/// Once per process; a second call changes nothing.
pub fn install(redactor: Redactor) {
    if INSTALLED.set(()).is_err() {
        return;
    }
    let subscriber = tracing_subscriber::registry().with(Statements { redactor });
    // Fails only when another subscriber is already set, which nothing in
    // tenantctl does; statements are then simply not shown.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// A span naming where the statements sent inside it go (`tenant acme`,
/// `master`, `server eu2`); cheap and silent unless statements are logged.
pub fn scope(place: &str) -> tracing::Span {
    tracing::info_span!("tenantctl", tenantctl_scope = place)
}

/// Where a span's statements go, kept in the span's extensions.
struct Place(String);

struct Statements {
    redactor: Redactor,
}

impl<S> tracing_subscriber::Layer<S> for Statements
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(place), Some(span)) = (fields.place, ctx.span(id)) {
            span.extensions_mut().insert(Place(place));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let place = ctx
            .event_scope(event)
            .and_then(|spans| {
                spans
                    .into_iter()
                    .find_map(|span| span.extensions().get::<Place>().map(|p| p.0.clone()))
            })
            .unwrap_or_else(|| "tenantctl".to_owned());
        // sqlx puts the whole statement in `db.statement` only when it is
        // longer than its four-word summary.
        let sql = fields
            .statement
            .filter(|s| !s.trim().is_empty())
            .or(fields.summary)
            .unwrap_or_default();
        let sql = self.redactor.redact(sql.trim()).into_owned();
        let line = render(&place, fields.elapsed_secs, &mask_password_literals(&sql));
        // Straight to stderr (the output layer asks this one whether to
        // draw a bar); a closed stderr is ignored, never a panic.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// `[tenant acme] 0.42 ms: SELECT ...`, a statement of several lines
/// indented under its first, every line escaped for the terminal.
fn render(place: &str, elapsed_secs: Option<f64>, sql: &str) -> String {
    let mut text = format!("[{}]", crate::text::shown(place));
    if let Some(secs) = elapsed_secs {
        let _ = write!(text, " {:.2} ms", secs * 1000.0);
    }
    text.push(':');
    let mut lines = sql.lines();
    if let Some(first) = lines.next() {
        text.push(' ');
        text.push_str(&crate::text::shown(first));
    }
    for more in lines {
        text.push_str("\n    ");
        text.push_str(&crate::text::shown(more));
    }
    text
}

/// Masks what in a statement may be a password tenantctl was never told
/// of: the string literal after each `PASSWORD` keyword (`CREATE ROLE r
/// PASSWORD 'x'`, `ENCRYPTED PASSWORD E'x'`, dollar quoted, `OPTIONS
/// (password 'x')` or `("password" 'x')`, comments between them
/// notwithstanding), and inside any other literal or any comment a URL's
/// password (`postgresql://u:x@h`) or a connection string's
/// (`password=x`, `password = 'x y'`), as in `dblink_connect('...')`,
/// `CREATE SUBSCRIPTION ... CONNECTION '...'` or a migration's note on
/// how the application connects. The tokens are PostgreSQL's own lexer's,
/// so a `'password'` value or a `password_hash` column is left alone.
/// Text the lexer refuses is shown only when it cannot hold such a thing
/// at all.
pub fn mask_password_literals(sql: &str) -> String {
    use pg_query::protobuf::Token;
    let Ok(tokens) = pg_query::scan_tokens(sql) else {
        let lower = sql.to_ascii_lowercase();
        return if lower.contains("password") || lower.contains("://") {
            "(a statement naming a password, not shown: it could not be read)".to_owned()
        } else {
            sql.to_owned()
        };
    };
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut after_password = false;
    for token in &tokens {
        let (Ok(start), Ok(end)) = (usize::try_from(token.start), usize::try_from(token.end))
        else {
            continue;
        };
        let Some(text) = sql.get(start..end).filter(|_| start >= copied) else {
            continue;
        };
        let comment =
            token.token == Token::SqlComment as i32 || token.token == Token::CComment as i32;
        let literal = token.token == Token::Sconst as i32 || token.token == Token::Usconst as i32;
        // postgres_fdw's option may be spelled as a quoted identifier.
        let is_password = token.token == Token::Password as i32
            || (token.token == Token::Ident as i32 && text.eq_ignore_ascii_case("\"password\""));
        // A comment between the keyword and its literal keeps it pending.
        let whole = if comment {
            after_password
        } else {
            std::mem::replace(&mut after_password, is_password)
        };
        if !literal && !comment {
            continue;
        }
        out.push_str(&sql[copied..start]);
        if whole && literal {
            out.push('\'');
            out.push_str(MASK);
            out.push('\'');
        } else {
            out.push_str(&mask_in_literal(text));
        }
        copied = end;
    }
    out.push_str(&sql[copied..]);
    out
}

/// A literal (or comment) with any URL password (`//user:SECRET@`) and
/// connection string password (`password = SECRET`, up to white space or
/// a quote; `password = 'SECRET'` quoted as libpq allows, its quotes
/// doubled or backslash-escaped inside the literal) masked.
fn mask_in_literal(literal: &str) -> String {
    let bytes = literal.as_bytes();
    let lower = literal.to_ascii_lowercase();
    let mut masked: Vec<std::ops::Range<usize>> = Vec::new();
    for (slashes, _) in literal.match_indices("://") {
        let from = slashes + 3;
        let Some(at) = literal[from..]
            .find(|c: char| matches!(c, '@' | '/' | '\'') || c.is_whitespace())
            .map(|i| from + i)
        else {
            continue;
        };
        if bytes[at] != b'@' {
            continue;
        }
        if let Some(colon) = literal[from..at].find(':') {
            masked.push(from + colon + 1..at);
        }
    }
    let blank = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_whitespace);
    for (key, _) in lower.match_indices("password") {
        let mut i = key + "password".len();
        while blank(i) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while blank(i) {
            i += 1;
        }
        // The literal's own closing quote is not part of any value.
        let body_end = if literal.len() > 1 && literal.ends_with('\'') {
            literal.len() - 1
        } else {
            literal.len()
        };
        let rest = literal.get(i..body_end).unwrap_or_default();
        // A quoted value ends where its quote, spelled as it opened, does;
        // unclosed, it runs to the end.
        let quote = ["''", "\\'", "'"].into_iter().find(|q| rest.starts_with(q));
        let value_end = match quote {
            Some(q) => rest[q.len()..]
                .find(q)
                .map_or(body_end, |n| i + q.len() + n + q.len()),
            None => rest
                .find(|c: char| matches!(c, '\'' | '&') || c.is_whitespace())
                .map_or(body_end, |n| i + n),
        };
        if value_end > i {
            masked.push(i..value_end);
        }
    }
    masked.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(literal.len());
    let mut at = 0;
    for range in masked {
        if range.start < at {
            continue;
        }
        out.push_str(&literal[at..range.start]);
        out.push_str(MASK);
        at = range.end;
    }
    out.push_str(&literal[at..]);
    out
}

/// The fields tenantctl reads off spans and sqlx's events.
#[derive(Default)]
struct Fields {
    place: Option<String>,
    summary: Option<String>,
    statement: Option<String>,
    elapsed_secs: Option<f64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            WHERE => self.place = Some(value.to_owned()),
            "summary" => self.summary = Some(value.to_owned()),
            "db.statement" => self.statement = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // sqlx passes its summary and statement as `String`s, which reach
        // here rather than `record_str`.
        match field.name() {
            WHERE | "summary" | "db.statement" => {
                let text = format!("{value:?}");
                let text = text
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .map_or_else(|| text.clone(), unescape_debug);
                self.record_str(field, &text);
            }
            _ => {}
        }
    }
}

/// Undoes `Debug`'s escaping of a string, for the fields that arrive only
/// through `record_debug`.
fn unescape_debug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_literals_are_masked_whatever_they_hold() {
        assert_eq!(
            mask_password_literals("ALTER ROLE app PASSWORD 's3cr''et'; SELECT 1"),
            "ALTER ROLE app PASSWORD '***'; SELECT 1"
        );
        assert_eq!(
            mask_password_literals(
                "create user u with encrypted password E'a\\'b' valid until 'x'"
            ),
            "create user u with encrypted password '***' valid until 'x'"
        );
        assert_eq!(
            mask_password_literals("CREATE ROLE r LOGIN PASSWORD\n  $q$x'y$q$"),
            "CREATE ROLE r LOGIN PASSWORD\n  '***'"
        );
        // Passwords tenantctl was never told of, inside other literals.
        assert_eq!(
            mask_password_literals(
                "SELECT dblink_connect('host=h password=p4ss user=u'), 'postgres://u:p%40ss@h/db', \
                 'password = two words'"
            ),
            "SELECT dblink_connect('host=h password=*** user=u'), 'postgres://u:***@h/db', \
                 'password = *** words'"
        );
        assert_eq!(
            mask_password_literals(
                "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password 'x')"
            ),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '***')"
        );
        // A quoted conninfo value, a quoted option name, a comment in the
        // way, a URL or a conninfo in a comment.
        assert_eq!(
            mask_password_literals(
                "SELECT 'host=h password=''p q'' user=u', E'password = \\'p q\\' x', 'password='"
            ),
            "SELECT 'host=h password=*** user=u', E'password = *** x', 'password='"
        );
        assert_eq!(
            mask_password_literals(
                "CREATE USER MAPPING FOR u SERVER s OPTIONS (\"password\" 'x'); \
                 CREATE ROLE r PASSWORD /* c */ 'y'; ALTER ROLE r PASSWORD -- c\n'z'"
            ),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (\"password\" '***'); \
                 CREATE ROLE r PASSWORD /* c */ '***'; ALTER ROLE r PASSWORD -- c\n'***'"
        );
        assert_eq!(
            mask_password_literals("ALTER ROLE r PASSWORD 'ab'\n'cd' VALID UNTIL 'infinity'"),
            "ALTER ROLE r PASSWORD '***' VALID UNTIL 'infinity'"
        );
        assert_eq!(
            mask_password_literals("SELECT 1 -- as postgres://app:p@db/x\n/* password=q */"),
            "SELECT 1 -- as postgres://app:***@db/x\n/* password=*** */"
        );
        // Unreadable text that may hold one is not shown at all.
        assert!(
            !mask_password_literals("ALTER ROLE r PASSWORD 'unterminated").contains("unterminated")
        );
        // Not the keyword: a column named password_hash, a value named so.
        let untouched = "UPDATE users SET password_hash = 'h', note = 'password'";
        assert_eq!(mask_password_literals(untouched), untouched);
        assert_eq!(
            mask_password_literals("SELECT 'password' || 'x'"),
            "SELECT 'password' || 'x'"
        );
    }

    #[test]
    fn a_statement_of_several_lines_is_indented_and_escaped() {
        assert_eq!(
            render("tenant a\u{1b}b", Some(0.0015), "SELECT 1\nFROM t\u{7}"),
            "[tenant a\\u{1b}b] 1.50 ms: SELECT 1\n    FROM t\\u{7}"
        );
    }
}
