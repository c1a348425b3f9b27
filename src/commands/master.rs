//! `tenantctl master migrate`.

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::commands::context::Context;
use crate::companies::{BOOKKEEPING, Layout, MissingTable, PLACEMENT, SCHEMA_LOCK};
use crate::config::MasterConfig;
use crate::connect::is_missing_database;
use crate::ddl;
use crate::error::Outcome;
use crate::migrations::{self, MigrationSet};
use crate::output::{OutputMode, join_versions, line, print_json};

#[derive(Debug, Subcommand)]
pub enum MasterCommand {
    /// Create the master database if needed and apply master-migrations
    Migrate,
}

#[derive(Serialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "the flags of the JSON report, each its own key"
)]
struct Migrated<'a> {
    database: &'a str,
    created: bool,
    applied: Vec<i64>,
    /// The companies table was there already and not tenantctl's: nothing
    /// in it was changed.
    adopted: bool,
    /// With `adopted`: what tenantctl found and will use.
    found: Vec<String>,
    /// With `adopted`: whether tenantctl's own bookkeeping table was added.
    bookkeeping_created: bool,
    /// With `adopted`: whether tenantctl's own placement table was added.
    placement_created: bool,
}

pub async fn run(command: MasterCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        MasterCommand::Migrate => migrate(ctx).await,
    }
}

async fn migrate(ctx: &Context) -> anyhow::Result<Outcome> {
    let connector = &ctx.connector;
    let db = connector.master_db();
    // The maintenance database first, through the same address as the
    // master (tenantctl knows no other: behind a pooler, the server's own
    // is not in its configuration): it says whether the master exists, and
    // creates it if not, before anything logs in to the master. A pooler
    // such as PgBouncer holds a login to a database that does not exist
    // (and, for server_login_retry, to one just created), so trying the
    // master first would wait out --connect-timeout. A pooler with no
    // entry for the maintenance database (no `* =` wildcard), or CONNECT
    // revoked on it, refuses at once: then straight to the master, as on a
    // server where it exists.
    let checked = match connector.connect_master_maintenance().await {
        Ok(mut server) => {
            let created = ddl::create_if_missing(&mut server, db).await;
            let _ = server.close().await;
            Some(created?)
        }
        Err(_) => None,
    };
    let (mut conn, created) = match checked {
        Some(created) => (connector.connect_master().await?, created),
        None => match connector.connect_master().await {
            Ok(conn) => (conn, false),
            Err(err) if is_missing_database(&err) => {
                let mut server = connector.connect_master_maintenance().await?;
                let created = ddl::create_if_missing(&mut server, db).await;
                let _ = server.close().await;
                (connector.connect_master().await?, created?)
            }
            Err(err) => return Err(err),
        },
    };
    let mut result = Migrated {
        database: db.as_str(),
        created,
        applied: Vec::new(),
        adopted: false,
        found: Vec::new(),
        bookkeeping_created: false,
        placement_created: false,
    };
    // Everything below, from reading what the master holds to the last
    // CREATE TABLE, is one transaction under the master's schema lock,
    // transaction-level: two `master migrate` at once (two deploys, two CI
    // jobs) would otherwise both decide to create the same tables and
    // collide in the catalog; the second now waits, then finds them
    // committed. A transaction-level lock leaves nothing on the server
    // connection even behind a transaction-mode pooler nobody marked (a
    // session-level one would stay with whichever server connection the
    // pooler gave it, and could be released on another). A pinned
    // connection (`?pgbouncer=true`) is in its transaction already; the
    // steps inside use savepoints. Whatever fails, nothing is kept: the
    // connection is closed inside its transaction.
    let begun = if conn.is_in_transaction() {
        Ok(())
    } else {
        use sqlx::TransactionManager as _;
        sqlx::postgres::PgTransactionManager::begin(&mut conn, None)
            .await
            .context("begin")
    };
    let done = match begun {
        Ok(()) => match migrations::lock_key(&mut conn, SCHEMA_LOCK).await {
            Ok(()) => migrate_or_adopt(ctx, &mut conn, &mut result).await,
            Err(err) => Err(err.context("take the master's schema lock")),
        },
        Err(err) => Err(err),
    };
    let finished = match done {
        // Commits, and with it frees the lock.
        Ok(()) => ctx.connector.release(conn).await,
        Err(err) => {
            let _ = conn.close().await;
            Err(err)
        }
    };
    finished.with_context(|| format!("migrate the master database {db}"))?;
    print(ctx, &result);
    Ok(Outcome::Success)
}

/// On a master without the companies table, creates it (tenantctl's
/// master migrations); on one whose table tenantctl created, applies what
/// is pending; on an application's own table, adopts it: changes nothing in
/// it, adds only tenantctl's bookkeeping where needed.
async fn migrate_or_adopt(
    ctx: &Context,
    conn: &mut PgConnection,
    result: &mut Migrated<'_>,
) -> anyhow::Result<()> {
    let ours = MigrationSet::embedded_master();
    let db = ctx.connector.master_db();
    match Layout::load(conn, &ctx.config.master).await {
        Err(err) if err.is::<MissingTable>() => {
            if ctx.config.master.table != MasterConfig::default().table {
                return Err(err);
            }
        }
        Err(err) => return Err(err),
        Ok(mut layout) => {
            let recorded = migrations::read_applied(conn).await?.unwrap_or_default();
            if !recorded.iter().any(|row| ours.recorded(row)) {
                result.adopted = true;
                result.bookkeeping_created =
                    !layout.has_bookkeeping && layout.ensure_bookkeeping(conn).await?;
                result.placement_created =
                    !layout.has_placement && layout.ensure_placement(conn).await?;
                layout.ensure_moves(conn).await?;
                crate::runs::ensure_tables(conn, &layout).await?;
                result.found = layout.describe();
                return Ok(());
            }
        }
    }
    let mut done = migrations::Done::default();
    let applied = migrations::apply(conn, db, &ours, None, &mut done).await;
    result.applied = done.versions;
    applied?;
    // tenantctl's records of moves between servers and of migrate runs,
    // beside its own table.
    let mut layout = Layout::load(conn, &ctx.config.master).await?;
    layout.ensure_moves(conn).await?;
    crate::runs::ensure_tables(conn, &layout).await
}

fn print(ctx: &Context, result: &Migrated<'_>) {
    let db = result.database;
    match ctx.output {
        OutputMode::Table => {
            if result.created {
                line(format_args!("created master database {db}"));
            }
            if result.adopted {
                line(format_args!(
                    "adopted the existing companies table in {db}, changing nothing in it; found:"
                ));
                for found in &result.found {
                    line(format_args!("  {found}"));
                }
                if result.bookkeeping_created {
                    line(format_args!(
                        "created tenantctl's own {BOOKKEEPING} table beside it"
                    ));
                }
                if result.placement_created {
                    line(format_args!(
                        "created tenantctl's own {PLACEMENT} table beside it (each tenant's server)"
                    ));
                }
            } else if result.applied.is_empty() {
                line(format_args!("master database {db} is up to date"));
            } else {
                line(format_args!(
                    "master database {db}: applied {} migration(s): {}",
                    result.applied.len(),
                    join_versions(&result.applied)
                ));
            }
        }
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(mode, result),
    }
}
