//! What makes a new tenant's schema, and applying it to a database: shared
//! by `tenant create` and by `tenant drift`, whose reference is a scratch
//! database migrated exactly as a new tenant is.

use sqlx::postgres::PgConnection;

use crate::commands::context::Context;
use crate::config::{AppCommand, Migrator};
use crate::connect::SessionLimits;
use crate::dbname::DbName;
use crate::migrations::{self, MigrationSet};
use crate::prisma;

/// What migrates a new tenant's database.
pub enum TenantSchema {
    /// tenantctl's own sqlx migrations.
    Sqlx(std::sync::Arc<MigrationSet>),
    /// The application's Prisma migrations, applied natively (or by its
    /// command with `apply = "command"`).
    Prisma {
        folder: prisma::Folder,
        schema: String,
        search_path: bool,
        command: Option<AppCommand>,
    },
    /// The application's command.
    Command(AppCommand),
}

impl TenantSchema {
    /// Read (and checked) before anything is created.
    pub async fn of(ctx: &Context) -> anyhow::Result<Self> {
        Ok(match &ctx.migrator {
            Migrator::Sqlx { .. } => Self::Sqlx(ctx.tenant_migrations_to_apply().await?),
            Migrator::Prisma {
                migrations,
                schema,
                search_path,
                command,
            } => Self::Prisma {
                folder: prisma::Folder::read(migrations).map_err(crate::error::Usage)?,
                schema: schema.clone(),
                search_path: *search_path,
                command: command.clone(),
            },
            Migrator::Command(command) => Self::Command(command.clone()),
        })
    }
}

/// What provisioning applied.
#[derive(Default)]
pub struct Applied {
    pub versions: Vec<i64>,
    pub names: Vec<String>,
}

/// Applies the schema natively on `conn`, connected to `db`: tenantctl's
/// migrations, or the application's Prisma migrations as Prisma applies
/// them. An application command is not run here (see `tenant create`).
pub async fn apply_schema(
    ctx: &Context,
    conn: &mut PgConnection,
    db: &DbName,
    migrations: &TenantSchema,
    limits: &SessionLimits,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    match migrations {
        TenantSchema::Sqlx(set) => {
            let mut done = migrations::Done::default();
            let result = migrations::apply_with(conn, db, set, None, limits, &mut done).await;
            applied.versions.append(&mut done.versions);
            result
        }
        TenantSchema::Prisma {
            folder,
            schema,
            search_path,
            ..
        } => {
            let redactor = ctx.connector.child_env().redactor(&[]);
            let redact = move |text: &str| redactor.redact(text).into_owned();
            let mut done = prisma::Applied::default();
            let target = prisma::Target {
                schema,
                search_path: *search_path,
            };
            let result = prisma::apply(conn, folder, target, limits, &redact, &mut done).await;
            applied.names.append(&mut done.names);
            result
        }
        TenantSchema::Command(_) => Ok(()),
    }
}
