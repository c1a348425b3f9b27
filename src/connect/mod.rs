//! The one place that turns configuration and a database name into a
//! PostgreSQL connection. Nothing else parses URLs or builds connection
//! strings.
//!
//! Split by concern: the servers and the master as configured
//! (`servers.rs`); a tenant's connection, its cancel key and what a child
//! process is told to reach it (`tenant.rs`); the guard on the backend a
//! connection reached and the session limits (`backend.rs`); URL parsing
//! and redaction (`url.rs`). Connecting, pinning and releasing stay here.

use crate::error::sqlstate;
use std::collections::BTreeMap;
use std::time::Duration;

use ::url::Url;
use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

use crate::config::Settings;
use crate::dbname::DbName;
use crate::servers::ServerName;

mod backend;
pub mod kept;
pub mod scope;
mod servers;
mod tenant;
mod url;

use self::url::{place, ssl_mode_name};
pub use backend::{BACKEND_PID, Backend, BackendChanged, pid_of};
pub use tenant::BackendKey;
pub use url::{redact, url_password};

/// Databases tried, in order, for `CREATE DATABASE` / `DROP DATABASE`,
/// which cannot run while connected to the database they act on. Both exist
/// on every server; an operator may have revoked CONNECT on either.
pub(super) const MAINTENANCE_DBS: [&str; 2] = ["postgres", "template1"];

/// Default master database when `MASTER_DATABASE_URL` is not set.
pub const DEFAULT_MASTER_DB: &str = "master";

/// Statements that take back, inside a transaction, everything a session
/// can keep after it: settings (the role too, which `RESET ALL` leaves),
/// prepared statements, cursors held open, listeners, temporary tables and
/// session-level advisory locks. What `DISCARD ALL` does, which cannot run
/// inside a transaction.
pub const SESSION_CLEANUP: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     DEALLOCATE ALL; CLOSE ALL; UNLISTEN *; DISCARD TEMP; SELECT pg_advisory_unlock_all()";

/// Leaves a plain connection's session as it found it, after work that ran
/// SQL tenantctl did not write (a migration, a down script): what that SQL
/// set, prepared, created or locked for the session must not reach the
/// next client of a server connection a pooler nobody declared hands on.
/// sqlx then forgets the statements `DEALLOCATE ALL` took. A pinned
/// connection is cleared by its release.
pub async fn clear_session(conn: &mut PgConnection) -> anyhow::Result<()> {
    if conn.is_in_transaction() {
        return Ok(());
    }
    conn.execute(SESSION_CLEANUP)
        .await
        .context("clear what the migrations left in the session")?;
    conn.clear_cached_statements()
        .await
        .context("forget the statements the cleanup deallocated")?;
    Ok(())
}

/// Per-session settings applied to every tenant connection, with `SET`
/// right after connecting (one round trip, only when there are any). Not
/// in the startup packet's `options`: PgBouncer refuses that parameter, and
/// when told to ignore it, silently drops the limits.
#[derive(Debug, Clone, Default)]
pub struct SessionLimits {
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
}

/// One configured server: its base options (no database) and URL.
#[derive(Debug, Clone)]
pub(super) struct Server {
    pub(super) base: PgConnectOptions,
    pub(super) base_url: Url,
    pub(super) accepts_new: bool,
    /// `?pgbouncer=true` on its base URL (or `pooler = "transaction"` in
    /// `tenantctl.toml`): its tenant connections are pinned.
    pub(super) pooled: bool,
    /// Its `tenantctl.toml` settings, also applied to a master at its
    /// address.
    pub(super) settings: Settings,
    /// Whether the URL as given has a query string, which an application
    /// that appends `/${dbName}` to it gets wrong.
    pub(super) has_query: bool,
}

/// Where a configured server is, for display (never its credentials).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub name: ServerName,
    /// `None` for a server listed in `tenantctl.toml` whose variable is
    /// not set.
    pub address: Option<(String, u16)>,
    pub accepts_new: bool,
    /// The variable its URL comes from.
    pub var: String,
}

/// Owns every server's base connection options and the master's, and hands
/// out per-database copies of them.
#[derive(Debug, Clone)]
pub struct Connector {
    pub(super) servers: BTreeMap<ServerName, Server>,
    /// The variable each known server's URL comes from (set or not).
    pub(super) vars: BTreeMap<ServerName, String>,
    pub(super) master: PgConnectOptions,
    pub(super) master_db: DbName,
    pub(super) connect_timeout: Duration,
    /// `?pgbouncer=true` on the master URL (or the base URL it derives
    /// from): master connections are pinned.
    pub(super) pooled_master: bool,
    /// Every configured server's password and the master's (decoded), to
    /// mask in what child processes print.
    pub(super) passwords: Vec<String>,
    /// Their users and hosts, which the output names anyway.
    pub(super) words: Vec<String>,
    /// Where each address's `sslmode` comes from (its URL's query,
    /// `tenantctl.toml`, `PGSSLMODE`), to say in a TLS error.
    pub(super) tls_from: Vec<((String, u16), String)>,
    /// Each server's identity, once asked ([`Self::same_server`]).
    pub(super) identities: std::sync::Arc<std::sync::Mutex<BTreeMap<ServerName, Option<String>>>>,
}

impl Connector {
    /// Turns an error that says the server connection changed between two
    /// of a plain connection's transactions into one that names the server,
    /// its address and the variable to add `?pgbouncer=true` to. Other
    /// errors pass through.
    pub fn explain_pooler(&self, server: &ServerName, err: anyhow::Error) -> anyhow::Error {
        let Some(changed) = err.chain().find_map(|c| c.downcast_ref::<BackendChanged>()) else {
            return err;
        };
        let (address, var) = self.server(server).map_or_else(
            |_| ("?".to_owned(), server.default_var()),
            |s| {
                (
                    format!("{}:{}", s.base.get_host(), s.base.get_port()),
                    self.vars
                        .get(server)
                        .cloned()
                        .unwrap_or_else(|| server.default_var()),
                )
            },
        );
        anyhow::anyhow!(
            "{changed}: {address} (server {server}) is a transaction-mode pooler (PgBouncer or similar) that its URL does not declare, so this tenant was stopped: set pooler = \"transaction\" in tenantctl.toml [servers.{server}] (or add ?pgbouncer=true to {var} if no application builds URLs from it), or point it at a session-mode pool or the server itself"
        )
    }

    /// Behind a transaction-mode pooler, opens the transaction that keeps
    /// this connection on one server connection until [`Self::release`].
    pub(super) async fn pin(&self, conn: &mut PgConnection, pooled: bool) -> anyhow::Result<()> {
        if pooled {
            use sqlx::TransactionManager as _;
            sqlx::postgres::PgTransactionManager::begin(conn, None)
                .await
                .context("begin the transaction that holds the pooled connection")?;
        }
        Ok(())
    }

    /// Ends a tenant or master connection. A pinned one (behind a
    /// transaction-mode pooler) first leaves its server connection as it
    /// found it, since the pooler hands that to its next client as is: no
    /// session settings a script made, prepared statements, cursors,
    /// listeners, temporary tables or advisory locks; then commits (an
    /// error here means its writes were not kept). If any of that fails,
    /// the connection is closed inside its transaction, which makes the
    /// pooler drop the server connection rather than reuse it.
    pub async fn release(&self, mut conn: PgConnection) -> anyhow::Result<()> {
        if conn.is_in_transaction() {
            let committed = conn
                .execute(format!("{SESSION_CLEANUP}; COMMIT").as_str())
                .await;
            let _ = conn.close().await;
            committed.context("commit the pooled connection's transaction")?;
            return Ok(());
        }
        let _ = conn.close().await;
        Ok(())
    }

    /// Makes what a pinned connection did so far permanent (a create's
    /// claim on its row, say), keeping the connection pinned and its
    /// session locks: `COMMIT; BEGIN` in one round trip never leaves the
    /// pooler a moment to reassign it. A plain connection commits as it
    /// goes anyway.
    pub async fn checkpoint(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if conn.is_in_transaction() {
            conn.execute("COMMIT; BEGIN")
                .await
                .context("commit the pooled connection's work so far")?;
        }
        Ok(())
    }

    /// Ends a pinned connection's transaction, committing what it did, and
    /// leaves it an ordinary one whose statements commit one by one: for a
    /// connection held open through a long run (the run record), which
    /// must not sit idle inside a transaction the pooler and the server may
    /// time out. Its statements must then be unnamed (`persistent(false)`).
    pub async fn unpin(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if conn.is_in_transaction() {
            use sqlx::TransactionManager as _;
            sqlx::postgres::PgTransactionManager::commit(conn)
                .await
                .context("commit the pooled connection's transaction")?;
        }
        Ok(())
    }

    /// Opens a connection to the master database.
    pub async fn connect_master(&self) -> anyhow::Result<PgConnection> {
        let mut conn = self.connect(&self.master, self.pooled_master).await.map_err(|err| {
            if is_missing_database(&err) {
                err.context(format!(
                    "the master database {} does not exist yet; run `tenantctl master migrate` first",
                    self.master_db
                ))
            } else {
                err
            }
        })?;
        self.pin(&mut conn, self.pooled_master).await?;
        Ok(conn)
    }

    /// Opens a connection to a maintenance database of a server that holds
    /// tenant databases, for creating, renaming and dropping them and
    /// reading its catalog (and only for that: an operator may have
    /// revoked CONNECT on `postgres`).
    pub async fn connect_maintenance(&self, server: &ServerName) -> anyhow::Result<PgConnection> {
        let options = &self.server(server)?.base;
        self.maintenance_on(options).await
    }

    /// Like [`Self::connect_maintenance`], but on the master's server, which
    /// `MASTER_DATABASE_URL` may put elsewhere.
    pub async fn connect_master_maintenance(&self) -> anyhow::Result<PgConnection> {
        self.maintenance_on(&self.master).await
    }

    /// `postgres`, else `template1`; when both refuse, says what to grant.
    pub(super) async fn maintenance_on(
        &self,
        server: &PgConnectOptions,
    ) -> anyhow::Result<PgConnection> {
        let mut last = None;
        for db in MAINTENANCE_DBS {
            match self.connect(&server.clone().database(db), false).await {
                Ok(conn) => return Ok(conn),
                // Missing, or CONNECT revoked: try the next one.
                Err(err)
                    if has_sqlstate(&err, sqlstate::INVALID_CATALOG_NAME)
                        || has_sqlstate(&err, sqlstate::INSUFFICIENT_PRIVILEGE) =>
                {
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        let err = last.unwrap_or_else(|| anyhow::anyhow!("no maintenance database"));
        Err(err.context(format!(
            "creating or dropping a database needs a connection to the postgres or template1 database, and {user} may connect to neither; ask an administrator to run GRANT CONNECT ON DATABASE postgres TO \"{user}\"",
            user = server.get_username()
        )))
    }

    /// Whether the master lives on this server, so its connection can read
    /// that server's catalog.
    pub fn master_on_server(&self, server: &ServerName) -> bool {
        self.servers.get(server).is_some_and(|s| {
            place(self.master.get_host(), self.master.get_port())
                == place(s.base.get_host(), s.base.get_port())
        })
    }

    /// Whether a master connection can stand in for a maintenance
    /// connection to this server for what a create does there: the master
    /// lives on it and connects as the same role (what a database is made
    /// by decides who owns it).
    pub fn master_stands_for(&self, server: &ServerName) -> bool {
        self.master_on_server(server)
            && self
                .servers
                .get(server)
                .is_some_and(|s| s.base.get_username() == self.master.get_username())
    }

    pub(super) async fn connect(
        &self,
        options: &PgConnectOptions,
        pooled: bool,
    ) -> anyhow::Result<PgConnection> {
        // No extra_float_digits in the startup packet: PgBouncer refuses
        // parameters it does not know, and PostgreSQL 12+ prints floats
        // exactly by default anyway.
        let mut options = options
            .clone()
            .extra_float_digits(None)
            .disable_statement_logging();
        // `tenantctl` in pg_stat_activity, unless the URL names itself.
        if options.get_application_name().is_none() {
            options = options.application_name("tenantctl");
        }
        if crate::statement_log::enabled() {
            // Every statement reported at one level, none as "slow".
            options = options
                .log_statements(log::LevelFilter::Info)
                .log_slow_statements(log::LevelFilter::Off, std::time::Duration::MAX);
        }
        if pooled {
            // Named statements outlive the transaction on a server
            // connection other clients then get.
            options = options.statement_cache_capacity(0);
        }
        let target = format!(
            "connect to database {} on {}:{}",
            options.get_database().unwrap_or("?"),
            options.get_host(),
            options.get_port()
        );
        match tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&options)).await
        {
            Ok(Err(err @ sqlx::Error::Tls(_))) => {
                // Three places may set sslmode: say which one did.
                let place = (options.get_host().to_owned(), options.get_port());
                let from = self
                    .tls_from
                    .iter()
                    .find(|(at, _)| *at == place)
                    .map_or("sqlx's default", |(_, from)| from.as_str());
                Err(anyhow::Error::from(err).context(format!(
                    "{target} with sslmode {} (from {from})",
                    ssl_mode_name(options.get_ssl_mode())
                )))
            }
            Ok(result) => result.with_context(|| target),
            Err(_) => {
                let waited = humantime::format_duration(self.connect_timeout);
                if self.answers_like_pgbouncer(&options).await {
                    let db = options.get_database().unwrap_or("?");
                    Err(anyhow::anyhow!(
                        "{target}: timed out after {waited} (see --connect-timeout); {}:{} answers like PgBouncer, which may be holding this login: after a login to database {db} failed (say, because it did not exist yet), it waits server_login_retry (15 s by default) before trying that database again; check that {db} exists on the server behind it, then retry",
                        options.get_host(),
                        options.get_port()
                    ))
                } else {
                    Err(anyhow::anyhow!(
                        "{target}: timed out after {waited} (see --connect-timeout)"
                    ))
                }
            }
        }
    }

    /// Whether the host and port of these options answer like PgBouncer,
    /// asked only once a connection through them has timed out: PgBouncer
    /// itself answers for a database named `pgbouncer` (its console), with
    /// its own refusal for a user who may not use it, where PostgreSQL says
    /// there is no such database.
    async fn answers_like_pgbouncer(&self, options: &PgConnectOptions) -> bool {
        let console = options.clone().database("pgbouncer");
        let probe = tokio::time::timeout(
            self.connect_timeout.min(Duration::from_secs(3)),
            PgConnection::connect_with(&console),
        )
        .await;
        match probe {
            Ok(Ok(conn)) => {
                self.abandon(conn).await;
                true
            }
            Ok(Err(err)) => err.as_database_error().is_some_and(|e| {
                e.code().as_deref() != Some(sqlstate::INVALID_CATALOG_NAME)
                    && matches!(e.message(), "not allowed" | "no such user")
            }),
            Err(_) => false,
        }
    }
}

/// True if the error chain holds PostgreSQL's "database does not exist",
/// or PgBouncer's relay of it (which it sends as a protocol violation,
/// 08P01, with the server's words).
pub fn is_missing_database(err: &anyhow::Error) -> bool {
    has_sqlstate(err, sqlstate::INVALID_CATALOG_NAME)
        || err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .and_then(|e| e.as_database_error())
                .is_some_and(|e| {
                    e.code().as_deref() == Some(sqlstate::PROTOCOL_VIOLATION)
                        && e.message().starts_with("database \"")
                        && e.message().ends_with("\" does not exist")
                })
        })
}

/// True if the error chain holds a database error with this SQLSTATE.
pub use crate::error::sqlstate::is as has_sqlstate;

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn master_defaults_and_refuses_tenant_use() {
        let c = Connector::new("postgresql://u:p@localhost", None, T).expect("valid");
        assert_eq!(c.master_db().as_str(), "master");
        let master = DbName::parse("master").expect("valid");
        assert!(c.for_tenant(&ServerName::default(), &master).is_err());
        assert!(c.tenant_url(&ServerName::default(), &master).is_err());
    }
}
