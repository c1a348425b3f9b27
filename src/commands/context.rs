//! Global flags turned, once, into what every command works with, and the
//! one way a command runs an operation on each selected tenant.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::commands::args::{FilterArgs, FleetArgs, GlobalArgs, SelectionArgs};
use crate::companies::Layout;
use crate::config::Config;
use crate::connect::{Connector, SessionLimits};
use crate::error::{Outcome, UsageError};
use crate::fleet::{self, Attempt, FleetRun, Stop, Verdict};
use crate::migrations::MigrationSet;
use crate::output::OutputMode;
use crate::output::progress::Progress;
use crate::output::report::{Extra, TenantValue, print_fleet, print_fleet_with};
use crate::runs::{RunLog, RunRequest};
use crate::selection::{self, Filter};
use crate::servers::ServerName;
use crate::tenant::Tenant;

/// The future an operation on one tenant's connection returns; it borrows
/// the connection, which [`Context::on_each_tenant`] closes afterwards.
pub type TenantFuture<'c, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'c>>;

/// Validated configuration shared by all commands.
pub struct Context {
    pub connector: Arc<Connector>,
    pub output: OutputMode,
    pub quiet: bool,
    pub stop: Stop,
    pub config: Config,
    listening: AtomicBool,
    /// Whether fleet runs stream each tenant's report in `jsonl` mode
    /// (off while `revert` plans, whose plan is not the report).
    streaming: AtomicBool,
    tenant_migrations_dir: Option<PathBuf>,
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
        Ok(Self {
            connector: Arc::new(connector),
            output: global.output,
            quiet: global.quiet,
            stop: Stop::default(),
            config,
            listening: AtomicBool::new(false),
            streaming: AtomicBool::new(true),
            tenant_migrations_dir: global.tenant_migrations.clone(),
        })
    }

    /// The tenant schema: the folder from `--tenant-migrations` if given,
    /// else the one compiled in.
    pub async fn tenant_migrations(&self) -> anyhow::Result<Arc<MigrationSet>> {
        match &self.tenant_migrations_dir {
            Some(dir) => Ok(Arc::new(
                MigrationSet::from_dir(dir)
                    .await
                    .map_err(|e| UsageError(crate::error::render(&e)))?,
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

    /// A connection to the master and the layout of its companies table.
    pub async fn master(&self) -> anyhow::Result<(PgConnection, Layout)> {
        let mut conn = self.connector.connect_master().await?;
        match Layout::load(&mut conn, &self.config.master).await {
            Ok(layout) => Ok((conn, layout)),
            Err(err) => {
                let _ = conn.close().await;
                Err(err)
            }
        }
    }

    /// The one tenant with this slug, id or database name, read from the
    /// master, to connect to: one being moved is refused (its database is
    /// out of reach until the move ends).
    pub async fn tenant(&self, key: &str) -> anyhow::Result<Tenant> {
        let (mut conn, layout) = self.master().await?;
        let tenant = layout.get(&mut conn, key).await;
        let _ = self.connector.release(conn).await;
        let tenant = tenant?;
        if let Some(to) = &tenant.moving_to {
            anyhow::bail!(
                "tenant {tenant} is being moved to server {}: its database is closed until `tenantctl tenant move {} --to {}` finishes (or --abort undoes it)",
                crate::output::shown(to),
                crate::output::shown(tenant.handle()),
                crate::output::shown(to)
            );
        }
        Ok(tenant)
    }

    /// Reads the master once and returns the tenants the selection names.
    pub async fn select(&self, selection: &SelectionArgs) -> anyhow::Result<Vec<Tenant>> {
        self.select_names(&selection.tenants, &selection.filter)
            .await
    }

    /// [`Self::select`] for commands that parse tenant names themselves.
    pub async fn select_names(
        &self,
        names: &[String],
        filter: &FilterArgs,
    ) -> anyhow::Result<Vec<Tenant>> {
        let (mut conn, layout) = self.master().await?;
        let tenants = self.resolve(&mut conn, &layout, names, filter).await;
        let _ = self.connector.release(conn).await;
        tenants
    }

    /// [`Self::select`] for a run that changes tenants, on the same master
    /// connection: the run is recorded (see [`RunLog`]) before any tenant
    /// is touched, and the connection stays open to record each tenant.
    pub async fn select_for_run(
        &self,
        selection: &SelectionArgs,
        request: impl FnOnce(usize) -> RunRequest,
    ) -> anyhow::Result<(Vec<Tenant>, Arc<RunLog>)> {
        let (mut conn, layout) = self.master().await?;
        let tenants = match self
            .resolve(&mut conn, &layout, &selection.tenants, &selection.filter)
            .await
        {
            Ok(tenants) => tenants,
            Err(err) => {
                let _ = self.connector.release(conn).await;
                return Err(err);
            }
        };
        let request = request(tenants.len());
        let log = RunLog::start(self.connector.clone(), conn, &layout, request).await?;
        Ok((tenants, Arc::new(log)))
    }

    async fn resolve(
        &self,
        conn: &mut PgConnection,
        layout: &Layout,
        names: &[String],
        filter: &FilterArgs,
    ) -> anyhow::Result<Vec<Tenant>> {
        let filter = Filter::from(filter);
        let configured: Vec<ServerName> = self
            .connector
            .servers()
            .into_iter()
            .filter(|s| s.address.is_some())
            .map(|s| s.name)
            .collect();
        let tenants = selection::resolve(conn, layout, names, &filter, &configured).await?;
        if tenants.is_empty() && !names.is_empty() {
            // Named tenants filtered away entirely by --status or --server.
            crate::output::warn(if filter.servers.is_empty() {
                "warning: none of the named tenants has the status asked for"
            } else {
                "warning: none of the named tenants has the status asked for and is on the server(s) asked for"
            });
        }
        Ok(tenants)
    }

    /// The stop flag, with Ctrl-C and SIGTERM now setting it. Only fleet
    /// runs listen: elsewhere an interrupt ends the process as usual, which
    /// for a single database is the right thing (the server rolls back).
    pub fn interruptible(&self) -> &Stop {
        if !self.listening.swap(true, Ordering::SeqCst) {
            self.stop.listen_for_signals();
        }
        &self.stop
    }

    /// Runs `op` for each tenant with the fleet flags, interruptible and
    /// with progress on stderr. For operations that do not simply work on
    /// one connection (`exec`); the rest use [`Self::on_each_tenant`].
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
        fleet::run(
            tenants,
            args.into(),
            self.interruptible(),
            &self.progress(),
            op,
        )
        .await
    }

    /// The pattern of every per-tenant command: for each tenant, connect
    /// with the session limits, run `op` on the connection, close it, and
    /// report. `op` fills in its value as it goes (`&mut T`), so what it got
    /// done before failing is still reported.
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
        let connector = self.connector.clone();
        let op = Arc::new(op);
        self.fleet(tenants, args, move |tenant| {
            let (connector, op, limits) = (connector.clone(), op.clone(), limits.clone());
            async move {
                let mut value = T::default();
                let result = async {
                    let server = tenant.server()?;
                    let connected = connector
                        .connect_tenant(server, tenant.db_name()?, &limits)
                        .await;
                    let mut conn = connected.inspect_err(|err| value.connect_failed(err))?;
                    // A pooler the URL does not declare: the message names it.
                    let result = op(&tenant, &mut conn, &mut value)
                        .await
                        .map_err(|err| connector.explain_pooler(server, err));
                    // Behind a transaction-mode pooler this commits: a write
                    // whose commit fails is a failure, not a success.
                    let released = connector.release(conn).await;
                    result.and(released)
                }
                .await;
                (value, result)
            }
        })
        .await
    }

    /// Prints a fleet run's report and turns it into the exit outcome.
    pub fn finish<T: TenantValue>(&self, run: &FleetRun<T>) -> Outcome {
        print_fleet(run, self.output);
        run.outcome()
    }

    /// Opens a run record in the master for a run about to change tenants.
    pub async fn start_run(&self, request: RunRequest) -> anyhow::Result<Arc<RunLog>> {
        let (conn, layout) = self.master().await?;
        Ok(Arc::new(
            RunLog::start(self.connector.clone(), conn, &layout, request).await?,
        ))
    }

    /// [`Self::finish`] for a run with a run record: closes the record with
    /// the outcome and names the run in the report.
    pub async fn finish_run<T: TenantValue>(
        &self,
        run: &FleetRun<T>,
        log: Option<&RunLog>,
    ) -> Outcome {
        let outcome = run.outcome();
        if let Some(log) = log {
            log.finish(
                outcome,
                run.count(Verdict::Ok),
                run.count(Verdict::Failed),
                run.count(Verdict::Skipped),
            )
            .await;
        }
        let extra = Extra {
            run_id: log.map(|l| l.id),
            refused: false,
        };
        print_fleet_with(run, self.output, &extra);
        outcome
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
