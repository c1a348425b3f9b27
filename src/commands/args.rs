//! The flag groups commands share, flattened into each command's own
//! `Args`. They turn into plain domain values (`Filter`, `FleetOptions`,
//! `SessionLimits`) here, so nothing below `commands` sees clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::connect::SessionLimits;
use crate::fleet::FleetOptions;
use crate::output::OutputMode;
use crate::runs::{FailedIn, Label};
use crate::selection::{Filter, Shard, Source};
use crate::servers::ServerName;
use crate::tenant::StatusWanted;

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Root URL of the server named default, with credentials and no
    /// database, e.g. `postgresql://user:pass@localhost:5432` (query
    /// parameters such as sslmode are kept); other servers come from
    /// `POSTGRES_BASE_URL_<NAME>`
    #[arg(long, env = "POSTGRES_BASE_URL", hide_env_values = true, global = true)]
    pub base_url: Option<String>,

    /// Master database URL [default: the base URL with database "master"]
    #[arg(
        long,
        env = "MASTER_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub master_url: Option<String>,

    /// How the master's companies table is laid out, when it is not the
    /// seed's "Company" [default: tenantctl.toml in the working directory,
    /// if there is one]
    #[arg(long, env = "TENANTCTL_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Read tenant migrations from this folder instead of the embedded ones
    #[arg(long, env = "TENANT_MIGRATIONS_DIR", global = true, value_name = "DIR")]
    pub tenant_migrations: Option<PathBuf>,

    /// Output format
    #[arg(long, value_parser = output_mode(), default_value = "table", global = true)]
    pub output: OutputMode,

    /// Give up on a connection attempt after this long
    #[arg(long, env = "TENANTCTL_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Also write the JSON report (what --output json prints) to this
    /// file, whatever --output is, however the run ends; replaced
    /// atomically, readable by its owner only when new (a pipe or a
    /// device, such as /dev/stdout, is written through)
    #[arg(
        long,
        env = "TENANTCTL_REPORT_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub report_file: Option<PathBuf>,

    /// Append a Markdown summary of the run to this file (counts, time,
    /// selection, failed tenants), e.g. `$GITHUB_STEP_SUMMARY`
    #[arg(
        long,
        env = "TENANTCTL_SUMMARY_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub summary_file: Option<PathBuf>,

    /// No progress bar and no notices on stderr; each failed tenant's line
    /// stays [no progress bar either when CI is set or stderr is not a
    /// terminal]
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Print each statement tenantctl sends, where it went (tenant,
    /// master, server) and how long it took, on stderr; passwords masked
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// Which tenants a command acts on.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
    /// Tenants by slug or id
    #[arg(value_name = "SLUG|ID", conflicts_with = "all")]
    pub tenants: Vec<String>,

    #[command(flatten)]
    pub filter: FilterArgs,
}

/// The flag part of a selection, for commands whose positional arguments
/// carry more than tenant names.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Every tenant (with status active unless --status says otherwise)
    #[arg(long)]
    pub all: bool,

    /// Only tenants with this status (repeatable): provisioning, active,
    /// failed, dropped, moving, or a value of the companies table's own
    /// status column (SUSPENDED, say); on its own it selects every tenant
    /// with it [default with --all: active]
    #[arg(long, value_name = "STATUS", value_parser = StatusWanted::parse)]
    pub status: Vec<StatusWanted>,

    /// Only shard I of N (0-based) of an --all or --status selection: a
    /// stable split by tenant id, so N jobs cover every tenant exactly once
    /// (tenants named explicitly are never filtered by it); `auto` reads
    /// the job's place from GitLab's, Buildkite's, CircleCI's or Azure
    /// Pipelines' parallel-job variables
    #[arg(long, env = "TENANTCTL_SHARD", value_name = "I/N")]
    pub shard: Option<Shard>,

    /// Only tenants placed on this server (repeatable); narrows the
    /// tenants named or selected with --all
    #[arg(long = "server", value_name = "NAME")]
    pub servers: Vec<ServerName>,

    /// The tenants that failed, were skipped, interrupted or never reached
    /// in this recorded run, or (a label) whose latest result under that
    /// label is not ok; like --all otherwise (status active unless --status
    /// says otherwise; --shard and --server apply). `run:N` or `label:TEXT`
    /// say which a bare value is
    #[arg(
        long,
        value_name = "RUN|LABEL",
        conflicts_with = "all",
        value_parser = clap::builder::ValueParser::new(parse_failed_in)
    )]
    pub failed_in: Option<FailedIn>,
}

/// `--failed-in`'s value, its error without the value repeated by clap.
fn parse_failed_in(raw: &str) -> Result<FailedIn, String> {
    raw.parse()
}

/// `--label`: the deploy a recorded run belongs to.
#[derive(Debug, Clone, Args)]
pub struct LabelArgs {
    /// Record this run under a label (a pipeline id, say: 1 to 200
    /// characters, no control characters), so `tenant runs --label`,
    /// `--failed-in` and `tenant revert --label` find every run of the
    /// deploy
    #[arg(long, env = "TENANTCTL_LABEL", value_name = "TEXT", value_parser = clap::builder::ValueParser::new(parse_label))]
    pub label: Option<Label>,
}

/// `--label`'s value (also `tenant revert --label`'s).
pub fn parse_label(raw: &str) -> Result<Label, String> {
    raw.parse()
}

/// Where the values of the flags that also read a variable came from,
/// which clap knows only while the raw matches are at hand: the shard may
/// come from `TENANTCTL_SHARD`, and that from a `.env` file.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Where `--shard` came from, if it was given at all.
    pub shard: Option<Source>,
    /// Where `--label` came from, if it was given at all.
    pub label: Option<Source>,
}

impl Origins {
    /// Reads the sources from the matches of the command line, whose
    /// subcommand chain ends at the command that ran.
    pub fn of(matches: &clap::ArgMatches) -> Self {
        let mut leaf = matches;
        while let Some((_, sub)) = leaf.subcommand() {
            leaf = sub;
        }
        Self {
            shard: source(leaf, "shard", "TENANTCTL_SHARD"),
            label: source(leaf, "label", "TENANTCTL_LABEL"),
        }
    }
}

/// Where the value of `id` came from: the command line, the environment,
/// or (when the variable was one a `.env` file set) that file.
fn source(matches: &clap::ArgMatches, id: &str, variable: &str) -> Option<Source> {
    // Asking about an argument the command does not have panics in debug
    // builds; one absent from the matches was not given anyway.
    if !matches.ids().any(|known| known.as_str() == id) {
        return None;
    }
    Some(match matches.value_source(id)? {
        clap::parser::ValueSource::EnvVariable => match crate::envfile::file_that_set(variable) {
            Some(file) => Source::EnvFile {
                variable: variable.to_owned(),
                file: file.display().to_string(),
            },
            None => Source::Environment {
                variable: variable.to_owned(),
            },
        },
        clap::parser::ValueSource::DefaultValue => Source::Default,
        _ => Source::CommandLine,
    })
}

/// How a command runs across several tenants.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Tenants in flight at once, each on its own connection
    #[arg(long, env = "TENANTCTL_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// At most this many of the tenants in flight on any one server
    /// [default: no cap beyond --concurrency]
    #[arg(long, env = "TENANTCTL_PER_SERVER", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub per_server: Option<u16>,

    /// After the first failure start no new tenant; the rest are reported skipped
    #[arg(long)]
    pub fail_fast: bool,
}

/// Limits set on each tenant session, so a statement blocked by
/// application traffic fails its tenant instead of hanging the run.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Give up waiting for a lock after this long (e.g. 500ms, 5s, 2m)
    #[arg(long, env = "TENANTCTL_LOCK_TIMEOUT", value_parser = parse_server_timeout)]
    pub lock_timeout: Option<Duration>,

    /// Cancel any statement that runs longer than this (e.g. 30s, 5m)
    #[arg(long, env = "TENANTCTL_STATEMENT_TIMEOUT", value_parser = parse_server_timeout)]
    pub statement_timeout: Option<Duration>,
}

/// Parses `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(raw).map_err(|e| format!("{e} (use e.g. 500ms, 5s, 2m)"))?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// Largest value PostgreSQL accepts for `lock_timeout` and
/// `statement_timeout`: `INT_MAX` milliseconds, about 24.8 days.
const MAX_SERVER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Parses a timeout that is sent to the server, which counts whole
/// milliseconds and reads 0 as "no timeout": anything under 1 ms (it would
/// become 0 and wait for ever) or beyond the server's range is refused
/// here, naming the flag, rather than failing every tenant.
pub fn parse_server_timeout(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    if duration < Duration::from_millis(1) {
        return Err(
            "must be at least 1ms: PostgreSQL counts whole milliseconds and reads 0 as no timeout"
                .into(),
        );
    }
    if duration > MAX_SERVER_TIMEOUT {
        return Err(format!(
            "must be at most {}ms (about 24 days), PostgreSQL's limit",
            MAX_SERVER_TIMEOUT.as_millis()
        ));
    }
    Ok(duration)
}

impl From<&FleetArgs> for FleetOptions {
    fn from(args: &FleetArgs) -> Self {
        Self {
            concurrency: usize::from(args.concurrency),
            per_server: args.per_server.map(usize::from),
            fail_fast: args.fail_fast,
        }
    }
}

impl From<&SessionArgs> for SessionLimits {
    fn from(args: &SessionArgs) -> Self {
        Self {
            lock_timeout: args.lock_timeout,
            statement_timeout: args.statement_timeout,
        }
    }
}

impl From<&FilterArgs> for Filter {
    fn from(args: &FilterArgs) -> Self {
        Self {
            all: args.all,
            lifecycles: args.status.clone(),
            shard: args.shard,
            servers: args.servers.clone(),
            // Read against the records by the selection (see
            // `Context::resolve`).
            failed_in: None,
        }
    }
}

/// `--output`'s values, read into the output layer's own type (which knows
/// no command line).
fn output_mode() -> impl clap::builder::TypedValueParser<Value = OutputMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    PossibleValuesParser::new(
        OutputMode::ALL.map(|mode| PossibleValue::new(mode.as_str()).help(mode.about())),
    )
    .map(|name| OutputMode::parse(&name).unwrap_or(OutputMode::Table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timeouts_stay_within_what_postgres_reads() {
        for ok in ["1ms", "500ms", "5s", "2m", "24d", "2147483647ms"] {
            assert!(parse_server_timeout(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1ns",
            "500us",
            "999us",
            "0s",
            "25d",
            "1y",
            "2147483648ms",
            "x",
        ] {
            assert!(parse_server_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_server_timeout("1500us"),
            Ok(Duration::from_micros(1500))
        );
    }
}
