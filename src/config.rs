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
use crate::tenant::Lifecycle;

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
    /// else tenantctl's own `_tenantctl_placement` table].
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
