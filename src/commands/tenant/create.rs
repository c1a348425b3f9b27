//! `tenantctl tenant create <slug>`: record the company, create its database,
//! migrate it, mark it active. Rerunning it for a tenant left in
//! `provisioning` or `failed` finishes the job, on the server its row
//! records (the server is recorded before the database is created).
//!
//! `tenant create --from-file FILE` does the same for each line of a file
//! (read and checked whole first: see [`super::create_file`]), each line
//! through the very claim, provisioning and finish a single create runs
//! ([`create_on`]), on a master connection of its own, its locks given
//! back when it ends, under the fleet's limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::claims::{self, Claim};
use crate::commands::args::{FleetArgs, SessionArgs};
use crate::commands::context::Context;
use crate::commands::tenant::create_file::{self, FileLine, TenantFile};
use crate::commands::tenant::exec::{Executed, run_app_command};
use crate::commands::tenant::provision::{
    Applied, TenantSchema, apply_schema, clone_template, give_resumed_state,
};
use crate::companies::{self, Layout, NewCompany};
use crate::config::{AppCommand, MigratorKind};
use crate::connect::SessionLimits;
use crate::dbname::DbName;
use crate::ddl;
use crate::error::{Outcome, UsageError};
use crate::fleet::{Observer, Report};
use crate::output::progress::Progress;
use crate::output::report::{TenantValue, print_fleet};
use crate::output::{OutputMode, document, join_versions, line, print_json, shown, warn};
use crate::prisma;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Slug, Tenant};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Lowercase letters, digits and hyphens, starting with a letter or digit
    #[arg(required_unless_present = "from_file")]
    pub slug: Option<String>,

    /// Display name [default: the slug]
    #[arg(long)]
    pub name: Option<String>,

    /// Database name [default: tenant_<slug> with hyphens as underscores]
    #[arg(long, value_name = "NAME")]
    pub db_name: Option<String>,

    /// A value for a column the master's companies table requires and
    /// tenantctl cannot fill (repeatable), e.g. --column plan=pro
    #[arg(long = "column", value_name = "NAME=VALUE", value_parser = parse_column)]
    pub columns: Vec<(String, String)>,

    /// The server to create its database on [default: of the servers that
    /// accept new tenants, the one with the fewest placed]
    #[arg(long, value_name = "NAME")]
    pub server: Option<ServerName>,

    /// Migrate the new database in place instead of cloning the
    /// migration set's template database (built on first use)
    #[arg(long)]
    pub no_template: bool,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Create every tenant of FILE, one a line: a CSV whose header names
    /// the fields, or JSON Lines (by the extension .csv or .jsonl, else by
    /// the content; `-` reads standard input). Fields: slug, and optionally
    /// name, `db_name`, server, and values for columns of the companies table
    /// by their names. Every line is checked before anything is created; a
    /// rerun finishes what was left and reports what is done as present
    #[arg(long, value_name = "FILE", conflicts_with_all = ["slug", "name", "db_name", "columns", "server"])]
    pub from_file: Option<PathBuf>,

    #[command(flatten, next_help_heading = "With --from-file")]
    pub fleet: FleetArgs,
}

fn parse_column(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| "use NAME=VALUE".to_owned())
}

#[derive(Serialize)]
struct Created<'a> {
    /// What other commands take to name this tenant (slug, else name,
    /// else database name).
    handle: &'a str,
    id: &'a str,
    slug: Option<&'a str>,
    name: Option<&'a str>,
    db_name: Option<&'a str>,
    server: &'a str,
    status: Lifecycle,
    resumed: bool,
    /// Another `tenant create` of the same slug ran at the same time and
    /// did the work; this one waited for it and reports its result.
    concurrent: bool,
    applied: &'a [i64],
    /// Who migrated the new database (`[tenants.migrator]` kind).
    migrator: &'a str,
    /// The application's migrations applied (prisma).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    applied_migrations: &'a [String],
    /// The template database it was cloned from (absent: migrated in
    /// place).
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<&'a str>,
}

/// What a create saw of its slug before it waited for the slug's lock.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// A company row.
    row: bool,
    /// A claim, in this state.
    claim: Option<Lifecycle>,
}

/// How this run came to the company row.
struct Claimed {
    tenant: Tenant,
    resumed: bool,
    concurrent: bool,
    /// Already active, as the line of a `--from-file` rerun asks: nothing
    /// to do.
    present: bool,
    /// Where the table cannot say "not ready": the claim the company
    /// waits in until its database is, and no row yet.
    claim: Option<Claim>,
}

impl Claimed {
    /// What the run did for it, as reported.
    fn result(&self) -> &'static str {
        if self.concurrent {
            "concurrent"
        } else if self.present {
            "present"
        } else if self.resumed {
            "finished"
        } else {
            "created"
        }
    }
}

/// One tenant to create: the command line's, or a line of `--from-file`.
#[derive(Debug, Clone)]
struct Request {
    slug: Slug,
    name: Option<String>,
    db: Option<DbName>,
    server: Option<ServerName>,
    columns: Vec<(String, String)>,
    /// Where a new company goes when no server is asked for: chosen for
    /// every line of a file up front, so that they spread (each line
    /// choosing the least placed server for itself at once would put
    /// them all on the same one). `None`: the least placed, now.
    placement: Option<ServerName>,
    /// An active company that already is what this asks for is reported
    /// present instead of refused (a rerun of a file).
    present_ok: bool,
}

pub async fn run(args: CreateArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    if args.no_template {
        ctx.templates.turn_off();
    }
    if let Some(file) = &args.from_file {
        return run_file(&args, file, ctx).await;
    }
    if ctx.output == OutputMode::Junit {
        return Err(UsageError(
            "--output junit reports fleet runs: use it with --from-file, or --output json for one tenant".into(),
        )
        .into());
    }
    let slug = args.slug.as_deref().unwrap_or_default();
    let slug = Slug::parse(slug).map_err(crate::error::Usage::of)?;
    let requested_db = args
        .db_name
        .as_deref()
        .map(DbName::parse)
        .transpose()
        .map_err(|e| UsageError(format!("--db-name: {e}")))?;
    if let Some(db) = &requested_db
        && crate::dbname::is_tenantctls_own(db.as_str())
    {
        return Err(UsageError(format!(
            "--db-name: {db} is named like tenantctl's own databases (templates, drift's scratch databases), which commands would refuse or drop as such; pick another name"
        ))
        .into());
    }
    if requested_db.as_ref() == Some(ctx.connector.master_db()) {
        return Err(UsageError(format!(
            "--db-name: {} is the master database",
            ctx.connector.master_db()
        ))
        .into());
    }
    let request = Request {
        slug,
        name: args.name,
        db: requested_db,
        server: args.server,
        columns: args.columns,
        placement: None,
        present_ok: false,
    };
    let migrations = TenantSchema::of(ctx).await?;
    let limits = SessionLimits::from(&args.session);
    let (claimed, applied) = create_one(ctx, &request, &migrations, &limits).await?;
    print(ctx, &claimed, &applied);
    Ok(Outcome::Success)
}

/// One tenant's whole create, on a master connection of its own: claim,
/// provision, finish, and the slug's and database's locks given back.
async fn create_one(
    ctx: &Context,
    request: &Request,
    migrations: &TenantSchema,
    limits: &SessionLimits,
) -> anyhow::Result<(Claimed, Applied)> {
    ctx.runner
        .with_master(|conn, layout, _| {
            Box::pin(async move {
                let created = create_on(ctx, request, conn, &layout, migrations, limits).await;
                // The locks are given back whatever happened, and the
                // connection committed (behind a transaction-mode pooler the
                // row and its status live in its transaction): a failed
                // provisioning must stay recorded as failed.
                let unlocked = companies::unlock_all(conn).await;
                let created = created?;
                unlocked?;
                Ok(created)
            })
        })
        .await
}

/// Claims the company on the master connection, holding its slug's lock,
/// and provisions its database unless a concurrent create did.
async fn create_on(
    ctx: &Context,
    request: &Request,
    master_conn: &mut PgConnection,
    layout: &Layout,
    migrations: &TenantSchema,
    limits: &SessionLimits,
) -> anyhow::Result<(Claimed, Applied)> {
    let slug = &request.slug;
    let key_db = request.db.clone().unwrap_or_else(|| slug.default_db_name());
    let before = layout
        .find_for_create(&mut *master_conn, slug, Some(&key_db))
        .await?;
    let claimed_before = if layout.keeps_claims() {
        claims::find(
            &mut *master_conn,
            Some(slug.as_str()),
            Some(key_db.as_str()),
        )
        .await?
    } else {
        None
    };
    // Held until this connection closes: a second `create` of the same slug
    // waits here for the first to finish, then finds its row.
    companies::lock_slug(&mut *master_conn, slug).await?;
    let master = Master {
        conn: &mut *master_conn,
        layout,
    };
    // What this run saw before it waited for the slug's lock: whatever
    // changed meanwhile was a concurrent create of the same slug.
    let seen = Seen {
        row: before.is_some(),
        claim: claimed_before.map(|c| c.lifecycle),
    };
    let mut claimed = claim(ctx, master, request, seen).await;
    // The claimed row is kept before the database is made, so a create
    // killed after this point is resumed by the next run, whatever the
    // pooler in front of the master.
    if claimed.is_ok()
        && let Err(err) = ctx.connector.checkpoint(&mut *master_conn).await
    {
        claimed = Err(err);
    }
    let mut applied = Applied::default();
    let finished = match &claimed {
        Ok(claimed) if !claimed.concurrent && !claimed.present => {
            let (tenant, conn) = (&claimed.tenant, &mut *master_conn);
            let provisioned = provision(ctx, conn, tenant, migrations, limits, &mut applied).await;
            let master = Master {
                conn: &mut *master_conn,
                layout,
            };
            match &claimed.claim {
                Some(claim) => finish_claim(master, claim, slug, provisioned)
                    .await
                    .map(Some),
                None => finish(ctx, master, &claimed.tenant, slug, provisioned)
                    .await
                    .map(|()| None),
            }
        }
        // Nothing to provision: done by a concurrent run, already
        // present, or not claimed.
        _ => Ok(None),
    };
    let mut claimed = claimed?;
    if let Some(recorded) = finished? {
        claimed.tenant = recorded;
    }
    Ok((claimed, applied))
}

/// The master connection and how its companies table is laid out.
struct Master<'a> {
    conn: &'a mut PgConnection,
    layout: &'a Layout,
}

/// The server a new company goes on and its database's name, free there
/// and in the master, with the name's lock taken.
async fn place(
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    request: &Request,
) -> anyhow::Result<(ServerName, DbName)> {
    let (slug, requested_db) = (&request.slug, request.db.clone());
    let placed = match (&request.server, &request.placement) {
        (Some(server), _) | (None, Some(server)) => {
            ctx.connector.check_server(server)?;
            server.clone()
        }
        (None, None) => least_placed(ctx, &layout.list(master_conn).await?)?,
    };
    let master = &mut *master_conn;
    // The master's own connection sees the server's catalog when the
    // master lives there (one connection fewer per create).
    let db = if ctx.connector.master_stands_for(&placed) && !master.is_in_transaction() {
        free_on(master, layout, None, slug, requested_db).await?
    } else {
        ctx.runner
            .with_maintenance(&placed, |server, _| {
                Box::pin(free_on(master, layout, Some(server), slug, requested_db))
            })
            .await?
    };
    // Held with the slug's until this connection is released, so a `drop`
    // of a tenant recorded with this database waits for the provisioning.
    companies::lock_db(master_conn, db.as_str()).await?;
    // Checked again under the lock: another create (of another slug) that
    // chose this name before us has recorded it by now.
    if let Some(owner) = layout.find_by_db(master_conn, &db).await? {
        anyhow::bail!(
            "database {db} already belongs to tenant {} (recorded by a create running at the same time); pick another --db-name",
            shown(owner.handle())
        );
    }
    refuse_taken(master_conn, layout, &[("database name", db.as_str())]).await?;
    Ok((placed, db))
}

/// Finds or records the company row this run works on.
async fn claim(
    ctx: &Context,
    master: Master<'_>,
    request: &Request,
    seen: Seen,
) -> anyhow::Result<Claimed> {
    let Master {
        conn: master_conn,
        layout,
    } = master;
    let slug = &request.slug;
    let key_db = request.db.clone().unwrap_or_else(|| slug.default_db_name());
    if let Some(existing) = layout
        .find_for_create(master_conn, slug, Some(&key_db))
        .await?
    {
        return resume_row(ctx, master_conn, layout, existing, request, !seen.row).await;
    }
    if layout.keeps_claims()
        && let Some(found) =
            claims::find(master_conn, Some(slug.as_str()), Some(key_db.as_str())).await?
    {
        return resume_claim(
            ctx,
            master_conn,
            layout,
            found,
            request,
            seen.claim != Some(Lifecycle::Failed),
        )
        .await;
    }
    let mut keys = vec![("slug", slug.as_str())];
    if let Some(name) = request.name.as_deref() {
        keys.push(("--name", name));
    }
    refuse_taken(master_conn, layout, &keys).await?;
    let (placed, db) = place(ctx, master_conn, layout, request).await?;
    let name = request.name.as_deref().unwrap_or(slug.as_str());
    let new = NewCompany {
        slug,
        server: &placed,
        name,
        db: &db,
        extra: &request.columns,
    };
    if layout.keeps_claims() {
        return claim_new(master_conn, layout, &new).await;
    }
    let tenant = layout.insert(master_conn, &new).await?;
    Ok(Claimed {
        tenant,
        resumed: false,
        concurrent: false,
        present: false,
        claim: None,
    })
}

/// Refuses a new tenant whose slug, --name or database name another
/// company already answers to (by slug, id, database, name, or the
/// database a slug derives): every later command given the handle
/// `create` printed would be ambiguous, and `drop` of it must never reach
/// the other company.
async fn refuse_taken(
    master_conn: &mut PgConnection,
    layout: &Layout,
    keys: &[(&str, &str)],
) -> anyhow::Result<()> {
    for (what, key) in keys {
        let taken = match layout.find(master_conn, key).await {
            Ok(found) => found.map(|t| crate::tenant::describe(&t)),
            Err(err) if err.downcast_ref::<crate::tenant::AmbiguousName>().is_some() => {
                Some(crate::error::render(&err))
            }
            Err(err) => return Err(err),
        };
        if let Some(other) = taken {
            return Err(UsageError(format!(
                "{what} {}: {other} already answers to it (by its slug, name, id or database), so commands given it could not tell the two apart; pick another {what}; nothing was created",
                shown(key)
            ))
            .into());
        }
    }
    Ok(())
}

/// Picks up a company row a create left in provisioning or failed (where
/// the table can say so).
async fn resume_row(
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    existing: Tenant,
    request: &Request,
    absent_before: bool,
) -> anyhow::Result<Claimed> {
    let slug = &request.slug;
    if absent_before && existing.has_status(Lifecycle::Active) {
        return Ok(Claimed {
            tenant: existing,
            resumed: false,
            concurrent: true,
            present: false,
            claim: None,
        });
    }
    if request.present_ok && existing.has_status(Lifecycle::Active) {
        check_present(&existing, request)?;
        return Ok(Claimed {
            tenant: existing,
            resumed: false,
            concurrent: false,
            present: true,
            claim: None,
        });
    }
    anyhow::ensure!(
        !(absent_before && existing.has_status(Lifecycle::Failed)),
        "tenant {slug}: a `tenant create` running at the same time failed to provision it (status failed); run `tenantctl tenant create {slug}` again to finish"
    );
    let tenant = resume(existing, request.db.as_ref(), request.server.as_ref())?;
    // A row that names a database another company's row also names is
    // never finished: provisioning "its" database would migrate, and
    // report as new, a database that holds someone else's data.
    let others = ctx.sharing(layout, master_conn, &tenant).await?;
    anyhow::ensure!(
        others.is_empty(),
        "tenant {tenant} is recorded with database {}, which {} also names; refusing to finish its provisioning there: give one of them another database in the master",
        shown(tenant.db_label()),
        crate::tenant::describe_all(&others)
    );
    companies::lock_db(master_conn, tenant.db_label()).await?;
    if !ctx.quiet {
        warn(format_args!(
            "tenant {tenant} was left in {}; finishing its provisioning",
            shown(tenant.status_label())
        ));
    }
    Ok(Claimed {
        tenant,
        resumed: true,
        concurrent: false,
        present: false,
        claim: None,
    })
}

/// Records a new company as a claim, the table's own checks passed first.
async fn claim_new(
    master_conn: &mut PgConnection,
    layout: &Layout,
    new: &NewCompany<'_>,
) -> anyhow::Result<Claimed> {
    let db = new.db;
    if let Some(other) = claims::find(master_conn, None, Some(db.as_str())).await? {
        anyhow::bail!(
            "database {db} is already being created for tenant {} (`tenantctl tenant list` shows it); pick another --db-name",
            other.slug
        );
    }
    // Every check the row will meet, now, before its database is made.
    layout.check_insert(master_conn, new).await?;
    let claim = Claim {
        slug: new.slug.clone(),
        name: new.name.to_owned(),
        db: db.clone(),
        server: new.server.clone(),
        columns: new.extra.to_vec(),
        lifecycle: Lifecycle::Provisioning,
        last_error: None,
    };
    claims::record(master_conn, &claim).await?;
    Ok(Claimed {
        tenant: claim.tenant(),
        resumed: false,
        concurrent: false,
        present: false,
        claim: Some(claim),
    })
}

/// Picks up a claim a create left (killed, or failed): on the database and
/// server it claimed, unless a company row has come to name that database.
async fn resume_claim(
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    found: Claim,
    request: &Request,
    not_failed_before: bool,
) -> anyhow::Result<Claimed> {
    anyhow::ensure!(
        found.slug == request.slug,
        "database {} is already being created for tenant {} (`tenantctl tenant list` shows it); pick another --db-name",
        found.db,
        found.slug
    );
    anyhow::ensure!(
        !(not_failed_before && found.lifecycle == Lifecycle::Failed),
        "tenant {}: a `tenant create` running at the same time failed to provision it (status failed); run `tenantctl tenant create {}` again to finish",
        found.slug,
        found.slug
    );
    let tenant = resume(found.tenant(), request.db.as_ref(), request.server.as_ref())?;
    companies::lock_db(master_conn, found.db.as_str()).await?;
    // A company that came to answer to the claim's slug, name or database
    // while it waited: finishing would make its handles ambiguous.
    refuse_taken(
        master_conn,
        layout,
        &[
            ("slug", found.slug.as_str()),
            ("--name", found.name.as_str()),
            ("database name", found.db.as_str()),
        ],
    )
    .await?;
    if let Some(owner) = layout.find_by_db(master_conn, &found.db).await? {
        anyhow::bail!(
            "tenant {}'s claimed database {} is now named by {}; refusing to finish its provisioning there: `tenantctl tenant drop --unfinished {}` gives the claim up",
            found.slug,
            found.db,
            crate::tenant::describe(&owner),
            found.slug
        );
    }
    if !ctx.quiet {
        warn(format_args!(
            "tenant {} was left in {} (not yet in the master's {}); finishing its provisioning",
            found.slug, found.lifecycle, layout.label
        ));
    }
    Ok(Claimed {
        tenant,
        resumed: true,
        concurrent: false,
        present: false,
        claim: Some(found),
    })
}

/// Inserts the claimed company's row, active, forgets the claim, and
/// reads the row back as the master kept it.
async fn record_row(
    conn: &mut PgConnection,
    layout: &Layout,
    claim: &Claim,
    slug: &Slug,
) -> anyhow::Result<Tenant> {
    let db = &claim.db;
    let new = NewCompany {
        slug,
        server: &claim.server,
        name: &claim.name,
        db,
        extra: &claim.columns,
    };
    let row = layout.insert(&mut *conn, &new).await?;
    layout
        .set_lifecycle(&mut *conn, &row, Lifecycle::Active, None)
        .await?;
    claims::forget(&mut *conn, db).await?;
    let after = layout.find_by_id(&mut *conn, &row.id).await?;
    let after = after
        .filter(|r| {
            r.has_status(Lifecycle::Active)
                && r.db_name_raw == row.db_name_raw
                && r.server_raw == row.server_raw
        })
        .with_context(|| {
            format!(
                "tenant {slug}: the master's {} did not keep the new row active on database {db} (a trigger on the table changed it)",
                layout.label
            )
        })?;
    Ok(after)
}

/// Records a claimed company in the application's table, now that its
/// database is ready, in the transaction that removes the claim: the
/// application sees the company when, and only when, it can use it. A
/// failed provisioning (or a row the table refuses) leaves the claim
/// `failed`, with the error.
async fn finish_claim(
    master: Master<'_>,
    claim: &Claim,
    slug: &Slug,
    provisioned: anyhow::Result<()>,
) -> anyhow::Result<Tenant> {
    let Master { conn, layout } = master;
    let db = &claim.db;
    let recorded = async {
        let mut tx = conn.begin().await?;
        tx.execute("SET CONSTRAINTS ALL IMMEDIATE")
            .await
            .context("check the master's deferred constraints as they happen")?;
        let now = claims::lock(&mut tx, db).await?.with_context(|| {
            format!(
                "tenant {slug}: its claim was removed while its database was being provisioned (a `tenant drop`?); database {db} on server {} is left as provisioned (`tenantctl doctor` lists it)",
                claim.server
            )
        })?;
        anyhow::ensure!(
            now.slug == claim.slug && now.server == claim.server,
            "tenant {slug}: its claim changed while its database was being provisioned; database {db} is left as provisioned"
        );
        // A company row that came to name this database meanwhile: the
        // database is not this tenant's alone.
        let provisioned = match layout.find_by_db(&mut tx, db).await? {
            Some(owner) => Err(anyhow::anyhow!(
                "while its database {db} was provisioned, {} came to name it; give one of them another database in the master",
                crate::tenant::describe(&owner)
            )),
            None => provisioned,
        };
        if let Err(err) = provisioned {
            return Ok(Err(err));
        }
        let after = record_row(&mut tx, layout, claim, slug).await?;
        tx.commit()
            .await
            .with_context(|| format!("tenant {slug}: record it in the master"))?;
        anyhow::Ok(Ok(after))
    }
    .await;
    let err = match recorded {
        Ok(Ok(tenant)) => return Ok(tenant),
        Ok(Err(provisioning)) => provisioning,
        Err(recording) => recording.context(format!(
            "tenant {slug}: database {db} is ready but its row could not be recorded in the master's {}",
            layout.label
        )),
    };
    // Best effort: the error being reported matters more than this one.
    let why = crate::error::render(&err);
    let _ = claims::set_state(conn, db, Lifecycle::Failed, Some(&why)).await;
    Err(err.context(format!(
        "tenant {slug}: provisioning failed (status failed, not in the master's {} yet); fix the cause and run `tenantctl tenant create {slug}` again to finish, or `tenantctl tenant drop --unfinished {slug}` to give up",
        layout.label
    )))
}

/// Marks the company active, or failed with the provisioning error.
async fn finish(
    ctx: &Context,
    master: Master<'_>,
    tenant: &Tenant,
    slug: &Slug,
    provisioned: anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Master { conn, layout } = master;
    let mut tx = conn.begin().await?;
    tx.execute("SET CONSTRAINTS ALL IMMEDIATE")
        .await
        .context("check the master's deferred constraints as they happen")?;
    // The row is read again, locked, before it is marked: the application
    // (or an operator's SQL) may have deleted or repointed it meanwhile,
    // and "active" must never be written for a row that is not this one.
    let server = tenant.server_label();
    let now = layout.lock_row(&mut tx, &tenant.id).await?.with_context(|| {
        format!(
            "tenant {tenant}: its company row was deleted while its database was being provisioned; database {} on server {server} is left without a row (`tenantctl doctor` lists it)",
            shown(tenant.db_label())
        )
    })?;
    anyhow::ensure!(
        now.db_name_raw == tenant.db_name_raw && now.server_raw == tenant.server_raw,
        "tenant {tenant}: its company row changed while its database was being provisioned: it now names database {} on server {}; database {} on server {server} is left as provisioned (`tenantctl doctor` lists it)",
        shown(now.db_label()),
        shown(now.server_label()),
        shown(tenant.db_label())
    );
    // Another company's row that came to name this database meanwhile:
    // the database is not this tenant's alone, so it is not marked ready.
    let others = ctx.sharing(layout, &mut tx, &now).await?;
    let provisioned = if others.is_empty() {
        provisioned
    } else {
        Err(anyhow::anyhow!(
            "while its database {} was provisioned, {} came to name it too; give one of them another database in the master",
            shown(tenant.db_label()),
            crate::tenant::describe_all(&others)
        ))
    };
    if let Err(err) = provisioned {
        // Best effort: the error being reported matters more than this one.
        let why = crate::error::render(&err);
        if layout
            .set_lifecycle(&mut tx, &now, Lifecycle::Failed, Some(&why))
            .await
            .is_ok()
        {
            let _ = tx.commit().await;
        }
        return Err(err.context(format!(
            "tenant {tenant}: provisioning failed (status failed); fix the cause and run `tenantctl tenant create {slug}` again to finish"
        )));
    }
    layout
        .set_lifecycle(&mut tx, &now, Lifecycle::Active, None)
        .await?;
    // As the transaction would commit it, AFTER triggers included.
    let after = layout.find_by_id(&mut tx, &now.id).await?;
    anyhow::ensure!(
        after
            .as_ref()
            .is_some_and(|row| row.has_status(Lifecycle::Active)
                && row.db_name_raw == now.db_name_raw
                && row.server_raw == now.server_raw),
        "tenant {tenant}: the master's {} did not keep it active on database {} (a trigger on the table changed the row); database {} is provisioned but not marked active",
        layout.label,
        shown(tenant.db_label()),
        shown(tenant.db_label())
    );
    tx.commit()
        .await
        .with_context(|| format!("tenant {tenant}: record status active in the master"))
}

fn print(ctx: &Context, claimed: &Claimed, applied: &Applied) {
    let names = &applied.names;
    let template = applied.template.as_ref().map(DbName::as_str);
    let applied = &applied.versions[..];
    let tenant = &claimed.tenant;
    let created = Created {
        handle: tenant.handle(),
        id: &tenant.id,
        slug: tenant.slug.as_deref(),
        name: tenant.name.as_deref(),
        db_name: tenant.db_name_raw.as_deref(),
        server: tenant.server_label(),
        status: Lifecycle::Active,
        resumed: claimed.resumed,
        concurrent: claimed.concurrent,
        applied,
        migrator: ctx.migrator.kind().as_str(),
        applied_migrations: names,
        template,
    };
    document(ctx.output, &created);
    match ctx.output {
        OutputMode::Table | OutputMode::Junit => {
            let verb = if claimed.concurrent {
                "created by a concurrent run:"
            } else if claimed.resumed {
                "finished"
            } else {
                "created"
            };
            // The handle other commands take, then the id unless that
            // is the handle, then where its database is.
            let id = if tenant.handle() == tenant.id {
                String::new()
            } else {
                format!("id {}, ", shown(&tenant.id))
            };
            line(format_args!(
                "{verb} tenant {} ({id}database {} on server {}): {}",
                shown(tenant.handle()),
                shown(tenant.db_label()),
                shown(tenant.server_label()),
                match ctx.migrator.kind() {
                    MigratorKind::Command => "ran the application's migrator command".to_owned(),
                    MigratorKind::Prisma => format!(
                        "applied {} Prisma migration(s){}",
                        names.len(),
                        if names.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", names.join(", "))
                        }
                    ),
                    MigratorKind::Sqlx => format!(
                        "applied {} migration(s){}",
                        applied.len(),
                        if applied.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", join_versions(applied))
                        }
                    ),
                }
            ));
        }
        OutputMode::Jsonl => print_json(ctx.output, &created),
        OutputMode::Json => {}
    }
}

/// `--from-file`: every line checked (the file, then its columns against
/// the master), placed, then created concurrently, each line as a single
/// `create` of it would be; one report line per tenant.
async fn run_file(args: &CreateArgs, path: &Path, ctx: &Context) -> anyhow::Result<Outcome> {
    let master_db = ctx.connector.master_db();
    let check = |line: &FileLine| {
        let mut problems = Vec::new();
        if line.db.as_ref() == Some(master_db) {
            problems.push(format!("db_name: {master_db} is the master database"));
        }
        if let Some(server) = &line.server
            && let Err(err) = ctx.connector.check_server(server)
        {
            problems.push(format!("server: {err}"));
        }
        problems
    };
    let file = create_file::read(path, &check)?;
    // Read once for every line: the same migrations for all of them.
    let migrations = TenantSchema::of(ctx).await?;
    let plan = plan(ctx, &file).await?;
    let limits = SessionLimits::from(&args.session);
    ctx.interruptible();
    let progress = ctx.progress();
    let observer = AsRecorded(&progress);
    let (requests, migrations, limits) = (&plan.requests, &migrations, &limits);
    let masters = &Masters::new(ctx);
    let mut run = ctx
        .runner
        .with_options((&args.fleet).into())
        .each_new(plan.tenants, &observer, |tenant: Tenant| async move {
            let Some((line, request)) = tenant.slug.as_deref().and_then(|s| requests.get(s)) else {
                let err = anyhow::anyhow!("internal error: tenant {tenant} is on no line");
                return (FileResult::default(), Err(err));
            };
            let mut value = FileResult {
                line: *line,
                ..FileResult::default()
            };
            let created = masters.create(request, migrations, limits).await;
            let result = created.map(|(claimed, applied)| value.record(claimed, applied));
            (value, result)
        })
        .await;
    masters.close().await;
    run.reports = run.reports.iter().map(recorded).collect();
    print_fleet(&run, ctx.output);
    Ok(run.outcome())
}

/// The master connections of a file's run, each kept from one line to the
/// next (a connection costs a TLS handshake and an authentication, as
/// much as the rest of a line's work in the master): a line takes an idle
/// one or opens its own, so no two lines ever share one at once, and gives
/// it back with its locks given back ([`companies::unlock_all`]), just as
/// a single create's connection ends. One that is not plain (pinned behind
/// a transaction-mode pooler, whose release is what commits and unlocks)
/// or whose line failed is ended by the one rule instead of kept.
struct Masters<'c> {
    ctx: &'c Context,
    idle: std::sync::Mutex<Vec<(PgConnection, Layout)>>,
}

impl<'c> Masters<'c> {
    fn new(ctx: &'c Context) -> Self {
        Self {
            ctx,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Layout)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`create_one`], on an idle master connection if there is one.
    async fn create(
        &self,
        request: &Request,
        migrations: &TenantSchema,
        limits: &SessionLimits,
    ) -> anyhow::Result<(Claimed, Applied)> {
        let ctx = self.ctx;
        let idle = self.idle().pop();
        let (mut conn, layout) = match idle {
            Some(idle) => idle,
            None => ctx.runner.open_master().await?,
        };
        let created = create_on(ctx, request, &mut conn, &layout, migrations, limits).await;
        let unlocked = companies::unlock_all(&mut conn).await;
        let mut released = Ok(());
        if created.is_ok() && unlocked.is_ok() && !conn.is_in_transaction() {
            self.idle().push((conn, layout));
        } else {
            released = ctx
                .runner
                .scoped(conn, |_, _| Box::pin(async { Ok(()) }))
                .await;
        }
        // The line's own error first, then the release's (a pinned
        // connection's commit).
        let created = created?;
        unlocked?;
        released?;
        Ok(created)
    }

    /// Ends every idle connection by the one rule.
    async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle());
        for (conn, _) in idle {
            // Nothing of a line is left to commit in a plain connection.
            let _ = self
                .ctx
                .runner
                .scoped(conn, |_, _| Box::pin(async { Ok(()) }))
                .await;
        }
    }
}

/// What a file's run works on: a made-up row per line saying where it
/// will go (the row itself for a slug the master already has), for the
/// per-server caps and the report of a line that fails before it has a
/// row; and each line's request, by slug.
struct Plan {
    tenants: Vec<Tenant>,
    requests: BTreeMap<String, (usize, Request)>,
}

/// Checks the file's columns against the master's table, and places each
/// new tenant that names no server, so that they spread over the servers
/// that accept new ones as one create at a time would spread them.
async fn plan(ctx: &Context, file: &TenantFile) -> anyhow::Result<Plan> {
    let (rows, claimed) = ctx
        .runner
        .with_master_read(|conn, layout, _| {
            Box::pin(async move {
                check_columns(&layout, file)?;
                let rows = layout.list(&mut *conn).await?;
                let claimed = if layout.keeps_claims() {
                    claims::all(&mut *conn).await?
                } else {
                    Vec::new()
                };
                Ok((rows, claimed))
            })
        })
        .await?;
    let mut placement = Placement::of(ctx, &rows);
    let mut plan = Plan {
        tenants: Vec::new(),
        requests: BTreeMap::new(),
    };
    for line in &file.lines {
        let slug = line.slug.as_str();
        let known = rows
            .iter()
            .find(|t| t.slug.as_deref() == Some(slug) && !t.has_status(Lifecycle::Dropped))
            .cloned()
            .or_else(|| {
                claimed
                    .iter()
                    .find(|c| c.slug == line.slug)
                    .map(Claim::tenant)
            });
        let mut placed = None;
        let tenant = match known {
            Some(tenant) => tenant,
            None => {
                let server = match &line.server {
                    Some(server) => {
                        placement.add(server);
                        server.clone()
                    }
                    None => placement.next()?,
                };
                placed = Some(server.clone());
                let db = line.db_or_default();
                let name = line.name.clone().unwrap_or_else(|| slug.to_owned());
                Tenant::new(
                    String::new(),
                    Some(slug.to_owned()),
                    Some(name),
                    Some(db.to_string()),
                    None,
                    None,
                )
                .with_server((!server.is_default()).then(|| server.as_str().to_owned()))
            }
        };
        let request = Request {
            slug: line.slug.clone(),
            name: line.name.clone(),
            db: line.db.clone(),
            server: line.server.clone(),
            columns: line.columns.clone(),
            placement: placed,
            present_ok: true,
        };
        plan.tenants.push(tenant);
        plan.requests
            .insert(slug.to_owned(), (line.number, request));
    }
    Ok(plan)
}

/// Refuses a field of the file that names no column of the companies
/// table, or one tenantctl fills itself, before anything is created.
fn check_columns(layout: &Layout, file: &TenantFile) -> anyhow::Result<()> {
    let own = [
        Some(&layout.id),
        Some(&layout.db_name),
        layout.slug.as_ref(),
        layout.name.as_ref(),
        layout.status.as_ref(),
        layout.server.as_ref(),
    ];
    let mut problems = Vec::new();
    for (column, line) in &file.columns {
        let field = shown(column);
        if own.iter().flatten().any(|c| &c.name == column) {
            problems.push((
                *line,
                format!(
                    "field {field}: tenantctl fills that column itself (use the fields {})",
                    create_file::FIELDS.join(", ")
                ),
            ));
        } else if !layout.columns.iter().any(|c| &c.name == column) {
            problems.push((
                *line,
                format!(
                    "field {field} is neither one of {} nor a column of the master table {}",
                    create_file::FIELDS.join(", "),
                    layout.label
                ),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(file.refuse(&problems).into())
    }
}

/// One line's report: its line, what was done, what was applied.
#[derive(Debug, Clone, Default, Serialize)]
struct FileResult {
    line: usize,
    /// created, finished (a create left unfinished, resumed), present
    /// (already active as the line asks), concurrent (done by another
    /// create at the same time); none when it failed.
    result: Option<&'static str>,
    applied: Vec<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    applied_migrations: Vec<String>,
    /// The company as recorded, which the report shows instead of the
    /// made-up row the run started from.
    #[serde(skip)]
    recorded: Option<Tenant>,
}

impl FileResult {
    fn record(&mut self, claimed: Claimed, applied: Applied) {
        self.result = Some(claimed.result());
        self.applied = applied.versions;
        self.applied_migrations = applied.names;
        self.recorded = Some(claimed.tenant);
    }
}

impl TenantValue for FileResult {
    fn headers() -> Vec<&'static str> {
        vec!["line", "done", "applied"]
    }

    fn cells(&self) -> Vec<String> {
        let applied = if self.applied_migrations.is_empty() {
            self.applied.len()
        } else {
            self.applied_migrations.len()
        };
        vec![
            self.line.to_string(),
            self.result.unwrap_or_default().to_owned(),
            applied.to_string(),
        ]
    }
}

/// A line's report with the company as the master recorded it.
fn recorded(report: &Report<FileResult>) -> Report<FileResult> {
    let mut report = report.clone();
    if let Some(tenant) = report.value.recorded.take() {
        report.tenant = tenant;
    }
    report
}

/// The progress display, shown each report as [`recorded`] makes it (in
/// `jsonl` mode each line's report is streamed the moment it ends).
struct AsRecorded<'p>(&'p Progress);

impl Observer<FileResult> for AsRecorded<'_> {
    fn start(&self, total: usize) {
        Observer::<FileResult>::start(self.0, total);
    }

    fn done(&self, report: &Report<FileResult>) {
        self.0.done(&recorded(report));
    }

    fn finish(&self) {
        Observer::<FileResult>::finish(self.0);
    }
}

/// Of the configured servers that accept new tenants, the one with the
/// fewest tenants placed (dropped ones aside); ties go by name.
fn least_placed(ctx: &Context, everyone: &[Tenant]) -> anyhow::Result<ServerName> {
    Placement::of(ctx, everyone).next()
}

/// How many tenants each server that accepts new ones has, for placing
/// new ones on the least placed.
struct Placement {
    placed: BTreeMap<ServerName, usize>,
}

impl Placement {
    fn of(ctx: &Context, everyone: &[Tenant]) -> Self {
        let mut placed: BTreeMap<ServerName, usize> = ctx
            .connector
            .servers()
            .into_iter()
            .filter(|s| s.address.is_some() && s.accepts_new)
            .map(|s| (s.name, 0))
            .collect();
        for tenant in everyone
            .iter()
            .filter(|t| !t.has_status(Lifecycle::Dropped))
        {
            if let Ok(server) = &tenant.server {
                placed.entry(server.clone()).and_modify(|n| *n += 1);
            }
        }
        Self { placed }
    }

    /// The least placed server (ties by name), counted as one more.
    fn next(&mut self) -> anyhow::Result<ServerName> {
        let (server, placed) = self
            .placed
            .iter_mut()
            // The first of the least placed: ties go by name.
            .min_by_key(|(_, placed)| **placed)
            .ok_or_else(|| {
                UsageError(
                    "no configured server accepts new tenants (tenantctl.toml sets accepts_new = false on all of them); pick one with --server".into(),
                )
            })?;
        *placed += 1;
        Ok(server.clone())
    }

    /// One more tenant placed on `server` (ignored unless it accepts new
    /// ones).
    fn add(&mut self, server: &ServerName) {
        self.placed.entry(server.clone()).and_modify(|n| *n += 1);
    }
}

/// Refuses to report as present an active company that is not what the
/// line asks for: another database, server or name than the line gives.
fn check_present(existing: &Tenant, request: &Request) -> anyhow::Result<()> {
    let differs = |what: &str, has: &str, asked: &str| {
        anyhow::anyhow!(
            "tenant {} already exists (active) with {what} {}, not the {} this line asks for; change the line or the company",
            shown(existing.handle()),
            shown(has),
            shown(asked)
        )
    };
    if let Some(db) = &request.db
        && existing.db_name_raw.as_deref() != Some(db.as_str())
    {
        return Err(differs("database", existing.db_label(), db.as_str()));
    }
    if let Some(server) = &request.server
        && existing.server.as_ref() != Ok(server)
    {
        return Err(differs("server", existing.server_label(), server.as_str()));
    }
    if let Some(name) = &request.name
        && existing.name.as_deref() != Some(name.as_str())
    {
        let has = existing.name.as_deref().unwrap_or("(none)");
        return Err(differs("name", has, name));
    }
    Ok(())
}

/// An existing row may only be picked up again if provisioning never
/// finished, with the database it already names, on the server it records.
fn resume(
    existing: Tenant,
    requested_db: Option<&DbName>,
    requested_server: Option<&ServerName>,
) -> anyhow::Result<Tenant> {
    let resumable =
        existing.has_status(Lifecycle::Provisioning) || existing.has_status(Lifecycle::Failed);
    anyhow::ensure!(
        resumable,
        "tenant {} already exists (status {}, id {})",
        shown(existing.handle()),
        shown(existing.status_label()),
        shown(&existing.id)
    );
    if let Some(db) = requested_db {
        anyhow::ensure!(
            existing.db_name_raw.as_deref() == Some(db.as_str()),
            "tenant {} is already recorded with database {}; rerun without --db-name (or with that name) to finish it",
            shown(existing.handle()),
            shown(existing.db_label())
        );
    }
    if let Some(server) = requested_server {
        anyhow::ensure!(
            existing.server.as_ref() == Ok(server),
            "tenant {} is already recorded on server {}; rerun without --server (or with that server) to finish it",
            shown(existing.handle()),
            shown(existing.server_label())
        );
    }
    existing.db_name()?;
    existing.server()?;
    Ok(existing)
}

/// Refuses a database name another company uses or that already exists on
/// the server: adopting a stranger's database would be worse than failing.
async fn ensure_free(
    master_conn: &mut PgConnection,
    layout: &Layout,
    mut server: Option<&mut PgConnection>,
    db: &DbName,
) -> anyhow::Result<()> {
    if let Some(owner) = layout.find_by_db(master_conn, db).await? {
        anyhow::bail!(
            "database {db} already belongs to tenant {}; pick another --db-name",
            shown(owner.handle())
        );
    }
    anyhow::ensure!(
        !exists_on(master_conn, &mut server, db).await?,
        "database {db} already exists on the server and no company names it; pick another --db-name"
    );
    Ok(())
}

/// Whether the database exists, asked on the server's connection (`None`:
/// the master's, on the same server).
async fn exists_on(
    master_conn: &mut PgConnection,
    server: &mut Option<&mut PgConnection>,
    db: &DbName,
) -> anyhow::Result<bool> {
    match server {
        Some(server) => ddl::exists(server, db).await,
        None => ddl::exists(master_conn, db).await,
    }
}

/// The requested database name checked free, or the first free one
/// derived from the slug.
async fn free_on(
    master_conn: &mut PgConnection,
    layout: &Layout,
    server: Option<&mut PgConnection>,
    slug: &Slug,
    requested: Option<DbName>,
) -> anyhow::Result<DbName> {
    match requested {
        Some(db) => ensure_free(master_conn, layout, server, &db)
            .await
            .map(|()| db),
        None => free_db_name(master_conn, layout, server, slug).await,
    }
}

/// The slug's default database name, or the same with `_2`, `_3`... if
/// that is taken in the master or on the server.
async fn free_db_name(
    master_conn: &mut PgConnection,
    layout: &Layout,
    mut server: Option<&mut PgConnection>,
    slug: &Slug,
) -> anyhow::Result<DbName> {
    let base = slug.default_db_name();
    for n in 1..100 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            DbName::parse(&format!("{base}_{n}")).context("derive a database name")?
        };
        if layout.find_by_db(master_conn, &candidate).await?.is_none()
            && !exists_on(master_conn, &mut server, &candidate).await?
        {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no free database name derived from {base}; pass --db-name")
}

/// Provisions with the application's own command: nothing of tenantctl's
/// goes into the database, the application's tool makes its schema
/// (checked afterwards when it is Prisma's).
async fn provision_by_command(
    ctx: &Context,
    tenant: &Tenant,
    command: &AppCommand,
    migrations: &TenantSchema,
    limits: &SessionLimits,
) -> anyhow::Result<()> {
    let (placed, db) = (tenant.server()?, tenant.db_name()?);
    // Nothing of tenantctl's goes into the database: the application's
    // own tool makes its schema.
    // Listening for Ctrl-C: the child runs in a process group of its
    // own, which a terminal's interrupt does not reach; tenantctl stops
    // it (SIGTERM, then SIGKILL) and the create is left failed.
    let stop = ctx.interruptible();
    let progress = std::sync::Arc::new(Progress::new(ctx.output, true, stop.clone()));
    let mut executed = Executed::default();
    let prisma_schema = match migrations {
        TenantSchema::Prisma { folder, schema, .. } => Some((folder, schema.as_str())),
        _ => None,
    };
    run_app_command(
        &ctx.connector,
        &ctx.connector.child_env(),
        command,
        prisma_schema.and_then(|(_, schema)| prisma::url_schema(schema)),
        tenant,
        stop,
        progress,
        &mut executed,
    )
    .await?;
    if let Some((folder, schema)) = prisma_schema {
        return ctx
            .runner
            .with_limits(limits.clone())
            .with_tenant(placed, db, |conn, _| {
                Box::pin(prisma::check_after_command(conn, folder, schema, Ok(())))
            })
            .await;
    }
    Ok(())
}

async fn provision(
    ctx: &Context,
    master_conn: &mut PgConnection,
    tenant: &Tenant,
    migrations: &TenantSchema,
    limits: &SessionLimits,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let db = tenant.db_name()?;
    let placed = tenant.server()?;
    // A clone of the set's template, when there is one to use and the
    // database is not there yet (a create resumed finishes in place).
    if clone_template(ctx, master_conn, placed, db, migrations, limits, applied).await? {
        return Ok(());
    }
    let runner = ctx.runner.with_limits(limits.clone());
    runner
        .with_maintenance(placed, |server, _| {
            Box::pin(async move { ddl::create_if_missing(server, db).await })
        })
        .await?;
    let command = match migrations {
        TenantSchema::Command(command)
        | TenantSchema::Prisma {
            command: Some(command),
            ..
        } => Some(command),
        _ => None,
    };
    if let Some(command) = command {
        return provision_by_command(ctx, tenant, command, migrations, limits).await;
    }
    // An interrupt cancels the statement in flight on the server (after
    // the grace period, or at once on a second one), as `tenant migrate`
    // does: a migration cut short is recorded as the migrator records it,
    // the create is left failed (and resumable), and the master's locks
    // are given back, instead of the process dying with the script still
    // running on the server.
    ctx.interruptible();
    runner
        .with_tenant_cancellable(tenant, |conn, _| {
            Box::pin(apply_schema(ctx, conn, db, migrations, limits, applied))
        })
        .await?;
    give_resumed_state(ctx, placed, db, applied).await
}
