//! `tenantctl tenant status`: each tenant's migration state and problems,
//! read-only, on the same fleet machinery as `migrate`.

use clap::Args;
use serde::Serialize;
use sqlx::Connection as _;

use crate::cli::{FleetArgs, SelectionArgs};
use crate::context::Context;
use crate::db::{SessionLimits, is_missing_database};
use crate::error::Outcome;
use crate::migrations::{self, Problem};
use crate::report::TenantValue;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// A problem `status` reports, by kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusProblem {
    DatabaseMissing,
    #[serde(untagged)]
    Migration(Problem),
}

#[derive(Debug, Default, Serialize)]
pub struct TenantState {
    /// Highest version applied.
    pub latest: Option<i64>,
    /// How many migrations `migrate` would apply.
    pub pending: usize,
    pub problems: Vec<StatusProblem>,
}

impl TenantValue for TenantState {
    fn headers() -> Vec<&'static str> {
        vec!["latest", "pending"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.latest.map_or_else(|| "-".into(), |v| v.to_string()),
            self.pending.to_string(),
        ]
    }
}

pub async fn run(args: StatusArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let migrations = ctx.tenant_migrations().await?;
    let tenants = ctx.select(&args.selection).await?;
    let connector = ctx.connector.clone();
    let run = ctx
        .fleet(tenants, &args.fleet, move |tenant| {
            let (connector, migrations) = (connector.clone(), migrations.clone());
            async move {
                let mut state = TenantState::default();
                let result = async {
                    let db = tenant.db_name()?;
                    let mut conn = match connector
                        .connect_tenant(db, &SessionLimits::default())
                        .await
                    {
                        Ok(conn) => conn,
                        Err(err) if is_missing_database(&err) => {
                            state.problems.push(StatusProblem::DatabaseMissing);
                            anyhow::bail!("database {db} is missing");
                        }
                        Err(err) => return Err(err),
                    };
                    let plan = migrations::plan(&mut conn, &migrations).await;
                    let _ = conn.close().await;
                    let plan = plan?;
                    state.latest = plan.applied.iter().copied().max();
                    state.pending = plan.pending.len();
                    state.problems = plan
                        .problems
                        .iter()
                        .cloned()
                        .map(StatusProblem::Migration)
                        .collect();
                    plan.check()
                }
                .await;
                (state, result)
            }
        })
        .await;
    Ok(ctx.finish(&run))
}
