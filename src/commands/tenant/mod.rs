//! `tenantctl tenant ...`.

pub mod create;
pub mod list;
pub mod migrate;
pub mod settings;
pub mod status;

use clap::Subcommand;

use crate::context::Context;
use crate::error::Outcome;

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Record a company, create its database and migrate it
    Create(create::CreateArgs),
    /// List companies from the master database
    List(list::ListArgs),
    /// Apply pending tenant migrations
    Migrate(migrate::MigrateArgs),
    /// Show each tenant's migration state and problems, changing nothing
    Status(status::StatusArgs),
    /// Read and write a tenant's settings table
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
}

pub async fn run(command: TenantCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        TenantCommand::Create(args) => create::run(args, ctx).await,
        TenantCommand::List(args) => list::run(args, ctx).await,
        TenantCommand::Migrate(args) => migrate::run(args, ctx).await,
        TenantCommand::Status(args) => status::run(args, ctx).await,
        TenantCommand::Settings(cmd) => settings::run(cmd, ctx).await,
    }
}
