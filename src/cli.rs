//! The command line's top level. The global flags and the flag groups that
//! commands share live in `commands::args`; each command's own arguments
//! live beside its code in `commands/`.

use clap::Parser;

use crate::commands::Command;
use crate::commands::args::{GlobalArgs, Origins};

/// Database-per-tenant PostgreSQL: create, migrate, inspect and move every
/// tenant's database from the servers' URLs and the master's "Company" table.
#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,

    /// Where the values that narrow a selection came from, filled in from
    /// the raw matches after parsing.
    #[arg(skip)]
    pub origins: Origins,
}
