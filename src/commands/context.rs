//! Global flags turned, once, into what every command works with: the
//! configuration and the [`Runner`] built from it, with the fleet flags
//! and progress of each run. Every database touch goes through the
//! runner; what a command selected is in [`super::select`], the records
//! and reports of fleet runs in [`super::record`].

use std::future::Future;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::postgres::PgConnection;

use crate::commands::args::{FleetArgs, GlobalArgs, Origins};
use crate::companies::Layout;
use crate::config::{Config, Migrator, MigratorKind};
use crate::connect::{Connector, SessionLimits};
use crate::error::UsageError;
use crate::fleet::{Attempt, FleetRun, Stop};
use crate::migrations::MigrationSet;
use crate::output::OutputMode;
use crate::output::progress::Progress;
use crate::output::report::TenantValue;
use crate::runner::{ConnFuture, Runner};
use crate::selection::Selection;
use crate::tenant::Tenant;

/// The future an operation on one tenant's connection returns; it borrows
/// the connection, which the runner ends afterwards.
pub type TenantFuture<'c, T> = ConnFuture<'c, T>;

/// Validated configuration shared by all commands.
pub struct Context {
    /// The connector, for what it knows without connecting (servers,
    /// URLs for a child); connections go through [`Self::runner`].
    pub connector: Arc<Connector>,
    pub output: OutputMode,
    pub quiet: bool,
    /// The runner's stop flag.
    pub stop: Stop,
    pub config: Config,
    /// The only way to reach a database.
    pub runner: Runner,
    /// Whether fleet runs stream each tenant's report in `jsonl` mode
    /// (off while `revert` plans, whose plan is not the report).
    streaming: AtomicBool,
    tenant_migrations_dir: Option<PathBuf>,
    /// Who owns the tenants' schema (`[tenants.migrator]`).
    pub migrator: Migrator,
    /// Where the selection flags' values came from (see [`Origins`]).
    pub origins: Origins,
    /// What the last selection read from the master picked and why, for
    /// the report and the run record to state.
    pub(super) selection: std::sync::Mutex<Option<Selection>>,
    /// The template databases this run has found ready, per server.
    pub templates: crate::template::Ready,
}

impl Context {
    pub fn new(global: &GlobalArgs) -> Result<Self, UsageError> {
        let base_url = global
            .base_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                UsageError(
                    "POSTGRES_BASE_URL is not set: set it (or pass --base-url) to the server root, e.g. postgresql://user:password@localhost:5432".into(),
                )
            })?;
        let config = Config::load(global.config.as_deref())?;
        let migrator = config.migrator()?;
        let tenant_migrations_dir = match (&migrator, &global.tenant_migrations) {
            (Migrator::Sqlx { .. }, Some(dir)) => Some(dir.clone()),
            (Migrator::Sqlx { dir }, None) => dir.clone(),
            (other, Some(_)) => {
                return Err(UsageError(format!(
                    "--tenant-migrations (or TENANT_MIGRATIONS_DIR) names sqlx migrations, but {} sets [tenants.migrator] kind = \"{}\": unset one of them",
                    config.source.as_ref().map_or_else(
                        || crate::config::DEFAULT_FILE.into(),
                        |p| p.display().to_string()
                    ),
                    other.kind().as_str()
                )));
            }
            (_, None) => None,
        };
        // Only the POSTGRES_BASE_URL_* variables and those tenantctl.toml
        // names are read; a value that is not UTF-8 cannot be a URL.
        let vars = std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        });
        let sources = crate::servers::sources(base_url, vars, &config.servers)?;
        let connector = Connector::with_servers(
            &sources,
            global
                .master_url
                .as_deref()
                .filter(|s| !s.trim().is_empty()),
            global.connect_timeout,
        )?;
        if global.verbose {
            crate::statement_log::install(connector.child_env().redactor(&[]));
        }
        let connector = Arc::new(connector);
        let runner = Runner::new(connector.clone(), config.master.clone());
        Ok(Self {
            connector,
            output: global.output,
            quiet: global.quiet,
            stop: runner.stop().clone(),
            config,
            runner,
            streaming: AtomicBool::new(true),
            tenant_migrations_dir,
            migrator,
            origins: Origins::default(),
            selection: std::sync::Mutex::new(None),
            templates: crate::template::Ready::default(),
        })
    }

    /// Refuses a command that works on tenantctl's own `_sqlx_migrations`
    /// when the application owns the tenants' schema.
    pub fn sqlx_only(&self, what: &str, instead: &str) -> Result<(), UsageError> {
        match self.migrator.kind() {
            MigratorKind::Sqlx => Ok(()),
            kind => Err(UsageError(format!(
                "{what} works on tenantctl's own sqlx migrations, but [tenants.migrator] kind = \"{}\" owns the tenants' schema: {instead}",
                kind.as_str()
            ))),
        }
    }

    /// The tenant schema: the folder from `--tenant-migrations` if given,
    /// else the one compiled in.
    pub async fn tenant_migrations(&self) -> anyhow::Result<Arc<MigrationSet>> {
        match &self.tenant_migrations_dir {
            Some(dir) => Ok(Arc::new(
                MigrationSet::from_dir(dir)
                    .await
                    .map_err(crate::error::Usage)?,
            )),
            None => Ok(Arc::new(MigrationSet::embedded_tenant())),
        }
    }

    /// The tenant schema, for commands that apply it: behind a
    /// transaction-mode pooler a connection's work must fit in one
    /// transaction, so a `-- no-transaction` migration is refused before
    /// any tenant is touched, rather than failing halfway.
    pub async fn tenant_migrations_to_apply(&self) -> anyhow::Result<Arc<MigrationSet>> {
        let set = self.tenant_migrations().await?;
        if self.connector.pooled()
            && let Some(m) = set.first_no_tx()
        {
            return Err(UsageError(format!(
                "migration {}_{}{} is marked -- no-transaction, which cannot run through a transaction-mode pooler (?pgbouncer=true): migrate through a session-mode pool or a direct URL",
                m.version,
                m.description,
                if m.migration_type.is_down_migration() {
                    " (its down script)"
                } else {
                    ""
                }
            ))
            .into());
        }
        Ok(set)
    }

    /// A connection to the master and the layout of its companies table,
    /// for a run record to hold (see [`Runner::open_master`]).
    pub async fn master(&self) -> anyhow::Result<(PgConnection, Layout)> {
        self.runner.open_master().await
    }

    /// The stop flag, with Ctrl-C and SIGTERM now setting it (see
    /// [`Runner::interruptible`]).
    pub fn interruptible(&self) -> &Stop {
        self.runner.interruptible()
    }

    /// Runs `op` for each tenant with the fleet flags, interruptible and
    /// with progress on stderr (see [`Runner::each_tenant`]). For
    /// operations that do not simply work on one connection; the rest use
    /// [`Self::on_each_tenant`].
    pub async fn fleet<T, F, Fut>(
        &self,
        tenants: Vec<Tenant>,
        args: &FleetArgs,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: Fn(Tenant) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Attempt<T>> + Send + 'static,
    {
        self.interruptible();
        self.runner
            .with_options(args.into())
            .each_tenant(tenants, &self.progress(), op)
            .await
    }

    /// The pattern of every per-tenant command (see
    /// [`Runner::on_each_tenant`]), with the fleet flags, interruptible
    /// and with progress on stderr.
    pub async fn on_each_tenant<T, F>(
        &self,
        tenants: Vec<Tenant>,
        args: &FleetArgs,
        limits: SessionLimits,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: for<'c> Fn(&'c Tenant, &'c mut PgConnection, &'c mut T) -> TenantFuture<'c, ()>
            + Send
            + Sync
            + 'static,
    {
        self.fleet_runner(args, limits)
            .on_each_tenant(tenants, &self.progress(), op)
            .await
    }

    /// The runner for a fleet run with these flags and limits, listening
    /// for interrupts: what [`Self::on_each_tenant`] runs on, for commands
    /// that call the runner's other per-tenant entry points
    /// ([`Runner::on_each_tenant_limited`]).
    pub fn fleet_runner(&self, args: &FleetArgs, limits: SessionLimits) -> Runner {
        self.interruptible();
        self.runner.with_options(args.into()).with_limits(limits)
    }

    /// The progress display for a fleet run.
    pub fn progress(&self) -> Progress {
        let output = if self.streaming.load(Ordering::SeqCst) {
            self.output
        } else {
            OutputMode::Table
        };
        Progress::new(output, self.quiet, self.stop.clone())
    }

    /// Turns streaming of `jsonl` reports off (or back on) for the fleet
    /// runs that follow; the progress bar and failure lines stay.
    pub fn set_streaming(&self, on: bool) {
        self.streaming.store(on, Ordering::SeqCst);
    }
}

/// The commands that run per tenant and report a fleet run: the only ones
/// `--output junit` fits (`tenant create` only with `--from-file`, which
/// it checks itself).
const FLEET_COMMANDS: [&str; 10] = [
    "tenant migrate",
    "tenant status",
    "tenant revert",
    "tenant sql",
    "tenant exec",
    "tenant drift",
    "tenant baseline",
    "tenant settings get",
    "tenant settings set",
    "tenant create",
];

/// Commands that print no JSON document, so a report file would stay
/// empty: `--report-file` and `--summary-file` are refused rather than
/// silently write nothing.
const NO_REPORT: [&str; 3] = ["tenant psql", "completions", "man"];

/// Refuses, before anything runs, output flags the command (`tenant
/// migrate`) cannot honour.
pub fn check_output(command: &str, global: &GlobalArgs) -> Result<(), UsageError> {
    if global.output == OutputMode::Junit && !FLEET_COMMANDS.contains(&command) {
        return Err(UsageError(format!(
            "--output junit reports fleet runs (tenant migrate, status, revert, sql, exec, drift, baseline, settings, create --from-file); `{command}` is not one: use --output json"
        )));
    }
    if NO_REPORT.contains(&command) {
        for (given, flag) in [
            (global.report_file.is_some(), "--report-file"),
            (global.summary_file.is_some(), "--summary-file"),
        ] {
            if given {
                return Err(UsageError(format!(
                    "{flag}: `{command}` prints no report to write; leave it out (or unset its variable)"
                )));
            }
        }
    }
    Ok(())
}
