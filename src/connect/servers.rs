//! The servers and the master as configured: one base URL each, with its
//! settings, validated once, and what is known about each (address,
//! pooler, identity).

use std::collections::BTreeMap;
use std::time::Duration;

use super::url::{
    has_sslmode, is_transaction_pooled, options_from, parse_url, place, remember_secrets,
    server_root, sslmode_from, url_database, with_database, with_settings,
};
use super::*;
use crate::child_env::ChildEnv;
use crate::dbname::DbName;
use crate::error::UsageError;
use crate::servers::{NotConfigured, ServerName, ServerSource};

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
        let mut seen = Seen::default();
        for source in sources {
            vars.insert(source.name.clone(), source.var.clone());
            let Some(raw) = &source.url else { continue };
            servers.insert(
                source.name.clone(),
                Server::from_source(source, raw, &mut seen)?,
            );
        }
        let default_url = servers
            .get(&ServerName::default())
            .map(|s| s.base_url.clone())
            .ok_or_else(|| UsageError(format!("{} is not set", crate::servers::URL_VAR)))?;

        let (master_url, master_db) = match master_url {
            Some(raw) => master_from(raw, &servers, &mut seen.tls_from)?,
            None => {
                let db = DbName::parse(DEFAULT_MASTER_DB).expect("constant is valid");
                (with_database(&default_url, db.as_str()), db)
            }
        };
        let master = options_from(&master_url)?.database(master_db.as_str());
        let Seen {
            mut passwords,
            mut words,
            tls_from,
        } = seen;
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
    pub(super) fn server(&self, name: &ServerName) -> Result<&Server, NotConfigured> {
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
    pub(super) async fn identity(&self, name: &ServerName) -> Option<String> {
        if let Some(known) = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return known.clone();
        }
        let asked = self
            .with_maintenance(name, |conn, _| {
                Box::pin(async move {
                    let (id,): (String,) = sqlx::query_as(
                        "SELECT system_identifier::text || ':' || current_setting('port') FROM pg_control_system()",
                    )
                    .persistent(false)
                    .fetch_one(conn)
                    .await?;
                    Ok(id)
                })
            })
            .await
            .ok();
        self.identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), asked.clone());
        asked
    }
}

/// What building a [`Connector`] gathers from every URL besides the
/// servers themselves.
#[derive(Default)]
struct Seen {
    passwords: Vec<String>,
    words: Vec<String>,
    tls_from: Vec<((String, u16), String)>,
}

impl Server {
    /// One configured server from its URL (`raw`, from `source.var`),
    /// which must name no database, with its settings joined in.
    fn from_source(source: &ServerSource, raw: &str, seen: &mut Seen) -> Result<Self, UsageError> {
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
        seen.tls_from
            .push(((base.get_host().to_owned(), base.get_port()), from));
        remember_secrets(&base_url, &mut seen.passwords, &mut seen.words);
        Ok(Self {
            base,
            pooled: is_transaction_pooled(&base_url),
            base_url,
            accepts_new: source.accepts_new,
            settings,
            has_query,
        })
    }
}

/// The master's URL and database from `MASTER_DATABASE_URL`: on a
/// configured server's address (the default's first) it is reached as that
/// server is, through its pooler, with its TLS settings.
fn master_from(
    raw: &str,
    servers: &BTreeMap<ServerName, Server>,
    tls_from: &mut Vec<((String, u16), String)>,
) -> Result<(Url, DbName), UsageError> {
    let url = parse_url("MASTER_DATABASE_URL", raw)?;
    let name = url_database(&url).ok_or_else(|| {
        UsageError(format!(
            "MASTER_DATABASE_URL ({}) names no database; add it to the path, e.g. /master",
            redact(&url)
        ))
    })?;
    let db = DbName::parse(&name)
        .map_err(|err| UsageError(format!("MASTER_DATABASE_URL: master {err}")))?;
    let at = options_from(&url)?;
    let on = servers
        .get(&ServerName::default())
        .into_iter()
        .chain(servers.values())
        .find(|s| {
            place(s.base.get_host(), s.base.get_port()) == place(at.get_host(), at.get_port())
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
    Ok((url, db))
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
}
