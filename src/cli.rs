//! The command line: global flags and the flag groups that commands share.
//! Each command's own arguments live beside its code in `commands/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::commands::Command;
use crate::selection::Shard;
use crate::tenant::TenantStatus;

/// Database-per-tenant PostgreSQL: create, migrate and inspect every
/// tenant's database from one server URL and the master's "Company" table.
#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Server root URL with credentials and no database, e.g.
    /// `postgresql://user:pass@localhost:5432` (query parameters such as
    /// sslmode are kept)
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

    /// Read tenant migrations from this folder instead of the embedded ones
    #[arg(long, env = "TENANT_MIGRATIONS_DIR", global = true, value_name = "DIR")]
    pub tenant_migrations: Option<PathBuf>,

    /// Output format
    #[arg(long, value_enum, default_value_t = OutputMode::Table, global = true)]
    pub output: OutputMode,

    /// Give up on a connection attempt after this long
    #[arg(long, env = "TENANTCTL_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// No progress bar and no per-tenant failure lines on stderr
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// A table for people
    Table,
    /// One JSON document at the end
    Json,
    /// One JSON object per line, each printed as soon as it is known
    Jsonl,
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

    /// Only tenants with this status (repeatable) [default with --all: active]
    #[arg(long, value_enum)]
    pub status: Vec<TenantStatus>,

    /// Only shard I of N (0-based): a stable split by tenant id, so N jobs
    /// cover every selected tenant exactly once
    #[arg(long, env = "TENANTCTL_SHARD", value_name = "I/N")]
    pub shard: Option<Shard>,
}

/// How a command runs across several tenants.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Tenants in flight at once, each on its own connection
    #[arg(long, env = "TENANTCTL_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// After the first failure start no new tenant; the rest are reported skipped
    #[arg(long)]
    pub fail_fast: bool,
}

/// Limits set on each tenant session, so a statement blocked by
/// application traffic fails its tenant instead of hanging the run.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Give up waiting for a lock after this long (e.g. 500ms, 5s, 2m)
    #[arg(long, env = "TENANTCTL_LOCK_TIMEOUT", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,

    /// Cancel any statement that runs longer than this (e.g. 30s, 5m)
    #[arg(long, env = "TENANTCTL_STATEMENT_TIMEOUT", value_parser = parse_duration)]
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

impl From<&FleetArgs> for crate::fleet::FleetOptions {
    fn from(args: &FleetArgs) -> Self {
        Self {
            concurrency: usize::from(args.concurrency),
            fail_fast: args.fail_fast,
        }
    }
}

impl From<&SessionArgs> for crate::db::SessionLimits {
    fn from(args: &SessionArgs) -> Self {
        Self {
            lock_timeout: args.lock_timeout,
            statement_timeout: args.statement_timeout,
        }
    }
}
