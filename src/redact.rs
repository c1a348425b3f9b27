//! Masking secrets (the tenant's password, every other configured
//! server's and the master's) in text a child process printed (`tenant
//! exec`, `pg_dump`). The child may print a password in any of the ways a
//! program spells it, so each secret is matched in all of them at once:
//! each of its characters may appear as itself, its UTF-8 bytes
//! percent-encoded (`%2F` or `%2f`, so fully, partially or not at all
//! encoded) or hex-escaped (`\xc3`), a space as `+` (form encoding),
//! backslash-escaped (`\"`, `\'`, `\\`, `\/`, `\n`...: JSON, C, libpq
//! connection strings), or as a JSON `\uXXXX` escape in either case (a
//! surrogate pair outside the BMP), mixed freely with the other spellings,
//! as JSON encoders print them (Python escapes all non-ASCII, Go `&<>`).
//!
//! Where the match is looked for depends on the secret:
//!
//! - **Anywhere** (free text) when the secret is at least
//!   [`MIN_FREE_TEXT_CHARS`] characters and not a common word: not in
//!   [`COMMON_WORDS`], not all digits or one repeated character, and not
//!   part of any of the words the [`Redactor`] was built with (the user
//!   name, database name, host...).
//! - Otherwise **only where it stands as a password**, so a password such
//!   as `tenant` does not blank out every "tenant" in a migration log:
//!   as a URL's password (`scheme://user:SECRET@`, any scheme), or as the
//!   value of a `password`-like key (`password=`, `PGPASSWORD=`,
//!   `db_pass:`, `pwd =`, `"password": "..."`; case-insensitive, quoted or
//!   not, followed by the end of the value).
//!
//! Every match becomes [`MASK`].

use std::borrow::Cow;
use std::ops::Range;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// A secret shorter than this (in characters) is masked only where it
/// stands as a password: in free text it would hit ordinary words.
pub const MIN_FREE_TEXT_CHARS: usize = 8;

/// Words a program's output is full of: a password equal to one of them
/// (ignoring case) is masked only where it stands as a password.
pub const COMMON_WORDS: &[&str] = &[
    "admin",
    "administrator",
    "changeme",
    "connection",
    "database",
    "databases",
    "default",
    "localhost",
    "master",
    "migration",
    "migrations",
    "password",
    "postgres",
    "postgresql",
    "secret",
    "superuser",
    "template0",
    "template1",
    "tenant",
    "tenantctl",
    "tenants",
    "username",
];

/// Key endings that mark the next value as a password (ASCII, lower case).
/// The short ones must start a word (`pass`, `db_pass`, but not `compass`).
const PASSWORD_KEYS: &[(&str, bool)] = &[
    ("password", false),
    ("passwd", false),
    ("pass", true),
    ("pwd", true),
];

/// Masks secrets in text. Built once per child, used on every line.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

/// One secret and where it is looked for.
#[derive(Debug, Clone)]
struct Secret {
    text: String,
    free_text: bool,
}

impl Redactor {
    /// A redactor for `secret` (as the server knows it, decoded). `words`
    /// are the other things the output will name (user, database, host,
    /// tenant slug and id): a secret that is one of them, or part of one,
    /// is masked only where it stands as a password. An empty secret masks
    /// nothing.
    pub fn new(secret: &str, words: &[&str]) -> Self {
        Self::default().with(secret, words)
    }

    /// This redactor masking `secret` too (another server's password),
    /// by the same rules as [`Redactor::new`].
    #[must_use]
    pub fn with(mut self, secret: &str, words: &[&str]) -> Self {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s.text == secret) {
            self.secrets.push(Secret {
                text: secret.to_owned(),
                free_text: !is_common(secret, words),
            });
        }
        self
    }

    /// True if there are secrets and every one is masked wherever it
    /// appears, not only where it stands as a password.
    pub fn masks_free_text(&self) -> bool {
        !self.secrets.is_empty() && self.secrets.iter().all(|s| s.free_text)
    }

    /// The text with every occurrence of every secret replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut found = Vec::new();
        for secret in &self.secrets {
            if secret.free_text {
                found.extend(secret.anywhere(text));
            } else {
                found.extend(secret.in_urls(text));
                found.extend(secret.as_values(text));
            }
        }
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for range in found {
            // Overlapping matches (a URL's `?password=` is also a key's
            // value, one secret inside another) make one mask.
            if range.start < at {
                at = at.max(range.end);
                continue;
            }
            out.push_str(&text[at..range.start]);
            out.push_str(MASK);
            at = range.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}

impl Secret {
    /// Every match, left to right, each as long as it can be.
    fn anywhere(&self, text: &str) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        let mut start = 0;
        while start < text.len() {
            match self.ends_at(text, start).into_iter().max() {
                Some(end) if end > start => {
                    found.push(start..end);
                    start = end;
                }
                _ => start += 1,
            }
        }
        found
    }

    /// Matches right after `//user:` and right before `@`.
    fn in_urls(&self, text: &str) -> Vec<Range<usize>> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for (slashes, _) in text.match_indices("//") {
            let mut at = slashes + 2;
            while at < bytes.len()
                && !matches!(bytes[at], b':' | b'@' | b'/' | b'?' | b'#')
                && !bytes[at].is_ascii_whitespace()
            {
                at += 1;
            }
            if bytes.get(at) != Some(&b':') {
                continue;
            }
            let start = at + 1;
            if let Some(end) = self
                .ends_at(text, start)
                .into_iter()
                .filter(|&end| bytes.get(end) == Some(&b'@'))
                .max()
            {
                found.push(start..end);
            }
        }
        found
    }

    /// Matches that are a whole value of a password-like key.
    fn as_values(&self, text: &str) -> Vec<Range<usize>> {
        let bytes = text.as_bytes();
        let lower = text.to_ascii_lowercase();
        let mut found = Vec::new();
        for &(key, word_start) in PASSWORD_KEYS {
            for (k, _) in lower.match_indices(key) {
                if word_start && k > 0 && bytes[k - 1].is_ascii_alphanumeric() {
                    continue;
                }
                let Some((start, quote)) = value_start(bytes, k + key.len()) else {
                    continue;
                };
                let ends_value = |end: usize| match (quote, bytes.get(end)) {
                    (Some(q), Some(&b)) => b == q,
                    // An unclosed quote at the end: a truncated line.
                    (_, None) => true,
                    (None, Some(&b)) => {
                        b.is_ascii_whitespace()
                            || matches!(
                                b,
                                b'&' | b';' | b',' | b')' | b'}' | b']' | b'"' | b'\'' | b'<'
                            )
                    }
                };
                if let Some(end) = self
                    .ends_at(text, start)
                    .into_iter()
                    .filter(|&end| ends_value(end))
                    .max()
                {
                    found.push(start..end);
                }
            }
        }
        found
    }

    /// Every position where a spelling of the secret that starts at
    /// `start` can end. Several spellings may fit (a literal `%` in the
    /// secret, or `%25`), so all are followed at once, character by
    /// character (see [`char_ends`]).
    fn ends_at(&self, text: &str, start: usize) -> Vec<usize> {
        let bytes = text.as_bytes();
        // Most positions cannot start any spelling: decided without
        // allocating, since this runs at every byte of a child's output.
        // Only a shortcut: every spelling `char_ends` accepts begins with
        // one of these bytes (ASCII or a UTF-8 lead byte, so always on a
        // character boundary), which is why loosening either test changes
        // the time taken and never the result (two equivalent mutants,
        // docs/mutants-redact-script.md).
        let Some(&got) = bytes.get(start) else {
            return Vec::new();
        };
        let starts = got == self.text.as_bytes()[0]
            || matches!(got, b'%' | b'\\')
            || (got == b'+' && self.text.starts_with(' '));
        if !starts || !text.is_char_boundary(start) {
            return Vec::new();
        }
        let mut frontier = vec![start];
        for want in self.text.chars() {
            let mut next = Vec::new();
            for &at in &frontier {
                char_ends(want, bytes, at, &mut next);
            }
            next.sort_unstable();
            next.dedup();
            if next.is_empty() {
                return next;
            }
            frontier = next;
        }
        frontier.retain(|&end| text.is_char_boundary(end));
        frontier
    }
}

/// Adds to `ends` where each spelling of `want` that starts at `at` ends:
/// its UTF-8 bytes each as itself, percent-encoded (`%C3`, `%c3`) or
/// hex-escaped (`\xc3`, as Python prints bytes); `+` for a space; a
/// backslash before `"`, `'`, `\` or `/`; JSON's and C's short escapes
/// (`\n`, `\t`...); and `\uXXXX` in either case, a surrogate pair for a
/// character outside the BMP (what JSON encoders print: Python escapes
/// every non-ASCII character, Go `&`, `<` and `>`).
fn char_ends(want: char, bytes: &[u8], at: usize, ends: &mut Vec<usize>) {
    let mut buf = [0; 4];
    let mut here = vec![at];
    for &b in want.encode_utf8(&mut buf).as_bytes() {
        let mut next = Vec::new();
        for &p in &here {
            if bytes.get(p) == Some(&b) {
                next.push(p + 1);
            }
            if bytes.get(p) == Some(&b'%') && hex_byte(bytes, p + 1) == Some(b) {
                next.push(p + 3);
            }
            if bytes.get(p) == Some(&b'\\')
                && bytes.get(p + 1) == Some(&b'x')
                && hex_byte(bytes, p + 2) == Some(b)
            {
                next.push(p + 4);
            }
            if bytes.get(p) == Some(&b'\\') && octal_byte(bytes, p + 1) == Some(b) {
                next.push(p + 4);
            }
        }
        here = next;
    }
    ends.extend(here);
    if want == ' ' && bytes.get(at) == Some(&b'+') {
        ends.push(at + 1);
    }
    // How shells and SQL quote a quote: `'\''` and `'"'"'` (a shell's
    // `set -x`, `shlex.quote`), `''` and `""` (SQL, CSV).
    let rest = &bytes[at.min(bytes.len())..];
    let quoted: &[&[u8]] = match want {
        '\'' => &[b"'\\''", b"'\"'\"'", b"''"],
        '"' => &[b"\"\""],
        _ => &[],
    };
    for spelling in quoted {
        if rest.starts_with(spelling) {
            ends.push(at + spelling.len());
        }
    }
    // A shell's backslash before punctuation or a space (`printf %q`).
    if want.is_ascii_punctuation() || want == ' ' {
        let mut one = [0; 4];
        if rest.first() == Some(&b'\\')
            && rest[1..].starts_with(want.encode_utf8(&mut one).as_bytes())
        {
            ends.push(at + 2);
        }
    }
    if bytes.get(at) != Some(&b'\\') {
        return;
    }
    if let Some(short) = short_escape(want)
        && bytes.get(at + 1) == Some(&short)
    {
        ends.push(at + 2);
    }
    let mut units = [0; 2];
    let mut p = at;
    for &unit in want.encode_utf16(&mut units).iter() {
        if json_unit(bytes, p) != Some(unit) {
            return;
        }
        p += 6;
    }
    ends.push(p);
}

/// The byte three octal digits at `at` spell (`303` in `\303`, as C,
/// `printf %q` and PostgreSQL's bytea escape print bytes).
fn octal_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let digits = bytes.get(at..at + 3)?;
    let mut value: u16 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        value = value * 8 + u16::from(d - b'0');
    }
    u8::try_from(value).ok()
}

/// The letter after a backslash that spells `c` in JSON, C or a libpq
/// connection string, if there is one.
fn short_escape(c: char) -> Option<u8> {
    Some(match c {
        '"' => b'"',
        '\'' => b'\'',
        '\\' => b'\\',
        '/' => b'/',
        '\n' => b'n',
        '\t' => b't',
        '\r' => b'r',
        '\u{8}' => b'b',
        '\u{c}' => b'f',
        _ => return None,
    })
}

/// The UTF-16 unit a `\uXXXX` at `at` spells.
fn json_unit(bytes: &[u8], at: usize) -> Option<u16> {
    if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
        return None;
    }
    let hi = hex_byte(bytes, at + 2)?;
    let lo = hex_byte(bytes, at + 4)?;
    Some(u16::from(hi) << 8 | u16::from(lo))
}

/// The byte two hex digits (either case) at `at` spell.
fn hex_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let (hi, lo) = (bytes.get(at)?, bytes.get(at + 1)?);
    Some(hex(*hi)? * 16 + hex(*lo)?)
}

/// Where a key's value starts, after an optional closing quote on the key,
/// `=`, `:` or `=>` with spaces around, and an optional opening quote
/// (returned, since the value must then end with it).
fn value_start(bytes: &[u8], mut at: usize) -> Option<(usize, Option<u8>)> {
    let skip_spaces = |mut at: usize| {
        while bytes.get(at).is_some_and(|b| matches!(b, b' ' | b'\t')) {
            at += 1;
        }
        at
    };
    if matches!(bytes.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    at = skip_spaces(at);
    match bytes.get(at) {
        Some(b'=') if bytes.get(at + 1) == Some(&b'>') => at += 2,
        Some(b'=' | b':') => at += 1,
        _ => return None,
    }
    at = skip_spaces(at);
    match bytes.get(at) {
        Some(&q @ (b'"' | b'\'')) => Some((at + 1, Some(q))),
        _ => Some((at, None)),
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Too short, too plain or too close to what the output names anyway to
/// be masked in free text.
fn is_common(secret: &str, words: &[&str]) -> bool {
    let lower = secret.to_lowercase();
    let mut chars = secret.chars();
    let first = chars.next();
    secret.chars().count() < MIN_FREE_TEXT_CHARS
        || secret.chars().all(|c| c.is_ascii_digit())
        || chars.all(|c| Some(c) == first)
        || COMMON_WORDS.iter().any(|w| w.eq_ignore_ascii_case(&lower))
        || words
            .iter()
            .any(|w| !w.is_empty() && w.to_lowercase().contains(&lower))
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
    use std::fmt::Write as _;

    /// What RFC 3986 reserves, plus space and `%`: a "partially encoded"
    /// password has only these encoded, and non-ASCII left as it is.
    const RESERVED: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'%')
        .add(b':')
        .add(b'/')
        .add(b'?')
        .add(b'#')
        .add(b'[')
        .add(b']')
        .add(b'@')
        .add(b'!')
        .add(b'$')
        .add(b'&')
        .add(b'\'')
        .add(b'(')
        .add(b')')
        .add(b'*')
        .add(b'+')
        .add(b',')
        .add(b';')
        .add(b'=');

    const WORDS: &[&str] = &["app", "tenant_acme", "db.internal", "acme", "5432"];

    fn lower_hex(encoded: &str) -> String {
        let mut out = String::new();
        let mut rest = encoded;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let code = rest.get(i..i + 3).unwrap_or(&rest[i..]);
            out.push_str(&code.to_ascii_lowercase());
            rest = &rest[i + code.len()..];
        }
        out.push_str(rest);
        out
    }

    /// Every way a program may print the password.
    fn spellings(secret: &str) -> Vec<String> {
        let full = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
        let partial = utf8_percent_encode(secret, RESERVED).to_string();
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let mut all = vec![
            secret.to_owned(),
            lower_hex(&full),
            full,
            lower_hex(&partial),
            partial,
            lower_hex(&form),
            form,
            secret.replace(' ', "+"),
        ];
        all.extend(json_spellings(secret));
        all.push(python_bytes(secret));
        all.sort();
        all.dedup();
        all
    }

    /// How JSON encoders print the password inside a string: `serde_json`
    /// and JavaScript (only `"`, `\\` and control characters escaped),
    /// Python's `json.dumps` (every non-ASCII character as `\uxxxx`, a
    /// surrogate pair outside the BMP), Go's `encoding/json` (`&`, `<`,
    /// `>`, U+2028 and U+2029 too), PHP's `json_encode` (`/` as `\/`
    /// too), Java's upper-case hex, and everything escaped.
    fn json_spellings(secret: &str) -> Vec<String> {
        fn encode(secret: &str, escape: impl Fn(char) -> bool, upper: bool, slash: bool) -> String {
            let mut out = String::new();
            for c in secret.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '/' if slash => out.push_str("\\/"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c < ' ' || escape(c) => {
                        let mut units = [0; 2];
                        for unit in c.encode_utf16(&mut units).iter() {
                            if upper {
                                let _ = write!(out, "\\u{unit:04X}");
                            } else {
                                let _ = write!(out, "\\u{unit:04x}");
                            }
                        }
                    }
                    c => out.push(c),
                }
            }
            out
        }
        let serde = serde_json::to_string(secret).expect("json");
        vec![
            serde[1..serde.len() - 1].to_owned(),
            encode(secret, |c| !c.is_ascii(), false, false),
            encode(secret, |c| !c.is_ascii(), true, false),
            encode(
                secret,
                |c| matches!(c, '&' | '<' | '>' | '\u{2028}' | '\u{2029}'),
                false,
                false,
            ),
            encode(secret, |c| !c.is_ascii(), false, true),
            encode(secret, |_| true, false, false),
            encode(secret, |_| true, true, true),
        ]
    }

    /// Python's `repr()` of the password's bytes (`b'...'` without the
    /// quotes): non-ASCII bytes as `\xc3`, `\` and `'` escaped.
    fn python_bytes(secret: &str) -> String {
        let mut out = String::new();
        for &b in secret.as_bytes() {
            match b {
                b'\\' => out.push_str("\\\\"),
                b'\'' => out.push_str("\\'"),
                b' '..=b'~' => out.push(char::from(b)),
                b => {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
        out
    }

    /// Places a password shows up, `{}` being the spelling.
    const CONTEXTS: &[&str] = &[
        "postgres://app:{}@db.internal:5432/tenant_acme",
        "postgresql://app:{}@db.internal/tenant_acme?sslmode=require",
        "error: could not connect to mysql://someone:{}@elsewhere:3306/x (refused)",
        "redis://:{}@cache:6379/0",
        "see <https://u:{}@h/>.",
        "PGPASSWORD={}",
        "DB_PASSWORD={}",
        "export PGPASSWORD='{}'",
        "password={} host=db.internal dbname=tenant_acme",
        "host=db.internal password='{}' user=app",
        "Password: {}",
        "db_pass: \"{}\"",
        "pwd = {}",
        "jdbc:postgresql://db.internal/tenant_acme?user=app&password={}&ssl=true",
        "settings = {'password' => '{}'}",
    ];

    /// Text around a password that is not a password context.
    const FREE: &[&str] = &["{}", "before {} after", "x{}y", "{} {}", "\t{}\t", "[{}]"];

    fn place(template: &str, value: &str) -> String {
        template.replace("{}", value)
    }

    fn redacted(r: &Redactor, text: &str) -> String {
        r.redact(text).into_owned()
    }

    fn assert_masked(r: &Redactor, secret: &str, template: &str, spelling: &str) {
        let text = place(template, spelling);
        assert_eq!(
            redacted(r, &text),
            place(template, MASK),
            "secret {secret:?} spelled {spelling:?} in {template:?}"
        );
    }

    const LONG: &[&str] = &[
        "s3cret-Passw0rd",
        "correct horse battery staple",
        "p@ss:w/rd?#%+ with spaces",
        "%41%41literal-percent",
        "plus+sign+not+space",
        "ünïcødé-pässwörd-€",
        "日本語のパスワードです",
        "quote\"and'back\\slash/",
        "a-very-long-password-that-goes-on-and-on-for-more-than-one-hundred-characters-\
         because-some-people-generate-them-that-way-0123456789",
        "4fbd0a2c9e6b1d73e8a5f0c2b7d91e46",
        "S\u{e9}cr\u{eb}t p%41ss\"w'rd",
        "go&escapes<these>too\\and 😀 emoji",
        "\u{2028}line\u{2029}separators\ttab",
    ];

    #[test]
    fn a_long_password_is_masked_in_every_spelling_and_place() {
        for secret in LONG {
            let r = Redactor::new(secret, WORDS);
            assert!(r.masks_free_text(), "{secret:?}");
            for spelling in spellings(secret) {
                for template in CONTEXTS.iter().chain(FREE) {
                    assert_masked(&r, secret, template, &spelling);
                }
            }
        }
    }

    /// How shells, SQL, CSV and C print a password with quotes, spaces and
    /// non-ASCII: `set -x` and `shlex.quote` (`'\''`), `'"'"'`, SQL's and
    /// CSV's doubled quotes, `printf %q`'s backslashes and octal bytes.
    #[test]
    fn shell_sql_csv_and_octal_spellings_are_masked() {
        let secret = "it's-a Secret\"\u{fc}1";
        let r = Redactor::new(secret, WORDS);
        for spelling in [
            "+ X='it'\\''s-a Secret\"\u{fc}1'",
            "X='it'\"'\"'s-a Secret\"\u{fc}1'",
            "INSERT INTO t VALUES ('it''s-a Secret\"\u{fc}1')",
            "csv,\"it's-a Secret\"\"\u{fc}1\",x",
            "X=$'it\\'s-a\\ Secret\\\"\\303\\2741'",
        ] {
            let shown = r.redact(spelling);
            assert!(!shown.contains("Secret"), "{spelling} -> {shown}");
            assert!(shown.contains("***"), "{spelling} -> {shown}");
        }
        // Look-alikes stay: another word after the quote, an octal escape
        // of another byte.
        for kept in ["it''s-a Secrex", "it\\'s-a\\ Secret\\\"\\303\\2751"] {
            assert_eq!(r.redact(kept), kept);
        }
    }

    #[test]
    fn escaped_quotes_and_json_are_masked() {
        let secret = "quote\"and'back\\slash/";
        let r = Redactor::new(secret, WORDS);
        let json = serde_json::to_string(&serde_json::json!({ "password": secret })).expect("json");
        assert_eq!(redacted(&r, &json), r#"{"password":"***"}"#);
        let libpq = "password='quote\"and\\'back\\\\slash/' host=h";
        assert_eq!(redacted(&r, libpq), "password='***' host=h");
    }

    #[test]
    fn a_long_password_is_found_however_long_the_line() {
        let secret = "correct horse battery staple";
        let r = Redactor::new(secret, WORDS);
        let filler = "x".repeat(100_000);
        let text = format!("{filler}postgres://app:correct%20horse+battery%2Fstaple@h/{filler}");
        // `%2F` is `/`, not the secret's space: left alone.
        assert_eq!(redacted(&r, &text), text);
        let text = format!("{filler}postgres://app:correct%20horse+battery%20staple@h/{filler}");
        assert_eq!(
            redacted(&r, &text),
            format!("{filler}postgres://app:***@h/{filler}")
        );
    }

    const SHORT_OR_COMMON: &[&str] = &[
        "tenant",
        "postgres",
        "password",
        "Password",
        "p9",
        "x",
        "a b",
        "p@:/",
        "é€",
        "app",
        "tenant_acme",
        "internal",
        "12345678901",
        "aaaaaaaaaa",
        "acme",
        "secret",
    ];

    #[test]
    fn a_short_or_common_password_is_masked_only_where_it_stands_as_one() {
        for secret in SHORT_OR_COMMON {
            let r = Redactor::new(secret, WORDS);
            assert!(!r.masks_free_text(), "{secret:?}");
            for spelling in spellings(secret) {
                for template in CONTEXTS {
                    assert_masked(&r, secret, template, &spelling);
                }
                for template in FREE {
                    let text = place(template, &spelling);
                    assert_eq!(redacted(&r, &text), text, "{secret:?} in {text:?}");
                }
            }
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let lines = [
            "tenant acme (tenant_acme) migrated: 3 applied",
            "connected to postgres on db.internal:5432 as app",
            "Password for user app:",
            "the password was tenant, or so they said",
            "password reset for tenant_acme",
            "postgres://app@db.internal:5432/tenant_acme",
            "postgres://app:other@db.internal/tenant_acme",
            "password=tenant123 is not the password",
            "compass: tenant",
            "bypass=tenant",
            "Applied 20240101000001/migrate users (12.3ms)",
            "",
            "///:::@@@",
            "password=",
            "PGPASSWORD='tenant2",
        ];
        for secret in ["tenant", "postgres", "password", "app", "acme", "1", "%"] {
            let r = Redactor::new(secret, WORDS);
            for line in lines {
                assert_eq!(redacted(&r, line), line, "{secret:?} in {line:?}");
            }
        }
    }

    #[test]
    fn the_url_and_key_rules_catch_each_occurrence() {
        let r = Redactor::new("tenant", WORDS);
        assert_eq!(
            redacted(
                &r,
                "tenant: postgres://tenant:tenant@h/tenant and PGPASSWORD=tenant tenant"
            ),
            "tenant: postgres://tenant:***@h/tenant and PGPASSWORD=*** tenant"
        );
        assert_eq!(redacted(&r, "PGPASSWORD='tenant"), "PGPASSWORD='***");
        assert_eq!(
            redacted(&r, "postgres://u:tenant@h/?password=tenant&x=1"),
            "postgres://u:***@h/?password=***&x=1"
        );
        assert_eq!(
            redacted(&r, r#"{"user": "tenant", "Password" : "tenant"}"#),
            r#"{"user": "tenant", "Password" : "***"}"#
        );
    }

    #[test]
    fn nothing_to_hide_changes_nothing() {
        let r = Redactor::new("", WORDS);
        assert!(!r.masks_free_text());
        let text = "postgres://u:@h/ password= ";
        assert!(matches!(r.redact(text), Cow::Borrowed(_)));
        assert_eq!(Redactor::default().redact(text), text);
    }

    #[test]
    fn common_words_and_the_given_words_are_not_free_text() {
        for word in COMMON_WORDS {
            assert!(!Redactor::new(word, &[]).masks_free_text(), "{word}");
            assert!(
                !Redactor::new(&word.to_uppercase(), &[]).masks_free_text(),
                "{word}"
            );
        }
        // MIN_FREE_TEXT_CHARS characters are enough, one fewer is not.
        assert!(Redactor::new("x7Kp2mQ\u{e9}", &[]).masks_free_text());
        assert!(!Redactor::new("x7Kp2mQ", &[]).masks_free_text());
        assert!(!Redactor::new("internal", &["db.internal.example"]).masks_free_text());
        assert!(Redactor::new("internal-x", &["db.internal.example"]).masks_free_text());
    }
    #[test]
    fn every_secret_is_masked_by_its_own_rule() {
        let r = Redactor::new("tenant", WORDS)
            .with("eu2-Secret-pw", WORDS)
            .with("", WORDS)
            .with("master-pw-Ünï", WORDS)
            .with("eu2-Secret-pw", WORDS);
        assert!(!r.masks_free_text(), "tenant is masked only as a password");
        assert!(Redactor::new("eu2-Secret-pw", WORDS).masks_free_text());
        assert_eq!(
            redacted(
                &r,
                "tenant postgres://u:tenant@h/ eu2-Secret-pw \"master-pw-\\u00dcn\\u00ef\" PGPASSWORD=eu2%2DSecret-pw"
            ),
            "tenant postgres://u:***@h/ *** \"***\" PGPASSWORD=***"
        );
        // One secret inside another makes one mask.
        let r = Redactor::new("outer-secret-inner-pw", &[]).with("inner-pw", &[]);
        assert_eq!(redacted(&r, "[outer-secret-inner-pw]"), "[***]");
        assert_eq!(redacted(&r, "[inner-pw]"), "[***]");
    }

    #[test]
    fn a_url_that_ends_in_its_host_is_read_to_its_end() {
        let r = Redactor::new("tenant", WORDS);
        for line in ["see http://host", "//", "a://b", "x//h:", "//h:tenant"] {
            assert_eq!(redacted(&r, line), line, "{line:?}");
        }
        assert_eq!(redacted(&r, "//h:tenant@"), "//h:***@");
    }

    #[test]
    fn only_the_spellings_of_each_character_match() {
        // A `+` is a space only, a space is a space or `+`.
        let r = Redactor::new("correct horse battery staple", WORDS);
        assert_eq!(redacted(&r, "correct+horse battery%20staple"), "***");
        for line in [
            "correctXhorse battery staple",
            "correct horse+battery-staple",
        ] {
            assert_eq!(redacted(&r, line), line);
        }
        // A spelling may start with any of them.
        let r = Redactor::new(" leading space-pw", WORDS);
        for line in [
            "+leading+space-pw",
            "%20leading space-pw",
            "\\u0020leading space-pw",
        ] {
            assert_eq!(redacted(&r, line), "***", "{line:?}");
        }
        let r = Redactor::new("abcdefghijk", WORDS);
        for line in [
            "abc+efghijk",
            "abc efghijk",
            "abc%65fghijk",
            "abc\\x65fghijk",
            // Hex digits spell a byte only after `\x` or `%`, octal ones
            // only after a backslash.
            "abc\\y64efghijk",
            "abcyx64efghijk",
            "abc\\\\64efghijk",
            "abcy64efghijk",
            "abcy144efghijk",
        ] {
            assert_eq!(redacted(&r, line), line);
        }
        for line in [
            "abc%64efghijk",
            "abc\\x64efghijk",
            "abc\\u0064efghijk",
            "abc\\144efghijk",
        ] {
            assert_eq!(redacted(&r, line), "***", "{line:?}");
        }
    }

    #[test]
    fn an_escape_matches_only_with_its_backslash_letter_and_character() {
        // An escape needs its backslash, its letter and its own character.
        let r = Redactor::new("quote\"and'back\\slash/new\nline\ttab-\u{e9}", WORDS);
        assert_eq!(
            redacted(
                &r,
                "quote\\\"and\\'back\\\\slash\\/new\\nline\\ttab-\\u00E9"
            ),
            "***"
        );
        for line in [
            "quoteX\"and'back\\slash/new\nline\ttab-\u{e9}",
            "quote\"andX'back\\slash/new\nline\ttab-\u{e9}",
            "quote\"and'backX\\slash/new\nline\ttab-\u{e9}",
            "quote\"and'back\\slashX/new\nline\ttab-\u{e9}",
            "quote\"and'back\\slash/newXnline\ttab-\u{e9}",
            "quote\"and'back\\slash/new\\tline\ttab-\u{e9}",
            "quote\"and'back\\slash/new\nline\\ntab-\u{e9}",
            "quote\"and'back\\slash/new\nline\ttab-Xu00e9",
            "quote\"and'back\\slash/new\nline\ttab-\\U00e9",
            "quote\"and'back\\slash/new\nline\ttab-\\u00e8",
            "quote\"and'back\\slash/new\nline\ttab-\\u0e9",
            "quote\\'and\"back\\slash/new\nline\ttab-\u{e9}",
        ] {
            assert_eq!(redacted(&r, line), line, "{line:?}");
        }
        // JSON's and C's short escapes for control characters.
        let r = Redactor::new("ret\rback\u{8}feed\u{c}-pw", WORDS);
        assert_eq!(redacted(&r, "[ret\\rback\\bfeed\\f-pw]"), "[***]");
        assert_eq!(
            redacted(&r, "[ret\\u000dback\\u0008feed\\u000C-pw]"),
            "[***]"
        );
        for line in ["ret\\nback\\bfeed\\f-pw", "ret\\rback\\ffeed\\b-pw"] {
            assert_eq!(redacted(&r, line), line, "{line:?}");
        }
        // Outside the BMP: a surrogate pair, both halves right.
        let r = Redactor::new("emoji-😀-password", WORDS);
        assert_eq!(redacted(&r, "emoji-\\ud83d\\ude00-password"), "***");
        assert_eq!(redacted(&r, "emoji-\\uD83D\\uDE00-password"), "***");
        assert_eq!(redacted(&r, "emoji-\\xf0\\x9f\\x98\\x80-password"), "***");
        for line in [
            "emoji-\\ud83d-password",
            "emoji-\\ud83d\\ude01-password",
            "emoji-\\ud83e\\ude00-password",
            "emoji-\\u1f600-password",
        ] {
            assert_eq!(redacted(&r, line), line, "{line:?}");
        }
    }
}
