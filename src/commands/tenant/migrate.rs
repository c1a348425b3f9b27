//! `tenantctl tenant migrate <slug|id>... | --all`: apply pending tenant
//! migrations across the selected tenants.

use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use sqlx::Connection as _;

use crate::cli::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::master::join;
use crate::context::Context;
use crate::db::{Connector, SessionLimits};
use crate::error::Outcome;
use crate::migrations::{self, MigrationSet};
use crate::report::TenantValue;
use crate::tenant::Tenant;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Read each tenant's applied migrations and show what would be applied,
    /// applying nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// What migrating one tenant did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct Migrated {
    /// Versions applied in this run.
    pub applied: Vec<i64>,
    /// With `--dry-run`: versions that would be applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<i64>>,
}

impl TenantValue for Migrated {
    fn headers() -> Vec<&'static str> {
        vec!["migrations"]
    }

    fn cells(&self) -> Vec<String> {
        let (label, versions) = match &self.pending {
            Some(pending) => ("would apply", pending),
            None => ("applied", &self.applied),
        };
        vec![if versions.is_empty() {
            if self.pending.is_some() {
                "none pending".into()
            } else {
                "0".into()
            }
        } else {
            format!("{label} {}: {}", versions.len(), join(versions))
        }]
    }
}

pub async fn run(args: MigrateArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let migrations = ctx.tenant_migrations().await?;
    let tenants = ctx.select(&args.selection).await?;
    let connector = ctx.connector.clone();
    let limits = SessionLimits::from(&args.session);
    let dry_run = args.dry_run;
    let run = ctx
        .fleet(tenants, &args.fleet, move |tenant| {
            let (connector, migrations, limits) =
                (connector.clone(), migrations.clone(), limits.clone());
            async move {
                let mut migrated = Migrated::default();
                let result = migrate_one(
                    &connector,
                    &tenant,
                    &migrations,
                    &limits,
                    dry_run,
                    &mut migrated,
                )
                .await;
                (migrated, result)
            }
        })
        .await;
    Ok(ctx.finish(&run))
}

/// Migrates one tenant on a single connection, closed afterwards.
pub async fn migrate_one(
    connector: &Connector,
    tenant: &Tenant,
    migrations: &Arc<MigrationSet>,
    limits: &SessionLimits,
    dry_run: bool,
    migrated: &mut Migrated,
) -> anyhow::Result<()> {
    let db = tenant.db_name()?;
    let mut conn = connector.connect_tenant(db, limits).await?;
    let result = if dry_run {
        match migrations::plan(&mut conn, migrations).await {
            Ok(plan) => {
                migrated.pending = Some(plan.pending.clone());
                plan.check()
            }
            Err(err) => Err(err),
        }
    } else {
        migrations::apply(&mut conn, db, migrations, &mut migrated.applied).await
    };
    let _ = conn.close().await;
    result
}
