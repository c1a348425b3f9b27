//! `tenantctl tenant status`: each tenant's migration state and problems,
//! read-only, on the same fleet machinery as `migrate`.

use crate::commands::args::{FleetArgs, SelectionArgs};
use crate::commands::context::Context;
use crate::connect::{SessionLimits, is_missing_database};
use crate::error::Outcome;
use crate::migrations::{self, Problem};
use crate::output::report::TenantValue;
use clap::Args;
use serde::Serialize;

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

    fn connect_failed(&mut self, err: &anyhow::Error) {
        if is_missing_database(err) {
            self.problems.push(StatusProblem::DatabaseMissing);
        }
    }
}

pub async fn run(args: StatusArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let migrations = ctx.tenant_migrations().await?;
    let tenants = ctx.select(&args.selection).await?;
    let run = ctx
        .on_each_tenant(
            tenants,
            &args.fleet,
            SessionLimits::default(),
            move |_, conn, state: &mut TenantState| {
                let migrations = migrations.clone();
                Box::pin(async move {
                    let plan = migrations::plan(conn, &migrations).await?;
                    state.latest = plan.applied.iter().copied().max();
                    state.pending = plan.pending.len();
                    state.problems = plan
                        .problems
                        .iter()
                        .cloned()
                        .map(StatusProblem::Migration)
                        .collect();
                    plan.check()
                })
            },
        )
        .await;
    Ok(ctx.finish(&run))
}
