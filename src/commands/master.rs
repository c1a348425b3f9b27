//! `tenantctl master migrate`.

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use sqlx::Connection as _;

use crate::commands::context::Context;
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
struct Migrated<'a> {
    database: &'a str,
    created: bool,
    applied: Vec<i64>,
}

pub async fn run(command: MasterCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        MasterCommand::Migrate => migrate(ctx).await,
    }
}

async fn migrate(ctx: &Context) -> anyhow::Result<Outcome> {
    let connector = &ctx.connector;
    let db = connector.master_db();
    // Straight to the master; the server's maintenance database only when
    // the master has to be created.
    let (mut conn, created) = match connector.connect_master().await {
        Ok(conn) => (conn, false),
        Err(err) if is_missing_database(&err) => {
            let mut server = connector.connect_master_maintenance().await?;
            let created = ddl::create_if_missing(&mut server, db).await;
            let _ = server.close().await;
            (connector.connect_master().await?, created?)
        }
        Err(err) => return Err(err),
    };
    let mut applied = Vec::new();
    migrations::apply(
        &mut conn,
        db,
        &MigrationSet::embedded_master(),
        &mut applied,
    )
    .await
    .with_context(|| format!("migrate the master database {db}"))?;
    let _ = conn.close().await;

    let result = Migrated {
        database: db.as_str(),
        created,
        applied,
    };
    match ctx.output {
        OutputMode::Table => {
            if result.created {
                line(format_args!("created master database {db}"));
            }
            if result.applied.is_empty() {
                line(format_args!("master database {db} is up to date"));
            } else {
                line(format_args!(
                    "master database {db}: applied {} migration(s): {}",
                    result.applied.len(),
                    join_versions(&result.applied)
                ));
            }
        }
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(mode, &result),
    }
    Ok(Outcome::Success)
}
