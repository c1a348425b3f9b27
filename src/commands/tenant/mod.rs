//! `tenantctl tenant ...`.

pub mod baseline;
pub mod create;
pub mod create_file;
pub mod drift;
pub mod drop;
pub mod exec;
pub mod list;
pub mod migrate;
pub mod r#move;
pub mod provision;
pub mod psql;
pub mod revert;
pub mod runs;
pub mod settings;
pub mod sql;
pub mod status;
pub mod unfinished;
pub mod url;

use clap::Subcommand;

use crate::commands::context::Context;
use crate::error::Outcome;

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Record a company, create its database and migrate it
    Create(create::CreateArgs),
    /// List companies from the master database
    List(list::ListArgs),
    /// Apply pending tenant migrations
    Migrate(migrate::MigrateArgs),
    /// Revert migrations with their down scripts: to a version, or exactly
    /// what one migrate run did
    ///
    /// `--to VERSION` runs the down scripts of the migrations applied after
    /// VERSION, newest first, each in its own transaction that also removes
    /// its `_sqlx_migrations` row (as sqlx's `Migrator::undo` does): VERSION
    /// stays applied. Every selected tenant is planned first; if any
    /// migration to revert has no down script, was edited since it was
    /// applied, is dirty, or is unknown to the migrations in use, nothing
    /// is reverted anywhere (exit 2).
    Revert(revert::RevertArgs),
    /// List recent migrate and revert runs, or one run's tenants
    Runs(runs::RunsArgs),
    /// Show each tenant's migration state and problems, changing nothing
    Status(status::StatusArgs),
    /// Compare each tenant's real schema with the one its migrations make
    ///
    /// The reference is built once per run in a scratch database (created,
    /// migrated as `tenant create` migrates a new tenant, read, dropped), or
    /// is a named tenant's schema (--against). Each tenant's catalog is read
    /// in one round trip and reduced to a canonical form (no OIDs, database
    /// names or creation order); each difference is reported once with the
    /// tenants it affects. Tenants not at the latest migration are reported
    /// as pending, not compared. Exit 0 when no tenant differs, 1 when one
    /// does (or could not be read).
    Drift(drift::DriftArgs),
    /// Read and write tenants' settings tables
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Run a program once per tenant with DATABASE_URL set to its database
    Exec(exec::ExecArgs),
    /// Run SQL in one transaction per tenant
    Sql(sql::SqlArgs),
    /// Print a tenant's connection URL (password redacted)
    Url(url::UrlArgs),
    /// Open psql on a tenant's database
    Psql(psql::PsqlArgs),
    /// Drop a tenant's database and delete (or mark) its company
    Drop(drop::DropArgs),
    /// Move a tenant's database to another server and repoint the master
    Move(r#move::MoveArgs),
    /// Record migrations up to a version as applied without running them
    Baseline(baseline::BaselineArgs),
}

pub async fn run(command: TenantCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        TenantCommand::Create(args) => create::run(args, ctx).await,
        TenantCommand::List(args) => list::run(args, ctx).await,
        TenantCommand::Migrate(args) => migrate::run(args, ctx).await,
        TenantCommand::Revert(args) => revert::run(args, ctx).await,
        TenantCommand::Runs(args) => runs::run(args, ctx).await,
        TenantCommand::Status(args) => status::run(args, ctx).await,
        TenantCommand::Drift(args) => drift::run(args, ctx).await,
        TenantCommand::Settings(cmd) => settings::run(cmd, ctx).await,
        TenantCommand::Exec(args) => exec::run(args, ctx).await,
        TenantCommand::Sql(args) => sql::run(args, ctx).await,
        TenantCommand::Url(args) => url::run(args, ctx).await,
        TenantCommand::Psql(args) => psql::run(args, ctx).await,
        TenantCommand::Drop(args) => drop::run(args, ctx).await,
        TenantCommand::Move(args) => r#move::run(args, ctx).await,
        TenantCommand::Baseline(args) => baseline::run(args, ctx).await,
    }
}
