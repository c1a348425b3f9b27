//! `tenantctl tenant migrate <slug|id>... | --all`: apply pending tenant
//! migrations across the selected tenants.

use clap::Args;
use serde::Serialize;

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::connect::SessionLimits;
use crate::error::Outcome;
use crate::migrations;
use crate::output::join_versions;
use crate::output::report::TenantValue;

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
            format!("{label} {}: {}", versions.len(), join_versions(versions))
        }]
    }
}

pub async fn run(args: MigrateArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let migrations = ctx.tenant_migrations_to_apply().await?;
    let tenants = ctx.select(&args.selection).await?;
    let dry_run = args.dry_run;
    let run = ctx
        .on_each_tenant(
            tenants,
            &args.fleet,
            SessionLimits::from(&args.session),
            move |tenant, conn, migrated: &mut Migrated| {
                let migrations = migrations.clone();
                Box::pin(async move {
                    let db = tenant.db_name()?;
                    if dry_run {
                        let plan = migrations::plan(conn, &migrations).await?;
                        migrated.pending = Some(plan.pending.clone());
                        plan.check()
                    } else {
                        migrations::apply(conn, db, &migrations, &mut migrated.applied).await
                    }
                })
            },
        )
        .await;
    Ok(ctx.finish(&run))
}
