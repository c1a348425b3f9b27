//! A company's lifecycle as tenantctl records it. A leaf, so that the
//! configuration (which maps an application's status values onto it) and
//! the tenant both build on it.

use std::fmt;

use serde::Serialize;

/// Lifecycle of a company's database as recorded in the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Row inserted, database being created or migrated.
    Provisioning,
    /// Ready for use.
    Active,
    /// Provisioning stopped on an error; `tenant create` again finishes it.
    Failed,
    /// Database dropped, row kept for the record.
    Dropped,
    /// Being copied to another server by `tenant move`; fleet commands skip it
    // An active tenant: kept in tenantctl's own `tenantctl.moves`, never in
    // the application's status.
    Moving,
}

impl Lifecycle {
    /// The states a status column (or `tenantctl.lifecycle`) records;
    /// `moving` lives in the move's own record.
    pub const STORED: [Self; 4] = [
        Self::Provisioning,
        Self::Active,
        Self::Failed,
        Self::Dropped,
    ];

    /// Every state, `moving` included.
    pub const ALL: [Self; 5] = [
        Self::Provisioning,
        Self::Active,
        Self::Failed,
        Self::Dropped,
        Self::Moving,
    ];

    /// Any state with this name (`moving` included), ignoring case.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
    }

    /// The stored state with this name, ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::STORED
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
            Self::Moving => "moving",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
