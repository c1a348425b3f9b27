//! `tenantctl tenant drop <slug|id>`: drop a tenant's database and forget
//! (or mark) its company.

use anyhow::Context as _;
use clap::Args;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::commands::context::Context;
use crate::companies::{self, Layout};
use crate::dbname::DbName;
use crate::ddl;
use crate::error::{Outcome, UsageError};
use crate::migrations;
use crate::output::confirm::confirm;
use crate::output::{OutputMode, document, line, print_json, shown};
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Slug, Tenant};

#[derive(Debug, Args)]
pub struct DropArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,

    /// Keep the company row, with status dropped, instead of deleting it
    #[arg(long)]
    pub keep_row: bool,

    /// Give up an unfinished create of this slug (a company kept in
    /// tenantctl's claims, not yet in the companies table) and drop the
    /// database it made; never a company
    #[arg(long)]
    pub unfinished: bool,

    /// Do not ask for confirmation (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(args: DropArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let args = &args;
    let (tenant, db, server) = ctx
        .runner
        .with_master(|conn, layout, _| {
            Box::pin(async move {
                let dropped = drop_tenant(args, ctx, conn, &layout).await;
                // Given back only now: the locks taken below are held
                // through the drop.
                let unlocked = companies::unlock_all(conn).await;
                let dropped = dropped?;
                unlocked?;
                Ok(dropped)
            })
        })
        .await?;
    let value = serde_json::json!({
        "id": tenant.id, "slug": tenant.slug, "db_name": db.as_str(), "server": server.as_str(),
        "row": if args.keep_row { "kept" } else { "deleted" },
    });
    document(ctx.output, &value);
    match ctx.output {
        OutputMode::Table | OutputMode::Junit => {
            line(format_args!(
                "dropped tenant {} (database {db} on server {server}){}",
                shown(tenant.handle()),
                if args.keep_row {
                    "; row kept with status dropped"
                } else {
                    ""
                }
            ));
        }
        OutputMode::Jsonl => print_json(ctx.output, &value),
        OutputMode::Json => {}
    }
    Ok(Outcome::Success)
}

/// What the key names: a company, or an unfinished create.
enum Named {
    Company(Tenant),
    Unfinished(crate::claims::Claim),
}

/// The company or unfinished create the key names, refusing a key that
/// names one of each.
async fn named(
    args: &DropArgs,
    master_conn: &mut PgConnection,
    layout: &Layout,
) -> anyhow::Result<Named> {
    let key = args.tenant.as_str();
    if args.unfinished {
        let claim = crate::claims::find(master_conn, Some(key), Some(key))
            .await?
            .ok_or_else(|| {
                UsageError(format!(
                    "--unfinished: no unfinished create of {} (see `tenantctl tenant list`; a company already recorded is dropped without --unfinished)",
                    shown(key)
                ))
            })?;
        return Ok(Named::Unfinished(claim));
    }
    // A claim and a company that both answer to the key (a slug-less
    // company named like the claim's slug, or one whose database is the
    // claim's) are never told apart by guessing: one of them is another
    // customer's.
    let company = layout.get(master_conn, key).await;
    let claim = crate::claims::find(master_conn, Some(key), Some(key)).await;
    Ok(match (company, claim) {
        (Ok(company), Ok(Some(claim))) => {
            return Err(UsageError(format!(
                "{} names both {} and the unfinished create of {} (database {} on server {}); nothing was dropped: `tenantctl tenant drop --unfinished {}` gives up the create without touching the company, `tenantctl tenant drop {}` drops the company",
                shown(key),
                crate::tenant::describe(&company),
                claim.slug,
                claim.db,
                claim.server,
                claim.slug,
                shown(&company.id)
            ))
            .into());
        }
        (Ok(company), _) => Named::Company(company),
        (Err(err), Ok(Some(claim)))
            if err.downcast_ref::<crate::tenant::AmbiguousName>().is_none() =>
        {
            return Ok(Named::Unfinished(claim));
        }
        (Err(err), _) => return Err(err),
    })
}

/// Checks, asks, then changes the master and only after it has committed
/// drops the database: the one step nothing can undo comes last, so a
/// master that refuses (a soft-delete trigger, a deferred foreign key, a
/// row changed meanwhile) leaves the database where it was.
async fn drop_tenant(
    args: &DropArgs,
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
) -> anyhow::Result<(Tenant, DbName, ServerName)> {
    let tenant = match named(args, master_conn, layout).await? {
        Named::Company(tenant) => tenant,
        Named::Unfinished(claim) => {
            return drop_claim(args, ctx, master_conn, layout, claim).await;
        }
    };
    if args.keep_row {
        check_can_keep(layout)?;
    }
    // Only a database the company row names, that passes validation and is
    // not the master, can get this far.
    let db = tenant.db_name()?.clone();
    ctx.connector.check_tenant_db(&db)?;
    let server = tenant.server()?.clone();
    ctx.connector.check_server(&server)?;
    refuse_moving(&tenant)?;
    refuse_shared(ctx, layout, master_conn, &tenant).await?;
    refuse_a_master(ctx, &server, &db).await?;
    confirm(
        &format!(
            "drop database {db} of tenant {} and everything in it",
            shown(tenant.handle())
        ),
        tenant.handle(),
        args.yes,
    )?;

    // The locks `create` holds while it provisions: a create of this slug
    // or database in flight finishes before the drop looks again.
    if let Some(slug) = tenant.slug.as_deref().and_then(|s| Slug::parse(s).ok()) {
        companies::lock_slug(master_conn, &slug).await?;
    }
    companies::lock_db(master_conn, db.as_str()).await?;

    // What could stop the drop on the server is found out before the
    // master commits, on the connection that then drops it.
    let now = ctx
        .runner
        .with_maintenance(&server, |on_server, _| {
            Box::pin(drop_checked(
                args,
                ctx,
                master_conn,
                layout,
                &tenant,
                on_server,
            ))
        })
        .await?;
    Ok((now, db, server))
}

/// Checks on the server that the database can be dropped, changes the
/// master, then drops it: what could stop the drop is found out before
/// the master commits, on the connection that then drops it.
async fn drop_checked(
    args: &DropArgs,
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    tenant: &Tenant,
    on_server: &mut PgConnection,
) -> anyhow::Result<Tenant> {
    let (db, server) = (tenant.db_name()?, tenant.server()?);
    ddl::check_droppable(on_server, db).await.map_err(|err| {
        err.context(format!(
            "cannot drop database {db} on server {server}; nothing was changed"
        ))
    })?;
    let now = change_master(args, ctx, master_conn, layout, tenant).await?;
    ddl::drop_force(on_server, db).await.with_context(|| {
        format!(
            "the master no longer lists tenant {} as active ({}), but dropping database {db} on server {server} failed, so the database is still there with its data; drop it by hand once you are sure (`tenantctl doctor` lists it)",
            shown(tenant.handle()),
            if args.keep_row { "row kept with status dropped" } else { "row deleted" }
        )
    })?;
    Ok(now)
}

/// Deletes (or marks dropped) the company's row as it is now, locked, and
/// commits: refuses a row changed since it was read, shared with another
/// company, or kept by the table (a trigger, a rule, a deferred
/// constraint), leaving everything as it was.
async fn change_master(
    args: &DropArgs,
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    tenant: &Tenant,
) -> anyhow::Result<Tenant> {
    let (db, server) = (tenant.db_label(), tenant.server_label());
    let mut tx = master_conn.begin().await?;
    // A deferred foreign key or constraint trigger would otherwise refuse
    // only at COMMIT; checked at each statement, it refuses here instead.
    tx.execute("SET CONSTRAINTS ALL IMMEDIATE")
        .await
        .context("check the master's deferred constraints as they happen")?;
    // What the row says now, under its lock, is what is acted on: the
    // application may have repointed or deleted it since it was read.
    let now = layout.lock_row(&mut tx, &tenant.id).await?.with_context(|| {
        format!(
            "company {} is no longer in the master's {} (deleted meanwhile, or hidden from this role by row-level security); nothing was dropped",
            shown(&tenant.id),
            layout.label
        )
    })?;
    anyhow::ensure!(
        now.db_name_raw == tenant.db_name_raw && now.server_raw == tenant.server_raw,
        "tenant {} changed since it was read: its row now names database {} on server {} (was {} on {}); nothing was dropped: check what happened and run the drop again",
        shown(tenant.handle()),
        shown(now.db_label()),
        shown(now.server_label()),
        shown(db),
        shown(server)
    );
    refuse_moving(&now)?;
    refuse_shared(ctx, layout, &mut tx, &now).await?;
    if args.keep_row {
        layout
            .set_lifecycle(&mut tx, &now, Lifecycle::Dropped, None)
            .await?;
    } else {
        layout.delete(&mut tx, &now).await?;
    }
    // What the transaction would commit, AFTER triggers included: the row
    // gone (or dropped), and no other row naming the database.
    let after = layout.find_by_id(&mut tx, &now.id).await?;
    let kept_as_asked = match &after {
        None => !args.keep_row,
        Some(row) => args.keep_row && row.has_status(Lifecycle::Dropped),
    };
    anyhow::ensure!(
        kept_as_asked,
        "the master's {} did not keep the change to company {}'s row (a trigger on the table undid it: the row {}); nothing was dropped",
        layout.label,
        shown(&now.id),
        after.as_ref().map_or("is gone".to_owned(), |row| format!(
            "has status {}",
            shown(row.status_label())
        ))
    );
    refuse_shared(ctx, layout, &mut tx, &now).await?;
    tx.commit()
        .await
        .context("the master refused the change at commit; nothing was dropped")?;
    // Behind a transaction-mode pooler the commit above ends only a
    // savepoint: make the master's change durable before the drop too.
    ctx.connector
        .checkpoint(master_conn)
        .await
        .context("the master refused the change at commit; nothing was dropped")?;
    Ok(now)
}

/// `--keep-row` keeps the row as a company the application can tell is
/// gone; a table that has no status value for `dropped` would keep it
/// looking live (the application's `ACTIVE`, say) with no database behind
/// it, so that is refused, naming the setting that would allow it.
fn check_can_keep(layout: &Layout) -> Result<(), UsageError> {
    if layout.status_value(Lifecycle::Dropped).is_some() {
        return Ok(());
    }
    let why = match &layout.status {
        Some(status) => format!(
            "its status column {:?} has no value for dropped, so the row would still look live to the application",
            status.name
        ),
        None => "it has no status column, so the row would still look live to the application"
            .to_owned(),
    };
    Err(UsageError(format!(
        "--keep-row: the master's {} cannot mark a company dropped: {why}; map one of the application's inactive statuses in tenantctl.toml (`[master.statuses]` dropped = \"...\"), or drop without --keep-row (the row is deleted); nothing was changed",
        layout.label
    )))
}

/// Gives up a company that was never recorded in the application's table
/// (its create failed or was killed; see [`crate::claims`]): removes the
/// claim, then drops whatever database the create made, unless a company
/// row has come to name it.
async fn drop_claim(
    args: &DropArgs,
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    claim: crate::claims::Claim,
) -> anyhow::Result<(Tenant, DbName, ServerName)> {
    if args.keep_row {
        return Err(UsageError(format!(
            "--keep-row: tenant {} has no row to keep (its create never finished; it is only in tenantctl's claims); `tenantctl tenant drop --unfinished {}` gives it up; nothing was changed",
            claim.slug, claim.slug
        ))
        .into());
    }
    // A company hidden from this role may name the claim's database.
    if let Some(refusal) = layout.visibility.hiding(
        &layout.label,
        "to give up an unfinished create (a company this role cannot see may name its database)",
    ) {
        return Err(refusal.into());
    }
    let tenant = claim.tenant();
    let db = claim.db.clone();
    let server = claim.server.clone();
    ctx.connector.check_tenant_db(&db)?;
    ctx.connector.check_server(&server)?;
    refuse_a_master(ctx, &server, &db).await?;
    confirm(
        &format!(
            "give up creating tenant {} and drop database {db} if it was made",
            claim.slug
        ),
        claim.slug.as_str(),
        args.yes,
    )?;
    companies::lock_slug(master_conn, &claim.slug).await?;
    companies::lock_db(master_conn, db.as_str()).await?;
    ctx.runner
        .with_maintenance(&server, |on_server, _| {
            Box::pin(give_up(ctx, master_conn, layout, &claim, on_server))
        })
        .await?;
    Ok((tenant, db, server))
}

/// Removes the claim, then drops its database if the create made it and
/// no company names it: what could stop the drop is found out first.
async fn give_up(
    ctx: &Context,
    master_conn: &mut PgConnection,
    layout: &Layout,
    claim: &crate::claims::Claim,
    on_server: &mut PgConnection,
) -> anyhow::Result<()> {
    let (db, server) = (&claim.db, &claim.server);
    // What could stop the drop is found out before the claim goes.
    let made = ddl::exists(on_server, db).await?;
    if made {
        ddl::check_droppable(on_server, db).await.map_err(|err| {
            err.context(format!(
                "cannot drop database {db} on server {server}; nothing was changed"
            ))
        })?;
    }
    let mut tx = master_conn.begin().await?;
    let now = crate::claims::lock(&mut tx, db).await?.with_context(|| {
        format!(
            "tenant {}: its claim is gone (finished or given up meanwhile); nothing was dropped",
            claim.slug
        )
    })?;
    anyhow::ensure!(
        now.slug == claim.slug && now.server == claim.server,
        "tenant {}: its claim changed since it was read; nothing was dropped",
        claim.slug
    );
    let owner = layout.find_by_db(&mut tx, db).await?;
    crate::claims::forget(&mut tx, db).await?;
    tx.commit()
        .await
        .context("the master refused the change at commit; nothing was dropped")?;
    ctx.connector.checkpoint(master_conn).await?;
    if let Some(owner) = owner {
        crate::output::warn(format_args!(
            "warning: database {db} is named by {}: only the claim was removed, the database was kept",
            crate::tenant::describe(&owner)
        ));
        return Ok(());
    }
    if made {
        ddl::drop_force(on_server, db).await.with_context(|| {
                format!("the claim on tenant {} was removed, but dropping database {db} on server {server} failed, so it is still there; drop it by hand (`tenantctl doctor` lists it)", claim.slug)
            })?;
    }
    Ok(())
}

/// Refuses a database that holds tenantctl's master migrations: a row
/// naming another installation's master (a staging copy, say) must never
/// get it dropped. A database that cannot be read is left to the drop.
async fn refuse_a_master(ctx: &Context, server: &ServerName, db: &DbName) -> anyhow::Result<()> {
    let is_master = ctx
        .runner
        .with_tenant(server, db, |conn, _| {
            Box::pin(async move { Ok(migrations::holds_master(conn).await) })
        })
        .await;
    // Not reached, or not read: left to the drop.
    if matches!(is_master, Ok(Ok(true))) {
        return Err(UsageError(format!(
            "refusing to drop database {db} on server {server}: it holds tenantctl's master migrations or records, so it is a master database (another installation's?), not a tenant's; fix the company row that names it"
        ))
        .into());
    }
    Ok(())
}

fn refuse_moving(tenant: &Tenant) -> anyhow::Result<()> {
    if let Some(to) = &tenant.moving_to {
        anyhow::bail!(
            "tenant {tenant} is being moved to server {}: finish the move (`tenantctl tenant move {} --to {}`) or undo it (--abort) first",
            shown(to.as_str()),
            shown(tenant.handle()),
            shown(to.as_str())
        );
    }
    Ok(())
}

/// Refuses a database another company's row also names (on the same
/// server): dropping it would take that company's data too.
async fn refuse_shared(
    ctx: &Context,
    layout: &Layout,
    master_conn: &mut PgConnection,
    tenant: &Tenant,
) -> anyhow::Result<()> {
    let others = ctx.sharing(layout, master_conn, tenant).await?;
    if others.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "refusing to drop tenant {}: its database {} is also named by {}; each company needs a database of its own: fix the master first",
        shown(tenant.handle()),
        shown(tenant.db_label()),
        crate::tenant::describe_all(&others)
    ))
    .into())
}
