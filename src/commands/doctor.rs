//! `tenantctl doctor`: compare every server with the master, read-only:
//! orphans on each server, databases on a server other than their
//! placement, servers unreachable or not configured, stuck, moving and
//! outdated tenants.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use serde::Serialize;

use crate::commands::args::SessionArgs;
use crate::commands::context::Context;
use crate::companies::Layout;
use crate::config::Migrator;
use crate::dbname::DbName;
use crate::ddl;
use crate::error::Outcome;
use crate::error::render;
use crate::fleet::{self, Silent, Verdict};
use crate::migrations::{self, MigrationSet, Plan};
use crate::moves::{self, MoveRow};
use crate::output::{OutputMode, document, line, print_json, shown, table};
use crate::prisma;
use crate::runner::{ConnFuture, Runner};
use crate::servers::ServerName;
use crate::tenant::{DB_PREFIX, Lifecycle, Tenant};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Databases inspected at once, each on its own connection
    #[arg(long, env = "TENANTCTL_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// At most this many of them on any one server [default: no cap beyond
    /// --concurrency]
    #[arg(long, env = "TENANTCTL_PER_SERVER", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub per_server: Option<u16>,

    // No --fail-fast: a check that stopped early would call the tenants
    // it never looked at unreachable.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What kind of problem a [`Finding`] is: its `kind` in JSON and the
/// `problem` column of the table, by these `snake_case` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OrphanDatabase,
    MissingDatabase,
    DatabaseIsTemplate,
    DatabaseNotAcceptingConnections,
    DatabaseOnOtherServer,
    SharedDatabase,
    InvalidDbName,
    InvalidServer,
    Stuck,
    CreateUnfinished,
    MoveInProgress,
    Behind,
    /// Prisma's lock is held: a migration is being applied right now.
    Migrating,
    MigrationProblem,
    /// A tenant database that could not be read.
    Unreachable,
    ServerUnreachable,
    ServerNotConfigured,
}

impl Kind {
    /// The name JSON and the table give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrphanDatabase => "orphan_database",
            Self::MissingDatabase => "missing_database",
            Self::DatabaseIsTemplate => "database_is_template",
            Self::DatabaseNotAcceptingConnections => "database_not_accepting_connections",
            Self::DatabaseOnOtherServer => "database_on_other_server",
            Self::SharedDatabase => "shared_database",
            Self::InvalidDbName => "invalid_db_name",
            Self::InvalidServer => "invalid_server",
            Self::Stuck => "stuck",
            Self::CreateUnfinished => "create_unfinished",
            Self::MoveInProgress => "move_in_progress",
            Self::Behind => "behind",
            Self::Migrating => "migrating",
            Self::MigrationProblem => "migration_problem",
            Self::Unreachable => "unreachable",
            Self::ServerUnreachable => "server_unreachable",
            Self::ServerNotConfigured => "server_not_configured",
        }
    }
}

/// Something out of order between the server and the master.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// How to name the tenant concerned (slug, else name, else database
    /// name), for findings about a company.
    pub tenant: Option<String>,
    /// The company's id, for findings about a company.
    pub id: Option<String>,
    pub slug: Option<String>,
    pub db_name: Option<String>,
    /// The server the finding is about (the tenant's placement).
    pub server: Option<String>,
    pub detail: String,
}

impl Finding {
    /// A finding about one company.
    fn about(kind: Kind, company: &Tenant, detail: String) -> Self {
        Self {
            kind,
            tenant: Some(company.handle().to_owned()),
            id: Some(company.id.clone()),
            slug: company.slug.clone(),
            db_name: company.db_name_raw.clone(),
            server: Some(company.server_label().to_owned()),
            detail,
        }
    }
}

pub async fn run(args: DoctorArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    for (server, var) in ctx.connector.urls_with_query() {
        crate::output::warn(format_args!(
            "warning: {var} has a query string: an application that builds tenant URLs as ${{{var}}}/${{dbName}} (the seed design does) puts the database name inside the query and connects to another database; leave {var} the bare server root and put the pooler and TLS settings in tenantctl.toml [servers.{server}] (pooler = \"transaction\", sslmode = \"require\", ...)"
        ));
    }
    let migrations = ctx.tenant_migrations().await?;
    let runner = ctx
        .runner
        .with_options(crate::fleet::FleetOptions {
            concurrency: usize::from(args.concurrency),
            per_server: args.per_server.map(usize::from),
            fail_fast: false,
        })
        .with_limits((&args.session).into())
        // Read-only: nothing a changed row could make wrong.
        .without_recheck();
    let (layout, companies, moves, claimed) = runner
        .with_master(|conn, layout, _| {
            Box::pin(async move {
                // Under row-level security a company we cannot see would
                // pass for an orphan, its real database offered up for
                // deletion, and "no problems" would vouch for a fleet we
                // only saw part of.
                if let Some(refusal) = layout
                    .visibility
                    .hiding(&layout.label, "to check the fleet (doctor)")
                {
                    return Err(refusal.into());
                }
                let companies = layout.list(conn).await?;
                let moves = moves::list(conn, &layout).await?;
                let claimed = crate::claims::all(conn).await?;
                Ok((layout, companies, moves, claimed))
            })
        })
        .await?;
    let on_servers = list_servers(ctx, &runner).await;

    let (mut findings, to_check, mut unnamed) =
        compare(ctx, &layout, &companies, &on_servers, &moves);
    // A create that did not finish: its database (if it was made) is the
    // claim's, not an orphan, and the claim itself is what to act on.
    unnamed.retain(|(server, db)| {
        !claimed
            .iter()
            .any(|c| &c.server == server && c.db.as_str() == db)
    });
    findings.extend(claimed.iter().map(unfinished_create));
    // A view (or a materialized or foreign table) may leave companies out
    // by its own definition: a database no row of it names may still be a
    // company's, so none is called an orphan.
    let orphans_unchecked = (!layout.visibility.is_table()).then(|| {
        format!(
            "orphan databases were not looked for: the master's companies table {} is not a table (a view, say), which may leave companies out; configure the table itself in tenantctl.toml to have them looked for",
            shown(&layout.label)
        )
    });
    if orphans_unchecked.is_none() {
        findings.extend(find_orphans(&runner, unnamed, &migrations).await);
    }
    findings.extend(match &ctx.migrator {
        Migrator::Sqlx { .. } => check_migrations(&runner, to_check, migrations).await,
        Migrator::Prisma {
            migrations, schema, ..
        } => check_prisma(&runner, to_check, migrations, schema).await?,
        // An application command's state is not tenantctl's to read.
        Migrator::Command(_) => Vec::new(),
    });
    print(ctx, &companies, &findings, orphans_unchecked.as_deref());
    Ok(if findings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// A company whose create stopped before it was recorded in the
/// application's table (see [`crate::claims`]).
fn unfinished_create(claim: &crate::claims::Claim) -> Finding {
    let slug = claim.slug.as_str();
    Finding {
        kind: Kind::CreateUnfinished,
        tenant: Some(slug.to_owned()),
        id: None,
        slug: Some(slug.to_owned()),
        db_name: Some(claim.db.as_str().to_owned()),
        server: Some(claim.server.as_str().to_owned()),
        detail: format!(
            "its create stopped ({}{}) before the company was recorded in the master, so the application does not see it: `tenantctl tenant create {slug}` finishes it, `tenantctl tenant drop --unfinished {slug}` gives it up and drops its database",
            claim.lifecycle,
            claim
                .last_error
                .as_deref()
                .map(|e| format!(": {}", shown(e)))
                .unwrap_or_default()
        ),
    }
}

/// What one server holds: its databases, or why they could not be listed
/// (not configured, unreachable).
type Listing = Result<BTreeMap<String, ddl::Listed>, String>;

/// Every known server's database list, read through the runner's
/// connection to each server (see [`Runner::each_server`]: `pg_database`
/// is shared by every database of a server, and on the master's server
/// the master's connection reads it when CONNECT on `postgres` is
/// revoked).
async fn list_servers(ctx: &Context, runner: &Runner) -> BTreeMap<ServerName, Listing> {
    let mut listed = BTreeMap::new();
    let mut configured = Vec::new();
    for server in ctx.connector.servers() {
        if server.address.is_none() {
            let why = ctx
                .connector
                .check_server(&server.name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            listed.insert(server.name, Err(why));
        } else {
            configured.push(server.name);
        }
    }
    let answers = runner
        .each_server(&configured, |_, conn, _| {
            Box::pin(async move { ddl::list(conn).await })
        })
        .await;
    for (name, listing) in configured.into_iter().zip(answers) {
        let listing = listing
            .map(|dbs| dbs.into_iter().map(|d| (d.name.clone(), d)).collect())
            .map_err(|e| render(&e));
        listed.insert(name, listing);
    }
    listed
}

/// Names a move owns on each server (the parked source, the copy), which
/// are neither orphans nor databases on the wrong server.
fn owned_by_moves(moves: &[MoveRow]) -> BTreeSet<(&str, &str)> {
    let mut owned = BTreeSet::new();
    for m in moves {
        owned.insert((m.from_server.as_str(), m.parked_name.as_str()));
        owned.insert((m.to_server.as_str(), m.incoming_name.as_str()));
        if m.step.before_switch() {
            owned.insert((m.to_server.as_str(), m.db_name.as_str()));
        }
    }
    owned
}

/// Findings from the master and the servers' database lists alone, the
/// tenants whose databases are there to look into, and the databases on
/// each server that no company names.
fn compare(
    ctx: &Context,
    layout: &Layout,
    companies: &[Tenant],
    on_servers: &BTreeMap<ServerName, Listing>,
    moves: &[MoveRow],
) -> (Vec<Finding>, Vec<Tenant>, Vec<(ServerName, String)>) {
    let mut findings = Vec::new();
    for (server, listing) in on_servers {
        if let Err(why) = listing {
            findings.push(Finding {
                kind: if ctx.connector.check_server(server).is_err() {
                    Kind::ServerNotConfigured
                } else {
                    Kind::ServerUnreachable
                },
                tenant: None,
                id: None,
                slug: None,
                db_name: None,
                server: Some(server.to_string()),
                detail: why.clone(),
            });
        }
    }
    let owned = owned_by_moves(moves);
    let named: BTreeSet<&str> = companies
        .iter()
        .filter_map(|c| c.db_name_raw.as_deref())
        .collect();
    let mut unnamed = Vec::new();
    for (server, listing) in on_servers {
        let Ok(databases) = listing else { continue };
        for (db, listed) in databases {
            // A template no company names is a template (template0,
            // template1, an extension's), not an orphan.
            // A template under a build's name was sealed by a build that
            // died before renaming it: half-built, reported below.
            let building = crate::template::SetHash::from_name(db.as_str())
                .is_some_and(|h| h.template().as_str() != db.as_str());
            let ours = (listed.template && !building)
                || db.as_str() == ctx.connector.master_db().as_str()
                || db.as_str() == "postgres"
                || named.contains(db.as_str())
                || owned.contains(&(server.as_str(), db.as_str()));
            if !ours {
                unnamed.push((server.clone(), db.clone()));
            }
        }
    }
    findings.extend(shared_databases(ctx, companies));
    let mut to_check = Vec::new();
    for company in companies {
        let (found, check) = compare_company(ctx, layout, company, on_servers, moves, &owned);
        findings.extend(found);
        if check {
            to_check.push(company.clone());
        }
    }
    (findings, to_check, unnamed)
}

/// One finding per company whose database another company's row also
/// names on the same server: dropping or moving either would take the
/// other's data, so tenantctl refuses both until the master is fixed.
fn shared_databases(ctx: &Context, companies: &[Tenant]) -> Vec<Finding> {
    let mut marked = companies.to_vec();
    crate::tenant::mark_shared(companies, &mut marked, |a, b| ctx.same_place(a, b));
    marked
        .iter()
        .filter_map(|company| {
            let sharing = company.sharing.as_ref()?;
            Some(Finding::about(
                Kind::SharedDatabase,
                company,
                format!(
                    "its database is also named by {}; each company needs a database of its own (drop, move and revert refuse it until the master is fixed)",
                    sharing.others.join(", ")
                ),
            ))
        })
        .collect()
}

/// What is wrong with one company, and whether its database is there to
/// look into.
fn compare_company(
    ctx: &Context,
    layout: &Layout,
    company: &Tenant,
    on_servers: &BTreeMap<ServerName, Listing>,
    moves: &[MoveRow],
    owned: &BTreeSet<(&str, &str)>,
) -> (Vec<Finding>, bool) {
    let mut findings = Vec::new();
    let finding = |kind, detail: String| Finding::about(kind, company, detail);
    findings.extend(stuck(company));
    if company.has_status(Lifecycle::Dropped) {
        findings.extend(dropped_but_seen(layout, company, on_servers));
        return (findings, false);
    }
    if let Some(to) = &company.moving_to {
        let step = moves
            .iter()
            .find(|m| m.company_id == company.id)
            .map_or("?", |m| m.step.as_str());
        findings.push(finding(
            Kind::MoveInProgress,
            format!(
                "being moved to server {to} (step {step}); `tenantctl tenant move {} --to {to}` finishes it, --abort undoes it",
                company.handle()
            ),
        ));
        return (findings, false);
    }
    let (server, db) = match placement(ctx, company) {
        Ok(placed) => placed,
        Err(found) => {
            findings.push(*found);
            return (findings, false);
        }
    };
    let Some(Ok(here)) = on_servers.get(server) else {
        // Unreachable: reported once, for the server.
        return (findings, false);
    };
    let elsewhere = elsewhere(on_servers, server, db, owned);
    let listed = here.get(db.as_str());
    let present = listed.is_some();
    if !elsewhere.is_empty() {
        findings.push(finding(
            Kind::DatabaseOnOtherServer,
            if present {
                format!(
                    "a database of this name is also on server {} (a copy left behind?)",
                    elsewhere.join(", ")
                )
            } else {
                format!(
                    "not on server {server}, where the master places it, but on server {}",
                    elsewhere.join(", ")
                )
            },
        ));
    } else if !present {
        findings.push(finding(
            Kind::MissingDatabase,
            format!("the company's database is not on server {server}"),
        ));
    }
    if let Some(listed) = listed {
        findings.extend(
            state_findings(db, listed)
                .into_iter()
                .map(|(kind, detail)| finding(kind, detail)),
        );
    }
    let reachable = listed.is_some_and(|l| l.allows_connections);
    // Only tenants `migrate --all` would reach can be behind; an
    // application's own states (SUSPENDED) are its business.
    (findings, reachable && company.has_status(Lifecycle::Active))
}

/// A company stuck in its create (provisioning or failed), and how to
/// finish it.
fn stuck(company: &Tenant) -> Option<Finding> {
    if !(company.has_status(Lifecycle::Provisioning) || company.has_status(Lifecycle::Failed)) {
        return None;
    }
    let detail = match &company.slug {
        Some(slug) => format!(
            "status {}; `tenantctl tenant create {}` finishes it",
            company.status_label(),
            shown(slug)
        ),
        // No slug to give back to create: it finds the row by the
        // database it names.
        None => format!(
            "status {}; `tenantctl tenant create resume --db-name {}` finishes it (the table keeps no slug, so any slug will do)",
            company.status_label(),
            company.db_label()
        ),
    };
    Some(Finding::about(Kind::Stuck, company, detail))
}

/// The server and database a company's row names, or the finding that
/// says why they cannot be used.
fn placement<'t>(
    ctx: &Context,
    company: &'t Tenant,
) -> Result<(&'t ServerName, &'t DbName), Box<Finding>> {
    let finding = |kind, detail: String| Box::new(Finding::about(kind, company, detail));
    let server = company
        .server()
        .map_err(|err| finding(Kind::InvalidServer, err.to_string()))?;
    if let Err(err) = ctx.connector.check_server(server) {
        return Err(finding(Kind::ServerNotConfigured, err.to_string()));
    }
    match &company.db {
        Err(err) => Err(finding(Kind::InvalidDbName, err.clone())),
        Ok(db) if ctx.connector.check_tenant_db(db).is_err() => Err(finding(
            Kind::InvalidDbName,
            "names the master database, which is never a tenant database".into(),
        )),
        Ok(db) => Ok((server, db)),
    }
}

/// A company tenantctl recorded as dropped, whose database is gone, but
/// whose row the application goes by still takes it for a live one: what
/// the application's users will hit.
fn dropped_but_seen(
    layout: &Layout,
    company: &Tenant,
    on_servers: &BTreeMap<ServerName, Listing>,
) -> Option<Finding> {
    let seen = app_sees(layout, company)?;
    let (Ok(server), Ok(db)) = (company.server(), &company.db) else {
        return None;
    };
    let Some(Ok(here)) = on_servers.get(server) else {
        return None;
    };
    (!here.contains_key(db.as_str())).then(|| {
        Finding::about(
            Kind::MissingDatabase,
            company,
            format!(
                "the company's database is not on server {server}, and tenantctl recorded it dropped, but the application still sees the company ({seen}): delete its row, or set its status to one the application treats as inactive"
            ),
        )
    })
}

/// Why the application takes this company for a live one, if it does:
/// its status column says active (through the mapping), or the table has
/// no status column at all.
fn app_sees(layout: &Layout, company: &Tenant) -> Option<String> {
    if layout.status.is_none() {
        return Some(format!("{} has no status column", shown(&layout.label)));
    }
    let value = company.app_status.as_deref()?;
    (layout.lifecycle_of(value) == Some(Lifecycle::Active))
        .then(|| format!("its status is {}", shown(value)))
}

/// The other servers that hold a database of this name (not one a move
/// owns there).
fn elsewhere<'a>(
    on_servers: &'a BTreeMap<ServerName, Listing>,
    server: &ServerName,
    db: &DbName,
    owned: &BTreeSet<(&str, &str)>,
) -> Vec<&'a str> {
    on_servers
        .iter()
        .filter(|(other, listing)| {
            *other != server
                && listing
                    .as_ref()
                    .is_ok_and(|names| names.contains_key(db.as_str()))
                && !owned.contains(&(other.as_str(), db.as_str()))
        })
        .map(|(other, _)| other.as_str())
        .collect()
}

/// A company's database that is there, but not as a tenant database
/// should be: each state is its own finding, with what to do, rather than
/// "missing" or "unreachable".
fn state_findings(db: &DbName, listed: &ddl::Listed) -> Vec<(Kind, String)> {
    let mut found = Vec::new();
    if listed.template {
        found.push((
            Kind::DatabaseIsTemplate,
            format!(
                "the company's database is marked as a template (IS_TEMPLATE): anyone allowed to create databases can copy it, and DROP DATABASE refuses it; `ALTER DATABASE {} IS_TEMPLATE false` makes it an ordinary database again",
                db.quoted()
            ),
        ));
    }
    if !listed.allows_connections {
        found.push((
            Kind::DatabaseNotAcceptingConnections,
            format!(
                "the company's database does not accept connections (ALLOW_CONNECTIONS false): no command can reach it; `ALTER DATABASE {} ALLOW_CONNECTIONS true` opens it again",
                db.quoted()
            ),
        ));
    }
    found
}

/// Databases no company names that look like tenant databases: named with
/// the tenant prefix, or holding migrations from the tenant set, same
/// version and checksum (databases created with `--db-name` and then
/// forgotten). A database we cannot read is somebody else's, and not
/// reported unless its name has the prefix; one that holds the master's
/// migrations is another master (a staging copy, say), not a tenant.
async fn find_orphans(
    runner: &Runner,
    unnamed: Vec<(ServerName, String)>,
    migrations: &MigrationSet,
) -> Vec<Finding> {
    let mut found: Vec<(ServerName, String, &str)> = Vec::new();
    let mut to_read = Vec::new();
    for (server, name) in unnamed {
        if name.starts_with(crate::commands::tenant::drift::SCRATCH_PREFIX) {
            found.push((
                server,
                name,
                "a scratch database `tenant drift` builds its reference in (a run in progress, or one that was killed and left it: then drop it)",
            ));
        } else if crate::template::SetHash::from_name(&name).is_some() {
            // Sealed templates are templates (skipped above); this one is not.
            found.push((
                server,
                name,
                "a template database `tenant create` was building and never sealed and renamed (a build running now, or one that died and left it half-built: `tenantctl template prune` drops it)",
            ));
        } else if name.starts_with(DB_PREFIX) {
            found.push((server, name, "named like a tenant database"));
        } else if let Ok(db) = DbName::parse(&name) {
            to_read.push((server, db));
        }
    }
    let answers = runner
        .each_database(&to_read, |conn, _| {
            Box::pin(async move {
                let rows = migrations::read_applied(conn).await;
                let is_master = migrations::holds_master(conn).await;
                Ok((rows, is_master))
            })
        })
        .await;
    let mut timed_out = Vec::new();
    for ((server, db), answer) in to_read.into_iter().zip(answers) {
        // A read that --lock-timeout or --statement-timeout cut short says
        // nothing of whose database it is: reported, never taken for
        // somebody else's.
        if let Some(err) = cut_short(&answer) {
            timed_out.push(Finding {
                kind: Kind::Unreachable,
                tenant: None,
                id: None,
                slug: None,
                db_name: Some(db.as_str().to_owned()),
                server: Some(server.to_string()),
                detail: format!(
                    "no company names it, and it could not be read to tell whether it holds tenant migrations: {err}"
                ),
            });
            continue;
        }
        let Ok((Ok(Some(rows)), is_master)) = answer else {
            continue;
        };
        let is_master = is_master.unwrap_or(true);
        let has_tenant_migrations = rows.iter().any(|row| migrations.recorded(row));
        if has_tenant_migrations && !is_master {
            found.push((server, db.as_str().to_owned(), "holds tenant migrations"));
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|(server, name, why)| Finding {
            kind: Kind::OrphanDatabase,
            tenant: None,
            id: None,
            slug: None,
            db_name: Some(name),
            server: Some(server.to_string()),
            detail: format!("{why}, but no company names it"),
        })
        .chain(timed_out)
        .collect()
}

/// The error of an orphan check's read that a session limit cut short
/// (`lock_timeout`, `statement_timeout`), if it was.
fn cut_short<T>(
    answer: &anyhow::Result<(anyhow::Result<T>, anyhow::Result<bool>)>,
) -> Option<String> {
    let timed_out = |err: &anyhow::Error| {
        use crate::error::sqlstate;
        sqlstate::is(err, sqlstate::LOCK_NOT_AVAILABLE)
            || sqlstate::is(err, sqlstate::QUERY_CANCELED)
    };
    let errors = match answer {
        Err(err) => vec![err],
        Ok((rows, is_master)) => [rows.as_ref().err(), is_master.as_ref().err()]
            .into_iter()
            .flatten()
            .collect(),
    };
    errors.into_iter().find(|err| timed_out(err)).map(render)
}

/// How far behind each existing tenant database is, and what is wrong with
/// its recorded migrations.
async fn check_migrations(
    runner: &Runner,
    to_check: Vec<Tenant>,
    migrations: std::sync::Arc<MigrationSet>,
) -> Vec<Finding> {
    let checked = on_each(runner, to_check, move |conn| {
        let migrations = migrations.clone();
        Box::pin(async move { migrations::plan(conn, &migrations).await })
    })
    .await;
    checked.reports.iter().flat_map(findings_of).collect()
}

/// Runs `op` on each tenant's database with the runner's limits, quietly:
/// doctor prints findings, not a fleet report.
async fn on_each<T, F>(runner: &Runner, tenants: Vec<Tenant>, op: F) -> fleet::FleetRun<T>
where
    T: Default + Send + 'static,
    F: for<'c> Fn(&'c mut sqlx::postgres::PgConnection) -> ConnFuture<'c, T>
        + Send
        + Sync
        + 'static,
{
    let op = std::sync::Arc::new(op);
    let each = runner.clone();
    runner
        .each_tenant(tenants, &Silent, move |tenant| {
            let (runner, op) = (each.clone(), op.clone());
            async move {
                fleet::attempt(
                    async {
                        let (server, db) = (tenant.server()?, tenant.db_name()?);
                        runner
                            .with_tenant_read(server, db, |conn, _| op(conn))
                            .await
                    }
                    .await,
                )
            }
        })
        .await
}

/// [`check_migrations`] for Prisma's migrations: pending ones, failed
/// ones (which stop a deploy), a non-empty schema Prisma would refuse.
async fn check_prisma(
    runner: &Runner,
    to_check: Vec<Tenant>,
    dir: &std::path::Path,
    schema: &str,
) -> anyhow::Result<Vec<Finding>> {
    let folder = std::sync::Arc::new(prisma::Folder::read(dir).map_err(crate::error::Usage)?);
    let schema: std::sync::Arc<str> = schema.into();
    let checked = on_each(runner, to_check, move |conn| {
        let (folder, schema) = (folder.clone(), schema.clone());
        Box::pin(async move { prisma::state(conn, &folder, &schema).await })
    })
    .await;
    Ok(checked
        .reports
        .iter()
        .flat_map(|report| {
            let finding = |kind, detail: String| Finding::about(kind, &report.tenant, detail);
            if report.verdict != Verdict::Ok {
                return vec![finding(
                    Kind::Unreachable,
                    report.error.clone().unwrap_or_default(),
                )];
            }
            let state = &report.value;
            let mut findings = Vec::new();
            if !state.pending.is_empty() {
                findings.push(finding(
                    Kind::Behind,
                    format!(
                        "{} Prisma migration(s) pending: {}",
                        state.pending.len(),
                        state.pending.join(", ")
                    ),
                ));
            }
            if !state.in_progress.is_empty() {
                findings.push(finding(
                    Kind::Migrating,
                    format!(
                        "Prisma migration(s) being applied right now (Prisma's lock is held): {}",
                        state.in_progress.join(", ")
                    ),
                ));
            }
            if let Err(problem) = state.check() {
                findings.push(finding(Kind::MigrationProblem, problem.to_string()));
            }
            findings
        })
        .collect())
}

/// What one tenant's migration state says is wrong.
fn findings_of(report: &fleet::Report<Plan>) -> Vec<Finding> {
    let finding = |kind, detail: String| Finding::about(kind, &report.tenant, detail);
    let plan = &report.value;
    if report.verdict != Verdict::Ok {
        return vec![finding(
            Kind::Unreachable,
            report.error.clone().unwrap_or_default(),
        )];
    }
    let mut findings = Vec::new();
    if !plan.pending.is_empty() {
        findings.push(finding(
            Kind::Behind,
            format!(
                "{} migration(s) pending, latest applied {}",
                plan.pending.len(),
                plan.applied
                    .iter()
                    .max()
                    .map_or_else(|| "none".into(), ToString::to_string)
            ),
        ));
    }
    for problem in &plan.problems {
        findings.push(finding(Kind::MigrationProblem, problem.to_string()));
    }
    findings
}

fn print(
    ctx: &Context,
    companies: &[Tenant],
    findings: &[Finding],
    orphans_unchecked: Option<&str>,
) {
    let mut summary: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        *summary.entry(f.kind.as_str()).or_default() += 1;
    }
    let value = serde_json::json!({
        "tenants": companies.len(),
        "findings": findings,
        "summary": summary,
        "orphans_checked": orphans_unchecked.is_none(),
    });
    document(ctx.output, &value);
    match ctx.output {
        OutputMode::Jsonl => print_json(ctx.output, &value),
        OutputMode::Json => {}
        OutputMode::Table | OutputMode::Junit => {
            if let Some(why) = orphans_unchecked {
                crate::output::warn(format_args!("note: {why}"));
            }
            if findings.is_empty() {
                line(format_args!(
                    "no problems: {} companies, every database present and up to date",
                    companies.len()
                ));
            } else {
                let mut out = table(["problem", "tenant", "id", "database", "server", "detail"]);
                for f in findings {
                    out.add_row([
                        f.kind.as_str().to_owned(),
                        shown(f.tenant.as_deref().unwrap_or_default()),
                        shown(f.id.as_deref().unwrap_or_default()),
                        f.db_name
                            .as_deref()
                            .map_or_else(|| "NULL".to_owned(), shown),
                        shown(f.server.as_deref().unwrap_or_default()),
                        shown(&f.detail),
                    ]);
                }
                line(out);
                line(format_args!(
                    "{} problem(s) across {} companies",
                    findings.len(),
                    companies.len()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn each_kind_serializes_to_the_name_the_table_shows() {
        let kinds = [
            Kind::OrphanDatabase,
            Kind::MissingDatabase,
            Kind::DatabaseIsTemplate,
            Kind::DatabaseNotAcceptingConnections,
            Kind::DatabaseOnOtherServer,
            Kind::SharedDatabase,
            Kind::InvalidDbName,
            Kind::InvalidServer,
            Kind::Stuck,
            Kind::CreateUnfinished,
            Kind::MoveInProgress,
            Kind::Behind,
            Kind::Migrating,
            Kind::MigrationProblem,
            Kind::Unreachable,
            Kind::ServerUnreachable,
            Kind::ServerNotConfigured,
        ];
        for kind in kinds {
            assert_eq!(
                serde_json::to_value(kind).expect("serializes"),
                serde_json::json!(kind.as_str())
            );
        }
    }
}
