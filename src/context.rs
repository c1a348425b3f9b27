//! Global flags turned, once, into what every command works with.

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::Connection as _;

use std::future::Future;

use crate::cli::{FilterArgs, FleetArgs, GlobalArgs, OutputMode, SelectionArgs};
use crate::db::Connector;
use crate::error::Outcome;
use crate::error::UsageError;
use crate::fleet::Stop;
use crate::fleet::{self, Attempt, FleetRun};
use crate::migrations::MigrationSet;
use crate::progress::Progress;
use crate::report::{TenantValue, print_fleet};
use crate::selection;
use crate::tenant::Tenant;

/// Validated configuration shared by all commands.
pub struct Context {
    pub connector: Arc<Connector>,
    pub output: OutputMode,
    pub quiet: bool,
    pub stop: Stop,
    listening: std::sync::atomic::AtomicBool,
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
        let connector = Connector::new(
            base_url,
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
            listening: std::sync::atomic::AtomicBool::new(false),
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

    /// The one tenant with this slug or id, read from the master.
    pub async fn tenant(&self, key: &str) -> anyhow::Result<Tenant> {
        let mut conn = self.connector.connect_master().await?;
        let tenant = crate::master::get(&mut conn, key).await;
        let _ = conn.close().await;
        tenant
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
        let mut conn = self.connector.connect_master().await?;
        let tenants = selection::resolve(&mut conn, names, filter).await;
        let _ = conn.close().await;
        tenants
    }

    /// The stop flag, with Ctrl-C and SIGTERM now setting it. Only fleet
    /// runs listen: elsewhere an interrupt ends the process as usual, which
    /// for a single database is the right thing (the server rolls back).
    pub fn interruptible(&self) -> &Stop {
        if !self
            .listening
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.stop.listen_for_signals();
        }
        &self.stop
    }

    /// Runs `op` for each tenant with the fleet flags, interruptible and
    /// with progress on stderr.
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

    /// Prints a fleet run's report and turns it into the exit outcome.
    pub fn finish<T: TenantValue>(&self, run: &FleetRun<T>) -> Outcome {
        print_fleet(run, self.output);
        run.outcome()
    }

    /// The progress display for a fleet run.
    pub fn progress(&self) -> Progress {
        Progress::new(self.output, self.quiet)
    }
}
