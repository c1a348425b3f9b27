//! One module per command; parents only dispatch.

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
}

pub async fn run(command: Command, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        Command::Master(cmd) => master::run(cmd, ctx).await,
        Command::Tenant(cmd) => tenant::run(cmd, ctx).await,
    }
}
