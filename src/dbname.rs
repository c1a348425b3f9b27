//! Validated database names: the only form in which a database name reaches SQL.

use std::fmt;

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1), which
/// would silently make two different names collide.
pub const MAX_LEN: usize = 63;

/// How tenantctl's template databases are named (`tenantctl_template_`
/// and the migration set's hash): never a tenant's database.
pub const TEMPLATE_PREFIX: &str = "tenantctl_template_";

/// How `tenant drift`'s scratch databases are named.
pub const SCRATCH_PREFIX: &str = "tenantctl_drift_";

/// Whether the name is one tenantctl gives its own databases (templates,
/// drift's scratch databases): never a tenant's, since commands refuse or
/// drop such databases as tenantctl's.
pub fn is_tenantctls_own(name: &str) -> bool {
    name.starts_with(TEMPLATE_PREFIX) || name.starts_with(SCRATCH_PREFIX)
}

const RESERVED: &[&str] = &["postgres", "template0", "template1"];

/// A database name that is safe to quote into DDL and to put into a URL path.
///
/// The names applications really use: ASCII letters of either case, digits,
/// `_` and `-`, 1 to 63 bytes (`tenant_acme`, `2024_acme`, `blue-sky`,
/// `GreenCity`). Never a quote, white space, control character, `/`, `%`,
/// `?`, `#` or NUL, which could change the meaning of a statement or a URL,
/// and never `postgres` or a template database. The name is always quoted
/// in DDL, so case and hyphens survive as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

/// Why a string is not an acceptable database name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbNameError {
    #[error("database name is empty")]
    Empty,
    #[error("database name {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("database name {0:?} is not a safe identifier (only ASCII letters, digits, _ and -)")]
    Invalid(String),
    #[error("database name {0:?} is reserved by PostgreSQL")]
    Reserved(String),
}

impl DbName {
    /// Validates a database name.
    pub fn parse(raw: &str) -> Result<Self, DbNameError> {
        if raw.is_empty() {
            return Err(DbNameError::Empty);
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(DbNameError::Invalid(raw.to_owned()));
        }
        if raw.len() > MAX_LEN {
            return Err(DbNameError::TooLong(raw.to_owned()));
        }
        if RESERVED.contains(&raw) {
            return Err(DbNameError::Reserved(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier, for DDL such as `CREATE DATABASE`.
    /// Validation already excludes `"`, but doubling it keeps this correct on
    /// its own.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `raw` is a lower-case handle: 1 to `max_len` ASCII lower-case
/// letters, digits and `separator`, starting with a letter or digit (slugs
/// use `-`, server names `_`).
pub fn is_handle(raw: &str, max_len: usize, separator: char) -> bool {
    raw.len() <= max_len
        && raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_names_applications_use() {
        for good in [
            "tenant_acme_2",
            "2024_acme",
            "_acme",
            "blue-sky",
            "GreenCity",
            "prismaSuperUser",
            "db_greencity_20231025",
            "-",
            "Postgres",
        ] {
            assert_eq!(
                DbName::parse(good).map(|d| d.0),
                Ok(good.to_owned()),
                "{good}"
            );
        }
        assert!(DbName::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn rejects_injection_and_odd_names() {
        for bad in [
            "x\"; DROP DATABASE master; --",
            "a b",
            "a\tb",
            "a\nb",
            "a'b",
            "a\"b",
            "a/b",
            "a%41",
            "a?b",
            "a#b",
            "a\0b",
            "a.b",
            "a;b",
            "é",
            "\u{1b}[2J",
        ] {
            assert!(
                matches!(DbName::parse(bad), Err(DbNameError::Invalid(_))),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(DbName::parse(""), Err(DbNameError::Empty));
    }

    #[test]
    fn rejects_reserved_and_long_names() {
        for reserved in ["postgres", "template0", "template1"] {
            assert_eq!(
                DbName::parse(reserved),
                Err(DbNameError::Reserved(reserved.into()))
            );
        }
        assert!(matches!(
            DbName::parse(&"a".repeat(64)),
            Err(DbNameError::TooLong(_))
        ));
    }

    #[test]
    fn quotes_as_identifier() {
        let name = DbName::parse("prismaSuperUser").expect("valid");
        assert_eq!(name.quoted(), "\"prismaSuperUser\"");
        assert_eq!(
            DbName::parse("blue-sky").expect("valid").quoted(),
            "\"blue-sky\""
        );
    }
}
