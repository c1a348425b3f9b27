//! `tenantctl tenant status`: each tenant's migration state and problems,
//! read-only, on the same fleet machinery as `migrate`.

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::connect::is_missing_database;
use crate::error::Outcome;
use crate::migrations::{self, Problem};
use crate::output::report::TenantValue;
use clap::Args;
use std::path::Path;
use std::sync::Arc;

use crate::config::Migrator;
use crate::error::UsageError;
use crate::prisma;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Exit 1 unless every selected tenant is up to date: none has a
    /// pending, failed or dirty migration, and each database is there and
    /// reachable (a gate after a deploy); the report prints as usual
    #[arg(long)]
    pub check: bool,
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

/// A tenant's Prisma migrations as `prisma migrate status` sees them.
#[derive(Debug, Default, Serialize)]
pub struct PrismaTenantState {
    #[serde(flatten)]
    pub state: prisma::State,
    pub problems: Vec<StatusProblem>,
}

impl TenantValue for PrismaTenantState {
    fn headers() -> Vec<&'static str> {
        vec!["applied", "pending", "notes"]
    }

    fn cells(&self) -> Vec<String> {
        let s = &self.state;
        let mut notes = Vec::new();
        let mut note = |label: &str, names: &[String]| {
            if !names.is_empty() {
                notes.push(format!("{label}: {}", names.join(", ")));
            }
        };
        note("failed", &s.failed);
        note("in progress", &s.in_progress);
        note("rolled back", &s.rolled_back);
        note("checksum changed", &s.checksum_changed);
        note("missing from folder", &s.missing_from_folder);
        if s.not_empty {
            notes.push("not empty, no _prisma_migrations (P3005)".into());
        }
        vec![
            s.applied.len().to_string(),
            s.pending.len().to_string(),
            notes.join("; "),
        ]
    }

    fn connect_failed(&mut self, err: &anyhow::Error) {
        if is_missing_database(err) {
            self.problems.push(StatusProblem::DatabaseMissing);
        }
    }
}

pub async fn run(args: StatusArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    match &ctx.migrator {
        Migrator::Sqlx { .. } => {}
        Migrator::Prisma {
            migrations, schema, ..
        } => return run_prisma(args, ctx, migrations, schema).await,
        Migrator::Command(_) => {
            return Err(UsageError(
                "tenant status cannot know what is pending: [tenants.migrator] kind = \"command\" runs an application command whose state tenantctl cannot read (exit 2); `tenantctl tenant migrate --all` runs it on every tenant".into(),
            )
            .into());
        }
    }
    let migrations = ctx.tenant_migrations().await?;
    let tenants = ctx.select(&args.selection).await?;
    let check = args.check;
    let run = ctx
        .fleet_runner(&args.fleet, (&args.session).into())
        .on_each_tenant_limited(
            tenants,
            &ctx.progress(),
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
                    plan.check()?;
                    behind_the_gate(check, state.pending)
                })
            },
        )
        .await;
    let outcome = ctx.finish(&run);
    Ok(if args.check {
        gate(&run, outcome, |s| s.pending + s.problems.len())
    } else {
        outcome
    })
}

/// Under `--check`, a tenant with pending migrations fails its own line of
/// the report, so the `JUnit` file, the summary and the annotations say what the
/// exit status says; without it, pending is only reported.
fn behind_the_gate(check: bool, pending: usize) -> anyhow::Result<()> {
    if check && pending > 0 {
        anyhow::bail!(
            "not up to date: {pending} pending migration(s) (--check); `tenantctl tenant migrate` applies them"
        );
    }
    Ok(())
}

/// `--check`: the outcome when every tenant is up to date, else failed
/// (exit 1) with one line saying how many are not.
fn gate<T: TenantValue>(
    run: &crate::fleet::FleetRun<T>,
    outcome: Outcome,
    behind: impl Fn(&T) -> usize,
) -> Outcome {
    if outcome == Outcome::Interrupted {
        return outcome;
    }
    // Each tenant behind failed its own line (see `behind_the_gate`), as
    // a dirty migration or a missing database does.
    let not_current = run
        .reports
        .iter()
        .filter(|r| r.verdict != crate::fleet::Verdict::Ok || behind(&r.value) > 0)
        .count();
    if not_current == 0 && outcome == Outcome::Success {
        return outcome;
    }
    crate::output::warn(format_args!(
        "check failed: {not_current} of {} tenant(s) not up to date (pending, failed or dirty migrations, or a database missing or out of reach)",
        run.reports.len()
    ));
    Outcome::Failed
}

/// `tenant status` against `_prisma_migrations`: applied, pending, failed,
/// rolled back and changed migrations per tenant, classified as Prisma
/// does. A failed migration (or a non-empty schema Prisma would refuse)
/// fails the tenant, as a dirty sqlx migration does; pending ones do not.
async fn run_prisma(
    args: StatusArgs,
    ctx: &Context,
    dir: &Path,
    schema: &str,
) -> anyhow::Result<Outcome> {
    let folder = Arc::new(prisma::Folder::read(dir).map_err(crate::error::Usage)?);
    let schema: Arc<str> = schema.into();
    let tenants = ctx.select(&args.selection).await?;
    let check = args.check;
    let run = ctx
        .fleet_runner(&args.fleet, (&args.session).into())
        .on_each_tenant_limited(
            tenants,
            &ctx.progress(),
            move |_, conn, value: &mut PrismaTenantState| {
                let (folder, schema) = (folder.clone(), schema.clone());
                Box::pin(async move {
                    value.state = prisma::state(conn, &folder, &schema).await?;
                    value.state.check()?;
                    behind_the_gate(check, value.state.pending.len())
                })
            },
        )
        .await;
    let outcome = ctx.finish(&run);
    Ok(if args.check {
        gate(&run, outcome, |s| {
            let state = &s.state;
            state.pending.len()
                + state.failed.len()
                + state.in_progress.len()
                + state.checksum_changed.len()
                + usize::from(state.not_empty)
        })
    } else {
        outcome
    })
}
