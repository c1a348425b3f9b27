//! `tenantctl tenant baseline <selection> --to VERSION`: adopt databases
//! whose schema another tool created.

use clap::Args;
use serde::Serialize;
use sqlx::Connection as _;

use crate::cli::{FleetArgs, SelectionArgs};
use crate::commands::master::join;
use crate::context::Context;
use crate::db::SessionLimits;
use crate::error::{Outcome, UsageError};
use crate::migrations;
use crate::report::TenantValue;

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
            format!("{}: {}", self.recorded.len(), join(&self.recorded))
        }]
    }
}

pub async fn run(args: BaselineArgs, ctx: &Context) -> anyhow::Result<Outcome> {
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
    let connector = ctx.connector.clone();
    let to = args.to;
    let run = ctx
        .fleet(tenants, &args.fleet, move |tenant| {
            let (connector, migrations) = (connector.clone(), migrations.clone());
            async move {
                let mut baselined = Baselined::default();
                let result = async {
                    let db = tenant.db_name()?;
                    let mut conn = connector
                        .connect_tenant(db, &SessionLimits::default())
                        .await?;
                    let result = migrations::baseline(
                        &mut conn,
                        db,
                        &migrations,
                        to,
                        &mut baselined.recorded,
                    )
                    .await;
                    let _ = conn.close().await;
                    result
                }
                .await;
                (baselined, result)
            }
        })
        .await;
    Ok(ctx.finish(&run))
}
