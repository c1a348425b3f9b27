//! The one way to reach a database: each tenant of a selection, each
//! server, or one scoped connection. A [`Runner`] owns the connector, the
//! stop flag, the fleet limits (`--concurrency`, `--per-server`,
//! `--fail-fast`) and the session limits (`--lock-timeout`,
//! `--statement-timeout`; the connect timeout is the connector's), and
//! knows nothing of the command line: commands turn their flags into
//! [`FleetOptions`] and [`SessionLimits`] and hand them over.
//!
//! # How a connection ends
//!
//! Every connection the runner opens for a closure is ended by the one
//! rule of [`crate::connect::scope`] (released: after success the
//! release's error is the result, after a failure the closure's error
//! stands), with its one named exception,
//! [`Runner::scoped_all_or_nothing`] (`master migrate`, which runs every
//! step in one transaction and must keep none of it on failure).
//!
//! Connections that outlive one closure are not scoped here: the run
//! record's ([`crate::runs::RunLog`], opened by [`Runner::open_master`])
//! and a run's recheck of the master ([`Recheck`]) are each held across
//! every tenant's turn of a run, and end when the run does, released by
//! the same rule, with two deliberate exceptions in the run record: a
//! connection whose first write (the run's own row) failed is closed
//! without committing, and one that broke during a long run is closed and
//! replaced by a fresh one, never committed. So are the master
//! connections `tenant create --from-file` keeps from one line to the
//! next (each line's locks given back before another line takes one).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tracing::Instrument as _;

use crate::companies::Layout;
use crate::config::MasterConfig;
pub use crate::connect::kept::Kept;
pub use crate::connect::scope::{Borrows, ConnFuture};
use crate::connect::scope::{borrows, ended};
use crate::connect::{BackendKey, Connector, SessionLimits};
use crate::dbname::DbName;
use crate::error::Unused;
use crate::fleet::{self, Attempt, FleetOptions, FleetRun, Observer, Stop};
use crate::output::report::TenantValue;
use crate::recheck::Recheck;
use crate::servers::ServerName;
use crate::statement_log;
use crate::tenant::Tenant;

/// Owns what every database touch needs; cheap to clone (each clone shares
/// the connector and the stop flag).
#[derive(Clone)]
pub struct Runner {
    connector: Arc<Connector>,
    stop: Stop,
    master: MasterConfig,
    options: FleetOptions,
    limits: SessionLimits,
    /// Whether each tenant's row is read again when its turn comes.
    recheck: bool,
    listening: Arc<AtomicBool>,
}

/// Where a first pass keeps connections, and which.
type KeepIn<'k, T> = (&'k Kept, fn(&T) -> bool);

/// What a per-tenant pass does with its connections (see [`Kept`]).
enum Keeping<T> {
    /// End each one.
    No,
    /// Keep those whose value the function picks.
    Keep(Arc<Kept>, fn(&T) -> bool),
    /// Work on the kept ones.
    Reuse(Arc<Kept>),
}

impl<T> Clone for Keeping<T> {
    fn clone(&self) -> Self {
        match self {
            Self::No => Self::No,
            Self::Keep(kept, keep) => Self::Keep(kept.clone(), *keep),
            Self::Reuse(kept) => Self::Reuse(kept.clone()),
        }
    }
}

impl Runner {
    /// A runner with the default fleet limits (4 in flight, no cap per
    /// server) and no session limits.
    pub fn new(connector: Arc<Connector>, master: MasterConfig) -> Self {
        Self {
            connector,
            stop: Stop::default(),
            master,
            options: FleetOptions {
                concurrency: 4,
                per_server: None,
                fail_fast: false,
            },
            limits: SessionLimits::default(),
            recheck: true,
            listening: Arc::default(),
        }
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    /// This runner with a command's fleet limits.
    #[must_use]
    pub fn with_options(&self, options: FleetOptions) -> Self {
        Self {
            options,
            ..self.clone()
        }
    }

    /// This runner with a command's session limits.
    #[must_use]
    pub fn with_limits(&self, limits: SessionLimits) -> Self {
        Self {
            limits,
            ..self.clone()
        }
    }

    /// This runner without the master's rows read again before each
    /// tenant: for read-only runs, which act on nothing a changed row
    /// could make wrong (`doctor`).
    #[must_use]
    pub fn without_recheck(&self) -> Self {
        Self {
            recheck: false,
            ..self.clone()
        }
    }

    /// The stop flag, with Ctrl-C and SIGTERM now setting it. Only runs
    /// that ask listen: elsewhere an interrupt ends the process as usual,
    /// which for a single database is the right thing (the server rolls
    /// back).
    pub fn interruptible(&self) -> &Stop {
        if !self.listening.swap(true, Ordering::SeqCst) {
            self.stop.listen_for_signals();
        }
        &self.stop
    }

    /// What reads each of these tenants' rows again when its turn in a run
    /// comes (see [`Recheck`]).
    fn recheck_for(&self, tenants: &[Tenant]) -> Arc<Recheck> {
        Arc::new(Recheck::new(
            self.connector.clone(),
            self.master.clone(),
            tenants,
        ))
    }

    /// Runs `op` for each tenant under the fleet limits, reporting to
    /// `observer`. Each row is read again when its tenant's turn comes
    /// (unless [`Self::without_recheck`]): a row the application changed
    /// since the selection is skipped, not acted on. For operations that
    /// do not simply work on one connection (`exec` runs a program);
    /// the rest use [`Self::on_each_tenant`].
    pub async fn each_tenant<T, F, Fut>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        op: F,
    ) -> FleetRun<T>
    where
        T: Default + Send + 'static,
        F: Fn(Tenant) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Attempt<T>> + Send + 'static,
    {
        if !self.recheck {
            return fleet::run(tenants, self.options, &self.stop, observer, op).await;
        }
        let recheck = self.recheck_for(&tenants);
        let op = Arc::new(op);
        let checked = recheck.clone();
        let run = fleet::run(tenants, self.options, &self.stop, observer, move |tenant| {
            let (recheck, op) = (checked.clone(), op.clone());
            async move {
                match recheck.check(&tenant).await {
                    Ok(()) => op(tenant).await,
                    Err(err) => (T::default(), Err(err)),
                }
            }
        })
        .await;
        recheck.close().await;
        run
    }

    /// Runs `op` for each of these tenants not yet in the master (`tenant
    /// create --from-file`: made-up rows saying where each will go, for the
    /// per-server caps), under the fleet limits and the stop flag, reporting
    /// to `observer`. No row is read again (there is none yet), and `op`
    /// may borrow the caller's state: the tenants run concurrently on this
    /// task (see [`fleet::run_borrowing`]).
    pub async fn each_new<'a, T, F, Fut>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        op: F,
    ) -> FleetRun<T>
    where
        T: Default + 'a,
        F: Fn(Tenant) -> Fut + 'a,
        Fut: Future<Output = Attempt<T>> + 'a,
    {
        fleet::run_borrowing(tenants, self.options, &self.stop, observer, op).await
    }

    /// The pattern of every per-tenant command: for each tenant, connect
    /// with the session limits, run `op` on the connection, end it (see
    /// the module doc), and report. `op` fills in its value as it goes
    /// (`&mut T`), so what it got done before failing is still reported.
    /// Once an interrupt's grace period is over, the statement in flight
    /// is cancelled on the server, and the tenant reported interrupted.
    pub async fn on_each_tenant<T, F>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: for<'c> Fn(&'c Tenant, &'c mut PgConnection, &'c mut T) -> ConnFuture<'c, ()>
            + Send
            + Sync
            + 'static,
    {
        self.on_each_tenant_with(tenants, observer, Keeping::No, op)
            .await
    }

    /// [`Self::on_each_tenant`] for the first pass of a two-pass run: the
    /// connection of each tenant whose work succeeded and whose value
    /// `keep` picks is kept in `kept`, within its bound (see
    /// [`Kept`]), instead of ended; the second pass
    /// ([`Self::on_each_tenant_reusing`]) works on it. Without `kept`,
    /// exactly [`Self::on_each_tenant`].
    pub async fn on_each_tenant_keeping<T, F>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        kept: Option<Arc<Kept>>,
        keep: fn(&T) -> bool,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: for<'c> Fn(&'c Tenant, &'c mut PgConnection, &'c mut T) -> ConnFuture<'c, ()>
            + Send
            + Sync
            + 'static,
    {
        let keeping = kept.map_or(Keeping::No, |kept| Keeping::Keep(kept, keep));
        self.on_each_tenant_with(tenants, observer, keeping, op)
            .await
    }

    /// [`Self::on_each_tenant`] for the second pass: each tenant's work runs
    /// on the connection the first pass kept for it, if any (a fresh one
    /// otherwise). Work that fails with [`Unused`] on a kept connection
    /// (found gone before it did anything) runs again on a fresh one.
    /// Whatever is still kept at the end is released.
    pub async fn on_each_tenant_reusing<T, F>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        kept: Arc<Kept>,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: for<'c> Fn(&'c Tenant, &'c mut PgConnection, &'c mut T) -> ConnFuture<'c, ()>
            + Send
            + Sync
            + 'static,
    {
        let run = self
            .on_each_tenant_with(tenants, observer, Keeping::Reuse(kept.clone()), op)
            .await;
        kept.release_all(&self.connector).await;
        run
    }

    async fn on_each_tenant_with<T, F>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        keeping: Keeping<T>,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: for<'c> Fn(&'c Tenant, &'c mut PgConnection, &'c mut T) -> ConnFuture<'c, ()>
            + Send
            + Sync
            + 'static,
    {
        let runner = self.clone();
        let op = Arc::new(op);
        self.each_tenant(tenants, observer, move |tenant| {
            let (runner, op, keeping) = (runner.clone(), op.clone(), keeping.clone());
            async move {
                let mut value = T::default();
                let result = runner
                    .on_tenant(&tenant, &mut value, &keeping, |conn, value, _| {
                        op(&tenant, conn, value)
                    })
                    .await;
                (value, result)
            }
        })
        .await
    }

    /// [`Self::on_each_tenant`] for work that is one transaction on each
    /// tenant (reading its migrations, writing a setting): `op` runs in a
    /// transaction with the session limits set in it (`SET LOCAL`, so they
    /// end with it), committed when `op` succeeds. How `--lock-timeout` and
    /// `--statement-timeout` reach work that sets no limits of its own.
    pub async fn on_each_tenant_limited<T, F>(
        &self,
        tenants: Vec<Tenant>,
        observer: &dyn Observer<T>,
        op: F,
    ) -> FleetRun<T>
    where
        T: TenantValue + Default + Send + 'static,
        F: for<'c> Fn(&'c Tenant, &'c mut PgConnection, &'c mut T) -> ConnFuture<'c, ()>
            + Send
            + Sync
            + 'static,
    {
        let Some(limits) = self.limits.local() else {
            // No limits: nothing to set, no transaction to open for it.
            return self.on_each_tenant(tenants, observer, op).await;
        };
        let limits = Arc::new(limits);
        let op = Arc::new(op);
        self.on_each_tenant(tenants, observer, move |tenant, conn, value| {
            let (limits, op) = (limits.clone(), op.clone());
            Box::pin(async move {
                let mut tx = begin_limited(conn, &limits).await?;
                op(tenant, &mut tx, value).await?;
                tx.commit().await.context("commit")
            })
        })
        .await
    }

    /// One tenant's turn in [`Self::on_each_tenant`]: on the connection a
    /// first pass kept for it, else on a fresh one.
    async fn on_tenant<'e, T, F>(
        &self,
        tenant: &Tenant,
        value: &mut T,
        keeping: &Keeping<T>,
        op: F,
    ) -> anyhow::Result<()>
    where
        T: TenantValue + Default,
        F: for<'c> Fn(&'c mut PgConnection, &'c mut T, Borrows<'c, 'e>) -> ConnFuture<'c, ()>,
    {
        let keep = match keeping {
            Keeping::Keep(kept, keep) => Some((&**kept, *keep)),
            _ => None,
        };
        if let Keeping::Reuse(kept) = keeping
            && let Some((conn, key)) = kept.take(&tenant.id)
        {
            match self.work_and_end(tenant, conn, key, value, None, &op).await {
                Err(err) if err.is::<Unused>() => *value = T::default(),
                done => return done,
            }
        }
        let (server, db) = (tenant.server()?, tenant.db_name()?);
        let connected = self
            .connector
            .connect_tenant_cancellable(server, db, &self.limits)
            .await;
        let (conn, key) = connected.inspect_err(|err| T::connect_failed(value, err))?;
        self.work_and_end(tenant, conn, key, value, keep, &op).await
    }

    /// Runs `op` on a tenant's connection until it ends or its cancel is
    /// due, then keeps the connection (`keep`, when the work succeeded and
    /// its value asks for it, within the bound) or ends it by the one rule.
    async fn work_and_end<'e, T, F>(
        &self,
        tenant: &Tenant,
        mut conn: PgConnection,
        key: BackendKey,
        value: &mut T,
        keep: Option<KeepIn<'_, T>>,
        op: &F,
    ) -> anyhow::Result<()>
    where
        F: for<'c> Fn(&'c mut PgConnection, &'c mut T, Borrows<'c, 'e>) -> ConnFuture<'c, ()>,
    {
        let connector = &self.connector;
        let (server, db) = (tenant.server()?, tenant.db_name()?);
        let work = op(&mut conn, value, borrows());
        let (result, cancelled) =
            cancel_when_due(work, &self.stop, connector, &key, tenant, db).await;
        let result = result.map_err(|err| connector.explain_pooler(server, err));
        if let Some((kept, wanted)) = keep
            && result.is_ok()
            && !cancelled
            && wanted(value)
        {
            match kept.offer(&tenant.id, server, conn, key).await {
                None => return result,
                Some((back, _)) => conn = back,
            }
        }
        let result = ended(result, connector.release(conn).await);
        if cancelled {
            result.map_err(|err| err.context(crate::error::Cancelled))
        } else {
            result
        }
    }

    /// A connection to one tenant's database with the session limits, for
    /// work an interrupt may cut short: once its grace period is over, the
    /// statement in flight is cancelled on the server, and the error says
    /// so ([`crate::error::Cancelled`]). What `on_each_tenant` does for
    /// each tenant, for a command working on one (`tenant create`).
    pub async fn with_tenant_cancellable<'e, T, F>(
        &self,
        tenant: &Tenant,
        op: F,
    ) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        self.cancellable(
            tenant,
            &mut (),
            |(), _| {},
            |conn, (), _| op(conn, borrows()),
        )
        .await
    }

    /// Connects to the tenant (telling `value` when that fails), runs `op`
    /// until it ends or its cancel is due, and ends the connection by the
    /// one rule.
    async fn cancellable<'e, V, T, F>(
        &self,
        tenant: &Tenant,
        value: &mut V,
        connect_failed: fn(&mut V, &anyhow::Error),
        op: F,
    ) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, &'c mut V, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        let connector = &self.connector;
        let (server, db) = (tenant.server()?, tenant.db_name()?);
        let connected = connector
            .connect_tenant_cancellable(server, db, &self.limits)
            .await;
        let (mut conn, key) = connected.inspect_err(|err| connect_failed(value, err))?;
        let work = op(&mut conn, value, borrows());
        let (result, cancelled) =
            cancel_when_due(work, &self.stop, connector, &key, tenant, db).await;
        // A pooler the URL does not declare: the message names it.
        let result = result.map_err(|err| connector.explain_pooler(server, err));
        let result = ended(result, connector.release(conn).await);
        // Cut short by its cancel: interrupted, not failed.
        if cancelled {
            result.map_err(|err| err.context(crate::error::Cancelled))
        } else {
            result
        }
    }

    /// Runs `op` once for each server, all at once, each on a connection
    /// that sees the server's catalog: its maintenance database, else
    /// (CONNECT on both `postgres` and `template1` revoked) the master when
    /// it lives there (any database of a server sees `pg_database`). The
    /// answers come back in the order of `servers`.
    pub async fn each_server<'e, T, F>(
        &self,
        servers: &'e [ServerName],
        op: F,
    ) -> Vec<anyhow::Result<T>>
    where
        T: Send,
        F: for<'c> Fn(&'c ServerName, &'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>
            + Sync,
    {
        let op = &op;
        // Boxed, so the compiler need not prove a higher-ranked `Send` of
        // each ask (it cannot, through the iterator's closure).
        let asks: Vec<ConnFuture<'_, T>> = servers
            .iter()
            .map(|server| -> ConnFuture<'_, T> {
                Box::pin(
                    async move {
                        self.connector.check_server(server)?;
                        let conn = match self.connector.connect_maintenance(server).await {
                            Ok(conn) => conn,
                            Err(_) if self.connector.master_on_server(server) => {
                                self.connector.connect_master().await?
                            }
                            Err(err) => return Err(err),
                        };
                        self.scoped(conn, |conn, _| op(server, conn, borrows()))
                            .await
                    }
                    .instrument(statement_log::scope(&format!("server {server}"))),
                )
            })
            .collect();
        futures_util::future::join_all(asks).await
    }

    /// Runs `op` on each of these databases, at most `--concurrency` at
    /// once and `--per-server` on any one server, each on its own connection
    /// and in a transaction of its own with the session limits; the
    /// answers come back in the order given. For databases no company
    /// names (`doctor`'s orphan check), which have no tenant to report on
    /// and no row to read again, so no fleet report either.
    pub async fn each_database<'e, T, F>(
        &self,
        dbs: &'e [(ServerName, DbName)],
        op: F,
    ) -> Vec<anyhow::Result<T>>
    where
        T: Send,
        F: for<'c> Fn(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T> + Sync,
    {
        use futures_util::StreamExt as _;
        let op = &op;
        // `--per-server` holds here too: a server's own share of the
        // connections in flight.
        let caps: std::collections::BTreeMap<&ServerName, tokio::sync::Semaphore> = self
            .options
            .per_server
            .map(|cap| {
                dbs.iter()
                    .map(|(server, _)| (server, tokio::sync::Semaphore::new(cap.max(1))))
                    .collect()
            })
            .unwrap_or_default();
        let caps = &caps;
        // Boxed, as in [`Self::each_server`].
        let asks: Vec<ConnFuture<'_, T>> = dbs
            .iter()
            .map(|(server, db)| -> ConnFuture<'_, T> {
                Box::pin(
                    async move {
                        let _turn = match caps.get(server) {
                            Some(cap) => Some(cap.acquire().await?),
                            None => None,
                        };
                        self.with_tenant_read(server, db, move |conn, _| op(conn, borrows()))
                            .await
                    }
                    .instrument(statement_log::scope(&format!("database {db} on {server}"))),
                )
            })
            .collect();
        futures_util::stream::iter(asks)
            .buffered(self.options.concurrency.max(1))
            .collect()
            .await
    }

    /// Runs `op` on `conn` and ends the connection by the one rule (see
    /// [`crate::connect::scope`]).
    pub async fn scoped<'e, T, F>(&self, conn: PgConnection, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        self.connector.scoped(conn, op).await
    }

    /// [`Self::scoped`], but a connection whose `op` failed is closed
    /// without committing: behind a pooler its pinned transaction, and all
    /// `op` did in it, is dropped.
    pub async fn scoped_all_or_nothing<'e, T, F>(
        &self,
        conn: PgConnection,
        op: F,
    ) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        self.connector.scoped_all_or_nothing(conn, op).await
    }

    /// A connection to the master with the layout of its companies table,
    /// for `op`.
    ///
    /// The catalog is read in a transaction of its own: its queries carry
    /// parameters, which sqlx sends as two protocol exchanges, and a
    /// transaction-mode pooler nobody declared could otherwise run them on
    /// two server connections (binding another client's statement).
    pub async fn with_master<'e, T, F>(&self, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Layout, Borrows<'c, 'e>) -> ConnFuture<'c, T>
            + Send,
    {
        let master = &self.master;
        async move {
            let conn = self.connector.connect_master().await?;
            self.scoped(conn, |conn, _| {
                Box::pin(async move {
                    let layout = load_layout(conn, master).await?;
                    op(conn, layout, borrows()).await
                })
            })
            .await
        }
        .instrument(statement_log::scope("master"))
        .await
    }

    /// A master connection and its layout, for the one connection a run
    /// holds open to record itself ([`crate::runs::RunLog`]), which ends it.
    pub async fn open_master(&self) -> anyhow::Result<(PgConnection, Layout)> {
        async {
            let mut conn = self.connector.connect_master().await?;
            match load_layout(&mut conn, &self.master).await {
                Ok(layout) => Ok((conn, layout)),
                Err(err) => {
                    // Nothing was written: the connection is not worth a commit.
                    self.connector.abandon(conn).await;
                    Err(err)
                }
            }
        }
        .instrument(statement_log::scope("master"))
        .await
    }

    /// A connection to one tenant's database with the session limits.
    pub async fn with_tenant<'e, T, F>(
        &self,
        server: &ServerName,
        db: &DbName,
        op: F,
    ) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        let conn = self
            .connector
            .connect_tenant(server, db, &self.limits)
            .await?;
        self.scoped(conn, op).await
    }

    /// [`Self::with_tenant`] for reading: `op` runs in a transaction of its
    /// own, rolled back after (see [`read_guard`]), with the session limits
    /// set in it (`SET LOCAL`, so they end with it and never reach a
    /// pooler's next client): what a read-only check needs so that
    /// `--lock-timeout` and `--statement-timeout` hold for it (`doctor`,
    /// `settings get`).
    pub async fn with_tenant_read<'e, T, F>(
        &self,
        server: &ServerName,
        db: &DbName,
        op: F,
    ) -> anyhow::Result<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T> + Send + 'e,
    {
        let limits = self.limits.local();
        self.with_tenant(server, db, |conn, _| {
            Box::pin(async move {
                let Some(mut tx) = read_guard(conn, limits.as_deref()).await? else {
                    return op(conn, borrows()).await;
                };
                let value = op(&mut tx, borrows()).await;
                tx.rollback().await.context("roll back the read")?;
                value
            })
        })
        .await
    }

    /// [`Self::with_master`] for reading: `op` runs in a transaction of its
    /// own, rolled back after (see [`read_guard`]), so a read that fails
    /// (a role without rights on one of tenantctl's tables, say) is the
    /// error reported, even behind a transaction-mode pooler.
    pub async fn with_master_read<'e, T, F>(&self, op: F) -> anyhow::Result<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut PgConnection, Layout, Borrows<'c, 'e>) -> ConnFuture<'c, T>
            + Send
            + 'e,
    {
        self.with_master(|conn, layout, _| {
            Box::pin(async move {
                let Some(mut tx) = read_guard(conn, None).await? else {
                    return op(conn, layout, borrows()).await;
                };
                let value = op(&mut tx, layout, borrows()).await;
                tx.rollback().await.context("roll back the read")?;
                value
            })
        })
        .await
    }

    /// A connection to a server's maintenance database, for creating,
    /// renaming and dropping databases and reading its catalog.
    pub async fn with_maintenance<'e, T, F>(&self, server: &ServerName, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        self.connector
            .with_maintenance(server, op)
            .instrument(statement_log::scope(&format!("server {server}")))
            .await
    }

    /// [`Self::with_maintenance`] on the master's server.
    pub async fn with_master_maintenance<'e, T, F>(&self, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        self.connector.with_master_maintenance(op).await
    }
}

/// The transaction a read runs in, when it needs one: on a pinned
/// connection (behind a transaction-mode pooler), whose one transaction a
/// failed read would leave aborted, so that its COMMIT at release fails
/// and hides the read's own error (a savepoint there, rolled back after);
/// and wherever there are session limits to set. `None`: a plain
/// connection without limits, where the read runs as it is.
async fn read_guard<'c>(
    conn: &'c mut PgConnection,
    limits: Option<&str>,
) -> anyhow::Result<Option<sqlx::Transaction<'c, sqlx::Postgres>>> {
    if let Some(limits) = limits {
        return begin_limited(conn, limits).await.map(Some);
    }
    if conn.is_in_transaction() {
        return conn.begin().await.map(Some).context("begin");
    }
    Ok(None)
}

/// A transaction of its own on `conn`, with the session limits (`SET
/// LOCAL` statements) set in it first: they end with it.
async fn begin_limited<'c>(
    conn: &'c mut PgConnection,
    limits: &str,
) -> anyhow::Result<sqlx::Transaction<'c, sqlx::Postgres>> {
    let mut tx = conn.begin().await.context("begin")?;
    sqlx::Executor::execute(&mut *tx, limits)
        .await
        .context("set the session's timeouts")?;
    Ok(tx)
}

/// The companies table's layout, read in a transaction of its own (see
/// [`Runner::with_master`]), and refused when it is not current.
async fn load_layout(conn: &mut PgConnection, master: &MasterConfig) -> anyhow::Result<Layout> {
    let mut tx = conn.begin().await.context("begin")?;
    let layout = Layout::load(&mut tx, master).await?;
    tx.commit().await.context("commit")?;
    layout.check_current()?;
    Ok(layout)
}

/// Runs one tenant's work until it ends; once an interrupt's grace period
/// is over (or at a second interrupt), cancels its statement in flight on
/// the server, again every [`fleet::CANCEL_EVERY`] while it still runs (a
/// cancel landing between two statements is dropped by the server, and
/// the next statement may wait on a lock too). Returns the work's result
/// and whether a cancel was sent.
async fn cancel_when_due<T, F: Future<Output = anyhow::Result<T>>>(
    work: F,
    stop: &Stop,
    connector: &Connector,
    key: &BackendKey,
    tenant: &Tenant,
    db: &DbName,
) -> (anyhow::Result<T>, bool) {
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
