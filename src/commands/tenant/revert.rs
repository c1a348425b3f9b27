//! `tenantctl tenant revert <slug|id>... | --all --to VERSION` and
//! `tenantctl tenant revert --run RUN_ID`: take tenants back to an earlier
//! migration version with the migrations' down scripts.
//!
//! Two passes. The first plans every selected tenant from its own
//! `_sqlx_migrations`, changing nothing; if any tenant cannot be reverted as
//! asked, or could not be read, the whole revert is refused with that list
//! before a single down script runs. The second runs the plan on the
//! tenants that have something to revert, after one confirmation. With
//! `--yes` the second pass works on the connections the first kept open,
//! as far as the servers have room for them (`connect::kept`), and plans
//! each tenant again under its lock all the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Args;
use serde::Serialize;

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs, parse_label};
use crate::commands::context::Context;
use crate::commands::tenant::unfinished::{self, Killed, Taking};
use crate::connect::Connector;
use crate::connect::SessionLimits;
use crate::error::{Outcome, Unused, UsageError};
use crate::fleet::{FleetRun, Report, Verdict};
use crate::migrations::{Done, MigrationSet};
use crate::output::confirm::confirm;
use crate::output::join_versions;
use crate::output::report::{Extra, TenantValue, print_fleet_with, tenant_json};
use crate::output::{OutputMode, print_json};
use crate::revert::{self, Refusal, Target};
use crate::runner::Kept;
use crate::runs::{self, Label, RunKind, RunLog, RunRequest};
use crate::selection::Source;
use crate::tenant::Tenant;
use sqlx::postgres::PgConnection;

#[derive(Debug, Args)]
pub struct RevertArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Revert the migrations applied after VERSION, newest first; VERSION
    /// stays applied. `--to 0` reverts every reversible migration, back to
    /// the newest plain one (which has no down script)
    #[arg(
        long,
        value_name = "VERSION",
        required_unless_present_any = ["run", "label"],
        conflicts_with = "run"
    )]
    pub to: Option<i64>,

    /// Take back exactly what one `tenant migrate` run did: each tenant it
    /// changed returns to the version it had before; tenants it did not
    /// change are left alone (see `tenantctl tenant runs`)
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<i64>,

    /// Take back every `tenant migrate` run recorded under this label
    /// (each tenant to where it was before the label's first run changed
    /// it, newest migration first, with --run's refusals), recording this
    /// revert under it. From `TENANTCTL_LABEL` with --run or --to, it only
    /// labels this revert's record
    #[arg(long, env = "TENANTCTL_LABEL", value_name = "TEXT", value_parser = clap::builder::ValueParser::new(parse_label))]
    pub label: Option<Label>,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Plan every tenant and print what would be reverted, changing nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// What reverting one tenant did, would do, or why it cannot.
#[derive(Debug, Default, Serialize)]
pub struct Reverted {
    /// Versions whose down scripts ran, newest first.
    pub reverted: Vec<i64>,
    /// The plan, when the report is one (`--dry-run`, or a refusal):
    /// versions whose down scripts would run, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_revert: Option<Vec<i64>>,
    /// Why this tenant cannot be reverted as asked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Refusal>,
    /// Its plan could not be made (the report's error says why).
    #[serde(skip)]
    not_planned: bool,
}

impl TenantValue for Reverted {
    fn headers() -> Vec<&'static str> {
        vec!["migrations"]
    }

    fn cells(&self) -> Vec<String> {
        let (label, versions) = match &self.to_revert {
            Some(plan) => ("would revert", plan),
            None => ("reverted", &self.reverted),
        };
        vec![if !self.refusals.is_empty() {
            "refused".into()
        } else if self.not_planned {
            "not planned".into()
        } else if versions.is_empty() {
            "nothing to revert".into()
        } else {
            format!("{label} {}: {}", versions.len(), join_versions(versions))
        }]
    }
}

/// Where each tenant goes: one target for `--to`, or, for `--run`, the
/// versions that run applied on each tenant.
#[derive(Debug, Clone)]
enum Goals {
    To(Target),
    Run(Arc<HashMap<String, Target>>),
}

impl Goals {
    fn target(&self, tenant: &Tenant) -> Target {
        match self {
            Self::To(target) => target.clone(),
            // Every tenant planned for a run has its entry; a tenant
            // without one has nothing the run applied.
            Self::Run(tenants) => tenants.get(&tenant.id).cloned().unwrap_or(Target::Run {
                id: 0,
                versions: Vec::new(),
                before: None,
                installed_until: None,
            }),
        }
    }
}

pub async fn run(args: RevertArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    ctx.sqlx_only(
        "tenant revert",
        "take a change back with the application's own tool (for Prisma: a new migration, then `tenantctl tenant migrate --all`)",
    )?;
    let set = ctx.tenant_migrations_to_apply().await?;
    let (tenants, goals, missing, killed) = selected(ctx, &args, &set).await?;
    let limits = SessionLimits::from(&args.session);
    // With --yes the revert follows the plan at once: each tenant with
    // something to revert keeps its planning connection for it, within
    // the bound (see `Kept`). Never across a prompt: its wait is a
    // person's, and the connections would hold the server's slots.
    let kept = Arc::new(Kept::new(usize::from(args.fleet.concurrency)));
    let keeping = (args.yes && !args.dry_run).then(|| kept.clone());
    let planned = plan_all(ctx, tenants, &args, &limits, &set, &goals, keeping).await;
    let work = Work {
        set,
        goals,
        limits,
        kept: kept.clone(),
        killed,
    };
    let result = decide(ctx, &args, planned, missing, work).await;
    // Whatever the revert did not reach (refused, interrupted, nothing to
    // do, a row changed since), ended by the one rule.
    kept.release_all(ctx.runner.connector()).await;
    result
}

/// What the revert pass works with.
struct Work {
    set: Arc<MigrationSet>,
    goals: Goals,
    limits: SessionLimits,
    kept: Arc<Kept>,
    /// Runs taken for killed: their records are ended only if the revert
    /// goes ahead.
    killed: Killed,
}

/// After the plan: refuses, reports the dry run or that nothing needs
/// doing, or asks and reverts.
async fn decide(
    ctx: &Context,
    args: &RevertArgs,
    mut planned: FleetRun<Reverted>,
    missing: Vec<Report<Reverted>>,
    work: Work,
) -> anyhow::Result<Outcome> {
    // Tenants dropped since the run are reported, and block nothing.
    let blocked = planned
        .reports
        .iter()
        .filter(|r| r.verdict != Verdict::Ok)
        .count();
    planned.reports.extend(missing);
    if planned.interrupted {
        stream(ctx, &planned.reports);
        return Ok(ctx.finish(&planned));
    }
    if blocked > 0 {
        for report in &mut planned.reports {
            report.value.not_planned =
                report.value.to_revert.is_none() && report.verdict == Verdict::Failed;
        }
        return Ok(refuse(ctx, &planned, blocked));
    }
    if args.dry_run {
        stream(ctx, &planned.reports);
        return Ok(ctx.finish(&planned));
    }

    let plans: HashMap<String, Vec<i64>> = planned
        .reports
        .iter()
        .filter_map(|r| {
            let plan = r.value.to_revert.as_ref()?;
            (!plan.is_empty()).then(|| (r.tenant.id.clone(), plan.clone()))
        })
        .collect();
    let planned = nothing_to_do(planned);
    if plans.is_empty() {
        work.killed.end(ctx).await?;
        stream(ctx, &planned.reports);
        return Ok(ctx.finish(&planned));
    }
    ask(&plans, args.yes)?;
    if ctx.stop.is_set() {
        crate::output::warn("interrupted at the confirmation; nothing was reverted");
        return Ok(Outcome::Interrupted);
    }

    take_back(ctx, args, planned, plans, work).await
}

/// Records the run, then takes back each tenant's planned versions (the
/// others are reported as planned), on the connection its plan was read
/// on where one was kept.
async fn take_back(
    ctx: &Context,
    args: &RevertArgs,
    planned: FleetRun<Reverted>,
    plans: HashMap<String, Vec<i64>>,
    work: Work,
) -> anyhow::Result<Outcome> {
    work.killed.end(ctx).await?;
    let everyone: Vec<Tenant> = planned.reports.iter().map(|r| r.tenant.clone()).collect();
    let log = ctx
        .start_run(
            RunRequest {
                kind: RunKind::Revert,
                target: args.to,
                undoes: args.run,
                tenants: planned.reports.len(),
                label: args.label.clone(),
            },
            &everyone,
        )
        .await?;
    let tenants: Vec<Tenant> = planned
        .reports
        .iter()
        .filter(|r| plans.contains_key(&r.tenant.id))
        .map(|r| r.tenant.clone())
        .collect();
    stream(
        ctx,
        planned
            .reports
            .iter()
            .filter(|r| !plans.contains_key(&r.tenant.id)),
    );
    // The tenants whose first try is on a kept connection: found gone
    // there, they are tried again on a fresh one, and only that try is
    // recorded.
    let first_on_kept = Mutex::new(work.kept.keys());
    let Work {
        set,
        goals,
        limits,
        kept,
        ..
    } = work;
    let shared = Arc::new((set, goals, plans, limits.clone(), first_on_kept));
    let records = Records::new(log.clone(), ctx.runner.connector().clone());
    let op_records = records.clone();
    let done = ctx
        .fleet_runner(&args.fleet, limits)
        .on_each_tenant_reusing(
            tenants,
            &ctx.progress(),
            kept,
            move |tenant, conn, value: &mut Reverted| {
                let (shared, records) = (shared.clone(), op_records.clone());
                Box::pin(async move {
                    let (set, goals, plans, limits, first_on_kept) = &*shared;
                    let (db, target) = (tenant.db_name()?, goals.target(tenant));
                    let expected = plans.get(&tenant.id).map_or(&[][..], Vec::as_slice);
                    let mut done = Done::default();
                    let result =
                        revert::revert(conn, db, set, &target, expected, limits, &mut done).await;
                    let on_kept = first_on_kept
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&tenant.id);
                    if on_kept && result.as_ref().is_err_and(anyhow::Error::is::<Unused>) {
                        return result;
                    }
                    value.reverted.clone_from(&done.versions);
                    records.commit_and_record(conn, tenant, done, result).await
                })
            },
        )
        .await;
    records.written().await;
    let merged = merge(planned, done);
    Ok(ctx.finish_run(&merged, Some(&log)).await)
}

/// Each tenant's row in the run record, written off its turn: the master's
/// `INSERT` and its commit wait on the master's disk, one tenant after
/// another, and the tenant's place in the fleet (its connection, its
/// `--concurrency` slot) need not wait with them. Written in the order the
/// tenants finish, as soon as the one before is; [`Records::written`]
/// waits for them all before the run records its end.
#[derive(Clone)]
struct Records {
    log: Arc<RunLog>,
    connector: Arc<Connector>,
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Records {
    fn new(log: Arc<RunLog>, connector: Arc<Connector>) -> Self {
        Self {
            log,
            connector,
            pending: Arc::default(),
        }
    }

    /// What [`RunLog::commit_and_record`] does, the record written off the
    /// tenant's turn: its work is committed (a pinned connection's too)
    /// before the row that says so is queued.
    async fn commit_and_record(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        done: Done,
        result: anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let result = result.and(self.connector.checkpoint(conn).await);
        let error = result
            .as_ref()
            .err()
            .map(|err| anyhow::anyhow!("{}", crate::error::render(err)));
        let (log, tenant) = (self.log.clone(), tenant.clone());
        let task = tokio::spawn(async move { log.tenant(&tenant, &done, error.as_ref()).await });
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task);
        result
    }

    /// Waits until every queued row is written (or reported unwritten).
    async fn written(&self) {
        let tasks: Vec<_> = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Asks once, saying how many tenants and which versions.
fn ask(plans: &HashMap<String, Vec<i64>>, yes: bool) -> anyhow::Result<()> {
    let mut versions: Vec<i64> = plans.values().flatten().copied().collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.dedup();
    confirm(
        &format!(
            "revert {} tenant(s), running the down scripts of {} (newest first)",
            plans.len(),
            join_versions(&versions)
        ),
        "revert",
        yes,
    )?;
    Ok(())
}

/// The tenants to plan, where each goes, reports for the tenants a run
/// recorded that are gone from the master, and the runs taken for killed
/// whose records the revert ends if it goes ahead.
type Selected = (Vec<Tenant>, Goals, Vec<Report<Reverted>>, Killed);

/// The tenants to plan and where each goes, plus, for `--run`, reports
/// for the tenants it recorded that are gone from the master.
async fn selected(
    ctx: &Context,
    args: &RevertArgs,
    set: &MigrationSet,
) -> anyhow::Result<Selected> {
    let label = args.label.as_ref();
    let label_typed = !matches!(
        ctx.origins.label,
        None | Some(Source::Environment { .. } | Source::EnvFile { .. })
    );
    if label_typed && (args.run.is_some() || args.to.is_some()) {
        return Err(UsageError(format!(
            "--label {} takes back every migrate run recorded under it; it cannot be combined with {} (to record a revert under a label, set TENANTCTL_LABEL)",
            label.map(ToString::to_string).unwrap_or_default(),
            if args.run.is_some() { "--run" } else { "--to" }
        ))
        .into());
    }
    match (args.run, args.to) {
        (Some(id), _) => {
            if !args.selection.tenants.is_empty() || selects(&args.selection) {
                return Err(UsageError(format!(
                    "--run {id} takes back every tenant that run changed; it takes no tenant names or selection flags"
                ))
                .into());
            }
            run_goals(ctx, id, args.dry_run).await
        }
        (None, Some(to)) => {
            if to != 0 {
                set.check_target(to)?;
            }
            let tenants = ctx.select(&args.selection).await?;
            Ok((
                tenants,
                Goals::To(Target::from_flag(to)),
                Vec::new(),
                Killed::default(),
            ))
        }
        (None, None) => {
            let Some(label) = label else {
                unreachable!("clap requires --to, --run or --label")
            };
            if !args.selection.tenants.is_empty() || selects(&args.selection) {
                return Err(UsageError(format!(
                    "--label {label} takes back every tenant that label's migrate runs changed; it takes no tenant names or selection flags"
                ))
                .into());
            }
            label_goals(ctx, label, args.dry_run).await
        }
    }
}

/// Prints the plan of a revert that cannot go ahead and says why.
fn refuse(ctx: &Context, planned: &FleetRun<Reverted>, blocked: usize) -> Outcome {
    let refused = planned.reports.iter().any(|r| !r.value.refusals.is_empty());
    stream(ctx, &planned.reports);
    print_fleet_with(
        planned,
        ctx.output,
        &Extra {
            run_id: None,
            refused: true,
            selection: ctx.selection(),
            ..Extra::default()
        },
    );
    crate::output::warn(format_args!(
        "refusing to revert: {blocked} tenant(s) {} (listed above); nothing was reverted on any tenant",
        if refused {
            "cannot be reverted as asked"
        } else {
            "could not be planned: fix them or leave them out of the selection"
        }
    ));
    if refused {
        Outcome::Refused
    } else {
        Outcome::Failed
    }
}

/// Whether any selection flag is given (for `--run`, which takes none).
fn selects(selection: &SelectionArgs) -> bool {
    let filter = &selection.filter;
    filter.all
        || !filter.status.is_empty()
        || filter.shard.is_some()
        || !filter.servers.is_empty()
        || filter.failed_in.is_some()
}

/// Plans every tenant, changing nothing; with `keeping`, each tenant with
/// something to revert keeps its connection there for the revert, within
/// the bound.
async fn plan_all(
    ctx: &Context,
    tenants: Vec<Tenant>,
    args: &RevertArgs,
    limits: &SessionLimits,
    set: &Arc<MigrationSet>,
    goals: &Goals,
    keeping: Option<Arc<Kept>>,
) -> FleetRun<Reverted> {
    let (set, goals) = (set.clone(), goals.clone());
    // Every tenant is planned, so a refusal lists them all.
    let fleet = FleetArgs {
        fail_fast: false,
        ..args.fleet.clone()
    };
    // In jsonl mode the plan is printed only if it is the report (dry run,
    // refusal); otherwise each tenant's line is its revert's.
    ctx.set_streaming(false);
    let planned = ctx
        .fleet_runner(&fleet, limits.clone())
        .on_each_tenant_keeping(
            tenants,
            &ctx.progress(),
            keeping,
            has_work,
            move |tenant, conn, value: &mut Reverted| {
                let (set, goals) = (set.clone(), goals.clone());
                Box::pin(async move {
                    if let Some(sharing) = &tenant.sharing {
                        let refusal = Refusal::SharedDatabase {
                            with: sharing.others.clone(),
                        };
                        let why = anyhow::anyhow!("{refusal}");
                        value.refusals.push(refusal);
                        return Err(why);
                    }
                    let plan = revert::plan(conn, &set, &goals.target(tenant)).await?;
                    value.to_revert = Some(plan.to_revert.clone());
                    value.refusals.clone_from(&plan.refusals);
                    plan.check()
                })
            },
        )
        .await;
    ctx.set_streaming(true);
    planned
}

/// Whether a planned tenant has something to revert (its connection is
/// worth keeping).
fn has_work(value: &Reverted) -> bool {
    value
        .to_revert
        .as_ref()
        .is_some_and(|plan| !plan.is_empty())
}

/// In `jsonl` mode, prints these tenants' report lines (the ones no fleet
/// run streamed).
fn stream<'a>(ctx: &Context, reports: impl IntoIterator<Item = &'a Report<Reverted>>) {
    if ctx.output == OutputMode::Jsonl {
        for report in reports {
            print_json(OutputMode::Jsonl, &tenant_json(report));
        }
    }
}

/// The tenants a recorded run changed, each with the version to go back
/// to; tenants it recorded that are no longer in the master come back as
/// skipped reports.
async fn run_goals(ctx: &Context, id: i64, dry_run: bool) -> anyhow::Result<Selected> {
    let (mut layout, mut found, mut everyone) = read_runs(ctx, vec![id]).await?;
    let Some((summary, recorded)) = found.pop() else {
        return Err(UsageError(format!(
            "no run {id} is recorded in the master; `tenantctl tenant runs` lists the recorded runs"
        ))
        .into());
    };
    if summary.command != RunKind::Migrate.as_str() {
        return Err(UsageError(format!(
            "run {id} was a {}, not a migrate: only a migrate run can be taken back with --run; to apply migrations again use `tenantctl tenant migrate`",
            summary.command
        ))
        .into());
    }
    let (mut summary, mut recorded) = (summary, recorded);
    let mut killed = Killed::default();
    if summary.outcome == "running" {
        // Its record, read again once it is settled: what a killed run
        // recorded is final, a live run refuses.
        killed = unfinished::settle(ctx, Taking::Run, &[id], dry_run).await?;
        (layout, found, everyone) = read_runs(ctx, vec![id]).await?;
        (summary, recorded) = found
            .pop()
            .ok_or_else(|| anyhow::anyhow!("run {id} is no longer recorded in the master"))?;
    }
    warn_incomplete(&summary);
    let companies = everyone.len();
    let (tenants, goals, missing) = goals_in(ctx, &layout, id, recorded, everyone);
    ctx.set_selection(crate::selection::Selection::of_run(
        id,
        companies,
        tenants.len(),
    ));
    Ok((tenants, goals, missing, killed))
}

/// `--label L`: every migrate run recorded under L taken back as one: each
/// tenant goes back to where it was before the label's first run changed
/// it, its versions from all the label's runs reverted newest first, and
/// each run's refusals apply (a migration applied in between by anything
/// else refuses the tenant, as for `--run`).
async fn label_goals(ctx: &Context, label: &Label, dry_run: bool) -> anyhow::Result<Selected> {
    let mut ids = label_runs(ctx, label).await?;
    if ids.is_empty() {
        return Err(UsageError(format!(
            "no migrate run is recorded under label {label}; `tenantctl tenant runs` lists the recorded runs and their labels"
        ))
        .into());
    }
    let mut killed = Killed::default();
    let (layout, found, everyone) = loop {
        let (layout, found, everyone) = read_runs(ctx, ids.clone()).await?;
        let running: Vec<i64> = found
            .iter()
            .filter(|(summary, _)| summary.outcome == "running" && !killed.has(summary.id))
            .map(|(summary, _)| summary.id)
            .collect();
        if running.is_empty() {
            break (layout, found, everyone);
        }
        killed.absorb(unfinished::settle(ctx, Taking::Label(label), &running, dry_run).await?);
        // Read again once settled: what the killed runs recorded is final
        // now, and a run recorded under the label while this revert
        // waited (a shard's job retried) is taken back too, or, still
        // running, settled in turn.
        ids = label_runs(ctx, label).await?;
    };
    let oldest = found.last().map_or(0, |(summary, _)| summary.id);
    for (summary, _) in &found {
        warn_incomplete(summary);
    }
    let companies = everyone.len();
    let recorded = runs::merge_changes(found.into_iter().map(|(_, tenants)| tenants));
    let (tenants, goals, missing) = goals_in(ctx, &layout, oldest, recorded, everyone);
    ctx.set_selection(crate::selection::Selection::of_label(
        label.as_str(),
        companies,
        tenants.len(),
    ));
    Ok((tenants, goals, missing, killed))
}

/// The ids of the migrate runs recorded under `label`, newest first.
async fn label_runs(ctx: &Context, label: &Label) -> anyhow::Result<Vec<i64>> {
    let wanted = label.clone();
    ctx.runner
        .with_master_read(|conn, layout, _| {
            Box::pin(async move { runs::migrate_runs(conn, &layout, &wanted).await })
        })
        .await
}

/// The runs asked for (those recorded, in the order asked) and the
/// master's companies, in one read.
async fn read_runs(
    ctx: &Context,
    ids: Vec<i64>,
) -> anyhow::Result<(
    crate::companies::Layout,
    Vec<(runs::RunSummary, Vec<runs::RunTenant>)>,
    Vec<Tenant>,
)> {
    // The errors are kept for later, each where it was checked before.
    let (layout, found, everyone) = ctx
        .runner
        .with_master_read(|conn, layout, _| {
            Box::pin(async move {
                let mut found = Vec::new();
                for id in ids {
                    match runs::get(conn, &layout, id).await {
                        Ok(Some(run)) => found.push(run),
                        Ok(None) => {}
                        Err(err) => return Ok((layout, Err(err), Ok(Vec::new()))),
                    }
                }
                let everyone = if found.is_empty() {
                    Ok(Vec::new())
                } else {
                    layout.list(conn).await
                };
                Ok((layout, Ok(found), everyone))
            })
        })
        .await?;
    let found = found?;
    Ok((layout, found, everyone?))
}

/// Warns of a run that could not record every tenant it changed.
fn warn_incomplete(summary: &runs::RunSummary) {
    if summary.incomplete {
        crate::output::warn(format_args!(
            "warning: run {} could not record every tenant it changed (its warnings said which): only the tenants it recorded are taken back",
            summary.id
        ));
    }
}

/// The recorded changes as goals for the companies the master has now,
/// each database several companies name marked so, and skipped reports
/// for the others.
fn goals_in(
    ctx: &Context,
    layout: &crate::companies::Layout,
    id: i64,
    recorded: Vec<runs::RunTenant>,
    mut everyone: Vec<Tenant>,
) -> (Vec<Tenant>, Goals, Vec<Report<Reverted>>) {
    // Who else names each database, as a selection marks it: a database
    // two companies share is refused, not reverted under one of them.
    let all = everyone.clone();
    crate::tenant::mark_shared(&all, &mut everyone, |a, b| ctx.same_place(a, b));
    for tenant in &mut everyone {
        if let Some(sharing) = &mut tenant.sharing {
            sharing.worked_by = None;
        }
    }
    // Under row-level security a company we do not see may still be there.
    let gone = match layout.visibility.row_security.first() {
        Some(rls) => format!(
            "not among the companies the master shows role {} (row-level security on {} may hide it, or it was dropped since the run); nothing reverted",
            crate::output::shown(&rls.role),
            crate::output::shown(&rls.table)
        ),
        None => "no longer in the master (dropped since the run?); nothing to revert".to_owned(),
    };
    let (tenants, goals, missing) = sort_changes(id, recorded, &everyone, &gone);
    (tenants, Goals::Run(Arc::new(goals)), missing)
}

/// The changes a run recorded, sorted: the tenants to take back, each
/// with its goal, and skipped reports for those whose row is gone or names
/// another database now.
fn sort_changes(
    id: i64,
    recorded: Vec<runs::RunTenant>,
    everyone: &[Tenant],
    gone: &str,
) -> (Vec<Tenant>, HashMap<String, Target>, Vec<Report<Reverted>>) {
    let mut tenants = Vec::new();
    let mut goals = HashMap::new();
    let mut missing = Vec::new();
    for change in recorded.into_iter().filter(|t| !t.versions.is_empty()) {
        let target = Target::Run {
            id,
            versions: change.versions,
            before: change.before,
            installed_until: change.installed_until,
        };
        match everyone.iter().find(|t| t.id == change.company_id) {
            // The run changed the database it recorded; a row that names
            // another one now would have the down scripts run there.
            Some(tenant)
                if tenant.db_name_raw.as_deref() != Some(change.db_name.as_str())
                    || tenant.server_label() != change.server =>
            {
                missing.push(skipped(
                    tenant.clone(),
                    format!(
                        "run {id} changed database {} on server {}, but the company's row now names {} on {}; nothing reverted: revert that database by hand, or with --to once the row names it",
                        crate::output::shown(&change.db_name),
                        crate::output::shown(&change.server),
                        crate::output::shown(tenant.db_label()),
                        crate::output::shown(tenant.server_label())
                    ),
                ));
            }
            Some(tenant) => {
                goals.insert(tenant.id.clone(), target);
                tenants.push(tenant.clone());
            }
            None => missing.push(skipped(
                Tenant::new(
                    change.company_id,
                    None,
                    None,
                    Some(change.db_name),
                    None,
                    None,
                ),
                gone.to_owned(),
            )),
        }
    }
    (tenants, goals, missing)
}

/// A tenant of the run reported skipped, with why, and nothing reverted.
fn skipped(tenant: Tenant, why: String) -> Report<Reverted> {
    Report {
        tenant,
        verdict: Verdict::Skipped,
        value: Reverted::default(),
        error: Some(why),
        duration: std::time::Duration::ZERO,
    }
}

/// The planning reports as the final report of tenants that needed
/// nothing: ok, nothing reverted.
fn nothing_to_do(mut planned: FleetRun<Reverted>) -> FleetRun<Reverted> {
    for report in &mut planned.reports {
        report.value.to_revert = None;
    }
    planned
}

/// Each tenant's report from the run that touched it, in the planned order.
fn merge(planned: FleetRun<Reverted>, done: FleetRun<Reverted>) -> FleetRun<Reverted> {
    let mut by_id: HashMap<String, Report<Reverted>> = done
        .reports
        .into_iter()
        .map(|r| (r.tenant.id.clone(), r))
        .collect();
    FleetRun {
        reports: planned
            .reports
            .into_iter()
            .map(|r| by_id.remove(&r.tenant.id).unwrap_or(r))
            .collect(),
        interrupted: done.interrupted,
    }
}
