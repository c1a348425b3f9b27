//! Global flags turned, once, into what every command works with, and the
//! one way a command runs an operation on each selected tenant.

use std::future::Future;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::commands::args::{FilterArgs, FleetArgs, GlobalArgs, Origins, SelectionArgs};
use crate::companies::Layout;
use crate::config::{Config, Migrator, MigratorKind};
use crate::connect::{BackendKey, Connector, SessionLimits};
use crate::dbname::DbName;
use crate::error::{Outcome, UsageError};
use crate::fleet::{self, Attempt, FleetRun, Stop, Verdict};
use crate::migrations::MigrationSet;
use crate::output::OutputMode;
use crate::output::progress::Progress;
use crate::output::report::{Extra, TenantValue, print_fleet_with};
use crate::recheck::Recheck;
use crate::runs::{RunLog, RunRequest};
use crate::selection::{self, Filter, Selection};
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Tenant};

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
        Ok(Self {
            connector: Arc::new(connector),
            output: global.output,
            quiet: global.quiet,
            stop: Stop::default(),
            config,
            listening: AtomicBool::new(false),
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
    ///
    /// The catalog is read in a transaction of its own: its queries carry
    /// parameters, which sqlx sends as two protocol exchanges, and a
    /// transaction-mode pooler nobody declared could otherwise run them on
    /// two server connections (binding another client's statement).
    pub async fn master(&self) -> anyhow::Result<(PgConnection, Layout)> {
        let mut conn = self.connector.connect_master().await?;
        let loaded = async {
            let mut tx = conn.begin().await.context("begin")?;
            let layout = Layout::load(&mut tx, &self.config.master).await?;
            tx.commit().await.context("commit")?;
            layout.check_current()?;
            anyhow::Ok(layout)
        }
        .await;
        match loaded {
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
        let mut tenant = layout.get(&mut conn, key).await;
        if tenant.is_err()
            && let Some(err) = claimed(&mut conn, &layout, &[key.to_owned()]).await
        {
            tenant = Err(err);
        }
        let _ = self.connector.release(conn).await;
        let tenant = tenant?;
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
        let (mut conn, layout) = self.master().await?;
        let tenants = self
            .resolve_in_transaction(&mut conn, &layout, names, filter)
            .await;
        let _ = self.connector.release(conn).await;
        tenants
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
                let _ = self.connector.release(conn).await;
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
        // Each row is read again when its tenant's turn comes: a row the
        // application changed since the selection is skipped, not acted on.
        let recheck = self.recheck_for(&tenants);
        let op = Arc::new(op);
        let checked = recheck.clone();
        let run = fleet::run(
            tenants,
            args.into(),
            self.interruptible(),
            &self.progress(),
            move |tenant| {
                let (recheck, op) = (checked.clone(), op.clone());
                async move {
                    match recheck.check(&tenant).await {
                        Ok(()) => op(tenant).await,
                        Err(err) => (T::default(), Err(err)),
                    }
                }
            },
        )
        .await;
        recheck.close().await;
        run
    }

    /// What reads each of these tenants' rows again when its turn in a
    /// fleet run comes (see [`Recheck`]); [`Self::fleet`] uses it, and so
    /// must any run that drives `fleet::run` itself.
    pub fn recheck_for(&self, tenants: &[Tenant]) -> Arc<Recheck> {
        Arc::new(Recheck::new(
            self.connector.clone(),
            self.config.master.clone(),
            tenants,
        ))
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
        let stop = self.stop.clone();
        let op = Arc::new(op);
        self.fleet(tenants, args, move |tenant| {
            let (connector, op, limits, stop) =
                (connector.clone(), op.clone(), limits.clone(), stop.clone());
            async move {
                let mut value = T::default();
                let result = async {
                    let (server, db) = (tenant.server()?, tenant.db_name()?);
                    let connected = connector
                        .connect_tenant_cancellable(server, db, &limits)
                        .await;
                    let (mut conn, key) = connected.inspect_err(|err| value.connect_failed(err))?;
                    let work = op(&tenant, &mut conn, &mut value);
                    let (result, cancelled) =
                        cancel_when_due(work, &stop, &connector, &key, &tenant, db).await;
                    // A pooler the URL does not declare: the message names it.
                    let result = result.map_err(|err| connector.explain_pooler(server, err));
                    // Behind a transaction-mode pooler this commits: a write
                    // whose commit fails is a failure, not a success.
                    let released = connector.release(conn).await;
                    let result = result.and(released);
                    // Cut short by its cancel: interrupted, not failed.
                    if cancelled {
                        result.map_err(|err| err.context(crate::error::Cancelled))
                    } else {
                        result
                    }
                }
                .await;
                (value, result)
            }
        })
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

/// Runs one tenant's work until it ends; once an interrupt's grace period
/// is over (or at a second interrupt), cancels its statement in flight on
/// the server, again every [`fleet::CANCEL_EVERY`] while it still runs (a
/// cancel landing between two statements is dropped by the server, and
/// the next statement may wait on a lock too). Returns the work's result
/// and whether a cancel was sent.
pub(crate) async fn cancel_when_due<F: Future<Output = anyhow::Result<()>>>(
    work: F,
    stop: &Stop,
    connector: &Connector,
    key: &BackendKey,
    tenant: &Tenant,
    db: &DbName,
) -> (anyhow::Result<()>, bool) {
    tokio::pin!(work);
    tokio::select! {
        biased;
        result = &mut work => return (result, false),
        () = stop.cancel_due() => {}
    }
    crate::output::warn(format_args!(
        "interrupted: cancelling the statement in flight on tenant {tenant}"
    ));
    let mut warned = false;
    loop {
        // Bounded, so a server that does not answer cannot hold the quit.
        let cancel = tokio::time::timeout(fleet::QUIT_WAIT, connector.cancel(key, db));
        let sent = tokio::select! {
            biased;
            result = &mut work => return (result, true),
            sent = cancel => sent,
        };
        let failed = match sent {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(crate::error::render(&err)),
            Err(_) => Some(format!(
                "the server did not answer within {}",
                humantime::format_duration(fleet::QUIT_WAIT)
            )),
        };
        if let Some(why) = failed
            && !warned
        {
            warned = true;
            crate::output::warn(format_args!(
                "warning: could not cancel the statement in flight on tenant {tenant} (it may wait on the server until what it waits for is released; tenantctl tries again every {}): {why}",
                humantime::format_duration(fleet::CANCEL_EVERY)
            ));
        }
        tokio::select! {
            biased;
            result = &mut work => return (result, true),
            () = tokio::time::sleep(fleet::CANCEL_EVERY) => {}
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
