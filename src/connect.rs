//! The one place that turns configuration and a database name into a
//! PostgreSQL connection. Nothing else parses URLs or builds connection
//! strings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};
use url::Url;

use crate::child_env::ChildEnv;
use crate::config::Settings;
use crate::dbname::DbName;
use crate::error::UsageError;
use crate::servers::{NotConfigured, ServerName, ServerSource};

/// Databases tried, in order, for `CREATE DATABASE` / `DROP DATABASE`,
/// which cannot run while connected to the database they act on. Both exist
/// on every server; an operator may have revoked CONNECT on either.
const MAINTENANCE_DBS: [&str; 2] = ["postgres", "template1"];

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
struct Server {
    base: PgConnectOptions,
    base_url: Url,
    accepts_new: bool,
    /// `?pgbouncer=true` on its base URL (or `pooler = "transaction"` in
    /// `tenantctl.toml`): its tenant connections are pinned.
    pooled: bool,
    /// Its `tenantctl.toml` settings, also applied to a master at its
    /// address.
    settings: Settings,
    /// Whether the URL as given has a query string, which an application
    /// that appends `/${dbName}` to it gets wrong.
    has_query: bool,
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
    servers: BTreeMap<ServerName, Server>,
    /// The variable each known server's URL comes from (set or not).
    vars: BTreeMap<ServerName, String>,
    master: PgConnectOptions,
    master_db: DbName,
    connect_timeout: Duration,
    /// `?pgbouncer=true` on the master URL (or the base URL it derives
    /// from): master connections are pinned.
    pooled_master: bool,
    /// Every configured server's password and the master's (decoded), to
    /// mask in what child processes print.
    passwords: Vec<String>,
    /// Their users and hosts, which the output names anyway.
    words: Vec<String>,
    /// Where each address's `sslmode` comes from (its URL's query,
    /// `tenantctl.toml`, `PGSSLMODE`), to say in a TLS error.
    tls_from: Vec<((String, u16), String)>,
    /// Each server's identity, once asked ([`Self::same_server`]).
    identities: std::sync::Arc<std::sync::Mutex<BTreeMap<ServerName, Option<String>>>>,
}

impl Connector {
    /// Builds the connector for one server, `default`, from
    /// `POSTGRES_BASE_URL` and, if given, `MASTER_DATABASE_URL`.
    pub fn new(
        base_url: &str,
        master_url: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Self, UsageError> {
        let default = ServerSource {
            name: ServerName::default(),
            var: crate::servers::URL_VAR.to_owned(),
            url: Some(base_url.to_owned()),
            accepts_new: true,
            settings: crate::config::Settings::default(),
        };
        Self::with_servers(&[default], master_url, connect_timeout)
    }

    /// Builds the connector for these servers (see
    /// [`crate::servers::sources`]; `default` among them) and the master,
    /// by default the database `master` on the default server.
    pub fn with_servers(
        sources: &[ServerSource],
        master_url: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Self, UsageError> {
        let mut servers = BTreeMap::new();
        let mut vars = BTreeMap::new();
        let mut passwords = Vec::new();
        let mut words = Vec::new();
        let mut tls_from = Vec::new();
        for source in sources {
            vars.insert(source.name.clone(), source.var.clone());
            let Some(raw) = &source.url else { continue };
            let base_url = parse_url(&source.var, raw)?;
            if let Some(db) = url_database(&base_url) {
                return Err(UsageError(format!(
                    "{} names a database ({db:?}); give the server root only, e.g. {}",
                    source.var,
                    redact(&server_root(&base_url))
                )));
            }
            let has_query = base_url.query().is_some_and(|q| !q.is_empty());
            let from = sslmode_from(&base_url, &source.var, &source.settings, &source.name);
            let settings = source
                .settings
                .clone()
                .with_libpq_environment(|name| std::env::var(name).ok());
            let base_url = with_settings(base_url, &settings);
            let base = options_from(&base_url)?;
            tls_from.push(((base.get_host().to_owned(), base.get_port()), from));
            remember_secrets(&base_url, &mut passwords, &mut words);
            servers.insert(
                source.name.clone(),
                Server {
                    base,
                    pooled: is_transaction_pooled(&base_url),
                    base_url,
                    accepts_new: source.accepts_new,
                    settings,
                    has_query,
                },
            );
        }
        let default_url = servers
            .get(&ServerName::default())
            .map(|s| s.base_url.clone())
            .ok_or_else(|| UsageError(format!("{} is not set", crate::servers::URL_VAR)))?;

        let (master_url, master_db) = match master_url {
            Some(raw) => {
                let url = parse_url("MASTER_DATABASE_URL", raw)?;
                let name = url_database(&url).ok_or_else(|| {
                    UsageError(format!(
                        "MASTER_DATABASE_URL ({}) names no database; add it to the path, e.g. /master",
                        redact(&url)
                    ))
                })?;
                let db = DbName::parse(&name)
                    .map_err(|err| UsageError(format!("MASTER_DATABASE_URL: master {err}")))?;
                // The master on a configured server's address (the
                // default's first) is reached as that server is: through
                // its pooler, with its TLS settings.
                let at = options_from(&url)?;
                let on = servers
                    .get(&ServerName::default())
                    .into_iter()
                    .chain(servers.values())
                    .find(|s| {
                        place(s.base.get_host(), s.base.get_port())
                            == place(at.get_host(), at.get_port())
                    });
                if has_sslmode(&url) {
                    tls_from.insert(
                        0,
                        (
                            (at.get_host().to_owned(), at.get_port()),
                            "MASTER_DATABASE_URL's query".to_owned(),
                        ),
                    );
                }
                let url = match on {
                    Some(server) => with_settings(url, &server.settings),
                    None => url,
                };
                (url, db)
            }
            None => {
                let db = DbName::parse(DEFAULT_MASTER_DB).expect("constant is valid");
                (with_database(&default_url, db.as_str()), db)
            }
        };
        let master = options_from(&master_url)?.database(master_db.as_str());
        remember_secrets(&master_url, &mut passwords, &mut words);
        words.push(master_db.as_str().to_owned());

        let pooled_master = is_transaction_pooled(&master_url);
        Ok(Self {
            servers,
            vars,
            master,
            master_db,
            connect_timeout,
            pooled_master,
            tls_from,
            identities: std::sync::Arc::default(),
            passwords,
            words,
        })
    }

    /// What a child process started now may inherit and must not print:
    /// see [`ChildEnv`]. Reads the process environment (`.env` included).
    pub fn child_env(&self) -> ChildEnv {
        let url_vars: Vec<String> = self.vars.values().cloned().collect();
        ChildEnv::new(
            self.passwords.clone(),
            self.words.clone(),
            &url_vars,
            std::env::vars_os(),
        )
    }

    /// A configured server, or the error that says which variable to set.
    fn server(&self, name: &ServerName) -> Result<&Server, NotConfigured> {
        self.servers.get(name).ok_or_else(|| NotConfigured {
            name: name.clone(),
            var: self
                .vars
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.default_var()),
        })
    }

    /// Fails unless the server is configured.
    pub fn check_server(&self, name: &ServerName) -> Result<(), NotConfigured> {
        self.server(name).map(|_| ())
    }

    /// Every server the environment and `tenantctl.toml` name, by name.
    pub fn servers(&self) -> Vec<ServerInfo> {
        self.vars
            .iter()
            .map(|(name, var)| {
                let server = self.servers.get(name);
                ServerInfo {
                    name: name.clone(),
                    address: server.map(|s| (s.base.get_host().to_owned(), s.base.get_port())),
                    accepts_new: server.is_some_and(|s| s.accepts_new),
                    var: var.clone(),
                }
            })
            .collect()
    }

    /// Whether any server's base URL says a transaction-mode pooler stands
    /// in front of its tenants (`?pgbouncer=true`, as Prisma's users mark
    /// such URLs). Each tenant connection there then does all its work
    /// inside one transaction, which is all such a pooler keeps on one
    /// server connection; the master's URL says the same for the master.
    pub fn pooled(&self) -> bool {
        self.servers.values().any(|s| s.pooled)
    }

    /// The variables of servers whose URL, as given, has a query string
    /// (`?sslmode=...`, `?pgbouncer=true`): an application that builds a
    /// tenant URL as `${POSTGRES_BASE_URL}/${dbName}` puts the database
    /// name after it, where it is no longer the database.
    pub fn urls_with_query(&self) -> Vec<(ServerName, String)> {
        self.servers
            .iter()
            .filter(|(_, s)| s.has_query)
            .filter_map(|(name, _)| Some((name.clone(), self.vars.get(name)?.clone())))
            .collect()
    }

    pub fn master_db(&self) -> &DbName {
        &self.master_db
    }

    /// Whether two server names may reach the same PostgreSQL server: the
    /// same name, the same port on the same host (loopback spelled any
    /// way), or a name this environment does not configure; so that one
    /// database recorded under two names is seen as one. (Different host
    /// names for one machine are told apart by [`Self::same_server`].)
    pub fn same_place(&self, a: &ServerName, b: &ServerName) -> bool {
        if a == b {
            return true;
        }
        let place_of = |name: &ServerName| {
            self.servers
                .get(name)
                .map(|s| place(s.base.get_host(), s.base.get_port()))
        };
        match (place_of(a), place_of(b)) {
            (Some(x), Some(y)) => x == y,
            // A server this environment does not configure could be
            // anything, this one included: assume the worst.
            _ => true,
        }
    }

    /// Whether two server names reach the same PostgreSQL server, asking
    /// the servers when their addresses differ (one host may have several
    /// names): the cluster's system identifier and port. A server that
    /// cannot be asked may be any server, so counts as the same.
    pub async fn same_server(&self, a: &ServerName, b: &ServerName) -> bool {
        if self.same_place(a, b) {
            return true;
        }
        match (self.identity(a).await, self.identity(b).await) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
    }

    /// `system_identifier:port` of a configured server, asked once per run.
    async fn identity(&self, name: &ServerName) -> Option<String> {
        if let Some(known) = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return known.clone();
        }
        let asked = async {
            let mut conn = self.connect_maintenance(name).await?;
            let found: anyhow::Result<(String,)> = sqlx::query_as(
                "SELECT system_identifier::text || ':' || current_setting('port') FROM pg_control_system()",
            )
            .persistent(false)
            .fetch_one(&mut conn)
            .await
            .map_err(Into::into);
            let _ = conn.close().await;
            found
        }
        .await
        .ok()
        .map(|(id,)| id);
        self.identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), asked.clone());
        asked
    }

    /// Refuses the master database, so a row that names the master can
    /// never turn a tenant command (or `drop`) on it.
    pub fn check_tenant_db(&self, db: &DbName) -> anyhow::Result<()> {
        anyhow::ensure!(
            db != &self.master_db,
            "database {db} is the master database, not a tenant database"
        );
        Ok(())
    }

    /// Connection options for a tenant database on its server.
    pub fn for_tenant(&self, server: &ServerName, db: &DbName) -> anyhow::Result<PgConnectOptions> {
        self.check_tenant_db(db)?;
        Ok(self.server(server)?.base.clone().database(db.as_str()))
    }

    /// Opens a single connection to a tenant database on its server.
    pub async fn connect_tenant(
        &self,
        server: &ServerName,
        db: &DbName,
        limits: &SessionLimits,
    ) -> anyhow::Result<PgConnection> {
        Ok(self.open_tenant(server, db, limits, false).await?.0)
    }

    /// [`Self::connect_tenant`], and what it takes to cancel the
    /// connection's statements later from another connection (see
    /// [`Self::cancel`]): read in the same round trip as the session's
    /// timeouts when there are any.
    pub async fn connect_tenant_cancellable(
        &self,
        server: &ServerName,
        db: &DbName,
        limits: &SessionLimits,
    ) -> anyhow::Result<(PgConnection, BackendKey)> {
        let (conn, key) = self.open_tenant(server, db, limits, true).await?;
        let key = key.ok_or_else(|| anyhow::anyhow!("read the session's backend"))?;
        Ok((conn, key))
    }

    async fn open_tenant(
        &self,
        server: &ServerName,
        db: &DbName,
        limits: &SessionLimits,
        with_key: bool,
    ) -> anyhow::Result<(PgConnection, Option<BackendKey>)> {
        let mut options = self.for_tenant(server, db)?;
        let pooled = self.server(server)?.pooled;
        // Unless the URL names itself, a cancellable session gets a name of
        // its own (`tenantctl <pid>-<n>`), sent in the startup packet: it is
        // found by that name to be cancelled, at no round trip now.
        let named = (with_key && options.get_application_name().is_none()).then(|| {
            format!(
                "tenantctl {}-{}",
                std::process::id(),
                SESSION_NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
        if let Some(name) = &named {
            options = options.application_name(name);
        }
        let mut conn = self.connect(&options, pooled).await.map_err(|err| {
            if is_missing_database(&err) {
                err.context(format!(
                    "the tenant database {db} is missing from the server {server} (dropped by hand?)"
                ))
            } else {
                err
            }
        })?;
        self.pin(&mut conn, pooled).await?;
        // A pinned connection's work is all in its one transaction: the
        // limits go there. A plain one gets none here: a session-level
        // `SET` would stay on the server connection, and behind a pooler
        // nobody declared, reach the application's next client. Each piece
        // of work sets them in its own transaction instead
        // ([`SessionLimits::local`]).
        let mut sql = if pooled {
            limits.local().unwrap_or_default()
        } else {
            String::new()
        };
        let read_key = with_key && named.is_none();
        if read_key {
            // Read after the pooled connection's BEGIN: behind a
            // transaction-mode pooler the backend is ours for as long as
            // that transaction lasts, which is as long as the connection.
            sql.push_str(BackendKey::SQL);
        }
        let mut key = named.map(|name| BackendKey {
            server: server.clone(),
            session: Session::Named(name),
        });
        if !sql.is_empty() {
            // Simple protocol, several statements, one round trip.
            let rows = conn.fetch_all(sql.as_str()).await.context(if read_key {
                "set the session's timeouts and read its backend"
            } else {
                "set the session's timeouts"
            })?;
            if read_key {
                key = Some(BackendKey::from_rows(server, &rows)?);
            }
        }
        Ok((conn, key))
    }

    /// Cancels the statement a tenant connection is running, if any, on its
    /// server, from a connection of its own: PostgreSQL's
    /// `pg_cancel_backend`, which the server acts on even for a session
    /// waiting on a lock (dropping the connection would not end that wait:
    /// the server notices a client gone only when it next talks to it).
    /// sqlx keeps the protocol's cancel key to itself, hence a query.
    ///
    /// Asked on the server's maintenance database first, which behind a
    /// pooler is a pool of its own (the tenant's may have no connection
    /// free: the one waiting is it), then, if that fails or does not see
    /// the session, on the tenant database. The
    /// backend is named by its pid and start time, so a pid the server has
    /// since given to another session is never signalled. Returns whether
    /// a backend was signalled.
    pub async fn cancel(&self, key: &BackendKey, db: &DbName) -> anyhow::Result<bool> {
        let sql = key.cancel_sql();
        let server = self.server(&key.server)?;
        let first = match self.maintenance_on(&server.base).await {
            Ok(conn) => send_cancel(conn, &sql).await,
            Err(err) => Err(err),
        };
        if let Ok(true) = first {
            return Ok(true);
        }
        // Refused there, or the session not seen from there (a pooler
        // that sends that database elsewhere, or as another role): ask
        // from the tenant database itself.
        let options = self.for_tenant(&key.server, db)?;
        let conn = self
            .connect(&options, false)
            .await
            .map_err(|err| match &first {
                Err(maintenance) => err.context(crate::error::render(maintenance)),
                Ok(_) => err,
            })?;
        send_cancel(conn, &sql).await
    }

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
    async fn pin(&self, conn: &mut PgConnection, pooled: bool) -> anyhow::Result<()> {
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
    async fn maintenance_on(&self, server: &PgConnectOptions) -> anyhow::Result<PgConnection> {
        let mut last = None;
        for db in MAINTENANCE_DBS {
            match self.connect(&server.clone().database(db), false).await {
                Ok(conn) => return Ok(conn),
                // Missing, or CONNECT revoked: try the next one.
                Err(err) if has_sqlstate(&err, "3D000") || has_sqlstate(&err, "42501") => {
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

    /// The tenant's URL with credentials, for a child process's environment
    /// only. Built by setting the URL path, so query parameters and
    /// percent-encoded credentials survive.
    pub fn tenant_url(&self, server: &ServerName, db: &DbName) -> anyhow::Result<Url> {
        self.check_tenant_db(db)?;
        Ok(with_database(&self.server(server)?.base_url, db.as_str()))
    }

    /// The tenant's URL without its password, and the password, for tools
    /// (psql) that should get the password through their environment.
    pub fn tenant_url_split(
        &self,
        server: &ServerName,
        db: &DbName,
    ) -> anyhow::Result<(Url, Option<String>)> {
        let mut url = self.tenant_url(server, db)?;
        let password = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        let _ = url.set_password(None);
        Ok((url, password))
    }

    /// The environment that describes the tenant's connection to a child
    /// process (`tenant exec`): `DATABASE_URL` first, always spelled
    /// `postgresql://` (`SQLAlchemy` refuses `postgres://`), then `PGHOST`,
    /// `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD` (if the URL has one)
    /// and a libpq variable for each query parameter that has one
    /// (`sslmode` -> `PGSSLMODE`, `application_name` -> `PGAPPNAME`...),
    /// so libpq tools need no arguments. Values are decoded as libpq
    /// decodes a URL: percent-decoding, `+` left as it is. A port or user
    /// the URL does not give is the one tenantctl itself connects with.
    pub fn tenant_env(
        &self,
        server: &ServerName,
        db: &DbName,
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        /// libpq connection parameters that may appear in the URL's query
        /// and have an environment variable (sqlx's spellings included).
        const FROM_QUERY: &[(&str, &str)] = &[
            ("host", "PGHOST"),
            ("hostaddr", "PGHOSTADDR"),
            ("port", "PGPORT"),
            ("sslmode", "PGSSLMODE"),
            ("ssl-mode", "PGSSLMODE"),
            ("sslrootcert", "PGSSLROOTCERT"),
            ("ssl-root-cert", "PGSSLROOTCERT"),
            ("ssl-ca", "PGSSLROOTCERT"),
            ("sslcert", "PGSSLCERT"),
            ("ssl-cert", "PGSSLCERT"),
            ("sslkey", "PGSSLKEY"),
            ("ssl-key", "PGSSLKEY"),
            ("sslcrl", "PGSSLCRL"),
            ("sslcrldir", "PGSSLCRLDIR"),
            ("sslsni", "PGSSLSNI"),
            ("sslnegotiation", "PGSSLNEGOTIATION"),
            ("sslcompression", "PGSSLCOMPRESSION"),
            ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
            ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
            ("requiressl", "PGREQUIRESSL"),
            ("requirepeer", "PGREQUIREPEER"),
            ("require_auth", "PGREQUIREAUTH"),
            ("channel_binding", "PGCHANNELBINDING"),
            ("gssencmode", "PGGSSENCMODE"),
            ("gsslib", "PGGSSLIB"),
            ("gssdelegation", "PGGSSDELEGATION"),
            ("krbsrvname", "PGKRBSRVNAME"),
            ("application_name", "PGAPPNAME"),
            ("connect_timeout", "PGCONNECT_TIMEOUT"),
            ("client_encoding", "PGCLIENTENCODING"),
            ("options", "PGOPTIONS"),
            ("target_session_attrs", "PGTARGETSESSIONATTRS"),
            ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
            ("passfile", "PGPASSFILE"),
            ("service", "PGSERVICE"),
        ];
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let base = &self.server(server)?.base;
        let mut url = self.tenant_url(server, db)?;
        if url.scheme() == "postgres" {
            url.set_scheme("postgresql")
                .map_err(|()| anyhow::anyhow!("cannot spell the tenant URL postgresql://"))?;
        }
        let host = url.host_str().unwrap_or_default();
        let user = match url.username() {
            "" => base.get_username().to_owned(),
            user => decode(user),
        };
        let mut env = vec![
            ("DATABASE_URL", url.to_string()),
            (
                "PGHOST",
                decode(host.trim_start_matches('[').trim_end_matches(']')),
            ),
            (
                "PGPORT",
                url.port().unwrap_or_else(|| base.get_port()).to_string(),
            ),
            ("PGDATABASE", db.as_str().to_owned()),
            ("PGUSER", user),
        ];
        if let Some(password) = url.password() {
            env.push(("PGPASSWORD", decode(password)));
        }
        for piece in url.query().unwrap_or_default().split('&') {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            let key = decode(key);
            if let Some(&(_, var)) = FROM_QUERY.iter().find(|(k, _)| *k == key) {
                // As in libpq, a parameter overrides the URL's own host or port.
                env.retain(|(name, _)| *name != var);
                env.push((var, decode(value)));
            }
        }
        Ok(env)
    }

    /// The tenant's URL with the password replaced, safe to print.
    pub fn tenant_url_redacted(&self, server: &ServerName, db: &DbName) -> anyhow::Result<String> {
        Ok(redact(&self.tenant_url(server, db)?))
    }

    async fn connect(
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
                let _ = conn.close().await;
                true
            }
            Ok(Err(err)) => err.as_database_error().is_some_and(|e| {
                e.code().as_deref() != Some("3D000")
                    && matches!(e.message(), "not allowed" | "no such user")
            }),
            Err(_) => false,
        }
    }
}

/// Runs a [`BackendKey::cancel_sql`] and closes the connection; whether
/// the session was found.
async fn send_cancel(mut conn: PgConnection, sql: &str) -> anyhow::Result<bool> {
    let signalled = conn.fetch_all(sql).await;
    let _ = conn.close().await;
    Ok(!signalled
        .context("cancel the statement in flight")?
        .is_empty())
}

/// Which server session a tenant connection is: enough to cancel its
/// statement from another connection, and to be sure it is still the same
/// session (a pid is reused once its backend exits).
#[derive(Debug, Clone)]
pub struct BackendKey {
    pub server: ServerName,
    session: Session,
}

/// How the session is found again from another connection.
#[derive(Debug, Clone)]
enum Session {
    /// By the `application_name` tenantctl gave it alone (`tenantctl
    /// <pid>-<n>`: this process, this connection).
    Named(String),
    /// By pid and `backend_start` (microseconds since the epoch), read from
    /// the session when the URL names its own `application_name`.
    Backend { pid: i32, started: i64 },
}

/// Numbers the sessions [`Connector::connect_tenant_cancellable`] names.
static SESSION_NAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl BackendKey {
    /// The query that reads it, appended to the session's first statements.
    /// Text in and out (simple protocol), numbers only, so no setting
    /// (`DateStyle`, `TimeZone`) of either session can change the value.
    /// (`pg_stat_get_activity` of one pid: the view's joins and planning
    /// are not paid on every tenant connection.)
    const SQL: &'static str = "SELECT a.pid::text, \
         (extract(epoch FROM a.backend_start) * 1000000)::bigint::text \
         FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a;";

    fn from_rows(server: &ServerName, rows: &[sqlx::postgres::PgRow]) -> anyhow::Result<Self> {
        use sqlx::Row as _;
        let row = rows
            .last()
            .ok_or_else(|| anyhow::anyhow!("read the session's backend: no row"))?;
        let pid: String = row.try_get(0).context("read the session's backend")?;
        let started: String = row.try_get(1).context("read the session's backend")?;
        Ok(Self {
            server: server.clone(),
            session: Session::Backend {
                pid: pid.parse().context("read the session's backend pid")?,
                started: started
                    .parse()
                    .context("read the session's backend start")?,
            },
        })
    }

    /// The values are integers read from the server, or a name tenantctl
    /// made of letters, digits, a space and a hyphen, so they are written
    /// into the statement: one simple-protocol round trip, through any
    /// pooler.
    fn cancel_sql(&self) -> String {
        match &self.session {
            Session::Named(name) => format!(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = '{name}' AND pid <> pg_backend_pid()"
            ),
            Session::Backend { pid, started } => format!(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE pid = {pid} AND (extract(epoch FROM backend_start) * 1000000)::bigint = {started}"
            ),
        }
    }
}

impl SessionLimits {
    /// `SET LOCAL` statements for these limits, if there are any, to put
    /// at the start of a transaction (or of a several-statement query,
    /// which is one implicit transaction): they end with it, so they never
    /// reach the next client of a pooled server connection. The values are
    /// numbers computed here, so they are written into the statement.
    pub fn local(&self) -> Option<String> {
        self.statements("SET LOCAL")
    }

    /// Session-level `SET` statements for these limits, for work that
    /// cannot run inside a transaction (a `-- no-transaction` migration):
    /// [`Self::reset`] takes them back before the connection is given up.
    pub fn session(&self) -> Option<String> {
        self.statements("SET")
    }

    /// `RESET` for what [`Self::session`] set: back to the connection's own
    /// defaults (its URL's `options` included).
    pub fn reset(&self) -> Option<String> {
        let mut sql = String::new();
        if self.lock_timeout.is_some() {
            sql.push_str("RESET lock_timeout; ");
        }
        if self.statement_timeout.is_some() {
            sql.push_str("RESET statement_timeout; ");
        }
        (!sql.is_empty()).then_some(sql)
    }

    fn statements(&self, set: &str) -> Option<String> {
        let mut sql = String::new();
        if let Some(t) = self.lock_timeout {
            let _ = write!(sql, "{set} lock_timeout = {}; ", whole_millis(t));
        }
        if let Some(t) = self.statement_timeout {
            let _ = write!(sql, "{set} statement_timeout = {}; ", whole_millis(t));
        }
        (!sql.is_empty()).then_some(sql)
    }
}

/// The server process behind a plain (not pinned) connection, as its
/// transactions report it. On a direct connection, or through a pooler in
/// session mode, it never changes; a transaction-mode pooler may hand each
/// transaction to another server connection. Nothing is asked for it: the
/// pid rides on queries tenantctl sends anyway ([`BACKEND_PID`]), and a
/// guard ([`Self::guard`]) put before a step's statements refuses to run
/// them anywhere else, so a session-level lock or setting is only ever
/// taken, and given back, where the work runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backend {
    pid: Option<i32>,
}

/// A statement that reads the server process a query runs on, to append
/// to a query tenantctl sends anyway; its column is named so that its row
/// is told apart from the query's own ([`pid_of`]).
pub const BACKEND_PID: &str = "SELECT pg_catalog.pg_backend_pid() AS tenantctl_backend";

/// What the guard's error carries, to recognise it among other errors.
const CHANGED_MARK: &str = "tenantctl server connection changed";

impl Backend {
    /// A statement (with its `; `) that fails unless it runs on the server
    /// process seen before; empty before any was seen. It fails at run
    /// time with a text PostgreSQL cannot read as a number, which carries
    /// both pids; everything after it in the same query is not run.
    pub fn guard(&self) -> String {
        match self.pid {
            Some(pid) => format!(
                "SELECT ('{CHANGED_MARK} ' || {pid} || ' ' || pg_catalog.pg_backend_pid())::int \
                 WHERE pg_catalog.pg_backend_pid() <> {pid}; "
            ),
            None => String::new(),
        }
    }

    /// Records the pid a transaction reported; an error if it is not the
    /// one seen before.
    pub fn observe(&mut self, pid: Option<i32>) -> Result<(), BackendChanged> {
        match (self.pid, pid) {
            (Some(from), Some(to)) if from != to => Err(BackendChanged { from, to }),
            (None, Some(pid)) => {
                self.pid = Some(pid);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The error a guard raised, as [`BackendChanged`]; other errors pass
    /// through.
    pub fn check(err: anyhow::Error) -> anyhow::Error {
        let changed = err.chain().find_map(|cause| {
            let db = cause.downcast_ref::<sqlx::Error>()?.as_database_error()?;
            let message = db.message();
            let at = message.find(CHANGED_MARK)?;
            let mut pids = message[at + CHANGED_MARK.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|p| !p.is_empty())
                .map(str::parse::<i32>);
            match (pids.next(), pids.next()) {
                (Some(Ok(from)), Some(Ok(to))) => Some(BackendChanged { from, to }),
                _ => None,
            }
        });
        match changed {
            Some(changed) => changed.into(),
            None => err,
        }
    }

    /// [`Self::check`], then the step's name as context, except on a
    /// [`BackendChanged`], whose message says all there is to say.
    pub fn step_failed(err: anyhow::Error, step: impl FnOnce() -> String) -> anyhow::Error {
        let err = Self::check(err);
        if err.is::<BackendChanged>() {
            err
        } else {
            err.context(step())
        }
    }
}

/// The pid in rows that hold a [`BACKEND_PID`] column.
pub fn pid_of(rows: &[sqlx::postgres::PgRow]) -> Option<i32> {
    use sqlx::Row as _;
    rows.iter()
        .find_map(|row| row.try_get::<i32, _>("tenantctl_backend").ok())
}

/// Two transactions of one client connection ran on two server processes:
/// a transaction-mode pooler is in between.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the server connection changed between two transactions of one connection (server process {from}, then {to})"
)]
pub struct BackendChanged {
    pub from: i32,
    pub to: i32,
}

/// The URL with the `tenantctl.toml` settings added as query parameters,
/// each only where the URL has none of that name (in any of the spellings
/// sqlx and libpq accept): the URL's own query wins, and an unset one
/// leaves libpq's variables (`PGSSLMODE`...) in force, as sqlx and libpq
/// both read them. Values are percent-encoded, never `+` for a space,
/// which sqlx and libpq read differently.
fn with_settings(mut url: Url, settings: &Settings) -> Url {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'/');
    let spellings = |key: &str| -> &'static [&'static str] {
        match key {
            "sslmode" => &["sslmode", "ssl-mode"],
            "sslrootcert" => &["sslrootcert", "ssl-root-cert", "ssl-ca"],
            "sslcert" => &["sslcert", "ssl-cert"],
            "sslkey" => &["sslkey", "ssl-key"],
            _ => &["pgbouncer"],
        }
    };
    let mut query = url.query().unwrap_or_default().to_owned();
    for (key, value) in settings.parameters() {
        let given = url
            .query_pairs()
            .any(|(k, _)| spellings(key).contains(&k.as_ref()));
        if given {
            continue;
        }
        if !query.is_empty() {
            query.push('&');
        }
        let _ = write!(query, "{key}={}", utf8_percent_encode(&value, VALUE));
    }
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    url
}

/// Whether the URL's own query sets `sslmode` (in either spelling).
fn has_sslmode(url: &Url) -> bool {
    url.query_pairs()
        .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
}

/// Where a server's `sslmode` comes from, in the order they win.
fn sslmode_from(url: &Url, var: &str, settings: &Settings, name: &ServerName) -> String {
    if has_sslmode(url) {
        format!("{var}'s query")
    } else if settings.sslmode.is_some() {
        format!("tenantctl.toml [servers.{name}]")
    } else if std::env::var_os("PGSSLMODE").is_some() {
        "PGSSLMODE".to_owned()
    } else {
        "sqlx's default".to_owned()
    }
}

fn ssl_mode_name(mode: sqlx::postgres::PgSslMode) -> &'static str {
    use sqlx::postgres::PgSslMode;
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// A server's address as compared with another's: host names ignore
/// case, and loopback is one place however it is spelled (`localhost`,
/// `127.0.0.1`, `::1`), so one server reached under two spellings is
/// recognised as one.
fn place(host: &str, port: u16) -> (String, u16) {
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "localhost" | "127.0.0.1" | "::1" | "[::1]" => "localhost".to_owned(),
        _ => host,
    };
    (host, port)
}

/// `pgbouncer=true` among the URL's query parameters.
fn is_transaction_pooled(url: &Url) -> bool {
    url.query_pairs()
        .any(|(k, v)| k == "pgbouncer" && v.eq_ignore_ascii_case("true"))
}

/// A timeout as PostgreSQL's whole milliseconds, rounded up so that a value
/// the flags accept never becomes 0, which the server reads as no timeout.
fn whole_millis(t: Duration) -> String {
    t.as_micros().div_ceil(1000).to_string()
}

/// True if the error chain holds PostgreSQL's "database does not exist",
/// or PgBouncer's relay of it (which it sends as a protocol violation,
/// 08P01, with the server's words).
pub fn is_missing_database(err: &anyhow::Error) -> bool {
    has_sqlstate(err, "3D000")
        || err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .and_then(|e| e.as_database_error())
                .is_some_and(|e| {
                    e.code().as_deref() == Some("08P01")
                        && e.message().starts_with("database \"")
                        && e.message().ends_with("\" does not exist")
                })
        })
}

/// True if the error chain holds a database error with this SQLSTATE.
pub fn has_sqlstate(err: &anyhow::Error, code: &str) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(sqlx::error::DatabaseError::code)
            .is_some_and(|c| c == code)
    })
}

fn parse_url(var: &str, raw: &str) -> Result<Url, UsageError> {
    let invalid = |why: &str| {
        UsageError(format!(
            "{var} is not a valid PostgreSQL URL ({why}); expected postgresql://user:password@host:5432"
        ))
    };
    // The url crate's error never echoes its input, so nothing secret leaks.
    let url = Url::parse(&encode_userinfo(raw.trim()).map_err(invalid)?)
        .map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(&format!(
            "scheme {:?}, expected postgres or postgresql",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    normalize(url).map_err(invalid)
}

/// Percent-encodes what a URL's userinfo cannot hold literally.
///
/// Everything between `://` and the last `@` is the user and password:
/// people paste passwords with `/`, `?`, `#` or `@` in them unencoded, and a
/// URL parser would then take the password's tail for the host, path or
/// query and show it in its errors. Encoding these characters first makes
/// such a URL mean what its writer meant, and keeps all of the userinfo
/// where redaction finds it. `%` followed by two hex digits is taken as
/// already encoded and left alone.
fn encode_userinfo(raw: &str) -> Result<String, &'static str> {
    let Some(scheme_end) = raw.find("://") else {
        return Ok(raw.to_owned());
    };
    let rest = &raw[scheme_end + 3..];
    let Some(at) = userinfo_end(rest)? else {
        return Ok(raw.to_owned());
    };
    let (userinfo, host_and_after) = (&rest[..at], &rest[at..]);
    let bytes = userinfo.as_bytes();
    let mut encoded = String::with_capacity(userinfo.len() + 8);
    for (i, c) in userinfo.char_indices() {
        let keep = c.is_ascii_alphanumeric()
            || "-._~!$&'()*+,;=:".contains(c)
            || (c == '%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if keep {
            encoded.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(encoded, "%{b:02X}");
            }
        }
    }
    Ok(format!(
        "{}{encoded}{host_and_after}",
        &raw[..scheme_end + 3]
    ))
}

/// Where the userinfo ends: the `@` after which a host follows (name or
/// `[address]`, then an optional `:port`, a path without `@`, anything in
/// the query). A password may hold `/ ? # @` unencoded and a query may hold
/// `@`; when more than one `@` qualifies (`u:p@ss?x@host`, or
/// `u:pw@host/?app=a@b`) the URL is refused rather than guessed at: a wrong
/// guess would send the password to another host. With none qualifying,
/// the last `@` is taken, so nothing before it can show in a message.
fn userinfo_end(rest: &str) -> Result<Option<usize>, &'static str> {
    let candidates: Vec<usize> = rest
        .match_indices('@')
        .map(|(i, _)| i)
        .filter(|&i| authority_follows(&rest[i + 1..]))
        .collect();
    match candidates.as_slice() {
        [] => Ok(rest.rfind('@')),
        [only] => Ok(Some(*only)),
        _ => Err(
            "it is ambiguous where the password ends; percent-encode @, /, ? and # in the password (and @ in the query)",
        ),
    }
}

/// Whether `tail` starts like `host[:port][/path][?query][#fragment]`.
fn authority_follows(tail: &str) -> bool {
    let end = if tail.starts_with('[') {
        match tail.find(']') {
            Some(i) => i + 1,
            None => return false,
        }
    } else {
        tail.find([':', '/', '?', '#']).unwrap_or(tail.len())
    };
    let host = &tail[..end];
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c)));
    if !host_ok {
        return false;
    }
    let mut after = &tail[end..];
    if let Some(port_and_more) = after.strip_prefix(':') {
        let digits = port_and_more
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(port_and_more.len());
        if digits == 0 {
            return false;
        }
        after = &port_and_more[digits..];
    }
    if !(after.is_empty() || after.starts_with(['/', '?', '#'])) {
        return false;
    }
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    !after[..path_end].contains('@')
}

/// Moves the `password`, `user` and `dbname` query parameters that libpq
/// and sqlx accept into the URL's own parts, so that redaction (which hides
/// the userinfo password) and the "names a database" check (which reads
/// the path) see them, and a tenant URL cannot be sent elsewhere by a
/// `dbname` left in its query. The other parameters are kept exactly as
/// written, since sqlx and libpq (psql, `exec` children) decode a query
/// differently (`+` is a space to one, a plus to the other).
fn normalize(mut url: Url) -> Result<Url, &'static str> {
    use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

    let Some(query) = url.query().map(str::to_owned) else {
        return Ok(url);
    };
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut kept = Vec::new();
    let (mut password, mut user, mut dbname) = (None, None, None);
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        match decode(key).as_str() {
            "password" => password = Some(decode(value)),
            "user" => user = Some(decode(value)),
            "dbname" => dbname = Some(decode(value)),
            "sslpassword" => {
                return Err(
                    "sslpassword is not accepted in the URL: it would show wherever the URL does",
                );
            }
            _ => kept.push(piece),
        }
    }
    if password.is_none() && user.is_none() && dbname.is_none() {
        return Ok(url);
    }
    url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    // Encoded here: the url crate leaves `%` alone, so a literal `%41` in a
    // password would otherwise be read back as `A`.
    if let Some(user) = user {
        url.set_username(&utf8_percent_encode(&user, NON_ALPHANUMERIC).to_string())
            .map_err(|()| "cannot set the user")?;
    }
    if let Some(password) = password {
        url.set_password(Some(
            &utf8_percent_encode(&password, NON_ALPHANUMERIC).to_string(),
        ))
        .map_err(|()| "cannot set the password")?;
    }
    if let Some(dbname) = dbname {
        if url.path().trim_matches('/').is_empty() {
            url.set_path(&format!(
                "/{}",
                utf8_percent_encode(&dbname, NON_ALPHANUMERIC)
            ));
        } else {
            return Err("both a path and a dbname parameter name a database");
        }
    }
    Ok(url)
}

fn options_from(url: &Url) -> Result<PgConnectOptions, UsageError> {
    PgConnectOptions::from_str(url.as_str())
        .map_err(|e| UsageError(format!("{}: {e}", redact(url))))
}

fn url_database(url: &Url) -> Option<String> {
    let path = url.path().trim_matches('/');
    (!path.is_empty()).then(|| {
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned()
    })
}

fn with_database(base: &Url, db: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("/{db}"));
    url
}

/// The URL's scheme, credentials and host only, for examples in messages.
fn server_root(url: &Url) -> Url {
    let mut root = with_database(url, "");
    root.set_query(None);
    root.set_fragment(None);
    root
}

/// Keeps a parsed URL's password (decoded) and its user and host.
fn remember_secrets(url: &Url, passwords: &mut Vec<String>, words: &mut Vec<String>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if let Some(password) = url.password() {
        passwords.push(decode(password));
    }
    words.push(decode(url.username()));
    words.extend(url.host_str().map(str::to_owned));
}

/// The password (decoded) in a value that reads as a URL with one, of any
/// scheme, however its userinfo is spelled; `None` for anything else.
/// For variables a child must not inherit, whose passwords are then
/// masked too.
pub fn url_password(raw: &str) -> Option<String> {
    let url = Url::parse(&encode_userinfo(raw.trim()).ok()?).ok()?;
    // `?password=` counts too; a URL normalize refuses keeps its own.
    let url = normalize(url.clone()).unwrap_or(url);
    url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which a
        // postgres URL with a host always can.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn each_server_has_its_own_url_and_an_unknown_one_fails_loudly() {
        let source = |name: &str, var: &str, url: Option<&str>| ServerSource {
            name: ServerName::parse(name).expect("valid"),
            var: var.to_owned(),
            url: url.map(str::to_owned),
            accepts_new: true,
            settings: crate::config::Settings::default(),
        };
        let c = Connector::with_servers(
            &[
                source(
                    "default",
                    "POSTGRES_BASE_URL",
                    Some("postgresql://a:pw1@one:5432"),
                ),
                source(
                    "eu2",
                    "POSTGRES_BASE_URL_EU2",
                    Some("postgresql://b:pw2@two:6432/?sslmode=require"),
                ),
                source("eu4", "PG_EU4", None),
            ],
            None,
            T,
        )
        .expect("valid");
        let db = DbName::parse("tenant_a").expect("valid");
        let eu2 = ServerName::parse("eu2").expect("valid");
        assert_eq!(
            c.tenant_url_redacted(&eu2, &db).expect("eu2"),
            "postgresql://b:***@two:6432/tenant_a?sslmode=require"
        );
        let options = c.for_tenant(&eu2, &db).expect("eu2");
        assert_eq!((options.get_host(), options.get_port()), ("two", 6432));
        assert!(c.master_on_server(&ServerName::default()));
        assert!(!c.master_on_server(&eu2));
        for (name, var) in [("eu3", "POSTGRES_BASE_URL_EU3"), ("eu4", "PG_EU4")] {
            let err = c
                .for_tenant(&ServerName::parse(name).expect("valid"), &db)
                .expect_err("not configured");
            assert_eq!(
                err.to_string(),
                format!("server {name} is not configured: set {var}")
            );
        }
        let listed: Vec<(String, bool)> = c
            .servers()
            .into_iter()
            .map(|s| (s.name.to_string(), s.address.is_some()))
            .collect();
        assert_eq!(
            listed,
            [
                ("default".into(), true),
                ("eu2".into(), true),
                ("eu4".into(), false)
            ]
        );
        let err = Connector::with_servers(
            &[
                source("default", "POSTGRES_BASE_URL", Some("postgresql://a@one")),
                source(
                    "eu2",
                    "POSTGRES_BASE_URL_EU2",
                    Some("postgresql://b:s3cret@two/app"),
                ),
            ],
            None,
            T,
        )
        .expect_err("names a database");
        assert!(
            err.0.starts_with("POSTGRES_BASE_URL_EU2 names a database"),
            "{}",
            err.0
        );
        assert!(!err.0.contains("s3cret"), "{}", err.0);
    }

    #[test]
    fn file_settings_join_the_url_and_its_own_query_wins() {
        use crate::config::{Pooler, SslMode};
        let settings = Settings {
            pooler: Some(Pooler::Transaction),
            sslmode: Some(SslMode::Require),
            sslrootcert: Some("/etc/ca dir/ca.pem".into()),
            ..Settings::default()
        };
        let source = |url: &str| ServerSource {
            name: ServerName::default(),
            var: "POSTGRES_BASE_URL".into(),
            url: Some(url.into()),
            accepts_new: true,
            settings: settings.clone(),
        };
        let db = DbName::parse("tenant_a").expect("valid");
        let c =
            Connector::with_servers(&[source("postgresql://u:pw@h:6432")], None, T).expect("valid");
        assert!(c.pooled());
        assert!(
            c.pooled_master,
            "the derived master is behind the same pooler"
        );
        assert_eq!(
            c.tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant"),
            "postgresql://u:***@h:6432/tenant_a?pgbouncer=true&sslmode=require&sslrootcert=/etc/ca%20dir/ca.pem"
        );
        assert!(c.urls_with_query().is_empty());
        // A master URL at the server's address is reached the same way;
        // one elsewhere is not.
        let c = Connector::with_servers(
            &[source("postgresql://u:pw@h:6432")],
            Some("postgresql://u:pw@h:6432/main"),
            T,
        )
        .expect("valid");
        assert!(c.pooled_master);
        let c = Connector::with_servers(
            &[source("postgresql://u:pw@h:6432")],
            Some("postgresql://u:pw@other:5432/main"),
            T,
        )
        .expect("valid");
        assert!(!c.pooled_master);
        // The URL's own parameters, in any spelling, win.
        let c = Connector::with_servers(
            &[source(
                "postgresql://u:pw@h:6432/?ssl-mode=disable&pgbouncer=false",
            )],
            None,
            T,
        )
        .expect("valid");
        assert!(!c.pooled());
        assert_eq!(
            c.tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant"),
            "postgresql://u:***@h:6432/tenant_a?ssl-mode=disable&pgbouncer=false&sslrootcert=/etc/ca%20dir/ca.pem"
        );
        assert_eq!(c.urls_with_query().len(), 1);
        let env = c.tenant_env(&ServerName::default(), &db).expect("env");
        assert!(
            env.contains(&("PGSSLMODE", "disable".to_owned())),
            "{env:?}"
        );
        assert!(
            env.contains(&("PGSSLROOTCERT", "/etc/ca dir/ca.pem".to_owned())),
            "{env:?}"
        );
    }

    #[test]
    fn tenant_url_keeps_query_and_encoded_credentials() {
        let c = Connector::new(
            "postgres://us%40r:p%2Fss@db.internal:6543/?sslmode=require",
            None,
            T,
        )
        .expect("valid");
        let db = DbName::parse("tenant_acme").expect("valid");
        let url = c.tenant_url(&ServerName::default(), &db).expect("tenant");
        assert_eq!(
            url.as_str(),
            "postgres://us%40r:p%2Fss@db.internal:6543/tenant_acme?sslmode=require"
        );
        assert_eq!(
            c.tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant"),
            "postgres://us%40r:***@db.internal:6543/tenant_acme?sslmode=require"
        );
        let options = c.for_tenant(&ServerName::default(), &db).expect("tenant");
        assert_eq!(options.get_database(), Some("tenant_acme"));
        assert_eq!(options.get_username(), "us@r");
    }

    #[test]
    fn trailing_slash_is_fine_and_database_is_rejected() {
        assert!(Connector::new("postgresql://u:secret@localhost:5432/", None, T).is_ok());
        let err = Connector::new("postgresql://u:secret@localhost:5432/app", None, T)
            .expect_err("names a database");
        assert!(err.0.contains("names a database"), "{}", err.0);
        assert!(!err.0.contains("secret"), "{}", err.0);
    }

    #[test]
    fn malformed_urls_are_rejected_without_echoing_them() {
        for bad in [
            "",
            "localhost:5432",
            "mysql://u:secret@h/",
            "postgres://u:secret@:5432",
        ] {
            let err = Connector::new(bad, None, T).expect_err(bad);
            assert!(!err.0.contains("secret"), "{}", err.0);
        }
    }

    #[test]
    fn query_parameters_cannot_carry_secrets_or_databases_past_the_checks() {
        let err = Connector::new("postgresql://u@h:1/?password=s3cret&dbname=app", None, T)
            .expect_err("dbname names a database");
        assert!(err.0.contains("names a database"), "{}", err.0);
        assert!(!err.0.contains("s3cret"), "{}", err.0);

        let c = Connector::new(
            "postgresql://h:1/?user=bob&password=s3cret&sslmode=require",
            None,
            T,
        )
        .expect("valid");
        let db = DbName::parse("tenant_a").expect("valid");
        assert_eq!(
            c.tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant"),
            "postgresql://bob:***@h:1/tenant_a?sslmode=require"
        );
        let (url, password) = c
            .tenant_url_split(&ServerName::default(), &db)
            .expect("tenant");
        assert_eq!(password.as_deref(), Some("s3cret"));
        assert!(!url.as_str().contains("s3cret"));

        let c = Connector::new(
            "postgresql://u:p@h:1",
            Some("postgresql://u:p@h:1/?dbname=main"),
            T,
        )
        .expect("valid");
        assert_eq!(c.master_db().as_str(), "main");

        // A literal `%41` in a password stays `%41`; other parameters are
        // kept exactly as written.
        let c = Connector::new(
            "postgresql://h:1/?options=-c%20search_path%3Dx&password=ab%2541",
            None,
            T,
        )
        .expect("valid");
        let (url, password) = c
            .tenant_url_split(&ServerName::default(), &db)
            .expect("tenant");
        assert_eq!(password.as_deref(), Some("ab%41"));
        assert_eq!(url.query(), Some("options=-c%20search_path%3Dx"));
        let options = c.for_tenant(&ServerName::default(), &db).expect("tenant");
        assert_eq!(options.get_database(), Some("tenant_a"));

        let err =
            Connector::new("postgresql://h:1/?sslpassword=k3y", None, T).expect_err("refused");
        assert!(
            err.0.contains("sslpassword") && !err.0.contains("k3y"),
            "{}",
            err.0
        );
    }

    #[test]
    fn reserved_characters_in_a_raw_password_stay_in_the_password() {
        for (raw, user, password) in [
            ("postgresql://u:S3cret/Tail@db:5432", "u", "S3cret/Tail"),
            ("postgresql://u:a?b#c@db:5432/", "u", "a?b#c"),
            ("postgresql://u:p@ss@w@db", "u", "p@ss@w"),
            ("postgresql://u:p%2Fss/x@db", "u", "p/ss/x"),
            ("postgresql://us er:100%pure@db", "us er", "100%pure"),
            ("postgres://u:[x]{y}|z^@db:1", "u", "[x]{y}|z^"),
        ] {
            let c = Connector::new(raw, None, T).unwrap_or_else(|e| panic!("{raw}: {}", e.0));
            let db = DbName::parse("tenant_a").expect("valid");
            let options = c.for_tenant(&ServerName::default(), &db).expect("tenant");
            assert_eq!(options.get_host(), "db", "{raw}");
            assert_eq!(options.get_username(), user, "{raw}");
            let (_, got) = c
                .tenant_url_split(&ServerName::default(), &db)
                .expect("tenant");
            assert_eq!(got.as_deref(), Some(password), "{raw}");
            let shown = c
                .tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant");
            assert!(
                !shown.contains("Tail") && !shown.contains("pure"),
                "{shown}"
            );
        }
        // An `@` in the query could be where the password ends: refused,
        // never sent to the host after it; so is an `@` before a `?`.
        for raw in [
            "postgresql://u:pw@localhost:1/?application_name=svc@prod",
            "postgresql://u:p@ss?w#Tail@db:5/",
        ] {
            let err = Connector::new(raw, None, T).expect_err("ambiguous");
            assert!(
                err.0.contains("ambiguous") && !err.0.contains("Tail"),
                "{}",
                err.0
            );
        }
        let db = DbName::parse("tenant_a").expect("valid");
        let c = Connector::new("postgresql://u:p@ss/w@rd/Tail@db:5/", None, T).expect("valid");
        assert_eq!(
            c.for_tenant(&ServerName::default(), &db)
                .expect("tenant")
                .get_host(),
            "db"
        );
        assert_eq!(
            c.tenant_url_split(&ServerName::default(), &db)
                .expect("tenant")
                .1
                .as_deref(),
            Some("p@ss/w@rd/Tail")
        );
        // Refusals never show any of what stood before the last `@`.
        for raw in [
            "postgresql://u:S3cret/Tail@db:5432/app",
            "postgresql://u:S3cret?Tail@db:99999",
            "mysql://u:S3cret#Tail@db",
        ] {
            let err = Connector::new(raw, None, T).expect_err(raw);
            assert!(
                !err.0.contains("Tail") && !err.0.contains("S3cret"),
                "{}",
                err.0
            );
        }
    }

    #[test]
    fn limits_are_transaction_local_and_session_ones_come_with_their_reset() {
        let none = SessionLimits::default();
        assert_eq!(
            (none.local(), none.session(), none.reset()),
            (None, None, None)
        );
        let both = SessionLimits {
            lock_timeout: Some(Duration::from_millis(1500)),
            statement_timeout: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            both.local().as_deref(),
            Some("SET LOCAL lock_timeout = 1500; SET LOCAL statement_timeout = 2000; ")
        );
        assert_eq!(
            both.session().as_deref(),
            Some("SET lock_timeout = 1500; SET statement_timeout = 2000; ")
        );
        assert_eq!(
            both.reset().as_deref(),
            Some("RESET lock_timeout; RESET statement_timeout; ")
        );
        let one = SessionLimits {
            lock_timeout: None,
            statement_timeout: Some(Duration::from_secs(1)),
        };
        assert_eq!(one.reset().as_deref(), Some("RESET statement_timeout; "));
    }

    #[test]
    fn a_backend_is_guarded_once_seen_and_a_change_is_an_error() {
        let mut backend = Backend::default();
        assert_eq!(backend.guard(), "");
        backend.observe(None).expect("nothing seen");
        backend.observe(Some(41)).expect("first");
        assert!(backend.guard().contains("pg_backend_pid() <> 41"));
        backend.observe(Some(41)).expect("same");
        let changed = backend.observe(Some(42)).expect_err("moved");
        assert_eq!((changed.from, changed.to), (41, 42));
        // Not a guard's error: passed through as it was.
        let other = Backend::check(anyhow::anyhow!("tenantctl server connection changed 1 2"));
        assert!(!other.is::<BackendChanged>());
    }

    #[test]
    fn timeouts_reach_the_server_as_whole_milliseconds_never_zero() {
        assert_eq!(whole_millis(Duration::from_micros(1500)), "2");
        assert_eq!(whole_millis(Duration::from_millis(1)), "1");
        assert_eq!(whole_millis(Duration::from_secs(2)), "2000");
    }

    #[test]
    fn master_defaults_and_refuses_tenant_use() {
        let c = Connector::new("postgresql://u:p@localhost", None, T).expect("valid");
        assert_eq!(c.master_db().as_str(), "master");
        let master = DbName::parse("master").expect("valid");
        assert!(c.for_tenant(&ServerName::default(), &master).is_err());
        assert!(c.tenant_url(&ServerName::default(), &master).is_err());
    }

    #[test]
    fn tenant_env_describes_the_tenant_to_libpq() {
        let db = DbName::parse("tenant_acme").expect("valid");
        let c = Connector::new(
            "postgres://us%40r:p%2Fss%20w+rd@db.internal:6543/?sslmode=require&application_name=my%20app&connect_timeout=7&options=-c%20search_path%3Dx&sslrootcert=%2Fetc%2Fca.pem&statement-cache-capacity=5",
            None,
            T,
        )
        .expect("valid");
        let env = c.tenant_env(&ServerName::default(), &db).expect("tenant");
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("DATABASE_URL"),
            Some(
                "postgresql://us%40r:p%2Fss%20w+rd@db.internal:6543/tenant_acme?sslmode=require&application_name=my%20app&connect_timeout=7&options=-c%20search_path%3Dx&sslrootcert=%2Fetc%2Fca.pem&statement-cache-capacity=5"
            )
        );
        assert_eq!(get("PGHOST"), Some("db.internal"));
        assert_eq!(get("PGPORT"), Some("6543"));
        assert_eq!(get("PGDATABASE"), Some("tenant_acme"));
        assert_eq!(get("PGUSER"), Some("us@r"));
        assert_eq!(get("PGPASSWORD"), Some("p/ss w+rd"));
        assert_eq!(get("PGSSLMODE"), Some("require"));
        assert_eq!(get("PGAPPNAME"), Some("my app"));
        assert_eq!(get("PGCONNECT_TIMEOUT"), Some("7"));
        assert_eq!(get("PGOPTIONS"), Some("-c search_path=x"));
        assert_eq!(get("PGSSLROOTCERT"), Some("/etc/ca.pem"));
        assert_eq!(env.len(), 11, "{env:?}");

        // A socket directory as the host parameter, an IPv6 address, no
        // password, already postgresql://.
        let c = Connector::new(
            "postgresql://app@[::1]:5433/?host=%2Fvar%2Frun%2Fpostgresql",
            None,
            T,
        )
        .expect("valid");
        let env = c.tenant_env(&ServerName::default(), &db).expect("tenant");
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("DATABASE_URL"),
            Some("postgresql://app@[::1]:5433/tenant_acme?host=%2Fvar%2Frun%2Fpostgresql")
        );
        assert_eq!(get("PGHOST"), Some("/var/run/postgresql"));
        assert_eq!(get("PGPORT"), Some("5433"));
        assert_eq!(get("PGUSER"), Some("app"));
        assert_eq!(get("PGPASSWORD"), None);

        let master = DbName::parse("master").expect("valid");
        assert!(c.tenant_env(&ServerName::default(), &master).is_err());
    }
}
