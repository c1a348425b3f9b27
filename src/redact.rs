//! Masking one secret, a tenant's password, in text a child process printed
//! (`tenant exec`). The child may print the password in any of the ways a
//! program spells it, so the secret is matched in all of them at once:
//! each of its bytes may appear as itself, percent-encoded (`%2F` or
//! `%2f`, so fully, partially or not at all encoded), a space as `+`
//! (form encoding), and `"`, `'`, `\` and `/` backslash-escaped (JSON,
//! libpq connection strings).
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

/// Masks one secret in text. Built once per child, used on every line.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secret: Vec<u8>,
    free_text: bool,
}

impl Redactor {
    /// A redactor for `secret` (as the server knows it, decoded). `words`
    /// are the other things the output will name (user, database, host,
    /// tenant slug and id): a secret that is one of them, or part of one,
    /// is masked only where it stands as a password. An empty secret masks
    /// nothing.
    pub fn new(secret: &str, words: &[&str]) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            free_text: !secret.is_empty() && !is_common(secret, words),
        }
    }

    /// True if the secret is masked wherever it appears, not only where it
    /// stands as a password.
    pub fn masks_free_text(&self) -> bool {
        self.free_text
    }

    /// The text with every occurrence of the secret replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.secret.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut found = if self.free_text {
            self.anywhere(text)
        } else {
            let mut found = self.in_urls(text);
            found.extend(self.as_values(text));
            found
        };
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for range in found {
            // Overlapping matches (a URL's `?password=` is also a key's
            // value) make one mask.
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
    /// secret, or `%25`), so all are followed at once.
    fn ends_at(&self, text: &str, start: usize) -> Vec<usize> {
        let bytes = text.as_bytes();
        if !text.is_char_boundary(start) {
            return Vec::new();
        }
        let mut frontier = vec![start];
        for &want in &self.secret {
            let mut next = Vec::new();
            for &at in &frontier {
                let Some(&got) = bytes.get(at) else {
                    continue;
                };
                if got == want || (want == b' ' && got == b'+') {
                    next.push(at + 1);
                }
                if got == b'%'
                    && let (Some(&hi), Some(&lo)) = (bytes.get(at + 1), bytes.get(at + 2))
                    && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
                    && hi * 16 + lo == want
                {
                    next.push(at + 3);
                }
                if got == b'\\'
                    && matches!(want, b'"' | b'\'' | b'\\' | b'/')
                    && bytes.get(at + 1) == Some(&want)
                {
                    next.push(at + 2);
                }
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
        all.sort();
        all.dedup();
        all
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
        assert!(!Redactor::new("internal", &["db.internal.example"]).masks_free_text());
        assert!(Redactor::new("internal-x", &["db.internal.example"]).masks_free_text());
    }
}
