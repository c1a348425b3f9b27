//! A tenant's database: connecting to it (cancellable, with the session's
//! limits), cancelling its running statement by the key read when it
//! connected, and the URL or libpq
//! environment a child process (`pg_dump`, `psql`, a script) is given to
//! reach it.

use ::url::Url;
use anyhow::Context as _;
use sqlx::Executor as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::url::with_database;
use super::*;
use crate::dbname::DbName;
use crate::servers::ServerName;

impl Connector {
    /// Refuses the master database, so a row that names the master can
    /// never turn a tenant command (or `drop`) on it.
    pub fn check_tenant_db(&self, db: &DbName) -> anyhow::Result<()> {
        anyhow::ensure!(
            db != &self.master_db,
            "database {db} is the master database, not a tenant database"
        );
        anyhow::ensure!(
            !db.as_str().starts_with(crate::dbname::TEMPLATE_PREFIX),
            "database {db} is one of tenantctl's template databases, not a tenant database"
        );
        Ok(())
    }

    /// Connection options for a tenant database on its server.
    pub fn for_tenant(&self, server: &ServerName, db: &DbName) -> anyhow::Result<PgConnectOptions> {
        self.check_tenant_db(db)?;
        Ok(self.server(server)?.base.clone().database(db.as_str()))
    }

    /// Opens a connection to a template database being built (which
    /// [`Self::check_tenant_db`] refuses as a tenant's).
    pub async fn connect_template(
        &self,
        server: &ServerName,
        db: &DbName,
    ) -> anyhow::Result<PgConnection> {
        anyhow::ensure!(
            db.as_str().starts_with(crate::dbname::TEMPLATE_PREFIX),
            "database {db} is not a template database"
        );
        let pooled = self.server(server)?.pooled;
        let options = self.server(server)?.base.clone().database(db.as_str());
        let mut conn = self.connect(&options, pooled).await?;
        self.pin(&mut conn, pooled).await?;
        Ok(conn)
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
            Ok(conn) => send_cancel(self, conn, &sql).await,
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
        send_cancel(self, conn, &sql).await
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
            if let Some(&(_, var)) = LIBPQ_FROM_QUERY.iter().find(|(k, _)| *k == key) {
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
}

/// Runs a [`BackendKey::cancel_sql`] and closes the connection; whether
/// the session was found.
async fn send_cancel(connector: &Connector, conn: PgConnection, sql: &str) -> anyhow::Result<bool> {
    connector
        .scoped(conn, |conn, _| {
            Box::pin(async move {
                let signalled = conn
                    .fetch_all(sql)
                    .await
                    .context("cancel the statement in flight")?;
                Ok(!signalled.is_empty())
            })
        })
        .await
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

/// libpq connection parameters that may appear in the URL's query
/// and have an environment variable (sqlx's spellings included), for
/// [`Connector::tenant_env`].
const LIBPQ_FROM_QUERY: &[(&str, &str)] = &[
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

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
