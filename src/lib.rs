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
pub mod statement_log;
pub mod template;
pub mod tenant;
pub mod text;
pub mod verify;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::cli::Cli;
use crate::commands::context::Context;
use crate::error::{Exit, Outcome};

/// Loads the `.env` file, if there is one, naming it; a broken one is
/// returned as the error that stops every command but those that read no
/// configuration.
fn load_env() -> Option<String> {
    match envfile::load() {
        // Named even under --quiet: --quiet silences progress, and a file
        // that changes what the run does (a shard, another server) is not
        // progress; scripted runs are where it is least expected.
        Ok(Some(loaded)) => {
            output::warn(loaded.describe());
            None
        }
        Ok(None) => None,
        Err(message) => Some(message),
    }
}

/// The whole program: load `.env`, parse arguments, run, map the result to
/// an exit status.
pub fn main() -> ExitCode {
    // Nobody but root reads this process's memory or /proc/<pid>/environ,
    // where the servers' URLs are: not a `tenant exec` child running as
    // the same user, which gets none of them in its own environment.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_dumpable(false);
    let broken_env = load_env();
    let parsed = parse();
    // Help, version, completions and man pages need no configuration, so
    // a broken .env in a parent folder does not stop them.
    if let Some(message) = broken_env {
        let offline = match &parsed {
            Ok((cli, _)) => cli.command.run_offline_only(),
            Err(err) => !err.use_stderr(),
        };
        if !offline {
            output::warn(format_args!("error: {message}"));
            early_report(&message);
            return Exit::Usage.into();
        }
    }
    let (cli, command) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => return refused_command_line(&err),
    };
    let output_mode = cli.global.output;
    if let Err(message) = output::sink::open(output::sink::Wanted {
        report: cli.global.report_file.clone(),
        summary: cli.global.summary_file.clone(),
        annotations: output::github::in_actions(),
        command: command.clone(),
    }) {
        // Refused before anything ran: no report can be written there.
        if matches!(
            output_mode,
            output::OutputMode::Json | output::OutputMode::Jsonl
        ) {
            output::print_json(
                output_mode,
                &serde_json::json!({ "error": message, "kind": "usage" }),
            );
        }
        output::warn(format_args!("error: {message}"));
        return Exit::Usage.into();
    }
    let result = match commands::context::check_output(&command, &cli.global) {
        Err(err) => Err(err.into()),
        Ok(()) => run_on_runtime(cli),
    };
    conclude(&result, output_mode)
}

/// Runs the command on a runtime of its own.
fn run_on_runtime(cli: Cli) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("start the async runtime: {err}"))?;
    let result = runtime.block_on(run(cli));
    // Tasks abandoned by a second interrupt (a connection still closing, a
    // name lookup) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// The end of every run that got past the command line: the error (if
/// any) shown, the report and summary files written, the exit status.
fn conclude(result: &anyhow::Result<Outcome>, output_mode: output::OutputMode) -> ExitCode {
    // Read before the error's JSON is printed: a pipe closed by that
    // print is not why the run ends.
    let stdout_error = output::stdout_error();
    let stdout_closed = output::stdout_closed();
    let message = result.as_ref().err().map(|err| {
        let message = error::render(err);
        // Printed (for json/jsonl/junit) and kept for the report file.
        output::print_json_error(output_mode, err, &message);
        message
    });
    let mut code = if let Some(kind) = stdout_error {
        output::warn(format_args!("error: cannot write to stdout: {kind}"));
        Exit::Failed.into()
    } else if stdout_closed {
        // Nobody reads what is left to say; the status says it was cut short.
        Exit::StdoutClosed.into()
    } else {
        match (result, message) {
            (Ok(outcome), _) => outcome.exit_code(),
            (Err(err), message) => {
                output::warn(format_args!("error: {}", message.unwrap_or_default()));
                error::exit_code(err)
            }
        }
    };
    let errors = output::sink::finish();
    for err in &errors {
        output::warn(format_args!("error: {err}"));
    }
    if !errors.is_empty()
        && result
            .as_ref()
            .is_ok_and(|o| o.exit_code() == ExitCode::SUCCESS)
    {
        code = Exit::Failed.into();
    }
    code
}

/// A command line clap refused (or help and version, which it prints on
/// stdout with status 0).
fn refused_command_line(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return Exit::Success.into();
    }
    let message = err.kind().as_str().unwrap_or("invalid command line");
    let text = err.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or(message)
        .trim_start_matches("error: ");
    // A refused command line is a usage error like any other: with
    // --output json it still gets its JSON object.
    if wants_json() {
        output::print_json(
            output::OutputMode::Json,
            &serde_json::json!({ "error": first, "kind": "usage" }),
        );
    }
    let _ = err.print();
    early_report(first);
    Exit::Usage.into()
}

/// The report and summary files (and annotations) for a usage error met
/// before the command line could be parsed, from the raw arguments and
/// the environment.
fn early_report(message: &str) {
    let wanted = output::sink::Wanted {
        report: raw_flag("--report-file")
            .or_else(|| std::env::var_os("TENANTCTL_REPORT_FILE"))
            .map(Into::into),
        summary: raw_flag("--summary-file")
            .or_else(|| std::env::var_os("TENANTCTL_SUMMARY_FILE"))
            .map(Into::into),
        annotations: output::github::in_actions(),
        command: "(command line)".into(),
    };
    if let Err(err) = output::sink::open(wanted) {
        output::warn(format_args!("error: {err}"));
        return;
    }
    output::error_document(output::OutputMode::Table, message, "usage");
    for err in output::sink::finish() {
        output::warn(format_args!("error: {err}"));
    }
}

/// The value of `--flag VALUE` or `--flag=VALUE` in the raw arguments.
fn raw_flag(flag: &str) -> Option<std::ffi::OsString> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        let arg = arg.to_str()?;
        if arg == flag {
            args.get(i + 1).cloned()
        } else {
            arg.strip_prefix(&prefix).map(Into::into)
        }
    })
}

/// Parses the command line, noting where the values that narrow a
/// selection came from (a flag, the environment, a `.env` file), which
/// only the raw matches know, and which command runs (`tenant migrate`).
fn parse() -> Result<(Cli, String), clap::Error> {
    let command = || Cli::command().long_version(commands::version::long());
    let matches = command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command()))?;
    cli.origins = commands::args::Origins::of(&matches);
    let mut names = Vec::new();
    let mut leaf = &matches;
    while let Some((name, sub)) = leaf.subcommand() {
        names.push(name);
        leaf = sub;
    }
    Ok((cli, names.join(" ")))
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
    if let Some(done) = cli.command.run_offline() {
        return done;
    }
    let mut ctx = Context::new(&cli.global)?;
    ctx.origins = cli.origins;
    let stop = ctx.stop.clone();
    let command = tokio::spawn(async move { commands::run(cli.command, &ctx).await });
    tokio::select! {
        joined = command => joined.unwrap_or_else(|err| Err(anyhow::anyhow!("internal error: {err}"))),
        () = stop.quit_after(QUIT_DEADLINE) => Err(error::Quit.into()),
    }
}
