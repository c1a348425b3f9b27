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
        Ok(config)
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
