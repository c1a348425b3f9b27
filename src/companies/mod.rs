//! The master's companies table: the only record of which tenants exist and
//! which database each one uses.
//!
//! tenantctl reads the table as it finds it. It needs only an id and a
//! database name; slug, name, status and timestamps are used when the table
//! has them ([`Layout::load`] looks at the catalog once per run). A tenant's
//! lifecycle (`provisioning`, `active`, `failed`, `dropped`) lives in the
//! table's status column when that column can hold it, and otherwise in
//! tenantctl's own `tenantctl.lifecycle` table (see [`crate::state`]), so an
//! application's table is never altered behind its back.
//!
//! A company's server (NULL or absent: `default`) lives the same way: in a
//! column (`"dbServer"`, which tenantctl's own master migration adds, or
//! one named in `tenantctl.toml`), else in tenantctl's own
//! `tenantctl.placement`. A move in progress (a row of `tenantctl.moves`
//! before its switch) makes the tenant `moving`; the move's own
//! bookkeeping (its table, its steps) belongs to `tenant move`, not here.

mod insert;
mod layout;
mod lock;
mod own;
mod rows;
mod visibility;

pub use insert::NewCompany;
pub use layout::{Column, Layout};
pub use lock::{lock_db, lock_slug, unlock_all};
// Callers found these here before tenantctl's own tables had a module.
pub use crate::state::{SCHEMA_LOCK, create_under_lock};
pub use visibility::{RowSecurity, Visibility};

/// tenantctl's own bookkeeping table, created by `master migrate` for an
/// application's companies table that cannot hold tenantctl's states.
pub const BOOKKEEPING: &str = crate::state::LIFECYCLE;

/// tenantctl's record of each company's server, for an application's
/// companies table that has no column for it.
pub const PLACEMENT: &str = crate::state::PLACEMENT;

/// tenantctl's record of moves between servers, kept by `tenant move`.
pub const MOVES: &str = crate::state::MOVES;

pub use crate::error::MissingTable;

/// An identifier quoted for SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
