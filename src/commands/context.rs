//! Global flags turned, once, into what every command works with: the
//! configuration, the [`Runner`] built from it, the selection read from
//! the master, and the run records and reports of fleet runs. Every
//! database touch goes through the runner.

use std::future::Future;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::commands::args::{FilterArgs, FleetArgs, GlobalArgs, Origins, SelectionArgs};
use crate::companies::Layout;
use crate::config::{Config, Migrator, MigratorKind};
use crate::connect::{Connector, SessionLimits};
use crate::error::{Outcome, UsageError};
use crate::fleet::{Attempt, FleetRun, Stop, Verdict};
use crate::migrations::MigrationSet;
use crate::output::OutputMode;
use crate::output::progress::Progress;
use crate::output::report::{Extra, TenantValue, print_fleet_with};
use crate::runner::{ConnFuture, Runner};
use crate::runs::{RunLog, RunRequest};
use crate::selection::{self, Filter, Selection};
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Tenant};

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
    selection: std::sync::Mutex<Option<Selection>>,
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

    /// The one tenant with this slug, id or database name, read from the
    /// master, to connect to: one being moved is refused (its database is
    /// out of reach until the move ends).
    pub async fn tenant(&self, key: &str) -> anyhow::Result<Tenant> {
        let tenant = self
            .runner
            .with_master(|conn, layout, _| {
                Box::pin(async move {
                    let tenant = layout.get(conn, key).await;
                    if tenant.is_err()
                        && let Some(err) = claimed(conn, &layout, &[key.to_owned()]).await
                    {
                        return Err(err);
                    }
                    tenant
                })
            })
            .await?;
        if let Some(to) = &tenant.moving_to {
            anyhow::bail!(
                "tenant {tenant} is being moved to server {}: its database is closed until `tenantctl tenant move {} --to {}` finishes (or --abort undoes it)",
                crate::output::shown(to.as_str()),
                crate::output::shown(tenant.handle()),
                crate::output::shown(to.as_str())
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
        self.runner
            .with_master(|conn, layout, _| {
                Box::pin(async move {
                    self.resolve_in_transaction(conn, &layout, names, filter)
                        .await
                })
            })
            .await
    }

    /// [`Self::resolve`] in a transaction of its own (see [`Self::master`]).
    async fn resolve_in_transaction(
        &self,
        conn: &mut PgConnection,
        layout: &Layout,
        names: &[String],
        filter: &FilterArgs,
    ) -> anyhow::Result<Vec<Tenant>> {
        let mut tx = conn.begin().await.context("begin")?;
        let tenants = self.resolve(&mut tx, layout, names, filter).await?;
        tx.commit().await.context("commit")?;
        Ok(tenants)
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
            .resolve_in_transaction(&mut conn, &layout, &selection.tenants, &selection.filter)
            .await
        {
            Ok(tenants) => tenants,
            Err(err) => {
                // Nothing was written: the connection is not worth a commit.
                self.connector.abandon(conn).await;
                return Err(err);
            }
        };
        let request = request(tenants.len());
        let log = RunLog::start(
            self.connector.clone(),
            conn,
            &layout,
            request,
            self.selection().as_ref(),
        )
        .await?;
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
        let selected =
            match selection::resolve(conn, layout, names, &filter, &configured, |a, b| {
                self.same_place(a, b)
            })
            .await
            {
                Ok(selected) => selected,
                Err(err) => return Err(claimed(conn, layout, names).await.unwrap_or(err)),
            };
        let tenants = selected.tenants;
        if !self.quiet {
            warn_shared(&tenants);
        }
        let mut stated = Selection::of(
            names,
            &filter,
            self.origins.shard.clone(),
            selected.companies,
            tenants.len(),
        );
        stated.table = self.table_stated(layout);
        self.set_selection(stated);
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

    /// The companies table as a report states it, when it is not the
    /// seed's own `"Company"` table: its name, what it is if not a plain
    /// table, and the file that named it.
    fn table_stated(&self, layout: &Layout) -> Option<String> {
        let kind = match layout.visibility.relkind {
            'r' | 'p' => None,
            'v' => Some("a view"),
            'm' => Some("a materialized view"),
            'f' => Some("a foreign table"),
            _ => Some("not a plain table"),
        };
        let named_in =
            self.config.source.as_ref().filter(|_| {
                self.config.master.table != crate::config::MasterConfig::default().table
            });
        if kind.is_none() && named_in.is_none() {
            return None;
        }
        let mut about: Vec<String> = kind.map(str::to_owned).into_iter().collect();
        if let Some(path) = named_in {
            about.push(format!("named in {}", path.display()));
        }
        Some(format!("{} ({})", layout.label, about.join(", ")))
    }

    /// Whether two companies' rows put their databases on one server (a
    /// row whose server is refused counts as anywhere).
    pub fn same_place(&self, a: &Tenant, b: &Tenant) -> bool {
        match (&a.server, &b.server) {
            (Ok(x), Ok(y)) => self.connector.same_place(x, y),
            _ => true,
        }
    }

    /// The other companies whose rows name this tenant's database on its
    /// server, read from the master now: what every destructive step asks
    /// before it acts.
    pub async fn sharing(
        &self,
        layout: &Layout,
        conn: &mut PgConnection,
        tenant: &Tenant,
    ) -> anyhow::Result<Vec<Tenant>> {
        let Some(db) = tenant.db_name_raw.as_deref() else {
            return Ok(Vec::new());
        };
        let mut others = Vec::new();
        for other in layout.naming(conn, db).await? {
            if other.id == tenant.id || other.has_status(Lifecycle::Dropped) {
                continue;
            }
            // Asked of the servers themselves: one host has many names.
            let same = match (&other.server, &tenant.server) {
                (Ok(x), Ok(y)) => self.connector.same_server(x, y).await,
                _ => true,
            };
            if same {
                others.push(other);
            }
        }
        Ok(others)
    }

    /// What the last selection picked and why (`None` before any, and for
    /// runs that select otherwise, such as `revert --run`).
    pub fn selection(&self) -> Option<Selection> {
        self.selection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records what a command selected, for its report and run record
    /// (commands that select other than through [`Self::select`]).
    pub fn set_selection(&self, selection: Selection) {
        *self
            .selection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(selection);
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
        self.interruptible();
        self.runner
            .with_options(args.into())
            .with_limits(limits)
            .on_each_tenant(tenants, &self.progress(), op)
            .await
    }

    /// Prints a fleet run's report and turns it into the exit outcome.
    pub fn finish<T: TenantValue>(&self, run: &FleetRun<T>) -> Outcome {
        let extra = Extra {
            selection: self.selection(),
            ..Extra::default()
        };
        print_fleet_with(run, self.output, &extra);
        run.outcome()
    }

    /// Opens a run record in the master for a run about to change tenants.
    pub async fn start_run(&self, request: RunRequest) -> anyhow::Result<Arc<RunLog>> {
        let (conn, layout) = self.master().await?;
        Ok(Arc::new(
            RunLog::start(
                self.connector.clone(),
                conn,
                &layout,
                request,
                self.selection().as_ref(),
            )
            .await?,
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
            // The record has no column of its own for tenants cut short
            // by an interrupt: they count as failed there (the run's
            // outcome says `interrupted`).
            log.finish(
                outcome,
                run.count(Verdict::Ok),
                run.count(Verdict::Failed) + run.count(Verdict::Interrupted),
                run.count(Verdict::Skipped),
            )
            .await;
        }
        let extra = Extra {
            run_id: log.map(|l| l.id),
            refused: false,
            selection: self.selection(),
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

/// One warning line per database that several selected companies' rows
/// name: the run works on it once and says so, rather than twice or
/// silently.
fn warn_shared(tenants: &[Tenant]) {
    for tenant in tenants {
        if let Some(sharing) = &tenant.sharing
            && sharing.worked_by.is_none()
        {
            crate::output::warn(format_args!(
                "warning: database {} is named by tenant {} and by {}: it is worked on once, under {}; each company needs a database of its own (see `tenantctl doctor`)",
                crate::output::shown(tenant.db_label()),
                crate::output::shown(tenant.handle()),
                sharing.others.join(", "),
                crate::output::shown(tenant.handle())
            ));
        }
    }
}

/// For a name that selects no company: the error to give instead when it
/// names a company still being created, kept in tenantctl's claims (see
/// [`crate::claims`]) and not yet in the companies table.
async fn claimed(
    conn: &mut PgConnection,
    layout: &Layout,
    names: &[String],
) -> Option<anyhow::Error> {
    for key in names {
        let Ok(Some(claim)) = crate::claims::find(conn, Some(key), Some(key)).await else {
            continue;
        };
        return Some(
            crate::error::UsageError(format!(
                "tenant {} is not created yet (status {}{}; not in the master's {} until its database is ready): run `tenantctl tenant create {}` again to finish it, or `tenantctl tenant drop --unfinished {}` to give up",
                claim.slug,
                claim.lifecycle,
                claim
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {}", crate::output::shown(e)))
                    .unwrap_or_default(),
                layout.label,
                claim.slug,
                claim.slug
            ))
            .into(),
        );
    }
    None
}
