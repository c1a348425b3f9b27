//! `tenantctl tenant drop <slug|id>`: drop a tenant's database and forget
//! (or mark) its company.

use anyhow::Context as _;
use clap::Args;
use sqlx::Connection as _;

use crate::commands::context::Context;
use crate::ddl;
use crate::error::Outcome;
use crate::output::confirm::confirm;
use crate::output::{OutputMode, line, print_json, shown};
use crate::tenant::Lifecycle;

#[derive(Debug, Args)]
pub struct DropArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,

    /// Keep the company row, with status dropped, instead of deleting it
    #[arg(long)]
    pub keep_row: bool,

    /// Do not ask for confirmation (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(args: DropArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (mut master_conn, layout) = ctx.master().await?;
    let tenant = layout.get(&mut master_conn, &args.tenant).await?;
    // Only a database the company row names, that passes validation and is
    // not the master, can get this far.
    let db = tenant.db_name()?.clone();
    ctx.connector.check_tenant_db(&db)?;
    let server = tenant.server()?.clone();
    ctx.connector.check_server(&server)?;
    if let Some(to) = &tenant.moving_to {
        anyhow::bail!(
            "tenant {tenant} is being moved to server {}: finish the move (`tenantctl tenant move {} --to {}`) or undo it (--abort) first",
            shown(to),
            shown(tenant.handle()),
            shown(to)
        );
    }
    confirm(
        &format!(
            "drop database {db} of tenant {} and everything in it",
            shown(tenant.handle())
        ),
        tenant.handle(),
        args.yes,
    )?;

    // The row changes first, in a transaction committed only once the
    // database is gone: if the master refuses the change (say its status
    // type has no 'dropped'), nothing has been dropped yet.
    let mut tx = master_conn.begin().await?;
    if args.keep_row {
        layout
            .set_lifecycle(&mut tx, &tenant, Lifecycle::Dropped, None)
            .await?;
    } else {
        layout.delete(&mut tx, &tenant).await?;
    }
    let mut on_server = ctx.connector.connect_maintenance(&server).await?;
    let dropped = ddl::drop_force(&mut on_server, &db).await;
    let _ = on_server.close().await;
    dropped?;
    let committed = match tx.commit().await {
        Ok(()) => ctx.connector.release(master_conn).await,
        Err(err) => Err(err.into()),
    };
    committed.with_context(|| {
        format!("database {db} was dropped, but recording it in the master failed")
    })?;

    match ctx.output {
        OutputMode::Table => {
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
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(
            mode,
            &serde_json::json!({
                "id": tenant.id, "slug": tenant.slug, "db_name": db.as_str(), "server": server.as_str(),
                "row": if args.keep_row { "kept" } else { "deleted" },
            }),
        ),
    }
    Ok(Outcome::Success)
}
