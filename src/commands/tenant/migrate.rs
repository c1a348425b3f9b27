//! `tenantctl tenant migrate <slug|id>... | --all [--to VERSION]`: apply
//! pending tenant migrations across the selected tenants, recording the run
//! in the master so `tenant revert --run` can take it back.

use clap::Args;
use serde::Serialize;

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::connect::SessionLimits;
use crate::error::Outcome;
use crate::migrations::{self, Done};
use crate::output::join_versions;
use crate::output::report::TenantValue;
use crate::runs::{RunKind, RunRequest};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Apply pending migrations up to and including this version, none
    /// newer (it must be one of the migrations in use)
    #[arg(long, value_name = "VERSION")]
    pub to: Option<i64>,

    /// Read each tenant's applied migrations and show what would be applied,
    /// applying nothing (and recording no run)
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
    let to = args.to;
    if let Some(to) = to {
        migrations.check_target(to)?;
    }
    let dry_run = args.dry_run;
    let (tenants, log) = if dry_run {
        (ctx.select(&args.selection).await?, None)
    } else {
        let (tenants, log) = ctx
            .select_for_run(&args.selection, |tenants| RunRequest {
                kind: RunKind::Migrate,
                target: to,
                undoes: None,
                tenants,
            })
            .await?;
        (tenants, Some(log))
    };
    let op_log = log.clone();
    let limits = SessionLimits::from(&args.session);
    let run = ctx
        .on_each_tenant(
            tenants,
            &args.fleet,
            limits.clone(),
            move |tenant, conn, migrated: &mut Migrated| {
                let (migrations, log, limits) =
                    (migrations.clone(), op_log.clone(), limits.clone());
                Box::pin(async move {
                    let db = tenant.db_name()?;
                    if dry_run {
                        let plan = migrations::plan(conn, &migrations).await?.up_to(to);
                        migrated.pending = Some(plan.pending.clone());
                        return plan.check();
                    }
                    let mut done = Done::default();
                    let mut result =
                        migrations::apply_with(conn, db, &migrations, to, &limits, &mut done).await;
                    if let Some(log) = &log {
                        result = log.commit_and_record(conn, tenant, &done, result).await;
                    }
                    migrated.applied.clone_from(&done.versions);
                    result
                })
            },
        )
        .await;
    let outcome = ctx.finish_run(&run, log.as_deref()).await;
    let changed = run
        .reports
        .iter()
        .filter(|r| !r.value.applied.is_empty())
        .count();
    if let Some(log) = &log
        && outcome != Outcome::Success
        && changed > 0
    {
        crate::output::warn(format_args!(
            "run {id} {} and changed {changed} tenant(s); to take exactly those back to where they were: tenantctl tenant revert --run {id}",
            if outcome == Outcome::Interrupted {
                "was interrupted"
            } else {
                "did not succeed everywhere"
            },
            id = log.id
        ));
    }
    Ok(outcome)
}
