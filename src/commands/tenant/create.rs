//! `tenantctl tenant create <slug>`: record the company, create its database,
//! migrate it, mark it active. Rerunning it for a tenant left in
//! `provisioning` or `failed` finishes the job, on the server its row
//! records (the server is recorded before the database is created).

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::claims::{self, Claim};
use crate::commands::args::SessionArgs;
use crate::commands::context::Context;
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
use crate::output::progress::Progress;
use crate::output::{OutputMode, join_versions, line, print_json, shown, warn};
use crate::prisma;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Slug, Tenant};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Lowercase letters, digits and hyphens, starting with a letter or digit
    pub slug: String,

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
    /// Where the table cannot say "not ready": the claim the company
    /// waits in until its database is, and no row yet.
    claim: Option<Claim>,
}

pub async fn run(args: CreateArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let slug = Slug::parse(&args.slug).map_err(crate::error::Usage::of)?;
    let requested_db = args
        .db_name
        .as_deref()
        .map(DbName::parse)
        .transpose()
        .map_err(|e| UsageError(format!("--db-name: {e}")))?;
    if let Some(db) = requested_db
        .as_ref()
        .filter(|db| db.as_str().starts_with(crate::dbname::TEMPLATE_PREFIX))
    {
        // No tenant command could reach it, nor drop it, once made.
        return Err(UsageError(format!(
            "--db-name: {db} starts with {}, which names tenantctl's template databases; choose another name",
            crate::dbname::TEMPLATE_PREFIX
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
    let migrations = TenantSchema::of(ctx).await?;
    if args.no_template {
        ctx.templates.turn_off();
    }

    let (claimed, applied) = ctx
        .runner
        .with_master(|conn, layout, _| {
            Box::pin(async move {
                let created =
                    create_on(ctx, &args, conn, &layout, slug, requested_db, &migrations).await;
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
        .await?;
    print(ctx, &claimed, &applied);
    Ok(Outcome::Success)
}

/// Claims the company on the master connection, holding its slug's lock,
/// and provisions its database unless a concurrent create did.
async fn create_on(
    ctx: &Context,
    args: &CreateArgs,
    master_conn: &mut PgConnection,
    layout: &Layout,
    slug: Slug,
    requested_db: Option<DbName>,
    migrations: &TenantSchema,
) -> anyhow::Result<(Claimed, Applied)> {
    let key_db = requested_db
        .clone()
        .unwrap_or_else(|| slug.default_db_name());
    let before = layout
        .find_for_create(&mut *master_conn, &slug, Some(&key_db))
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
    companies::lock_slug(&mut *master_conn, &slug).await?;
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
    let mut claimed = claim(ctx, master, args, &slug, requested_db, seen).await;
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
        Ok(claimed) if !claimed.concurrent => {
            let limits = SessionLimits::from(&args.session);
            let (tenant, conn) = (&claimed.tenant, &mut *master_conn);
            let provisioned = provision(ctx, conn, tenant, migrations, &limits, &mut applied).await;
            let master = Master {
                conn: &mut *master_conn,
                layout,
            };
            match &claimed.claim {
                Some(claim) => finish_claim(master, claim, &slug, provisioned)
                    .await
                    .map(Some),
                None => finish(ctx, master, &claimed.tenant, &slug, provisioned)
                    .await
                    .map(|()| None),
            }
        }
        // Nothing to provision: done by a concurrent run, or not claimed.
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
    args: &CreateArgs,
    slug: &Slug,
    requested_db: Option<DbName>,
) -> anyhow::Result<(ServerName, DbName)> {
    let placed = match &args.server {
        Some(server) => {
            ctx.connector.check_server(server)?;
            server.clone()
        }
        None => least_placed(ctx, &layout.list(master_conn).await?)?,
    };
    let master = &mut *master_conn;
    let db = ctx
        .runner
        .with_maintenance(&placed, |server, _| {
            Box::pin(async move {
                match requested_db {
                    Some(db) => ensure_free(master, layout, server, &db).await.map(|()| db),
                    None => free_db_name(master, layout, server, slug).await,
                }
            })
        })
        .await?;
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
    args: &CreateArgs,
    slug: &Slug,
    requested_db: Option<DbName>,
    seen: Seen,
) -> anyhow::Result<Claimed> {
    let Master {
        conn: master_conn,
        layout,
    } = master;
    let key_db = requested_db
        .clone()
        .unwrap_or_else(|| slug.default_db_name());
    if let Some(existing) = layout
        .find_for_create(master_conn, slug, Some(&key_db))
        .await?
    {
        return resume_row(
            ctx,
            master_conn,
            layout,
            existing,
            args,
            requested_db,
            !seen.row,
        )
        .await;
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
            args,
            requested_db,
            seen.claim != Some(Lifecycle::Failed),
        )
        .await;
    }
    let mut keys = vec![("slug", slug.as_str())];
    if let Some(name) = args.name.as_deref() {
        keys.push(("--name", name));
    }
    refuse_taken(master_conn, layout, &keys).await?;
    let (placed, db) = place(ctx, master_conn, layout, args, slug, requested_db).await?;
    let name = args.name.as_deref().unwrap_or(slug.as_str());
    let new = NewCompany {
        slug,
        server: &placed,
        name,
        db: &db,
        extra: &args.columns,
    };
    if layout.keeps_claims() {
        return claim_new(master_conn, layout, &new).await;
    }
    let tenant = layout.insert(master_conn, &new).await?;
    Ok(Claimed {
        tenant,
        resumed: false,
        concurrent: false,
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
    args: &CreateArgs,
    requested_db: Option<DbName>,
    absent_before: bool,
) -> anyhow::Result<Claimed> {
    let slug = &args.slug;
    if absent_before && existing.has_status(Lifecycle::Active) {
        return Ok(Claimed {
            tenant: existing,
            resumed: false,
            concurrent: true,
            claim: None,
        });
    }
    anyhow::ensure!(
        !(absent_before && existing.has_status(Lifecycle::Failed)),
        "tenant {slug}: a `tenant create` running at the same time failed to provision it (status failed); run `tenantctl tenant create {slug}` again to finish"
    );
    let tenant = resume(existing, requested_db.as_ref(), args.server.as_ref())?;
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
    args: &CreateArgs,
    requested_db: Option<DbName>,
    not_failed_before: bool,
) -> anyhow::Result<Claimed> {
    anyhow::ensure!(
        found.slug.as_str() == args.slug,
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
    let tenant = resume(found.tenant(), requested_db.as_ref(), args.server.as_ref())?;
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
    match ctx.output {
        OutputMode::Table => {
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
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(mode, &created),
    }
}

/// Of the configured servers that accept new tenants, the one with the
/// fewest tenants placed (dropped ones aside); ties go by name.
fn least_placed(ctx: &Context, everyone: &[Tenant]) -> anyhow::Result<ServerName> {
    let open: Vec<ServerName> = ctx
        .connector
        .servers()
        .into_iter()
        .filter(|s| s.address.is_some() && s.accepts_new)
        .map(|s| s.name)
        .collect();
    open.into_iter()
        .min_by_key(|server| {
            let placed = everyone
                .iter()
                .filter(|t| !t.has_status(Lifecycle::Dropped) && t.server.as_ref() == Ok(server))
                .count();
            (placed, server.clone())
        })
        .ok_or_else(|| {
            UsageError(
                "no configured server accepts new tenants (tenantctl.toml sets accepts_new = false on all of them); pick one with --server".into(),
            )
            .into()
        })
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
    server: &mut PgConnection,
    db: &DbName,
) -> anyhow::Result<()> {
    if let Some(owner) = layout.find_by_db(master_conn, db).await? {
        anyhow::bail!(
            "database {db} already belongs to tenant {}; pick another --db-name",
            shown(owner.handle())
        );
    }
    anyhow::ensure!(
        !ddl::exists(server, db).await?,
        "database {db} already exists on the server and no company names it; pick another --db-name"
    );
    Ok(())
}

/// The slug's default database name, or the same with `_2`, `_3`... if
/// that is taken in the master or on the server.
async fn free_db_name(
    master_conn: &mut PgConnection,
    layout: &Layout,
    server: &mut PgConnection,
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
            && !ddl::exists(server, &candidate).await?
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
