//! `tenantctl.toml`: how the master's companies table is laid out when it is
//! not the seed's `"Company"`, and how its status values map to tenantctl's
//! lifecycle. Credentials never go here: URLs come from the environment.
//!
//! ```toml
//! [master]
//! table = "public.tenants"        # schema-qualified allowed
//!
//! [master.columns]
//! id = "id"
//! db_name = "database_name"
//! slug = "domain"                  # optional columns: omit to look for the default name
//! name = "name"
//! status = "state"
//!
//! [master.statuses]                # the table's values for tenantctl's states
//! active = "ACTIVE"
//!
//! [servers.eu2]                    # a server; its URL is in the environment
//! url_env = "PG_EU2"               # [default: POSTGRES_BASE_URL_EU2]
//! accepts_new = false              # tenant create never picks it on its own
//! pooler = "transaction"           # what ?pgbouncer=true on its URL says
//! sslmode = "verify-full"          # TLS, as libpq's sslmode/PGSSLMODE
//! sslrootcert = "/etc/ssl/db-ca.pem"
//!
//! [tenants.migrator]               # who owns each tenant's schema
//! kind = "prisma"                  # "sqlx" (default), "prisma" or "command"
//! migrations = "prisma/tenant/migrations"
//! command = ["npx", "prisma", "migrate", "deploy"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::UsageError;
use crate::lifecycle::Lifecycle;

/// The file looked for in the working directory when none is named.
pub const DEFAULT_FILE: &str = "tenantctl.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub master: MasterConfig,
    /// `[servers.<name>]`: servers beyond those the environment defines,
    /// or settings for those.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
    /// `[tenants]`: who owns the tenants' schema.
    #[serde(default)]
    pub tenants: TenantsConfig,
    /// The file this was read from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One `[servers.<name>]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The environment variable holding the server's URL [default:
    /// `POSTGRES_BASE_URL_<NAME>`].
    pub url_env: Option<String>,
    /// Whether `tenant create` may place a new tenant there without
    /// `--server`.
    #[serde(default = "yes")]
    pub accepts_new: bool,
    /// What stands in front of the server, kept here rather than as
    /// `?pgbouncer=true` on a URL the application also reads: the seed
    /// builds tenant URLs as `${POSTGRES_BASE_URL}/${dbName}`, which a
    /// query string on the base URL breaks.
    pub pooler: Option<Pooler>,
    /// TLS, libpq's names and values; the URL's own query parameters win
    /// over these, and these over `PGSSLMODE` & co.
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl ServerConfig {
    /// What this section says about how to reach the server.
    pub fn settings(&self) -> Settings {
        Settings {
            pooler: self.pooler,
            sslmode: self.sslmode,
            sslrootcert: self.sslrootcert.clone(),
            sslcert: self.sslcert.clone(),
            sslkey: self.sslkey.clone(),
        }
    }
}

/// `pooler = "..."` of a `[servers.<name>]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// PgBouncer (or similar) in transaction mode: as `?pgbouncer=true`.
    Transaction,
    /// A session-mode pool: each client keeps its server connection.
    Session,
    /// The server itself.
    None,
}

/// How a `[servers.<name>]` section says to reach its server: each written
/// into the server's connection parameters as the URL query parameter of
/// that name, where the URL has none of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub pooler: Option<Pooler>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling, any case.
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Disable,
            Self::Allow,
            Self::Prefer,
            Self::Require,
            Self::VerifyCa,
            Self::VerifyFull,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl Settings {
    /// These settings, with libpq's variables (`PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGSSLCERT`, `PGSSLKEY`, as sqlx reads them) for what the file
    /// leaves unset, so that what tenantctl connects with is what a child
    /// of `tenant exec` is handed (which gets no `PG*` variable of
    /// tenantctl's own). A value libpq would not take is left to sqlx,
    /// which ignores it too.
    #[must_use]
    pub fn with_libpq_environment(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if self.sslmode.is_none() {
            self.sslmode = var("PGSSLMODE").and_then(|v| SslMode::parse(&v));
        }
        for (field, name) in [
            (&mut self.sslrootcert, "PGSSLROOTCERT"),
            (&mut self.sslcert, "PGSSLCERT"),
            (&mut self.sslkey, "PGSSLKEY"),
        ] {
            if field.is_none() {
                *field = var(name);
            }
        }
        self
    }

    /// The settings as URL query parameters, in libpq's spelling (and
    /// Prisma's `pgbouncer=true`).
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.pooler == Some(Pooler::Transaction) {
            out.push(("pgbouncer", "true".to_owned()));
        }
        if let Some(mode) = self.sslmode {
            out.push(("sslmode", mode.as_str().to_owned()));
        }
        for (key, value) in [
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
        ] {
            if let Some(value) = value {
                out.push((key, value.clone()));
            }
        }
        out
    }
}

fn yes() -> bool {
    true
}

/// The `[tenants]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    pub migrator: Option<MigratorConfig>,
}

/// `[tenants.migrator]` as written; [`Config::migrator`] checks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratorConfig {
    #[serde(default)]
    pub kind: MigratorKind,
    /// sqlx: a migrations folder (as `--tenant-migrations`); prisma: the
    /// folder of `<name>/migration.sql`. Relative to the toml file's folder.
    pub migrations: Option<PathBuf>,
    /// An argv list, run in the toml file's folder with the tenant's
    /// connection in its environment.
    pub command: Option<Vec<String>>,
    /// prisma: who applies pending migrations, tenantctl itself
    /// (`"native"`, the default) or `command`.
    pub apply: Option<ApplyWith>,
    /// prisma: the schema holding the application's tables and
    /// `_prisma_migrations` (Prisma's `?schema=`) [default: public].
    pub schema: Option<String>,
}

/// Who owns the tenants' schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigratorKind {
    #[default]
    Sqlx,
    Prisma,
    Command,
}

impl MigratorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlx => "sqlx",
            Self::Prisma => "prisma",
            Self::Command => "command",
        }
    }
}

/// `apply` of a prisma migrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyWith {
    Native,
    Command,
}

/// The tenants' migrator, checked, with its paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrator {
    /// tenantctl's own sqlx migrations: `dir` from the toml, if named.
    Sqlx { dir: Option<PathBuf> },
    /// Prisma's migrations folder and `_prisma_migrations`.
    Prisma {
        migrations: PathBuf,
        schema: String,
        /// `schema` was configured: the scripts run with `search_path` set
        /// to it (Prisma's `?schema=`); otherwise with the role's own.
        search_path: bool,
        /// Run for tenants with something pending instead of applying
        /// natively (`apply = "command"`).
        command: Option<AppCommand>,
    },
    /// Any command, run on every selected tenant.
    Command(AppCommand),
}

/// An application's command and the folder it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCommand {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
}

impl Migrator {
    pub fn kind(&self) -> MigratorKind {
        match self {
            Self::Sqlx { .. } => MigratorKind::Sqlx,
            Self::Prisma { .. } => MigratorKind::Prisma,
            Self::Command(_) => MigratorKind::Command,
        }
    }
}

/// The `[master]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// The companies table, `name` or `schema.name`, as written in the
    /// database (case kept; quoted when used).
    pub table: String,
    pub columns: Columns,
    /// The table's value for each lifecycle state it has.
    pub statuses: BTreeMap<LifecycleKey, String>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            table: "Company".into(),
            columns: Columns::default(),
            statuses: BTreeMap::new(),
        }
    }
}

/// Column names; `None` means the default name, used if the table has it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub id: Option<String>,
    pub db_name: Option<String>,
    pub slug: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// Where each company's server is kept [default: a "dbServer" column,
    /// else tenantctl's own `tenantctl.placement` table].
    pub server: Option<String>,
}

/// A lifecycle state as a key of `[master.statuses]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleKey {
    Provisioning,
    Active,
    Failed,
    Dropped,
}

impl From<LifecycleKey> for Lifecycle {
    fn from(key: LifecycleKey) -> Self {
        match key {
            LifecycleKey::Provisioning => Self::Provisioning,
            LifecycleKey::Active => Self::Active,
            LifecycleKey::Failed => Self::Failed,
            LifecycleKey::Dropped => Self::Dropped,
        }
    }
}

impl Config {
    /// Reads the file named by `--config`/`TENANTCTL_CONFIG`, else
    /// `tenantctl.toml` in the working directory if there is one, else the
    /// defaults (the seed's `"Company"` table).
    pub fn load(named: Option<&Path>) -> Result<Self, UsageError> {
        let path: PathBuf = match named {
            Some(path) => path.to_owned(),
            None => {
                let default = PathBuf::from(DEFAULT_FILE);
                if !default.is_file() {
                    return Ok(Self::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| UsageError(format!("read {}: {}", path.display(), e.kind())))?;
        let mut config =
            Self::parse(&text).map_err(|why| UsageError(format!("{}: {why}", path.display())))?;
        config.source = Some(std::fs::canonicalize(&path).unwrap_or(path));
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if config.master.table.trim().is_empty() {
            return Err("[master] table is empty".into());
        }
        // Two states under one value cannot be told apart when read back
        // (statuses compare ignoring case): every row would read as the
        // first of them, and the others be lost.
        let mut by_value: BTreeMap<String, Vec<LifecycleKey>> = BTreeMap::new();
        for (state, value) in &config.master.statuses {
            by_value
                .entry(value.to_lowercase())
                .or_default()
                .push(*state);
        }
        if let Some(states) = by_value.values().find(|s| s.len() > 1) {
            let names: Vec<&str> = states
                .iter()
                .map(|s| Lifecycle::from(*s).as_str())
                .collect();
            let value = &config.master.statuses[&states[0]];
            return Err(format!(
                "[master.statuses] maps {} to the same value {value:?}, so tenantctl could not tell them apart when it reads a row back; give each state a value of its own, or map only the one the application means by {value:?} and leave the others out (tenantctl then keeps them in its own table)",
                names.join(", ")
            ));
        }
        config.migrator_in(Path::new("."))?;
        Ok(config)
    }

    /// The tenants' migrator, paths relative to the toml file's folder (the
    /// working directory without a file).
    pub fn migrator(&self) -> Result<Migrator, UsageError> {
        let base = self
            .source
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        self.migrator_in(&base).map_err(|why| {
            UsageError(match &self.source {
                Some(path) => format!("{}: {why}", path.display()),
                None => why,
            })
        })
    }

    fn migrator_in(&self, base: &Path) -> Result<Migrator, String> {
        let Some(m) = &self.tenants.migrator else {
            return Ok(Migrator::Sqlx { dir: None });
        };
        let command = match &m.command {
            Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
                return Err(
                    "[tenants.migrator] command is empty: give the program and its arguments, e.g. [\"npx\", \"prisma\", \"migrate\", \"deploy\"]".into(),
                );
            }
            Some(argv) => Some(AppCommand {
                argv: argv.clone(),
                cwd: base.to_path_buf(),
            }),
            None => None,
        };
        let only = |key: &str, set: bool| -> Result<(), String> {
            if set {
                Err(format!(
                    "[tenants.migrator] {key} does not apply to kind = \"{}\"",
                    m.kind.as_str()
                ))
            } else {
                Ok(())
            }
        };
        match m.kind {
            MigratorKind::Sqlx => {
                only("command", m.command.is_some())?;
                only("apply", m.apply.is_some())?;
                only("schema", m.schema.is_some())?;
                Ok(Migrator::Sqlx {
                    dir: m.migrations.as_ref().map(|d| base.join(d)),
                })
            }
            MigratorKind::Command => {
                only("migrations", m.migrations.is_some())?;
                only("apply", m.apply.is_some())?;
                only("schema", m.schema.is_some())?;
                let command = command.ok_or(
                    "[tenants.migrator] kind = \"command\" needs command, the argv list to run for each tenant (e.g. [\"alembic\", \"upgrade\", \"head\"])",
                )?;
                Ok(Migrator::Command(command))
            }
            MigratorKind::Prisma => {
                let migrations = m.migrations.as_ref().ok_or(
                    "[tenants.migrator] kind = \"prisma\" needs migrations, the folder of <name>/migration.sql (e.g. \"prisma/migrations\")",
                )?;
                let schema = m.schema.clone().unwrap_or_else(|| "public".into());
                if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
                    return Err(format!(
                        "[tenants.migrator] schema {schema:?} is not a schema name"
                    ));
                }
                let command = match m.apply.unwrap_or(ApplyWith::Native) {
                    ApplyWith::Native => None,
                    ApplyWith::Command => Some(command.ok_or(
                        "[tenants.migrator] apply = \"command\" needs command, the argv list that applies the migrations",
                    )?),
                };
                Ok(Migrator::Prisma {
                    migrations: base.join(migrations),
                    schema,
                    search_path: m.schema.is_some(),
                    command,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_laravel_style_table() {
        let config = Config::parse(
            r#"
            [master]
            table = "public.tenants"
            [master.columns]
            db_name = "database_name"
            [master.statuses]
            active = "live"
            "#,
        )
        .expect("valid");
        assert_eq!(config.master.table, "public.tenants");
        assert_eq!(
            config.master.columns.db_name.as_deref(),
            Some("database_name")
        );
        assert_eq!(config.master.columns.id, None);
        assert_eq!(
            config
                .master
                .statuses
                .get(&LifecycleKey::Active)
                .map(String::as_str),
            Some("live")
        );
    }

    #[test]
    fn defaults_to_the_seed_table_and_refuses_unknown_keys() {
        assert_eq!(Config::parse("").expect("empty").master.table, "Company");
        assert!(Config::parse("[master]\ntabel = \"x\"").is_err());
        assert!(Config::parse("[master.statuses]\nsuspended = \"S\"").is_err());
        assert!(Config::parse("[master]\ntable = \"\"").is_err());
    }

    #[test]
    fn a_status_mapping_that_loses_states_is_refused() {
        for text in [
            "[master.statuses]\nprovisioning = \"INACTIVE\"\nfailed = \"INACTIVE\"\ndropped = \"INACTIVE\"\n",
            "[master.statuses]\nactive = \"live\"\ndropped = \"LIVE\"\n",
        ] {
            let err = Config::parse(text).expect_err(text);
            assert!(err.contains("to the same value"), "{err}");
        }
        let err = Config::parse(
            "[master.statuses]\nprovisioning = \"INACTIVE\"\nfailed = \"INACTIVE\"\ndropped = \"INACTIVE\"\n",
        )
        .expect_err("three states");
        assert!(
            err.starts_with("[master.statuses] maps provisioning, failed, dropped to the same value \"INACTIVE\""),
            "{err}"
        );
        assert!(Config::parse("[master.statuses]\nactive = \"A\"\ndropped = \"D\"\n").is_ok());
    }

    #[test]
    fn pooler_and_tls_per_server() {
        let config = Config::parse(
            "[servers.default]\npooler = \"transaction\"\nsslmode = \"verify-full\"\nsslrootcert = \"/etc/ca a.pem\"\n[servers.eu2]\npooler = \"session\"\n",
        )
        .expect("valid");
        let default = config.servers["default"].settings();
        assert_eq!(default.pooler, Some(Pooler::Transaction));
        assert_eq!(
            default.parameters(),
            [
                ("pgbouncer", "true".to_owned()),
                ("sslmode", "verify-full".to_owned()),
                ("sslrootcert", "/etc/ca a.pem".to_owned()),
            ]
        );
        assert!(config.servers["eu2"].settings().parameters().is_empty());
        for bad in [
            "[servers.default]\npooler = \"statement\"",
            "[servers.default]\nsslmode = \"on\"",
            "[servers.default]\nssl_mode = \"require\"",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn migrator_sections() {
        let base = Path::new("/app");
        let get = |text: &str| Config::parse(text).and_then(|c| c.migrator_in(base));
        assert_eq!(get(""), Ok(Migrator::Sqlx { dir: None }));
        assert_eq!(
            get(
                "[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"prisma/migrations\"\ncommand = [\"npx\", \"prisma\"]\n"
            ),
            Ok(Migrator::Prisma {
                migrations: PathBuf::from("/app/prisma/migrations"),
                schema: "public".into(),
                search_path: false,
                command: None,
            })
        );
        assert!(matches!(
            get(
                "[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"m\"\napply = \"command\"\ncommand = [\"x\"]\n"
            ),
            Ok(Migrator::Prisma {
                command: Some(_),
                ..
            })
        ));
        assert!(matches!(
            get("[tenants.migrator]\nkind = \"command\"\ncommand = [\"alembic\", \"upgrade\", \"head\"]\n"),
            Ok(Migrator::Command(AppCommand { ref argv, .. })) if argv.len() == 3
        ));
        for (bad, names) in [
            ("[tenants.migrator]\nkind = \"prisma\"\n", "migrations"),
            ("[tenants.migrator]\nkind = \"command\"\n", "command"),
            (
                "[tenants.migrator]\nkind = \"command\"\ncommand = []\n",
                "command",
            ),
            (
                "[tenants.migrator]\nkind = \"command\"\ncommand = [\"x\"]\nmigrations = \"m\"\n",
                "migrations",
            ),
            (
                "[tenants.migrator]\nkind = \"sqlx\"\ncommand = [\"x\"]\n",
                "command",
            ),
            (
                "[tenants.migrator]\nkind = \"prisma\"\nmigrations = \"m\"\napply = \"command\"\n",
                "command",
            ),
            ("[tenants.migrator]\nkind = \"flyway\"\n", "flyway"),
            (
                "[tenants.migrator]\nkind = \"prisma\"\nmigration = \"m\"\n",
                "migration",
            ),
            ("[tenants]\nmigrater = 1\n", "migrater"),
        ] {
            let err = get(bad).expect_err(bad);
            assert!(err.contains(names), "{bad}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn servers_sections() {
        let config = Config::parse(
            "[servers.eu2]\nurl_env = \"PG_EU2\"\naccepts_new = false\n[servers.us1]\n[master.columns]\nserver = \"shard\"\n",
        )
        .expect("valid");
        assert_eq!(config.servers["eu2"].url_env.as_deref(), Some("PG_EU2"));
        assert!(!config.servers["eu2"].accepts_new);
        assert!(config.servers["us1"].accepts_new);
        assert_eq!(config.master.columns.server.as_deref(), Some("shard"));
        assert!(Config::parse("[servers.eu2]\nurl = \"postgresql://x\"").is_err());
    }
}
