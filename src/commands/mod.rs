//! One module per command; parents only dispatch.

pub mod doctor;
pub mod master;
pub mod tenant;

use clap::Subcommand;

use crate::context::Context;
use crate::error::Outcome;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The master database that records every tenant
    #[command(subcommand)]
    Master(master::MasterCommand),
    /// Tenants and their databases
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Compare the server with the master: orphans, missing databases,
    /// stuck and outdated tenants (read-only)
    Doctor(doctor::DoctorArgs),
}

pub async fn run(command: Command, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        Command::Master(cmd) => master::run(cmd, ctx).await,
        Command::Tenant(cmd) => tenant::run(cmd, ctx).await,
        Command::Doctor(args) => doctor::run(args, ctx).await,
    }
}
