//! Validated database names: the only form in which a database name reaches SQL.

use std::fmt;

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1), which
/// would silently make two different names collide.
pub const MAX_LEN: usize = 63;

const RESERVED: &[&str] = &["postgres", "template0", "template1"];

/// A database name that is safe to quote into DDL and to put into a URL path.
///
/// Tenant names follow `^[a-z0-9_]{1,63}$` (issue 2's rule for names read
/// from the master, which other tools may have written: `2024_acme` is
/// fine once quoted); the master database may also use uppercase letters (ORM-created masters are often camelCase, for example
/// `prismaSuperUser`). Either way the name holds no quote, space or other
/// character that could change the meaning of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

/// Why a string is not an acceptable database name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbNameError {
    #[error("database name is empty")]
    Empty,
    #[error("database name {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("database name {0:?} is not a safe identifier (only lowercase letters, digits and _)")]
    Invalid(String),
    #[error("database name {0:?} is reserved by PostgreSQL")]
    Reserved(String),
}

impl DbName {
    /// Validates a tenant database name.
    pub fn parse(raw: &str) -> Result<Self, DbNameError> {
        Self::check(raw, |c| c.is_ascii_lowercase())
    }

    /// Validates the master database name, which may contain uppercase letters.
    pub fn parse_master(raw: &str) -> Result<Self, DbNameError> {
        Self::check(raw, |c| c.is_ascii_alphabetic())
    }

    fn check(raw: &str, letter: impl Fn(char) -> bool) -> Result<Self, DbNameError> {
        if raw.is_empty() {
            return Err(DbNameError::Empty);
        }
        if !raw
            .chars()
            .all(|c| letter(c) || c.is_ascii_digit() || c == '_')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(
            DbName::parse("tenant_acme_2").map(|d| d.0),
            Ok("tenant_acme_2".into())
        );
        assert!(DbName::parse_master("prismaSuperUser").is_ok());
        assert!(
            DbName::parse("2024_acme").is_ok(),
            "issue 2: [a-z0-9_] only"
        );
        assert!(DbName::parse("_acme").is_ok());
    }

    #[test]
    fn rejects_injection_and_odd_names() {
        for bad in [
            "x\"; DROP DATABASE master; --",
            "Tenant",
            "a-b",
            "a b",
            "",
            "é",
        ] {
            assert!(DbName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(DbName::parse_master("a\"b").is_err());
    }

    #[test]
    fn rejects_reserved_and_long_names() {
        assert_eq!(
            DbName::parse("postgres"),
            Err(DbNameError::Reserved("postgres".into()))
        );
        assert!(DbName::parse(&"a".repeat(63)).is_ok());
        assert!(matches!(
            DbName::parse(&"a".repeat(64)),
            Err(DbNameError::TooLong(_))
        ));
    }

    #[test]
    fn quotes_as_identifier() {
        let name = DbName::parse_master("prismaSuperUser").expect("valid");
        assert_eq!(name.quoted(), "\"prismaSuperUser\"");
    }
}
