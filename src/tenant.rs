//! The tenant as the master database describes it, and the rules for the
//! values an operator types about one (slug, status).

use std::fmt;

use chrono::{DateTime, Utc};

use crate::dbname::DbName;
pub use crate::dbname::is_handle;
pub use crate::lifecycle::Lifecycle;
use crate::servers::ServerName;

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
        if is_handle(raw, SLUG_MAX_LEN, '-') {
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

/// A `--status` value: one of tenantctl's lifecycle states, or a value of
/// the application's own status column (an enum's `SUSPENDED`, say),
/// which stands for no lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusWanted {
    Lifecycle(Lifecycle),
    App(String),
}

impl StatusWanted {
    /// tenantctl's state of that name (any case), else the application's
    /// value as given; whether the table has it is checked against the
    /// master ([`crate::selection::check_statuses`]).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("give a status".into());
        }
        Ok(Lifecycle::named(raw).map_or_else(|| Self::App(raw.to_owned()), Self::Lifecycle))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Lifecycle(l) => l.as_str(),
            Self::App(value) => value,
        }
    }

    /// Whether the tenant has this status. A tenant being moved is an
    /// active one: it is selected, and the fleet run reports it skipped
    /// and why, rather than leave it out unsaid. An application's value is
    /// matched against its own column, whatever tenantctl's record says.
    pub fn matches(&self, tenant: &Tenant) -> bool {
        match self {
            Self::Lifecycle(l) => {
                tenant.has_status(*l)
                    || (*l == Lifecycle::Active && tenant.has_status(Lifecycle::Moving))
            }
            Self::App(value) => tenant
                .app_status
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case(value)),
        }
    }
}

/// One row of the master's `"Company"` table.
///
/// Fields are kept as the master stores them: another tool may have written
/// the row, so any of them but the id may be NULL, and the database name is
/// validated here, once. A row whose database name is missing or unsafe
/// still travels, as an error that fails this tenant only.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub slug: Option<String>,
    pub name: Option<String>,
    pub db_name_raw: Option<String>,
    pub db: Result<DbName, String>,
    /// The status as recorded, for display.
    pub status: Option<String>,
    /// The value of the application's own status column, if the table has
    /// one, whatever tenantctl's own record says: what the application
    /// goes by.
    pub app_status: Option<String>,
    /// The lifecycle state that status stands for, if any (an application's
    /// own states, such as `SUSPENDED`, stand for none).
    pub lifecycle: Option<Lifecycle>,
    pub created_at: Option<DateTime<Utc>>,
    /// The server as recorded (NULL or absent: `default`).
    pub server_raw: Option<String>,
    /// The validated server name, or why the recorded one is refused.
    pub server: Result<ServerName, String>,
    /// While a `tenant move` has it: the server it is being moved to.
    pub moving_to: Option<MovingTo>,
    /// Set by a selection when other companies' rows name the same
    /// database on the same server.
    pub sharing: Option<Sharing>,
    /// When this row was read from the master (`None` for a tenant made
    /// up from a record): a fleet run rereads rows older than a second.
    pub read_at: Option<std::time::Instant>,
}

/// Other companies whose rows name this tenant's database: a fleet run
/// works on such a database once, under the first of them it selected,
/// and destructive commands refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// The other companies, as [`describe`] names them.
    pub others: Vec<String>,
    /// The tenant a run works on the database under, when not this one.
    pub worked_by: Option<String>,
}

/// A company as a message names it among others: `company ID (slug S,
/// server N)`.
pub fn describe(tenant: &Tenant) -> String {
    let slug = tenant
        .slug
        .as_deref()
        .map(|s| format!("slug {}, ", crate::text::shown(s)))
        .unwrap_or_default();
    format!(
        "company {} ({slug}server {})",
        crate::text::shown(&tenant.id),
        crate::text::shown(tenant.server_label())
    )
}

/// [`describe`] for several companies, joined with commas.
pub fn describe_all(tenants: &[Tenant]) -> String {
    tenants.iter().map(describe).collect::<Vec<_>>().join(", ")
}

/// Marks each selected tenant whose database another company's row also
/// names (`same_place` tells whether two rows' servers are one server).
/// The first of a group in `selected` is the one a run works on.
pub fn mark_shared(
    everyone: &[Tenant],
    selected: &mut [Tenant],
    same_place: impl Fn(&Tenant, &Tenant) -> bool,
) {
    let mut leads: Vec<(usize, String)> = Vec::new();
    for i in 0..selected.len() {
        let tenant = &selected[i];
        let Some(db) = tenant.db_name_raw.as_deref() else {
            continue;
        };
        let others: Vec<&Tenant> = everyone
            .iter()
            .filter(|t| {
                t.id != tenant.id
                    && t.db_name_raw.as_deref() == Some(db)
                    && !t.has_status(Lifecycle::Dropped)
                    && same_place(t, tenant)
            })
            .collect();
        if others.is_empty() {
            continue;
        }
        let lead = leads
            .iter()
            .find(|(j, _)| {
                let earlier = &selected[*j];
                earlier.db_name_raw.as_deref() == Some(db) && same_place(earlier, tenant)
            })
            .map(|(_, handle)| handle.clone());
        if lead.is_none() {
            leads.push((i, tenant.handle().to_owned()));
        }
        let others = others.into_iter().map(describe).collect();
        selected[i].sharing = Some(Sharing {
            others,
            worked_by: lead,
        });
    }
}

impl Tenant {
    pub fn new(
        id: String,
        slug: Option<String>,
        name: Option<String>,
        db_name_raw: Option<String>,
        status: Option<String>,
        created_at: Option<DateTime<Utc>>,
    ) -> Self {
        let db = match &db_name_raw {
            Some(raw) => DbName::parse(raw).map_err(|err| {
                format!(
                    "company {id}: refusing its \"dbName\" from the master: {err}; fix the row in \"Company\""
                )
            }),
            None => Err(format!(
                "company {id}: column \"dbName\" is NULL in the master; set it in \"Company\""
            )),
        };
        let lifecycle = status.as_deref().and_then(Lifecycle::parse);
        Self {
            id,
            slug,
            name,
            db_name_raw,
            db,
            app_status: status.clone(),
            status,
            lifecycle,
            created_at,
            server_raw: None,
            server: Ok(ServerName::default()),
            moving_to: None,
            sharing: None,
            read_at: None,
        }
    }

    /// The tenant placed on the server the master records (NULL: default).
    #[must_use]
    pub fn with_server(mut self, raw: Option<String>) -> Self {
        self.server = match raw.as_deref() {
            None => Ok(ServerName::default()),
            Some(name) => ServerName::parse(name).map_err(|err| {
                format!(
                    "company {}: refusing its server from the master: {err}",
                    self.id
                )
            }),
        };
        self.server_raw = raw;
        self
    }

    /// The validated server name, or an error saying why it is refused.
    pub fn server(&self) -> anyhow::Result<&ServerName> {
        self.server.as_ref().map_err(|why| anyhow::anyhow!("{why}"))
    }

    /// The server as recorded, for display (`default` when NULL).
    pub fn server_label(&self) -> &str {
        self.server_raw.as_deref().unwrap_or(ServerName::DEFAULT)
    }

    /// The validated database name, or an error saying why it is refused.
    pub fn db_name(&self) -> anyhow::Result<&DbName> {
        self.db.as_ref().map_err(|why| anyhow::anyhow!("{why}"))
    }

    /// How an operator names this tenant, as [`find_tenant`] finds it
    /// again: its slug; on a table without one, its name, else its
    /// database name; its id when it has none of these.
    pub fn handle(&self) -> &str {
        self.slug
            .as_deref()
            .or(self.name.as_deref().filter(|n| !n.is_empty()))
            .or(self.db_name_raw.as_deref())
            .unwrap_or(&self.id)
    }

    /// The database name as recorded, for display (empty when NULL).
    pub fn db_label(&self) -> &str {
        self.db_name_raw.as_deref().unwrap_or_default()
    }

    /// Whether the tenant is in this lifecycle state.
    pub fn has_status(&self, status: Lifecycle) -> bool {
        self.lifecycle == Some(status)
    }

    /// The status as recorded, for display.
    pub fn status_label(&self) -> &str {
        self.status.as_deref().unwrap_or("(none)")
    }
}

/// The company an operator means by `key`: the one with that slug, that
/// id or that database name, or, among rows without a slug (a table with
/// no slug column, where `tenant create <slug>` kept the name and the
/// database), the one whose database is the one `tenant create <key>`
/// derives (`tenant_<key>`) or the one with that name.
///
/// Every way is tried, none before the others: a key that two companies
/// answer to in any two ways (one's name and another's database or id,
/// one's slug and another's id) is [`AmbiguousName`], never a guess. A
/// handle shown for one company must never lead a command to another.
pub fn find_tenant<'a>(
    everyone: &'a [Tenant],
    key: &str,
) -> Result<Option<&'a Tenant>, AmbiguousName> {
    let derived = Slug::parse(key).ok().map(|s| s.default_db_name());
    let answers = |t: &Tenant| {
        t.slug.as_deref() == Some(key)
            || t.id == key
            || t.db_name_raw.as_deref() == Some(key)
            || (t.slug.is_none()
                && (t.name.as_deref() == Some(key)
                    || derived
                        .as_ref()
                        .is_some_and(|db| t.db_name_raw.as_deref() == Some(db.as_str()))))
    };
    let mut candidates: Vec<&Tenant> = Vec::new();
    for tenant in everyone.iter().filter(|t| answers(t)) {
        if !candidates.iter().any(|c| c.id == tenant.id) {
            candidates.push(tenant);
        }
    }
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => Err(AmbiguousName {
            key: key.to_owned(),
            ids: many.iter().map(|t| t.id.clone()).collect(),
        }),
    }
}

/// Several companies of a table without slugs carry the name an operator
/// gave.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "tenant {:?} is ambiguous: companies {} all answer to it (by slug, id, database name, name, or the database `tenant create` would derive from it); name one by its id or database name",
    crate::text::shown(key),
    ids.join(", ")
)]
pub struct AmbiguousName {
    pub key: String,
    pub ids: Vec<String>,
}

/// The error for a key that names no company.
pub fn unknown_tenant(key: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "unknown tenant {:?}: no company has that slug, id, database name or (without a slug) name (see `tenantctl tenant list`)",
        crate::text::shown(key)
    )
}

/// Where a move is taking a tenant, as tenantctl's record names it: a
/// server, or the text of a name edited by hand into no valid one. Either
/// way the tenant is being moved: nothing may reach its database until the
/// move is finished or undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MovingTo {
    Server(ServerName),
    Unreadable(String),
}

impl MovingTo {
    /// The record's name for it, as written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Server(name) => name.as_str(),
            Self::Unreadable(raw) => raw,
        }
    }
}

impl fmt::Display for MovingTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::shown(self.as_str()))
    }
}

impl fmt::Display for Tenant {
    /// `slug (db_name)`, the way every message names a tenant, with
    /// control characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = self
            .db_name_raw
            .as_deref()
            .map_or_else(|| "no dbName".to_owned(), crate::text::shown);
        let handle = crate::text::shown(self.handle());
        if handle == db {
            // A row named by its database alone: once is enough.
            f.write_str(&db)
        } else {
            write!(f, "{handle} ({db})")
        }
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
