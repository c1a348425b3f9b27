//! `tenantctl tenant drop <slug|id>`: drop a tenant's database and forget
//! (or mark) its company.

use anyhow::Context as _;
use clap::Args;
use sqlx::Connection as _;

use crate::cli::OutputMode;
use crate::confirm::confirm;
use crate::context::Context;
use crate::databases;
use crate::error::Outcome;
use crate::master;
use crate::report::print_json;
use crate::tenant::TenantStatus;

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
    let mut master_conn = ctx.connector.connect_master().await?;
    let tenant = master::get(&mut master_conn, &args.tenant).await?;
    // Only a database the company row names, that passes validation and is
    // not the master, can get this far.
    let db = tenant.db_name()?.clone();
    ctx.connector.check_tenant_db(&db)?;
    confirm(
        &format!(
            "drop database {db} of tenant {} and everything in it",
            tenant.slug
        ),
        &tenant.slug,
        args.yes,
    )?;

    // The row changes first, in a transaction committed only once the
    // database is gone: if the master refuses the change (say its status
    // type has no 'dropped'), nothing has been dropped yet.
    let mut tx = master_conn.begin().await?;
    if args.keep_row {
        master::set_status(&mut tx, &tenant.id, TenantStatus::Dropped).await?;
    } else {
        master::delete(&mut tx, &tenant.id).await?;
    }
    let mut server = ctx.connector.connect_maintenance().await?;
    let dropped = databases::drop_force(&mut server, &db).await;
    let _ = server.close().await;
    dropped?;
    tx.commit().await.with_context(|| {
        format!("database {db} was dropped, but recording it in the master failed")
    })?;
    let _ = master_conn.close().await;

    match ctx.output {
        OutputMode::Table => println!(
            "dropped tenant {} (database {db}){}",
            tenant.slug,
            if args.keep_row {
                "; row kept with status dropped"
            } else {
                ""
            }
        ),
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(
            mode,
            &serde_json::json!({
                "id": tenant.id, "slug": tenant.slug, "db_name": db.as_str(),
                "row": if args.keep_row { "kept" } else { "deleted" },
            }),
        ),
    }
    Ok(Outcome::Success)
}
