//! `tenantctl tenant migrate <slug|id>... | --all [--to VERSION]`: apply
//! pending tenant migrations across the selected tenants, recording the run
//! in the master so `tenant revert --run` can take it back.

use clap::Args;
use serde::Serialize;

use crate::commands::args::{FleetArgs, LabelArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::config::{AppCommand, Migrator};
use crate::connect::SessionLimits;
use crate::error::{Outcome, UsageError};
use crate::migrations::{self, Done};
use crate::output::join_versions;
use crate::output::report::TenantValue;
use crate::prisma;
use crate::runs::{RunKind, RunRequest};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    #[command(flatten)]
    pub label: LabelArgs,

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

/// What the application's migrator did on one tenant.
#[derive(Debug, Default, Serialize)]
pub struct AppMigrated {
    /// Prisma migrations applied by this run (natively).
    pub applied: Vec<String>,
    /// With `--dry-run` (prisma): the migrations that would be applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<String>>,
    /// Whether the application's command ran for this tenant.
    pub ran_command: bool,
    /// The command's exit code, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl TenantValue for AppMigrated {
    fn headers() -> Vec<&'static str> {
        vec!["migrations"]
    }

    fn cells(&self) -> Vec<String> {
        vec![if let Some(pending) = &self.pending {
            if pending.is_empty() {
                "none pending".into()
            } else {
                format!("would apply {}: {}", pending.len(), pending.join(", "))
            }
        } else if self.ran_command {
            format!(
                "ran the command{}",
                self.exit_code
                    .map_or_else(String::new, |c| format!(" (exit {c})"))
            )
        } else if self.applied.is_empty() {
            "0".into()
        } else {
            format!(
                "applied {}: {}",
                self.applied.len(),
                self.applied.join(", ")
            )
        }]
    }
}

pub async fn run(args: MigrateArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    match &ctx.migrator {
        Migrator::Sqlx { .. } => {}
        Migrator::Prisma {
            migrations,
            schema,
            search_path,
            command,
        } => {
            return run_prisma(
                args,
                ctx,
                migrations,
                schema,
                *search_path,
                command.as_ref(),
            )
            .await;
        }
        Migrator::Command(command) => return run_command(args, ctx, command).await,
    }
    let migrations = ctx.tenant_migrations_to_apply().await?;
    let to = args.to;
    if let Some(to) = to {
        migrations.check_target(to)?;
    }
    let dry_run = args.dry_run;
    let (tenants, log) = select(ctx, &args, to).await?;
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
        hint_revert(log, outcome, changed);
    }
    Ok(outcome)
}

/// After a run that did not succeed everywhere but changed tenants: how
/// to take exactly those back (and, for a labelled run, the whole deploy,
/// or rerun what is left).
fn hint_revert(log: &crate::runs::RunLog, outcome: Outcome, changed: usize) {
    crate::output::warn(format_args!(
        "run {id} {} and changed {changed} tenant(s); to take exactly those back to where they were: tenantctl tenant revert --run {id}{}",
        if outcome == Outcome::Interrupted {
            "was interrupted"
        } else {
            "did not succeed everywhere"
        },
        log.label.as_ref().map_or_else(String::new, |label| format!(
            " (every run of the deploy: tenantctl tenant revert --label {}; the tenants to rerun: --failed-in {})",
            shell_word(label.as_str()),
            shell_word(label.as_str())
        )),
        id = log.id
    ));
}

/// A label as a shell word to paste: as it is when plain, else in single
/// quotes.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._:/=+-@,".contains(c);
    if text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The selected tenants, and for a run that changes anything (not a dry
/// run) its record, opened in the master before any tenant is touched.
async fn select(
    ctx: &Context,
    args: &MigrateArgs,
    target: Option<i64>,
) -> anyhow::Result<(Vec<crate::tenant::Tenant>, Option<Arc<crate::runs::RunLog>>)> {
    if args.dry_run {
        return Ok((ctx.select(&args.selection).await?, None));
    }
    let (tenants, log) = ctx
        .select_for_run(&args.selection, |tenants| RunRequest {
            kind: RunKind::Migrate,
            target,
            undoes: None,
            tenants,
            label: args.label.label.clone(),
        })
        .await?;
    Ok((tenants, Some(log)))
}

/// `--to` names a sqlx version; the application's migrators have none.
fn refuse_to(args: &MigrateArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.to.is_some() {
        ctx.sqlx_only(
            "--to",
            "run the application's own tool for a partial deploy (tenantctl tenant exec <tenant> -- ...)",
        )?;
    }
    Ok(())
}

/// `tenant migrate` with Prisma's migrations: one query per up-to-date
/// tenant; pending migrations applied natively (or by the application's
/// command with `apply = "command"`), through the same fleet runner, run
/// record and report as tenantctl's own migrations.
async fn run_prisma(
    args: MigrateArgs,
    ctx: &Context,
    dir: &Path,
    schema: &str,
    search_path: bool,
    command: Option<&AppCommand>,
) -> anyhow::Result<Outcome> {
    refuse_to(&args, ctx)?;
    let folder = prisma::Folder::read(dir).map_err(crate::error::Usage)?;
    let (tenants, log) = select(ctx, &args, None).await?;
    let limits = SessionLimits::from(&args.session);
    let child_env = ctx.connector.child_env();
    let job = Arc::new(PrismaJob {
        folder,
        schema: schema.to_owned(),
        search_path,
        dry_run: args.dry_run,
        command: command.cloned(),
        limits: limits.clone(),
        connector: ctx.connector.clone(),
        redactor: child_env.redactor(&[]),
        child_env,
        tracker: ctx.interruptible().clone(),
        progress: Arc::new(ctx.progress()),
        log: log.clone(),
    });
    let run = ctx
        .on_each_tenant(
            tenants,
            &args.fleet,
            limits,
            move |tenant, conn, migrated: &mut AppMigrated| {
                let job = job.clone();
                Box::pin(async move { job.migrate(tenant, conn, migrated).await })
            },
        )
        .await;
    Ok(ctx.finish_run(&run, log.as_deref()).await)
}

/// What each tenant of a Prisma run needs.
struct PrismaJob {
    folder: prisma::Folder,
    schema: String,
    search_path: bool,
    dry_run: bool,
    /// The application's command, when it applies the migrations.
    command: Option<AppCommand>,
    limits: SessionLimits,
    connector: Arc<crate::connect::Connector>,
    child_env: crate::child_env::ChildEnv,
    redactor: crate::redact::Redactor,
    tracker: crate::fleet::Stop,
    progress: Arc<crate::output::progress::Progress>,
    log: Option<Arc<crate::runs::RunLog>>,
}

impl PrismaJob {
    /// One tenant: its pending migrations applied (natively, or by the
    /// application's command), or with `--dry-run` only listed.
    async fn migrate(
        &self,
        tenant: &crate::tenant::Tenant,
        conn: &mut sqlx::postgres::PgConnection,
        migrated: &mut AppMigrated,
    ) -> anyhow::Result<()> {
        let (folder, schema) = (&self.folder, self.schema.as_str());
        if self.dry_run {
            let state = prisma::state(conn, folder, schema).await?;
            migrated.pending = Some(state.pending.clone());
            return state.check();
        }
        let mut result = if let Some(command) = &self.command {
            // The command only where something is pending: an up-to-date
            // tenant costs one query, no process.
            let state = prisma::state(conn, folder, schema).await?;
            if state.pending.is_empty() && state.failed.is_empty() && !state.not_empty {
                Ok(())
            } else {
                migrated.ran_command = true;
                let mut executed = super::exec::Executed::default();
                let ran = super::exec::run_app_command(
                    &self.connector,
                    &self.child_env,
                    command,
                    prisma::url_schema(schema),
                    tenant,
                    &self.tracker,
                    self.progress.clone(),
                    &mut executed,
                )
                .await;
                migrated.exit_code = executed.exit_code;
                prisma::check_after_command(conn, folder, schema, ran).await
            }
        } else {
            let redact = |text: &str| self.redactor.redact(text).into_owned();
            let mut applied = prisma::Applied::default();
            let target = prisma::Target {
                schema,
                search_path: self.search_path,
            };
            let result =
                prisma::apply(conn, folder, target, &self.limits, &redact, &mut applied).await;
            migrated.applied = applied.names;
            result
        };
        if let Some(log) = &self.log {
            result = log
                .commit_and_record(conn, tenant, &migrations::Done::default(), result)
                .await;
        }
        result
    }
}

/// `tenant migrate` with an application command: tenantctl cannot know
/// what is pending, so the command runs on every selected tenant, with the
/// fleet's machinery; a non-zero exit fails that tenant.
async fn run_command(
    args: MigrateArgs,
    ctx: &Context,
    command: &AppCommand,
) -> anyhow::Result<Outcome> {
    refuse_to(&args, ctx)?;
    if args.dry_run {
        return Err(UsageError(
            "--dry-run: [tenants.migrator] kind = \"command\" runs an application command whose effect tenantctl cannot know in advance".into(),
        )
        .into());
    }
    let (tenants, log) = select(ctx, &args, None).await?;
    let log = log.expect("not a dry run: the run is recorded");
    // Said even under --quiet: a run that cannot skip up-to-date tenants
    // is not progress but what the run is.
    crate::output::warn(format_args!(
        "[tenants.migrator] kind = \"command\": tenantctl cannot know what is pending, so {:?} runs on every selected tenant ({})",
        command.argv.join(" "),
        tenants.len()
    ));
    let op_log = log.clone();
    let connector = ctx.connector.clone();
    let child_env = Arc::new(connector.child_env());
    let tracker = ctx.interruptible().clone();
    let progress = Arc::new(ctx.progress());
    let command = Arc::new(command.clone());
    let run = ctx
        .fleet(tenants, &args.fleet, move |tenant| {
            let (connector, child_env, tracker, progress, command, log) = (
                connector.clone(),
                child_env.clone(),
                tracker.clone(),
                progress.clone(),
                command.clone(),
                op_log.clone(),
            );
            async move {
                let mut migrated = AppMigrated {
                    ran_command: true,
                    ..AppMigrated::default()
                };
                let mut executed = super::exec::Executed::default();
                let result = super::exec::run_app_command(
                    &connector,
                    &child_env,
                    &command,
                    None,
                    &tenant,
                    &tracker,
                    progress,
                    &mut executed,
                )
                .await;
                migrated.exit_code = executed.exit_code;
                log.tenant(&tenant, &migrations::Done::default(), result.as_ref().err())
                    .await;
                (migrated, result)
            }
        })
        .await;
    Ok(ctx.finish_run(&run, Some(&log)).await)
}
