//! Named PostgreSQL servers: which ones exist and where their URLs come
//! from. `POSTGRES_BASE_URL` is the server named `default`;
//! `POSTGRES_BASE_URL_<NAME>` is the server `<name>` (lower case);
//! `tenantctl.toml` may list servers too (`[servers.eu2] url_env = "PG_EU2"`,
//! `accepts_new = false`). Only the variables' names are ever kept in
//! messages or the master; the URLs go to [`crate::connect::Connector`].

use std::collections::BTreeMap;
use std::fmt;

use crate::config::{ServerConfig, Settings};
use crate::error::UsageError;

/// The prefix of a named server's variable; `POSTGRES_BASE_URL` itself is
/// the default server.
pub const URL_VAR: &str = "POSTGRES_BASE_URL";

/// Longest server name accepted (it is stored in the master).
pub const MAX_LEN: usize = 63;

/// A server's name: lower-case ASCII letters, digits and `_`, starting with
/// a letter or digit, at most 63 bytes. `default` is `POSTGRES_BASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid server name {0:?}: use 1 to {MAX_LEN} lower-case letters, digits and _, starting with a letter or digit"
)]
pub struct ServerNameError(String);

impl ServerName {
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<Self, ServerNameError> {
        if crate::dbname::is_handle(raw, MAX_LEN, '_') {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ServerNameError(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    /// The variable that defines this server unless `tenantctl.toml` names
    /// another: `POSTGRES_BASE_URL`, or `POSTGRES_BASE_URL_<NAME>`.
    pub fn default_var(&self) -> String {
        if self.is_default() {
            URL_VAR.to_owned()
        } else {
            format!("{URL_VAR}_{}", self.0.to_ascii_uppercase())
        }
    }
}

impl Default for ServerName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ServerName {
    type Err = ServerNameError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

/// A tenant is placed on a server no URL is given for. Never a reason to
/// skip the tenant or use another server: it fails.
#[derive(Debug, Clone, thiserror::Error)]
#[error("server {name} is not configured: set {var}")]
pub struct NotConfigured {
    pub name: ServerName,
    /// The variable that would configure it.
    pub var: String,
}

/// One server as configured: its name, the variable its URL comes from,
/// and the URL if that variable is set.
#[derive(Debug, Clone)]
pub struct ServerSource {
    pub name: ServerName,
    pub var: String,
    /// `None`: listed in `tenantctl.toml`, but its variable is not set.
    pub url: Option<String>,
    /// Whether `tenant create` may pick it for a new tenant.
    pub accepts_new: bool,
    /// Pooler and TLS settings from `tenantctl.toml`.
    pub settings: Settings,
}

/// Every server the environment and `tenantctl.toml` define. `default_url`
/// is `POSTGRES_BASE_URL` (or `--base-url`); `vars` is the environment.
pub fn sources(
    default_url: &str,
    vars: impl IntoIterator<Item = (String, String)>,
    listed: &BTreeMap<String, ServerConfig>,
) -> Result<Vec<ServerSource>, UsageError> {
    let vars: BTreeMap<String, String> = vars
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .collect();
    let mut found: BTreeMap<ServerName, ServerSource> = BTreeMap::new();
    found.insert(
        ServerName::default(),
        ServerSource {
            name: ServerName::default(),
            var: URL_VAR.to_owned(),
            url: Some(default_url.to_owned()),
            accepts_new: true,
            settings: Settings::default(),
        },
    );
    add_from_environment(&mut found, &vars)?;
    add_from_config(&mut found, &vars, listed)?;
    Ok(found.into_values().collect())
}

/// The servers named by `POSTGRES_BASE_URL_<NAME>` variables.
fn add_from_environment(
    found: &mut BTreeMap<ServerName, ServerSource>,
    vars: &BTreeMap<String, String>,
) -> Result<(), UsageError> {
    let prefix = format!("{URL_VAR}_");
    for (var, value) in vars {
        let Some(suffix) = var.strip_prefix(&prefix) else {
            continue;
        };
        let upper = !suffix.is_empty()
            && suffix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let name = ServerName::parse(&suffix.to_ascii_lowercase())
            .ok()
            .filter(|_| upper)
            .ok_or_else(|| {
                UsageError(format!(
                    "{var}: a server's variable is {URL_VAR}_<NAME> with NAME in upper-case letters, digits and _"
                ))
            })?;
        if name.is_default() {
            return Err(UsageError(format!(
                "{var}: the default server's URL is {URL_VAR} (or --base-url)"
            )));
        }
        found.insert(
            name.clone(),
            ServerSource {
                name,
                var: var.clone(),
                url: Some(value.clone()),
                accepts_new: true,
                settings: Settings::default(),
            },
        );
    }
    Ok(())
}

/// The servers `tenantctl.toml` lists (`[servers.NAME]`), and its settings
/// for the default server.
fn add_from_config(
    found: &mut BTreeMap<ServerName, ServerSource>,
    vars: &BTreeMap<String, String>,
    listed: &BTreeMap<String, ServerConfig>,
) -> Result<(), UsageError> {
    for (raw, config) in listed {
        let name = ServerName::parse(raw)
            .map_err(|e| UsageError(format!("tenantctl.toml [servers.{raw}]: {e}")))?;
        if name.is_default() {
            if config.url_env.is_some() {
                return Err(UsageError(format!(
                    "tenantctl.toml [servers.default]: the default server's URL is {URL_VAR} (or --base-url); url_env cannot be set here"
                )));
            }
            if let Some(source) = found.get_mut(&name) {
                source.accepts_new = config.accepts_new;
                source.settings = config.settings();
            }
            continue;
        }
        let var = config.url_env.clone().unwrap_or_else(|| name.default_var());
        if var.trim().is_empty() || var.contains('=') || var.contains('\0') {
            return Err(UsageError(format!(
                "tenantctl.toml [servers.{name}]: url_env {var:?} is not a variable name"
            )));
        }
        let url = vars.get(&var).cloned();
        found.insert(
            name.clone(),
            ServerSource {
                name,
                var,
                url,
                accepts_new: config.accepts_new,
                settings: config.settings(),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names() {
        for good in ["default", "eu2", "us_east_1", "9"] {
            assert!(ServerName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "EU2", "eu-2", "_x", "eu 2", &"a".repeat(64)] {
            assert!(ServerName::parse(bad).is_err(), "{bad}");
        }
        let eu2 = ServerName::parse("eu2").expect("valid");
        assert_eq!(eu2.default_var(), "POSTGRES_BASE_URL_EU2");
        assert_eq!(ServerName::default().default_var(), "POSTGRES_BASE_URL");
    }

    #[test]
    fn servers_from_the_environment_and_the_file() {
        let mut listed = BTreeMap::new();
        listed.insert(
            "eu3".to_owned(),
            ServerConfig {
                url_env: Some("PG_EU3".into()),
                accepts_new: false,
                pooler: None,
                sslmode: None,
                sslrootcert: None,
                sslcert: None,
                sslkey: None,
            },
        );
        listed.insert(
            "default".to_owned(),
            ServerConfig {
                url_env: None,
                accepts_new: false,
                pooler: None,
                sslmode: None,
                sslrootcert: None,
                sslcert: None,
                sslkey: None,
            },
        );
        let found = sources(
            "postgresql://a@h",
            vars(&[
                ("POSTGRES_BASE_URL_EU2", "postgresql://b@h2"),
                ("POSTGRES_BASE_URL_EMPTY", " "),
                ("OTHER", "x"),
            ]),
            &listed,
        )
        .expect("valid");
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["default", "eu2", "eu3"]);
        assert!(!found[0].accepts_new);
        assert_eq!(found[1].url.as_deref(), Some("postgresql://b@h2"));
        assert_eq!(found[2].url, None);
        assert_eq!(found[2].var, "PG_EU3");

        for bad in [
            "POSTGRES_BASE_URL_eu2",
            "POSTGRES_BASE_URL_",
            "POSTGRES_BASE_URL_E-U",
        ] {
            let err = sources(
                "postgresql://a@h",
                vars(&[(bad, "postgresql://s3cret@h")]),
                &BTreeMap::new(),
            )
            .expect_err(bad);
            assert!(!err.0.contains("s3cret"), "{}", err.0);
        }
        assert!(
            sources(
                "postgresql://a@h",
                vars(&[("POSTGRES_BASE_URL_DEFAULT", "postgresql://h")]),
                &BTreeMap::new()
            )
            .is_err()
        );
    }
}
