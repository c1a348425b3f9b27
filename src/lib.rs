//! tenantctl: database-per-tenant PostgreSQL operations.
//!
//! A master database's `"Company"` table names each tenant's database; every
//! tenant connection is built at run time from one base URL and that name
//! (see [`connect::Connector`]).
//!
//! Layout: `cli` parses the command line and hands it to `commands` (one
//! module per command, mirroring the command tree; `commands::args` holds
//! the shared flag groups, `commands::context` the validated configuration).
//! Below them are the domain modules, which take plain values: `runner`
//! (the only way to reach a database: each tenant, each server, one scoped
//! connection), `connect` (URLs and connections), `dbname`, `tenant`,
//! `companies` (the master's table), `selection`, `fleet` (the runner's
//! engine), `migrations`
//! (tenantctl's own sqlx migrations), `prisma` (an application's Prisma
//! migrations and `_prisma_migrations`), `ddl`; and `output`, which owns everything printed.

pub mod child_env;
pub mod claims;
pub mod cli;
pub mod commands;
pub mod companies;
pub mod config;
pub mod connect;
pub mod copy;
pub mod dbname;
pub mod ddl;
pub mod drift;
pub mod envfile;
pub mod error;
pub mod fleet;
pub mod lifecycle;
pub mod migrations;
pub mod moves;
pub mod output;
pub mod prisma;
pub mod recheck;
pub mod redact;
pub mod revert;
pub mod runner;
pub mod runs;
pub mod script;
pub mod selection;
pub mod servers;
pub mod state;
pub mod template;
pub mod tenant;
pub mod text;
pub mod verify;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::cli::Cli;
use crate::commands::context::Context;
use crate::error::{Exit, Outcome};

/// The whole program: load `.env`, parse arguments, run, map the result to
/// an exit status.
pub fn main() -> ExitCode {
    // Nobody but root reads this process's memory or /proc/<pid>/environ,
    // where the servers' URLs are: not a `tenant exec` child running as
    // the same user, which gets none of them in its own environment.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_dumpable(false);
    // A missing .env is normal; a broken one is worth stopping for.
    match envfile::load() {
        // Named even under --quiet: --quiet silences progress, and a file
        // that changes what the run does (a shard, another server) is not
        // progress; scripted runs are where it is least expected.
        Ok(Some(loaded)) => output::warn(loaded.describe()),
        Ok(None) => {}
        Err(message) => {
            output::warn(format_args!("error: {message}"));
            return Exit::Usage.into();
        }
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(err) => {
            // A refused command line is a usage error like any other: with
            // --output json it still gets its JSON object.
            if err.use_stderr() && wants_json() {
                let message = err.kind().as_str().unwrap_or("invalid command line");
                let first = err.to_string();
                let first = first
                    .lines()
                    .next()
                    .unwrap_or(message)
                    .trim_start_matches("error: ");
                output::print_json(
                    output::OutputMode::Json,
                    &serde_json::json!({ "error": first, "kind": "usage" }),
                );
            }
            // Help and version are printed on stdout and exit 0; a refused
            // command line is a usage error.
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::warn(format_args!("error: start the async runtime: {err}"));
            return Exit::Failed.into();
        }
    };
    let output_mode = cli.global.output;
    let result = runtime.block_on(run(cli));
    // Tasks abandoned by a second interrupt (a connection still closing, a
    // name lookup) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    if let Some(kind) = output::stdout_error() {
        output::warn(format_args!("error: cannot write to stdout: {kind}"));
        return Exit::Failed.into();
    }
    if output::stdout_closed() {
        // Nobody reads what is left to say; the status says it was cut short.
        return Exit::StdoutClosed.into();
    }
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            let message = error::render(&err);
            output::print_json_error(output_mode, &err, &message);
            output::warn(format_args!("error: {message}"));
            error::exit_code(&err)
        }
    }
}

/// Parses the command line, noting where the values that narrow a
/// selection came from (a flag, the environment, a `.env` file), which
/// only the raw matches know.
fn parse() -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut Cli::command()))?;
    cli.origins = commands::args::Origins::of(&matches);
    Ok(cli)
}

/// Whether the raw command line asks for JSON output, for errors that come
/// before it could be parsed.
fn wants_json() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .any(|w| w[0] == "--output" && (w[1] == "json" || w[1] == "jsonl"))
        || args
            .iter()
            .any(|a| a == "--output=json" || a == "--output=jsonl")
}

/// After a second interrupt, how long a command gets to print its report
/// before the process quits without it: enough for the run to cancel what
/// is in flight, wait [`fleet::QUIT_WAIT`] for it and record the run.
const QUIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(6);

/// Runs a parsed command line. A second interrupt normally makes the
/// command return its (interrupted) report quickly; one that does not in
/// [`QUIT_DEADLINE`] (say, blocked reading a confirmation from the
/// terminal) is abandoned with exit status 130 all the same. The command
/// runs on a task of its own so that a blocked one cannot hold this up.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let mut ctx = Context::new(&cli.global)?;
    ctx.origins = cli.origins;
    let stop = ctx.stop.clone();
    let command = tokio::spawn(async move { commands::run(cli.command, &ctx).await });
    tokio::select! {
        joined = command => joined.unwrap_or_else(|err| Err(anyhow::anyhow!("internal error: {err}"))),
        () = stop.quit_after(QUIT_DEADLINE) => Err(error::Quit.into()),
    }
}
