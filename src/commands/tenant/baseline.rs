//! `tenantctl tenant baseline <selection> --to VERSION`: adopt databases
//! whose schema another tool created.

use clap::Args;
use serde::Serialize;

use crate::commands::args::{FleetArgs, SelectionArgs};
use crate::commands::context::Context;
use crate::connect::SessionLimits;
use crate::error::{Outcome, UsageError};
use crate::migrations;
use crate::output::join_versions;
use crate::output::report::TenantValue;

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Record every migration up to and including this version as applied
    #[arg(long, value_name = "VERSION")]
    pub to: i64,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Default, Serialize)]
pub struct Baselined {
    /// Versions recorded by this run.
    pub recorded: Vec<i64>,
}

impl TenantValue for Baselined {
    fn headers() -> Vec<&'static str> {
        vec!["recorded"]
    }

    fn cells(&self) -> Vec<String> {
        vec![if self.recorded.is_empty() {
            "0".into()
        } else {
            format!("{}: {}", self.recorded.len(), join_versions(&self.recorded))
        }]
    }
}

pub async fn run(args: BaselineArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    ctx.sqlx_only(
        "tenant baseline",
        "baseline with the application's own tool (for Prisma: tenantctl tenant exec <tenant> -- npx prisma migrate resolve --applied <migration>)",
    )?;
    let migrations = ctx.tenant_migrations().await?;
    if !migrations.iter().any(|m| m.version == args.to) {
        return Err(UsageError(format!(
            "--to {}: no such migration in {}; `tenantctl tenant status` shows the versions",
            args.to,
            migrations.origin()
        ))
        .into());
    }
    let tenants = ctx.select(&args.selection).await?;
    let to = args.to;
    let run = ctx
        .on_each_tenant(
            tenants,
            &args.fleet,
            SessionLimits::default(),
            move |tenant, conn, baselined: &mut Baselined| {
                let migrations = migrations.clone();
                Box::pin(async move {
                    let db = tenant.db_name()?;
                    migrations::baseline(conn, db, &migrations, to, &mut baselined.recorded).await
                })
            },
        )
        .await;
    Ok(ctx.finish(&run))
}
