//! The tenant as the master database describes it, and the rules for the
//! values an operator types about one (slug, status).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::dbname::{DbName, DbNameError};

/// Longest slug accepted; keeps derived database names well under 63 bytes.
pub const SLUG_MAX_LEN: usize = 40;

/// Prefix of database names derived from a slug, so tenant databases are
/// recognisable on a shared server.
pub const DB_PREFIX: &str = "tenant_";

/// A company's URL-safe handle: lowercase letters, digits and hyphens,
/// starting with a letter or digit, at most 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid slug {0:?}: use 1 to {SLUG_MAX_LEN} lowercase letters, digits and hyphens, starting with a letter or digit"
)]
pub struct SlugError(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, SlugError> {
        let valid = raw.len() <= SLUG_MAX_LEN
            && raw
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(SlugError(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The database name a new tenant gets unless the operator picks one:
    /// `tenant_` plus the slug with hyphens as underscores. Slugs have no
    /// underscores, so two slugs never derive the same name.
    pub fn default_db_name(&self) -> DbName {
        DbName::parse(&format!("{DB_PREFIX}{}", self.0.replace('-', "_")))
            .expect("a valid slug always derives a valid database name")
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle of a company's database as recorded in the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Row inserted, database being created or migrated.
    Provisioning,
    /// Ready for use.
    Active,
    /// Provisioning stopped on an error; `tenant create` again finishes it.
    Failed,
    /// Database dropped, row kept for the record.
    Dropped,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the master's `"Company"` table.
///
/// Fields are kept as the master stores them: another tool may have written
/// the row, so the database name is validated here, once, and a bad one
/// travels as an error that fails this tenant only.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub db_name_raw: String,
    pub db: Result<DbName, DbNameError>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    pub fn new(
        id: String,
        slug: String,
        name: String,
        db_name_raw: String,
        status: String,
        created_at: DateTime<Utc>,
    ) -> Self {
        let db = DbName::parse(&db_name_raw);
        Self {
            id,
            slug,
            name,
            db_name_raw,
            db,
            status,
            created_at,
        }
    }

    /// The validated database name, or an error saying why it is refused.
    pub fn db_name(&self) -> anyhow::Result<&DbName> {
        self.db.as_ref().map_err(|err| {
            anyhow::anyhow!(
                "refusing its \"dbName\" from the master: {err}; fix the row in \"Company\""
            )
        })
    }

    pub fn has_status(&self, status: TenantStatus) -> bool {
        self.status == status.as_str()
    }
}

impl fmt::Display for Tenant {
    /// `slug (db_name)`, the way every message names a tenant.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.slug, self.db_name_raw.escape_debug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        for good in ["acme", "a", "9lives", "green-city-2", &"a".repeat(40)] {
            assert!(Slug::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme corp",
            "acme'",
            "a_b",
            &"a".repeat(41),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_db_name_is_prefixed_and_underscored() {
        let slug = Slug::parse("green-city").expect("valid");
        assert_eq!(slug.default_db_name().as_str(), "tenant_green_city");
        let longest = Slug::parse(&"9".repeat(40)).expect("valid");
        assert!(longest.default_db_name().as_str().len() <= 63);
    }
}
