//! `tenantctl tenant move <slug|id> --to SERVER [--drop-source]`: copy a
//! tenant's database to another server and repoint the master; `--finish`
//! drops the source a move kept, `--abort` undoes an interrupted move,
//! `--dry-run` prints the plan. The steps and how a rerun picks them up
//! are in [`crate::moves`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::commands::context::Context;
use crate::copy::PgTools;
use crate::dbname::DbName;
use crate::ddl;
use crate::error::{Outcome, UsageError, render};
use crate::moves::{self, MoveRecord, Moved, Mover, Step};
use crate::output::{
    OutputMode, document, format_bytes, format_duration, line, print_json, shown, warn,
};
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Tenant};

#[derive(Debug, Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "each is a flag of the command line"
)]
pub struct MoveArgs {
    /// Tenant slug, id or database name
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,

    /// The server to move its database to (rerunning an interrupted move
    /// with the same --to finishes it)
    #[arg(long, value_name = "SERVER", required_unless_present_any = ["finish", "abort"])]
    pub to: Option<ServerName>,

    /// Drop the source once the copy is verified and the master switched
    /// [default: keep it, renamed and closed to connections, until --finish]
    #[arg(long, conflicts_with_all = ["finish", "abort"])]
    pub drop_source: bool,

    /// Drop the source a finished move kept
    #[arg(long, conflicts_with_all = ["to", "abort", "dry_run"])]
    pub finish: bool,

    /// Undo an interrupted move: reopen the source, drop the partial copy
    #[arg(long, conflicts_with_all = ["to", "dry_run"])]
    pub abort: bool,

    /// Print the plan and the database's size, changing nothing
    #[arg(long)]
    pub dry_run: bool,

    /// The directory holding `pg_dump` and `pg_restore` [default: found on
    /// PATH]
    #[arg(long, env = "TENANTCTL_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

/// What `tenant move` reports.
#[derive(Debug, Serialize)]
struct Report {
    id: String,
    slug: Option<String>,
    db_name: Option<String>,
    from: String,
    to: String,
    /// `moved`, `finished` (source dropped later), `aborted` or `planned`.
    action: &'static str,
    /// Whether this run picked up a move an earlier run left.
    resumed: bool,
    /// The size of the database copied.
    bytes: Option<i64>,
    copy_ms: Option<u64>,
    /// Copy throughput, megabytes (10^6 bytes) per second.
    mb_per_s: Option<f64>,
    /// Milliseconds this run took to reach each step it entered (`started`
    /// included when this run recorded the move): where the time went.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    step_ms: BTreeMap<&'static str, u64>,
    /// The parked source, while it is kept.
    source_kept_as: Option<String>,
    source_dropped: bool,
    /// With `--dry-run`: the database's size and the versions involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<serde_json::Value>,
}

pub async fn run(args: MoveArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    if ctx.connector.pooled() {
        return Err(UsageError(
            "tenant move needs direct connections: a transaction-mode pooler (pooler = \"transaction\" in tenantctl.toml, or ?pgbouncer=true) keeps idle server connections to the database it renames; give the servers' own URLs".into(),
        )
        .into());
    }
    let looking = look_for_tools(&args);
    // The master connection is held through the whole move: the move's
    // lock on the company lives on it.
    let result = ctx
        .runner
        .with_master(|master, mut layout, _| {
            Box::pin(async move {
                let mut locked = None;
                let result = async {
                    let tenant = layout.get(&mut *master, &args.tenant).await?;
                    if !args.dry_run {
                        moves::ensure_table(&mut *master, &mut layout).await?;
                        moves::lock(&mut *master, &tenant.id).await?;
                        locked = Some(tenant.id.clone());
                    }
                    // A record edited by hand into names tenantctl refuses
                    // is refused here, naming the tenant it belongs to.
                    let record = moves::get(&mut *master, &layout, &tenant.id)
                        .await
                        .map_err(|err| err.context(format!("tenant {tenant}")))?;
                    let say = |text: &str| {
                        if !ctx.quiet {
                            warn(format_args!(
                                "tenant {}: {}",
                                shown(tenant.handle()),
                                shown(text)
                            ));
                        }
                    };
                    let mut mover = Mover {
                        connector: &ctx.connector,
                        layout: &layout,
                        master: &mut *master,
                        stop: ctx.interruptible(),
                        pg_bin: args.pg_bin.clone(),
                        tools: None,
                        say: &say,
                    };
                    if args.finish {
                        finish(&mut mover, &tenant, record).await
                    } else if args.abort {
                        abort(&mut mover, &tenant, record).await
                    } else if args.dry_run {
                        plan(ctx, &args, &tenant, record.as_ref()).await
                    } else {
                        start_or_resume(ctx, &mut mover, &args, &tenant, record, looking).await
                    }
                }
                .await;
                // Given back before closing, whatever happened: a pooler the URL does
                // not declare would keep it on the server connection otherwise.
                if let Some(id) = &locked {
                    let _ = moves::unlock(&mut *master, id).await;
                }
                Ok(result)
            })
        })
        .await?;
    match result {
        Ok(report) => {
            print(ctx, &report);
            Ok(Outcome::Success)
        }
        // An interrupt undid the move (or left it for a rerun): say why,
        // and exit as interrupted.
        Err(err) if ctx.stop.is_set() => {
            warn(format_args!("error: {}", render(&err)));
            Ok(Outcome::Interrupted)
        }
        Err(err) => Err(err),
    }
}

/// Starts looking for `pg_dump` and `pg_restore` (two processes) when the
/// run may copy: begun before the master is read, it runs meanwhile.
fn look_for_tools(args: &MoveArgs) -> Option<tokio::task::JoinHandle<anyhow::Result<PgTools>>> {
    (args.to.is_some() && !args.dry_run).then(|| {
        let pg_bin = args.pg_bin.clone();
        tokio::spawn(async move { PgTools::find(pg_bin.as_deref()).await })
    })
}

fn report(tenant: &Tenant, record: &MoveRecord, action: &'static str) -> Report {
    Report {
        id: tenant.id.clone(),
        slug: tenant.slug.clone(),
        db_name: tenant.db_name_raw.clone(),
        from: record.from_server.to_string(),
        to: record.to_server.to_string(),
        action,
        resumed: false,
        bytes: record.bytes,
        copy_ms: None,
        mb_per_s: None,
        step_ms: BTreeMap::new(),
        source_kept_as: (record.step == Step::Switched).then(|| record.parked_name.to_string()),
        source_dropped: record.step == Step::Done,
        plan: None,
    }
}

async fn finish(
    mover: &mut Mover<'_>,
    tenant: &Tenant,
    record: Option<MoveRecord>,
) -> anyhow::Result<Report> {
    let Some(mut record) = record else {
        anyhow::bail!("tenant {tenant} has no move to finish");
    };
    if record.step == Step::Done {
        return Ok(report(tenant, &record, "finished"));
    }
    mover.finish(&record).await.map_err(|err| {
        err.context(format!(
            "tenant {tenant}: drop the source {} kept on server {}",
            record.parked_name, record.from_server
        ))
    })?;
    record.step = Step::Done;
    Ok(report(tenant, &record, "finished"))
}

async fn abort(
    mover: &mut Mover<'_>,
    tenant: &Tenant,
    record: Option<MoveRecord>,
) -> anyhow::Result<Report> {
    let Some(record) = record.filter(|r| r.step.before_switch()) else {
        anyhow::bail!("tenant {tenant} has no unfinished move to undo");
    };
    mover
        .undo(&tenant.id)
        .await
        .map_err(|err| err.context(format!("tenant {tenant}: undo the move")))?;
    let mut report = report(tenant, &record, "aborted");
    report.source_kept_as = None;
    Ok(report)
}

/// Checks a new move and records it, or picks up the one recorded, then
/// drives it to the end.
async fn start_or_resume(
    ctx: &Context,
    mover: &mut Mover<'_>,
    args: &MoveArgs,
    tenant: &Tenant,
    record: Option<MoveRecord>,
    looking: Option<tokio::task::JoinHandle<anyhow::Result<PgTools>>>,
) -> anyhow::Result<Report> {
    let to = args
        .to
        .clone()
        .ok_or_else(|| UsageError("--to is required".into()))?;
    let began = Instant::now();
    let tools = async {
        match looking {
            Some(looking) => looking.await.context("look for pg_dump and pg_restore")?,
            None => PgTools::find(args.pg_bin.as_deref()).await,
        }
    };
    let (record, resumed) = match record {
        Some(record) if record.step.before_switch() => {
            anyhow::ensure!(
                record.to_server == to,
                "tenant {tenant} is being moved to server {} (step {}); rerun with --to {} to finish that move, or --abort to undo it",
                record.to_server,
                record.step,
                record.to_server
            );
            // A copy still to make finds the tools again, saying why not.
            mover.tools = tools.await.ok();
            (record, true)
        }
        Some(record) if record.step == Step::Switched && record.to_server == to => (record, true),
        Some(record) if record.step == Step::Switched => anyhow::bail!(
            "tenant {tenant}'s last move kept its source {} on server {}; finish it first (`tenantctl tenant move {} --finish`)",
            record.parked_name,
            record.from_server,
            tenant.handle()
        ),
        _ => (start(ctx, mover, tenant, &to, tools).await?, false),
    };
    let done = mover
        .drive(tenant, record.clone(), args.drop_source)
        .await?;
    let mut report = report(tenant, &record, "moved");
    report.resumed = resumed;
    if !resumed {
        report.step_ms.insert(
            Step::Started.as_str(),
            millis(done.began.duration_since(began)),
        );
    }
    fill(&mut report, &done);
    report.source_kept_as = (!done.source_dropped).then(|| record.parked_name.to_string());
    Ok(report)
}

fn millis(time: Duration) -> u64 {
    u64::try_from(time.as_millis()).unwrap_or(u64::MAX)
}

fn fill(report: &mut Report, moved: &Moved) {
    report.bytes = moved.bytes.or(report.bytes);
    report.copy_ms = moved.copy_time.map(millis);
    report.step_ms.extend(
        moved
            .step_times
            .iter()
            .map(|(step, t)| (step.as_str(), millis(*t))),
    );
    #[allow(clippy::cast_precision_loss, reason = "a rate shown with one decimal")]
    {
        report.mb_per_s = moved
            .copy_time
            .zip(moved.bytes)
            .map(|(t, b)| (b as f64 / 1e6 / t.as_secs_f64().max(1e-3) * 10.0).round() / 10.0);
    }
    report.source_dropped = moved.source_dropped;
}

/// Refuses a move that cannot be made, then records it (step `started`).
async fn start(
    ctx: &Context,
    mover: &mut Mover<'_>,
    tenant: &Tenant,
    to: &ServerName,
    tools: impl std::future::Future<Output = anyhow::Result<PgTools>>,
) -> anyhow::Result<MoveRecord> {
    anyhow::ensure!(
        tenant.has_status(Lifecycle::Active),
        "tenant {tenant} has status {}; only an active tenant moves",
        shown(tenant.status_label())
    );
    let from = tenant.server()?.clone();
    anyhow::ensure!(&from != to, "tenant {tenant} is already on server {to}");
    ctx.connector.check_server(&from)?;
    ctx.connector.check_server(to)?;
    mover.layout.check_can_record_server(to)?;
    let db = tenant.db_name()?.clone();
    ctx.connector.check_tenant_db(&db)?;
    // Moving a database another company's row also names would leave that
    // row pointing at the parked source, then at nothing.
    let others = ctx.sharing(mover.layout, mover.master, tenant).await?;
    if !others.is_empty() {
        return Err(UsageError(format!(
            "refusing to move tenant {tenant}: its database is also named by {}; each company needs a database of its own: fix the master first",
            crate::tenant::describe_all(&others)
        ))
        .into());
    }
    let (parked, incoming) = moves::names(&db, &moves::token())?;

    // The copy must be possible before anything is touched. The three
    // looks are independent: taken at once, their answers read in order.
    let (tools, source, target) = tokio::join!(
        tools,
        major_and_exists(ctx, &from, &db),
        major_and_exists(ctx, to, &db)
    );
    let tools = tools?;
    let (source_major, there) = source?;
    anyhow::ensure!(
        there,
        "tenant {tenant}: database {db} is not on server {from}"
    );
    let (target_major, taken) = target?;
    tools.check(source_major, target_major)?;
    anyhow::ensure!(
        !taken,
        "tenant {tenant}: a database {db} already exists on server {to}; drop or rename it first"
    );

    let mut record = MoveRecord {
        company_id: tenant.id.clone(),
        db_name: db,
        from_server: from,
        to_server: to.clone(),
        parked_name: parked,
        incoming_name: incoming,
        step: Step::Started,
        bytes: None,
        started_at: chrono::Utc::now(),
    };
    mover.start(&mut record).await?;
    mover.tools = Some(tools);
    Ok(record)
}

/// A server's major version, and whether it has a database of this name.
async fn major_and_exists(
    ctx: &Context,
    server: &ServerName,
    db: &DbName,
) -> anyhow::Result<(u32, bool)> {
    ctx.runner
        .with_maintenance(server, |conn, _| {
            Box::pin(async move {
                let major = ddl::server_major(conn).await?;
                anyhow::Ok((major, ddl::exists(conn, db).await?))
            })
        })
        .await
}

/// `--dry-run`: what a move would do, and how big the database is.
async fn plan(
    ctx: &Context,
    args: &MoveArgs,
    tenant: &Tenant,
    record: Option<&MoveRecord>,
) -> anyhow::Result<Report> {
    let to = args
        .to
        .clone()
        .ok_or_else(|| UsageError("--to is required".into()))?;
    let from = tenant.server()?.clone();
    let db = tenant.db_name()?.clone();
    let in_progress = record.filter(|r| r.step.before_switch() || r.step == Step::Switched);
    let tools = PgTools::find(args.pg_bin.as_deref()).await;
    let (source_major, size) = ctx
        .runner
        .with_maintenance(&from, |source, _| {
            Box::pin(async move {
                let major = ddl::server_major(source).await?;
                let name = match in_progress {
                    Some(r) if r.step != Step::Started => r.parked_name.clone(),
                    _ => db.clone(),
                };
                anyhow::Ok((major, ddl::character(source, &name).await?.size_bytes))
            })
        })
        .await?;
    let target_major = ctx
        .runner
        .with_maintenance(&to, |target, _| Box::pin(ddl::server_major(target)))
        .await?;
    let problem = match &tools {
        Ok(tools) => tools.check(source_major, target_major).err(),
        Err(err) => Some(anyhow::anyhow!("{}", render(err))),
    };
    let plan = serde_json::json!({
        "size_bytes": size,
        "source_major": source_major,
        "target_major": target_major,
        "pg_dump": tools.as_ref().ok().map(|t| t.version.clone()),
        "in_progress": in_progress.map(|r| r.step.as_str()),
        "problem": problem.as_ref().map(render),
        "steps": [
            "record the move (the tenant is moving; fleet commands skip it)",
            "end the source's sessions and rename it, keeping the application out",
            "create the copy on the target and pg_dump | pg_restore into it, reading the source's side of the verification in the snapshot pg_dump copies",
            "verify the copy: _sqlx_migrations rows, exact row counts, sequence values; close the source to connections",
            "give the copy the tenant's name",
            "switch the placement in the master",
            if args.drop_source { "drop the source" } else { "keep the source, renamed and closed, until --finish" },
        ],
    });
    Ok(Report {
        id: tenant.id.clone(),
        slug: tenant.slug.clone(),
        db_name: tenant.db_name_raw.clone(),
        from: from.to_string(),
        to: to.to_string(),
        action: "planned",
        resumed: false,
        bytes: Some(size),
        copy_ms: None,
        mb_per_s: None,
        step_ms: BTreeMap::new(),
        source_kept_as: None,
        source_dropped: false,
        plan: Some(plan),
    })
}

fn print(ctx: &Context, report: &Report) {
    document(ctx.output, report);
    match ctx.output {
        OutputMode::Jsonl => print_json(ctx.output, report),
        OutputMode::Json => {}
        OutputMode::Table | OutputMode::Junit => print_table(report),
    }
}

fn print_table(report: &Report) {
    let who = format!(
        "tenant {} ({})",
        shown(report.slug.as_deref().unwrap_or(&report.id)),
        shown(report.db_name.as_deref().unwrap_or_default())
    );
    match report.action {
        "planned" => {
            let plan = report.plan.clone().unwrap_or_default();
            line(format_args!(
                "would move {who} from server {} to server {}: {} (PostgreSQL {} to {}, pg_dump {})",
                report.from,
                report.to,
                format_bytes(report.bytes.unwrap_or_default()),
                plan["source_major"],
                plan["target_major"],
                plan["pg_dump"].as_str().unwrap_or("not found")
            ));
            if let Some(step) = plan["in_progress"].as_str() {
                line(format_args!(
                    "a move is recorded at step {step}; rerunning it finishes it"
                ));
            }
            if let Some(steps) = plan["steps"].as_array() {
                for (n, step) in steps.iter().enumerate() {
                    line(format_args!(
                        "  {}. {}",
                        n + 1,
                        step.as_str().unwrap_or_default()
                    ));
                }
            }
            if let Some(problem) = plan["problem"].as_str() {
                line(format_args!("cannot move: {problem}"));
            }
        }
        "aborted" => {
            line(format_args!(
                "undid the move of {who} to server {}: it is on server {} as before",
                report.to, report.from
            ));
        }
        "finished" => {
            line(format_args!(
                "finished the move of {who} to server {}: the source on server {} is dropped",
                report.to, report.from
            ));
        }
        _ => {
            let speed = match (report.bytes, report.copy_ms, report.mb_per_s) {
                (Some(bytes), Some(ms), Some(rate)) => format!(
                    ": copied {} in {} ({rate} MB/s)",
                    format_bytes(bytes),
                    format_duration(std::time::Duration::from_millis(ms))
                ),
                _ => String::new(),
            };
            line(format_args!(
                "moved {who} from server {} to server {}{speed}",
                report.from, report.to
            ));
            match &report.source_kept_as {
                Some(kept) if !report.source_dropped => line(format_args!(
                    "the source is kept on server {} as {kept}, closed to connections; `tenantctl tenant move {} --finish` drops it",
                    report.from,
                    shown(report.slug.as_deref().unwrap_or(&report.id))
                )),
                _ => line(format_args!(
                    "the source on server {} is dropped",
                    report.from
                )),
            };
        }
    }
}
