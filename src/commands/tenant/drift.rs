//! `tenantctl tenant drift`: every selected tenant's real schema, read from
//! its catalog, against a reference: the schema the migrations make (built
//! once per run in a scratch database, migrated as `tenant create` migrates
//! a new tenant, read, dropped) or a named tenant's (`--against`). Tenants
//! are grouped by fingerprint and each difference is reported once with
//! the tenants it affects; `--sql` prints the repairs, never runs them.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use tracing::Instrument as _;

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::commands::tenant::provision::{Applied, TenantSchema, apply_schema};
use crate::config::Migrator;
use crate::connect::{SessionLimits, is_missing_database};
use crate::dbname::DbName;
use crate::ddl;
use crate::drift::{self, Difference, Schema, Scope};
use crate::error::{Outcome, UsageError};
use crate::fleet::{FleetRun, Verdict};
use crate::migrations::{self, MigrationSet};
use crate::output::report::{Extra, TenantValue, keep_fleet, print_fleet_with};
use crate::output::{OutputMode, line, shown, warn};
use crate::prisma;
use crate::servers::ServerName;
use crate::tenant::Tenant;

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Compare with this tenant's schema instead of the one the migrations
    /// make (required when an application command migrates the tenants)
    #[arg(long, value_name = "SLUG|ID")]
    pub against: Option<String>,

    /// Print, for each drifted tenant, the statements that would make it
    /// match the reference (taken from the reference's own catalog text);
    /// tenantctl never runs them: review them, then run them with
    /// `tenantctl tenant sql`
    #[arg(long)]
    pub sql: bool,

    /// Also compare who owns each schema, table, sequence, function and type
    #[arg(long)]
    pub owners: bool,

    /// Also compare comments (COMMENT ON)
    #[arg(long)]
    pub comments: bool,
}

/// Where a tenant stands against the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Its schema is the reference's.
    Match,
    /// Its schema differs from the reference's.
    Differs,
    /// Not at the latest migration: not compared.
    Pending,
}

/// One tenant's drift, as reported.
#[derive(Debug, Default, Serialize)]
pub struct TenantDrift {
    /// `null` when the tenant could not be read.
    pub drift: Option<Standing>,
    /// How many migrations it has pending (only when pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<usize>,
    /// A digest of its schema: equal digests, equal schemas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub differences: Vec<Difference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<&'static str>,
}

impl TenantValue for TenantDrift {
    fn headers() -> Vec<&'static str> {
        vec!["drift", "differences"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            match self.drift {
                Some(Standing::Match) => "match".into(),
                Some(Standing::Differs) => "differs".into(),
                Some(Standing::Pending) => "pending".into(),
                None => "-".into(),
            },
            self.differences.len().to_string(),
        ]
    }

    fn connect_failed(&mut self, err: &anyhow::Error) {
        if is_missing_database(err) {
            self.problems.push("database_missing");
        }
    }
}

/// What a tenant must be at to be compared: the latest migration.
enum Latest {
    Sqlx(Arc<MigrationSet>),
    Prisma(Arc<prisma::Folder>, Arc<str>),
    /// An application command migrates: tenantctl cannot tell.
    Unknown,
}

impl Latest {
    async fn of(ctx: &Context) -> anyhow::Result<Self> {
        Ok(match &ctx.migrator {
            Migrator::Sqlx { .. } => Self::Sqlx(ctx.tenant_migrations().await?),
            Migrator::Prisma {
                migrations, schema, ..
            } => Self::Prisma(
                Arc::new(prisma::Folder::read(migrations).map_err(crate::error::Usage)?),
                schema.as_str().into(),
            ),
            Migrator::Command(_) => Self::Unknown,
        })
    }

    /// How many migrations the tenant has pending; an error for a tenant
    /// its migrator reports a problem on (a failed or changed migration).
    async fn pending(&self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        match self {
            Self::Sqlx(set) => {
                let plan = migrations::plan(conn, set).await?;
                plan.check()?;
                Ok(plan.pending.len())
            }
            Self::Prisma(folder, schema) => {
                let state = prisma::state(conn, folder, schema).await?;
                state.check()?;
                Ok(state.pending.len())
            }
            Self::Unknown => Ok(0),
        }
    }
}

/// The schema tenants are compared with, and where it came from.
struct Reference {
    /// The reference schema for each server's tenants: built on each server
    /// the selection spans, since the text a server's deparsers print can
    /// differ between major versions (a fleet half moved to a newer
    /// server); with `--against`, one schema for all.
    schemas: BTreeMap<ServerName, Schema>,
    /// Servers the reference could not be built on, with why: their
    /// tenants are not read (never compared with another server's).
    unbuilt: BTreeMap<ServerName, String>,
    /// For people: `the migrations (built in a scratch database on server
    /// default)`, `tenant acme`.
    source: String,
    /// With `--against`: that tenant's handle (the reference is its
    /// schema, for every server); else the migrations are.
    against: Option<String>,
}

pub async fn run(args: DriftArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let scope = Scope {
        owners: args.owners,
        comments: args.comments,
    };
    let limits = SessionLimits::from(&args.session);
    let latest = Arc::new(Latest::of(ctx).await?);
    if matches!(*latest, Latest::Unknown) && args.against.is_none() {
        return Err(UsageError(
            "tenant drift needs a reference: [tenants.migrator] kind = \"command\" makes the tenants' schema with the application's own command, which tenantctl does not run against a scratch database; compare with a tenant you trust: --against SLUG".into(),
        )
        .into());
    }
    let tenants = ctx.select(&args.selection).await?;
    // Listening before the reference is built: an interrupt then stops the
    // run after the scratch database is dropped, not with it left behind.
    ctx.interruptible();
    // Interrupted while the reference was built: no tenant starts (the stop
    // flag is set, so each is reported skipped), and the report still comes
    // out in the chosen format.
    let reference = reference(ctx, &args, &tenants, &latest, &limits, scope)
        .instrument(crate::statement_log::scope("reference"))
        .await?
        .unwrap_or_else(Reference::interrupted);
    let reference = Arc::new(reference);
    let shared = reference.clone();
    // A function body or a default may hold a password tenantctl knows (a
    // dblink connection string): every value reported goes through the
    // redactor that masks the servers' passwords in a child's output.
    let redactor = Arc::new(ctx.connector.child_env().redactor(&[]));
    let run = ctx
        .fleet_runner(&args.fleet, limits)
        .on_each_tenant_limited(
            tenants,
            &ctx.progress(),
            move |tenant, conn, value: &mut TenantDrift| {
                let (reference, latest, redactor) =
                    (shared.clone(), latest.clone(), redactor.clone());
                Box::pin(async move {
                    let pending = latest.pending(conn).await?;
                    if pending > 0 {
                        value.drift = Some(Standing::Pending);
                        value.pending = Some(pending);
                        return Ok(());
                    }
                    let against = reference.for_tenant(tenant)?;
                    let schema = drift::read(conn, false, scope).await?;
                    value.fingerprint = Some(schema.fingerprint());
                    value.differences = drift::compare(against, &schema)
                        .into_iter()
                        .map(|d| redacted(&redactor, d))
                        .collect();
                    value.drift = Some(if value.differences.is_empty() {
                        Standing::Match
                    } else {
                        Standing::Differs
                    });
                    Ok(())
                })
            },
        )
        .await;
    report(ctx, &run, &reference, args.sql);
    Ok(outcome(&run))
}

/// `d` with every password tenantctl knows masked in its values.
fn redacted(redactor: &crate::redact::Redactor, mut d: Difference) -> Difference {
    for value in [&mut d.reference, &mut d.tenant, &mut d.repair]
        .into_iter()
        .flatten()
    {
        if let std::borrow::Cow::Owned(masked) = redactor.redact(value) {
            *value = masked;
        }
    }
    d
}

/// Exit 0 only when every tenant was read and none drifted: a deploy step
/// can gate on it. Pending tenants are not drift.
fn outcome(run: &FleetRun<TenantDrift>) -> Outcome {
    let drifted = run
        .reports
        .iter()
        .any(|r| r.value.drift == Some(Standing::Differs));
    match run.outcome() {
        Outcome::Success if drifted => Outcome::Failed,
        other => other,
    }
}

/// The reference, or `None` when an interrupt came while it was built.
async fn reference(
    ctx: &Context,
    args: &DriftArgs,
    tenants: &[Tenant],
    latest: &Latest,
    limits: &SessionLimits,
    scope: Scope,
) -> anyhow::Result<Option<Reference>> {
    if let Some(key) = &args.against {
        return against(ctx, key, latest, limits, scope).await.map(Some);
    }
    // Built on each server the selection spans (none selected: nothing to
    // compare, no database to build).
    let servers: std::collections::BTreeSet<&ServerName> =
        tenants.iter().filter_map(|t| t.server().ok()).collect();
    let (mut schemas, mut unbuilt) = (BTreeMap::new(), BTreeMap::new());
    let mut first_error = None;
    // Read (and checked) once, whatever the number of servers.
    let migrations = if servers.is_empty() {
        None
    } else {
        Some(TenantSchema::of(ctx).await?)
    };
    for server in &servers {
        let Some(migrations) = &migrations else { break };
        let built = scratch(ctx, server, migrations, limits, scope).await;
        if ctx.stop.is_set() {
            return Ok(None);
        }
        // One server down (or refusing CREATE DATABASE) costs its own
        // tenants, not the fleet's report.
        match built {
            Ok(schema) => {
                schemas.insert((*server).clone(), schema);
            }
            Err(err) => {
                unbuilt.insert((*server).clone(), crate::error::render(&err));
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error.filter(|_| schemas.is_empty()) {
        return Err(err);
    }
    let names: Vec<String> = schemas.keys().map(ToString::to_string).collect();
    let mut source = match names.len() {
        0 => "the migrations (no tenant selected: not built)".to_owned(),
        1 => format!(
            "the migrations (built in a scratch database on server {})",
            names[0]
        ),
        _ => format!(
            "the migrations (built in a scratch database on each of servers {})",
            names.join(", ")
        ),
    };
    if !unbuilt.is_empty() {
        let failed: Vec<String> = unbuilt.keys().map(ToString::to_string).collect();
        source = format!(
            "{source}; not built on server(s) {}, whose tenants are not compared",
            failed.join(", ")
        );
    }
    Ok(Some(Reference {
        schemas,
        unbuilt,
        source,
        against: None,
    }))
}

impl Reference {
    /// None: an interrupt came while it was built.
    fn interrupted() -> Self {
        Self {
            schemas: BTreeMap::new(),
            unbuilt: BTreeMap::new(),
            source: "the migrations (interrupted while it was built: nothing compared)".to_owned(),
            against: None,
        }
    }

    /// The schema `tenant` is compared with: its server's, or the only one.
    /// With `--against`, the one schema; else its own server's, or why
    /// there is none (never another server's).
    fn for_tenant(&self, tenant: &Tenant) -> anyhow::Result<&Schema> {
        if self.against.is_some() {
            return self
                .schemas
                .values()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no reference schema was read"));
        }
        let server = tenant.server()?;
        match (self.schemas.get(server), self.unbuilt.get(server)) {
            (Some(schema), _) => Ok(schema),
            (None, Some(why)) => Err(anyhow::anyhow!(
                "the reference could not be built on server {server}, so this tenant was not compared: {why}"
            )),
            (None, None) => Err(anyhow::anyhow!(
                "no reference schema was built for server {server}"
            )),
        }
    }

    /// How many objects the reference has (the first server's).
    fn objects(&self) -> usize {
        self.schemas.values().next().map_or(0, Schema::len)
    }

    /// Whether the servers' references differ from one another.
    fn servers_differ(&self) -> bool {
        let mut prints = self.schemas.values().map(Schema::fingerprint);
        let first = prints.next();
        prints.any(|p| Some(p) != first)
    }

    fn json(&self) -> serde_json::Value {
        let first = self.schemas.values().next();
        serde_json::json!({
            "kind": if self.against.is_some() { "tenant" } else { "migrations" },
            "tenant": self.against,
            "fingerprint": first.map(Schema::fingerprint),
            "objects": first.map_or(0, Schema::len),
            "servers": self.schemas.iter().map(|(server, schema)| serde_json::json!({
                "server": server.to_string(),
                "fingerprint": schema.fingerprint(),
                "objects": schema.len(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A named tenant's schema as the reference; refused when it is not at the
/// latest migration itself.
async fn against(
    ctx: &Context,
    key: &str,
    latest: &Latest,
    limits: &SessionLimits,
    scope: Scope,
) -> anyhow::Result<Reference> {
    let tenant = ctx.tenant(key).await?;
    let (server, db) = (tenant.server()?, tenant.db_name()?);
    let (pending, schema) = ctx
        .runner
        .with_limits(limits.clone())
        .with_tenant_read(server, db, |conn, _| {
            Box::pin(async move {
                let pending = latest.pending(conn).await?;
                Ok((pending, drift::read(conn, true, scope).await?))
            })
        })
        .await
        .map_err(|err| {
            err.context(format!(
                "read the schema of {}",
                crate::tenant::describe(&tenant)
            ))
        })?;
    if pending > 0 {
        return Err(UsageError(format!(
            "--against {}: that tenant has {pending} migration(s) pending, so its schema is not the latest; migrate it first or compare with an up-to-date tenant",
            shown(key)
        ))
        .into());
    }
    Ok(Reference {
        schemas: BTreeMap::from([(server.clone(), schema)]),
        unbuilt: BTreeMap::new(),
        source: format!("tenant {}", shown(tenant.handle())),
        against: Some(tenant.handle().to_owned()),
    })
}

/// How the scratch databases' names start (`doctor` knows them by it).
pub use crate::dbname::SCRATCH_PREFIX;

/// A database name no tenant has: `tenantctl_drift_<pid>_<time>`.
fn scratch_name() -> anyhow::Result<DbName> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(DbName::parse(&format!(
        "{SCRATCH_PREFIX}{}_{:x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    ))?)
}

/// The schema the migrations make: a scratch database created on `server`,
/// migrated as `tenant create` migrates a new tenant, read, and dropped
/// whatever happened.
async fn scratch(
    ctx: &Context,
    server: &ServerName,
    migrations: &TenantSchema,
    limits: &SessionLimits,
    scope: Scope,
) -> anyhow::Result<Schema> {
    let db = scratch_name()?;
    let runner = ctx.runner.with_limits(limits.clone());
    let created = runner
        .with_maintenance(server, |conn, _| {
            Box::pin(async { ddl::create_if_missing(conn, &db).await })
        })
        .await?;
    if !created {
        anyhow::bail!(
            "database {db} already exists on server {server}, so tenantctl will not use it as its scratch database; run again"
        );
    }
    let reading = async {
        runner
            .with_tenant(server, &db, |conn, _| {
                Box::pin(async {
                    apply_schema(ctx, conn, &db, migrations, limits, &mut Applied::default()).await
                })
            })
            .await
            .map_err(|err| {
                err.context("migrate the scratch database the reference is read from")
            })?;
        runner
            .with_tenant_read(server, &db, |conn, _| {
                Box::pin(async move { drift::read(conn, true, scope).await })
            })
            .await
    };
    // An interrupt cuts a long migration short when its grace is over (at
    // once on a second one): the forced drop below ends its session.
    let built = tokio::select! {
        built = reading => built,
        () = ctx.stop.cancel_due() => Err(anyhow::anyhow!("interrupted while the reference was built")),
    };
    let dropped = runner
        .with_maintenance(server, |conn, _| {
            Box::pin(async { ddl::drop_force(conn, &db).await })
        })
        .await;
    if let Err(err) = dropped {
        warn(format_args!(
            "could not drop the scratch database {db} on server {server}: {}; drop it by hand (it holds no tenant's data)",
            crate::error::render(&err)
        ));
    }
    // A migration's error may quote what it was given (a dblink connection
    // string, a RAISE of a setting): the servers' passwords masked in it.
    let redactor = ctx.connector.child_env().redactor(&[]);
    built.map_err(|err| redacted_error(&redactor, err))
}

/// `err`, or its text with every password tenantctl knows masked when it
/// holds one (then a plain error: its causes are in the text).
fn redacted_error(redactor: &crate::redact::Redactor, err: anyhow::Error) -> anyhow::Error {
    let text = crate::error::render(&err);
    match redactor.redact(&text) {
        std::borrow::Cow::Owned(masked) => anyhow::anyhow!(masked),
        std::borrow::Cow::Borrowed(_) => err,
    }
}

/// One difference across the fleet: what it is and whom it affects.
#[derive(Debug, Serialize)]
struct Shared<'a> {
    #[serde(flatten)]
    difference: &'a Difference,
    /// The tenants' handles (slug, else name, else id), as the report for
    /// people names them.
    tenants: Vec<&'a str>,
    /// The same tenants' ids, in the same order: what the `tenants` rows
    /// of the JSON report carry whatever the master's columns.
    tenant_ids: Vec<&'a str>,
}

/// Each distinct difference once, with the tenants that have it, the most
/// widespread first.
fn shared(run: &FleetRun<TenantDrift>) -> Vec<Shared<'_>> {
    let mut by: BTreeMap<&Difference, Vec<&Tenant>> = BTreeMap::new();
    for report in &run.reports {
        for d in &report.value.differences {
            by.entry(d).or_default().push(&report.tenant);
        }
    }
    let mut all: Vec<_> = by
        .into_iter()
        .map(|(difference, tenants)| Shared {
            difference,
            tenants: tenants.iter().map(|t| t.handle()).collect(),
            tenant_ids: tenants.iter().map(|t| t.id.as_str()).collect(),
        })
        .collect();
    all.sort_by_key(|group| std::cmp::Reverse(group.tenants.len()));
    all
}

fn count(run: &FleetRun<TenantDrift>, standing: Standing) -> usize {
    run.reports
        .iter()
        .filter(|r| r.value.drift == Some(standing))
        .count()
}

fn report(ctx: &Context, run: &FleetRun<TenantDrift>, reference: &Reference, sql: bool) {
    let fields = vec![(
        "drift",
        serde_json::json!({
            "reference": reference.json(),
            "matched": count(run, Standing::Match),
            "differ": count(run, Standing::Differs),
            "pending": count(run, Standing::Pending),
            "differences": shared(run),
        }),
    )];
    let extra = Extra {
        selection: ctx.selection(),
        fields,
        ..Extra::default()
    };
    match ctx.output {
        OutputMode::Table => {
            // The report file gets the JSON document whatever is printed.
            keep_fleet(run, &extra);
            if sql {
                print_repairs(run, reference);
            } else {
                print_groups(ctx, run, reference);
            }
        }
        _ => print_fleet_with(run, ctx.output, &extra),
    }
}

/// Names for a line: up to five, then how many more.
fn some_names(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = names.iter().take(SHOWN).map(|n| shown(n)).collect();
    if names.len() > SHOWN {
        parts.push(format!("and {} more", names.len() - SHOWN));
    }
    parts.join(", ")
}

fn tenants(n: usize) -> String {
    if n == 1 {
        "1 tenant".into()
    } else {
        format!("{n} tenants")
    }
}

/// The report for people: how many match, then each difference once with
/// the tenants it affects, then those not compared.
fn print_groups(ctx: &Context, run: &FleetRun<TenantDrift>, reference: &Reference) {
    line(format!(
        "reference: {} ({} objects)",
        reference.source,
        reference.objects()
    ));
    if reference.servers_differ() {
        line(
            "the reference differs between servers (another PostgreSQL version prints some definitions otherwise): each tenant is compared with its own server's",
        );
    }
    let failed = run
        .reports
        .iter()
        .filter(|r| r.verdict != Verdict::Ok)
        .collect::<Vec<_>>();
    line(format!(
        "{} match the reference; {} differ; {} pending; {} not read{}",
        count(run, Standing::Match),
        count(run, Standing::Differs),
        count(run, Standing::Pending),
        failed.len(),
        if run.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    ));
    // A part of an extra or missing whole (an extra table's columns and
    // grants) is the whole's line: JSON and --sql list it.
    for group in shared(run)
        .into_iter()
        .filter(|g| g.difference.with.is_none())
    {
        line(format!(
            "{} ({}: {})",
            group.difference.describe(),
            tenants(group.tenants.len()),
            some_names(&group.tenants)
        ));
    }
    let pending: Vec<&str> = run
        .reports
        .iter()
        .filter(|r| r.value.drift == Some(Standing::Pending))
        .map(|r| r.tenant.handle())
        .collect();
    if !pending.is_empty() {
        line(format!(
            "pending, not compared (not at the latest migration; `tenantctl tenant migrate` them): {}",
            some_names(&pending)
        ));
    }
    for r in failed {
        line(format!(
            "not read: {}: {}{}",
            shown(r.tenant.handle()),
            r.verdict.as_str(),
            r.error
                .as_deref()
                .map(|e| format!(": {}", shown(e)))
                .unwrap_or_default()
        ));
    }
    if let Some(selection) = ctx.selection() {
        line(selection.describe());
    }
}

/// The settings the repairs were printed under (see `drift/catalog.sql`),
/// set again before they run, as `pg_dump`'s scripts do: an empty
/// `search_path`, under which every name they hold is qualified (a tenant
/// whose `search_path` puts another schema first would otherwise find
/// another table behind `REFERENCES sites(id)`, and an operator a tenant's
/// user made would run with the privileges of whoever runs the script);
/// function bodies not checked at creation (a SQL function's body names
/// its tables as the function's callers find them). A session setting, not
/// `SET LOCAL`, which would do nothing under psql's autocommit; `tenant
/// sql` clears what a script sets when it ends. `standard_conforming_strings`
/// takes effect for the statements after it only where they are sent one
/// by one (psql): `tenant sql` sends a script as one message, which the
/// server reads whole first, so on a database that sets it off a backslash
/// in a repair's string constant is still read as an escape there.
const SESSION_FOR_REPAIRS: &str = "SET search_path = ''; SET check_function_bodies = false; SET standard_conforming_strings = on;";

/// `--sql`: a script for people to review, one block per drifted tenant.
/// Every line that is not a statement is a comment, and every name in a
/// comment is escaped, so no name can end a comment and start a statement.
fn print_repairs(run: &FleetRun<TenantDrift>, reference: &Reference) {
    line(format!(
        "-- tenantctl tenant drift: repairs towards {}; review each block, then run it with `tenantctl tenant sql <tenant> -f FILE`",
        shown(&reference.source)
    ));
    // In the tenants' handles' order: the same script for the same fleet,
    // whatever order the master's ids give.
    let mut reports: Vec<_> = run.reports.iter().collect();
    reports.sort_by_key(|r| r.tenant.handle());
    for r in reports {
        if r.value.drift != Some(Standing::Differs) {
            continue;
        }
        line(format!(
            "\n-- tenant {} (database {} on server {}): {} difference(s)",
            shown(r.tenant.handle()),
            shown(r.tenant.db_label()),
            shown(r.tenant.server_label()),
            r.value.differences.len()
        ));
        // Only a block with something to run sets the session for it: one
        // with no repair stays comments, which `tenant sql` refuses to run.
        if r.value.differences.iter().any(|d| d.repair.is_some()) {
            line(SESSION_FOR_REPAIRS);
        }
        // Wholes first: a view, sequence or function is made before the
        // grants and defaults that name it. Among each, what is extra goes
        // first: an extra index is dropped before a missing constraint
        // makes one of the same name; an extra schema last of all the
        // extra wholes, once what is in it is gone.
        let mut differences: Vec<&Difference> = r.value.differences.iter().collect();
        differences.sort_by_key(|d| {
            (
                drift::PARTS.contains(&d.kind.as_str()),
                d.change != drift::Change::Extra,
                d.kind == "schema",
            )
        });
        for d in differences {
            match (&d.repair, &d.with) {
                (Some(sql), _) => line(format!("-- {}\n{sql}", shown(&d.describe()))),
                (None, Some(whole)) => line(format!(
                    "-- {} (part of {}: see above)",
                    shown(&d.describe()),
                    shown(whole)
                )),
                (None, None) => line(format!("-- no obvious repair: {}", shown(&d.describe()))),
            };
        }
    }
    let not_compared =
        run.reports.len() - count(run, Standing::Differs) - count(run, Standing::Match);
    if not_compared > 0 {
        line(format!(
            "\n-- {} not compared (pending or not read): see `tenantctl tenant drift` without --sql",
            tenants(not_compared)
        ));
    }
}
