//! tenantctl: database-per-tenant PostgreSQL operations.
//!
//! A master database's `"Company"` table names each tenant's database; every
//! tenant connection is built at run time from one base URL and that name
//! (see [`db::Connector`]).

pub mod cli;
pub mod commands;
pub mod confirm;
pub mod context;
pub mod databases;
pub mod db;
pub mod dbname;
pub mod error;
pub mod fleet;
pub mod master;
pub mod migrations;
pub mod progress;
pub mod redact;
pub mod report;
pub mod selection;
pub mod sqltext;
pub mod tenant;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::context::Context;
use crate::error::Outcome;

/// The whole program: load `.env`, parse arguments, run, map the result to
/// an exit status.
pub fn main() -> ExitCode {
    // A missing .env is normal; a broken one is worth stopping for.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("error: .env: {err}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("error: {}", error::render(&err));
            error::exit_code(&err)
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let ctx = Context::new(&cli.global)?;
    commands::run(cli.command, &ctx).await
}
