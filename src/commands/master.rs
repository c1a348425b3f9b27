//! `tenantctl master migrate`.

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tracing::Instrument as _;

use crate::commands::context::Context;
use crate::companies::{BOOKKEEPING, Layout, MissingTable, PLACEMENT, SCHEMA_LOCK};
use crate::config::MasterConfig;
use crate::connect::is_missing_database;
use crate::ddl;
use crate::error::Outcome;
use crate::migrations::{self, MigrationSet};
use crate::output::{OutputMode, document, join_versions, line, print_json};
use crate::state;

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
    /// tenantctl's tables moved from beside the companies table, where an
    /// older version kept them, into its own schema.
    moved: Vec<String>,
}

pub async fn run(command: MasterCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        MasterCommand::Migrate => {
            migrate(ctx)
                .instrument(crate::statement_log::scope("master"))
                .await
        }
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
        Ok(server) => Some(
            ctx.runner
                .scoped(server, |server, _| {
                    Box::pin(ddl::create_if_missing(server, db))
                })
                .instrument(crate::statement_log::scope("the master's server"))
                .await?,
        ),
        Err(_) => None,
    };
    let (conn, created) = match checked {
        Some(created) => (connector.connect_master().await?, created),
        None => match connector.connect_master().await {
            Ok(conn) => (conn, false),
            Err(err) if is_missing_database(&err) => {
                let created = ctx
                    .runner
                    .with_master_maintenance(|server, _| {
                        Box::pin(ddl::create_if_missing(server, db))
                    })
                    .await?;
                (connector.connect_master().await?, created)
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
        moved: Vec::new(),
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
    let migrated = &mut result;
    let finished = ctx
        .runner
        .scoped_all_or_nothing(conn, move |conn, _| {
            Box::pin(in_one_transaction(ctx, conn, migrated))
        })
        .await;
    finished.with_context(|| format!("migrate the master database {db}"))?;
    print(ctx, &result);
    Ok(Outcome::Success)
}

/// [`migrate_or_adopt`] in one transaction under the master's schema
/// lock (see [`migrate`]).
async fn in_one_transaction(
    ctx: &Context,
    conn: &mut PgConnection,
    result: &mut Migrated<'_>,
) -> anyhow::Result<()> {
    if !conn.is_in_transaction() {
        use sqlx::TransactionManager as _;
        sqlx::postgres::PgTransactionManager::begin(conn, None)
            .await
            .context("begin")?;
    }
    migrations::lock_key(conn, SCHEMA_LOCK)
        .await
        .context("take the master's schema lock")?;
    state::keep_out_of_search_path(conn).await?;
    migrate_or_adopt(ctx, conn, result).await
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
        Ok(layout) => {
            result.moved = state::move_legacy(conn, &layout.schema_sql, &layout.legacy).await?;
            let mut layout = Layout::load(conn, &ctx.config.master).await?;
            let recorded = own_ledger(conn, &ours, &mut result.moved).await?;
            if !recorded.iter().any(|row| ours.recorded(row)) {
                result.adopted = true;
                result.bookkeeping_created =
                    !layout.has_bookkeeping && layout.ensure_bookkeeping(conn).await?;
                result.placement_created =
                    !layout.has_placement && layout.ensure_placement(conn).await?;
                crate::moves::ensure_table(conn, &mut layout).await?;
                if layout.keeps_claims() {
                    crate::claims::ensure_table(conn).await?;
                }
                crate::runs::ensure_tables(conn, &layout).await?;
                state::check_owners(conn).await?;
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
    crate::moves::ensure_table(conn, &mut layout).await?;
    crate::runs::ensure_tables(conn, &layout).await?;
    state::check_owners(conn).await
}

/// The master migrations recorded in tenantctl's ledger. An older
/// tenantctl recorded them in `_sqlx_migrations` wherever the master
/// role's search path put it (usually `public`): if that table holds only
/// tenantctl's master migrations it is tenantctl's, and moves into
/// tenantctl's schema; if it holds other rows too (the application's own
/// sqlx migrations?) it is refused, since splitting a ledger is for a
/// person.
async fn own_ledger(
    conn: &mut PgConnection,
    ours: &MigrationSet,
    moved: &mut Vec<String>,
) -> anyhow::Result<Vec<migrations::AppliedRow>> {
    if let Some(rows) = migrations::read_master_applied(conn).await? {
        return Ok(rows);
    }
    let Some(legacy) = migrations::read_applied(conn).await? else {
        return Ok(Vec::new());
    };
    let (mine, theirs): (Vec<_>, Vec<_>) = legacy.iter().partition(|row| ours.recorded(row));
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    let table: String = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .context("find the master's _sqlx_migrations")?;
    anyhow::ensure!(
        theirs.is_empty(),
        "the master's {table} holds tenantctl's master migrations and {} others (versions {}): move tenantctl's rows (versions {}) into a table {} of the same shape by hand, then run `tenantctl master migrate` again",
        theirs.len(),
        theirs
            .iter()
            .map(|r| r.version.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        mine.iter()
            .map(|r| r.version.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        state::MASTER_LEDGER
    );
    state::ensure_schema(conn).await?;
    crate::companies::create_under_lock(
        conn,
        &format!("ALTER TABLE {table} SET SCHEMA {}", state::SCHEMA),
    )
    .await
    .with_context(|| format!("move {table} to {}", state::MASTER_LEDGER))?;
    moved.push(format!("{table} -> {}", state::MASTER_LEDGER));
    Ok(legacy)
}

fn print(ctx: &Context, result: &Migrated<'_>) {
    let db = result.database;
    document(ctx.output, result);
    match ctx.output {
        OutputMode::Table | OutputMode::Junit => {
            if result.created {
                line(format_args!("created master database {db}"));
            }
            for moved in &result.moved {
                line(format_args!(
                    "moved tenantctl's table {moved} (its own schema, which the application's ORM does not see)"
                ));
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
                        "created tenantctl's own {BOOKKEEPING} table (each company's lifecycle)"
                    ));
                }
                if result.placement_created {
                    line(format_args!(
                        "created tenantctl's own {PLACEMENT} table (each tenant's server)"
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
        OutputMode::Jsonl => print_json(ctx.output, result),
        OutputMode::Json => {}
    }
}
