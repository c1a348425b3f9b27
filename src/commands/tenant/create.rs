//! `tenantctl tenant create <slug>`: record the company, create its database,
//! migrate it, mark it active. Rerunning it for a tenant left in
//! `provisioning` or `failed` finishes the job.

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::cli::{OutputMode, SessionArgs};
use crate::commands::master::join;
use crate::context::Context;
use crate::databases;
use crate::db::SessionLimits;
use crate::dbname::DbName;
use crate::error::{Outcome, UsageError};
use crate::master;
use crate::migrations::{self, MigrationSet};
use crate::report::print_json;
use crate::tenant::{Slug, Tenant, TenantStatus};

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

    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
    slug: &'a str,
    name: &'a str,
    db_name: &'a str,
    status: TenantStatus,
    resumed: bool,
    applied: &'a [i64],
}

pub async fn run(args: CreateArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let slug = Slug::parse(&args.slug).map_err(|e| UsageError(e.to_string()))?;
    let requested_db = args
        .db_name
        .as_deref()
        .map(DbName::parse)
        .transpose()
        .map_err(|e| UsageError(format!("--db-name: {e}")))?;
    if requested_db.as_ref() == Some(ctx.connector.master_db()) {
        return Err(UsageError(format!(
            "--db-name: {} is the master database",
            ctx.connector.master_db()
        ))
        .into());
    }
    let migrations = ctx.tenant_migrations().await?;

    let mut master_conn = ctx.connector.connect_master().await?;
    let mut server = ctx.connector.connect_maintenance().await?;
    let (tenant, resumed) = match master::find_by_slug(&mut master_conn, &slug).await? {
        Some(existing) => (resume(existing, requested_db.as_ref())?, true),
        None => {
            let db = match requested_db {
                Some(db) => {
                    ensure_free(&mut master_conn, &mut server, &db).await?;
                    db
                }
                None => free_db_name(&mut master_conn, &mut server, &slug).await?,
            };
            let name = args.name.as_deref().unwrap_or(slug.as_str());
            (
                master::insert(&mut master_conn, &slug, name, &db).await?,
                false,
            )
        }
    };
    if resumed && !ctx.quiet {
        eprintln!(
            "tenant {tenant} was left in {}; finishing its provisioning",
            tenant.status
        );
    }

    let limits = SessionLimits::from(&args.session);
    let mut applied = Vec::new();
    let provisioned = provision(
        ctx,
        &mut server,
        &tenant,
        &migrations,
        &limits,
        &mut applied,
    )
    .await;
    let _ = server.close().await;
    if let Err(err) = provisioned {
        // Best effort: the error being reported matters more than this one.
        let _ = master::set_status(&mut master_conn, &tenant.id, TenantStatus::Failed).await;
        return Err(err.context(format!(
            "tenant {tenant}: provisioning failed (status failed); fix the cause and run `tenantctl tenant create {slug}` again to finish"
        )));
    }
    master::set_status(&mut master_conn, &tenant.id, TenantStatus::Active).await?;
    let _ = master_conn.close().await;

    let created = Created {
        id: &tenant.id,
        slug: &tenant.slug,
        name: &tenant.name,
        db_name: &tenant.db_name_raw,
        status: TenantStatus::Active,
        resumed,
        applied: &applied,
    };
    match ctx.output {
        OutputMode::Table => println!(
            "{} tenant {} (id {}, database {}): applied {} migration(s){}",
            if resumed { "finished" } else { "created" },
            created.slug,
            created.id,
            created.db_name,
            applied.len(),
            if applied.is_empty() {
                String::new()
            } else {
                format!(": {}", join(&applied))
            }
        ),
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(mode, &created),
    }
    Ok(Outcome::Success)
}

/// An existing row may only be picked up again if provisioning never
/// finished, and with the database it already names.
fn resume(existing: Tenant, requested_db: Option<&DbName>) -> anyhow::Result<Tenant> {
    let resumable = existing.has_status(TenantStatus::Provisioning)
        || existing.has_status(TenantStatus::Failed);
    anyhow::ensure!(
        resumable,
        "tenant {} already exists (status {}, id {})",
        existing.slug,
        existing.status,
        existing.id
    );
    if let Some(db) = requested_db {
        anyhow::ensure!(
            existing.db_name_raw == db.as_str(),
            "tenant {} is already recorded with database {}; rerun without --db-name (or with that name) to finish it",
            existing.slug,
            existing.db_name_raw
        );
    }
    existing.db_name()?;
    Ok(existing)
}

/// Refuses a database name another company uses or that already exists on
/// the server: adopting a stranger's database would be worse than failing.
async fn ensure_free(
    master_conn: &mut PgConnection,
    server: &mut PgConnection,
    db: &DbName,
) -> anyhow::Result<()> {
    if let Some(owner) = master::find_by_db(master_conn, db).await? {
        anyhow::bail!(
            "database {db} already belongs to tenant {}; pick another --db-name",
            owner.slug
        );
    }
    anyhow::ensure!(
        !databases::exists(server, db).await?,
        "database {db} already exists on the server and no company names it; pick another --db-name"
    );
    Ok(())
}

/// The slug's default database name, or the same with `_2`, `_3`... if
/// that is taken in the master or on the server.
async fn free_db_name(
    master_conn: &mut PgConnection,
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
        if master::find_by_db(master_conn, &candidate).await?.is_none()
            && !databases::exists(server, &candidate).await?
        {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no free database name derived from {base}; pass --db-name")
}

async fn provision(
    ctx: &Context,
    server: &mut PgConnection,
    tenant: &Tenant,
    migrations: &MigrationSet,
    limits: &SessionLimits,
    applied: &mut Vec<i64>,
) -> anyhow::Result<()> {
    let db = tenant.db_name()?;
    databases::create_if_missing(server, db).await?;
    let mut conn = ctx.connector.connect_tenant(db, limits).await?;
    let result = migrations::apply(&mut conn, db, migrations, applied).await;
    let _ = conn.close().await;
    result
}
