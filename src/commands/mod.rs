//! One module per command; parents only dispatch.
//!
//! Adding a per-tenant command: copy `tenant/settings.rs` or
//! `tenant/status.rs`. Give it an `Args` struct that flattens the shared
//! groups from [`args`] (`SelectionArgs`, `FleetArgs`, `SessionArgs`), a
//! value type implementing `output::report::TenantValue` (its JSON fields
//! and table columns), and an `async fn run(args, &Context)` that selects
//! with `ctx.select`, works through `ctx.on_each_tenant` and ends with
//! `ctx.finish`. `on_each_tenant` turns the flags into plain values
//! (`FleetOptions`, `SessionLimits`) and hands the work to the
//! [`crate::runner::Runner`]: it connects to each tenant with the session
//! limits, runs the operation, ends the connection by the runner's one
//! rule, and reports once per tenant. Then add a variant to the parent's
//! enum and its dispatch.
//!
//! No command opens or closes a connection itself: a command that needs
//! the master, a server or one tenant asks `ctx.runner` for a scoped
//! connection (`with_master`, `with_maintenance`, `with_tenant`,
//! `each_server`), which ends it whatever the closure does.

pub mod args;
pub mod context;
pub mod doctor;
pub mod master;
pub mod record;
pub mod select;
pub mod server;
pub mod shell;
pub mod template;
pub mod tenant;
pub mod version;

use clap::Subcommand;

use crate::commands::context::Context;
use crate::error::Outcome;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The master database that records every tenant
    #[command(subcommand)]
    Master(master::MasterCommand),
    /// Tenants and their databases
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// The PostgreSQL servers that hold tenant databases
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// The template databases new tenants are cloned from, one per server
    /// and migration set
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Compare the servers with the master: orphans, missing or misplaced
    /// databases, unreachable servers, stuck and outdated tenants (read-only)
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (needs no database)
    Completions(shell::CompletionsArgs),
    /// Write one manual page per command into a folder (needs no database)
    Man(shell::ManArgs),
}

pub async fn run(command: Command, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        Command::Master(cmd) => master::run(cmd, ctx).await,
        Command::Tenant(cmd) => tenant::run(cmd, ctx).await,
        Command::Server(cmd) => server::run(cmd, ctx).await,
        Command::Template(cmd) => template::run(cmd, ctx).await,
        Command::Doctor(args) => doctor::run(args, ctx).await,
        Command::Completions(args) => Ok(shell::completions(&args)),
        Command::Man(args) => shell::man(&args),
    }
}

impl Command {
    /// Whether this is a command that reads no configuration at all.
    pub fn run_offline_only(&self) -> bool {
        matches!(self, Self::Completions(_) | Self::Man(_))
    }

    /// Runs the commands that need no configuration (no base URL, no
    /// master), before any is read; `None` for every other command.
    pub fn run_offline(&self) -> Option<anyhow::Result<Outcome>> {
        match self {
            Self::Completions(args) => Some(Ok(shell::completions(args))),
            Self::Man(args) => Some(shell::man(args)),
            _ => None,
        }
    }
}
