//! `tenantctl master migrate`.

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use sqlx::Connection as _;

use crate::cli::OutputMode;
use crate::context::Context;
use crate::databases;
use crate::error::Outcome;
use crate::migrations::{self, MigrationSet};
use crate::report::print_json;

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
    let mut server = connector.connect_master_maintenance().await?;
    let created = databases::create_if_missing(&mut server, db).await?;
    let _ = server.close().await;

    let mut conn = connector.connect_master().await?;
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
                println!("created master database {db}");
            }
            if result.applied.is_empty() {
                println!("master database {db} is up to date");
            } else {
                println!(
                    "master database {db}: applied {} migration(s): {}",
                    result.applied.len(),
                    join(&result.applied)
                );
            }
        }
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(mode, &result),
    }
    Ok(Outcome::Success)
}

pub(crate) fn join(versions: &[i64]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
