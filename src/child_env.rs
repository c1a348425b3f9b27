//! What a process tenantctl starts (`tenant exec`'s children, `tenant
//! psql`, `pg_dump` and `pg_restore` in a move) inherits from the
//! operator's environment, and which secrets are masked in what it prints.
//!
//! A child gets its own connection (set by the caller) and nothing of the
//! operator's other secrets: every inherited variable that configures a
//! server or could carry a URL with a password is removed, whether it came
//! from the shell or from a `.env` file tenantctl loaded (both are in the
//! process environment by then), and so is any variable whose value holds
//! one of the passwords tenantctl knows. Every such password (each
//! configured server's, the master's, and any found in a removed variable)
//! is masked in the child's output, not only its own tenant's.

use std::ffi::{OsStr, OsString};

use crate::redact::Redactor;

/// Variables removed by name: libpq's own (`PGHOST`, `PGPASSWORD`,
/// `PGSERVICE`...: another server, another password), every server's
/// (`POSTGRES_BASE_URL`, `POSTGRES_BASE_URL_<NAME>`), the master's, and
/// tenantctl's own settings (which a `.env` may set beside the URLs); and
/// by value, any other PostgreSQL URL (see [`ChildEnv::new`]).
const REMOVED_PREFIXES: &[&str] = &["PG", "POSTGRES_BASE_URL", "TENANTCTL_"];
const REMOVED_NAMES: &[&str] = &["MASTER_DATABASE_URL"];

/// The environment rule for child processes, built once per command.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    /// Inherited variables the child must not get.
    remove: Vec<OsString>,
    /// Every password to mask in what the child prints.
    passwords: Vec<String>,
    /// What the output names anyway (users, hosts, databases), which a
    /// short or common password may equal.
    words: Vec<String>,
}

impl ChildEnv {
    /// The rule for this environment. `passwords` are the configured
    /// servers' and the master's (decoded), `words` their users and hosts,
    /// `url_vars` the variables `tenantctl.toml` takes servers' URLs from
    /// (`url_env`), removed whatever their name.
    pub fn new(
        passwords: Vec<String>,
        words: Vec<String>,
        url_vars: &[String],
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Self {
        let env: Vec<(OsString, OsString)> = env.into_iter().collect();
        let by_name = |name: &OsStr| {
            let bytes = name.as_encoded_bytes();
            REMOVED_PREFIXES
                .iter()
                .any(|p| bytes.starts_with(p.as_bytes()))
                || REMOVED_NAMES.iter().any(|n| bytes == n.as_bytes())
                || url_vars.iter().any(|v| bytes == v.as_bytes())
        };
        // Any other PostgreSQL URL the operator holds (a `DIRECT_URL`, a
        // `SHADOW_DATABASE_URL` in a `.env`) names another database: a
        // child handed it could migrate that database once per tenant.
        // Removed, so such a child fails loudly instead.
        let by_value = |value: &OsStr| {
            value.to_str().is_some_and(|v| {
                let v = v.trim_start().to_ascii_lowercase();
                v.starts_with("postgres://") || v.starts_with("postgresql://")
            })
        };
        let mut child = Self {
            remove: Vec::new(),
            passwords,
            words,
        };
        // The passwords in what is removed are the operator's too (a
        // `PGPASSWORD`, a URL given on the command line and in the
        // environment at once): masked like the configured ones.
        for (name, value) in &env {
            if !by_name(name) && !by_value(value) {
                continue;
            }
            child.remove.push(name.clone());
            let Some(value) = value.to_str() else {
                continue;
            };
            if name.as_encoded_bytes().ends_with(b"PASSWORD") {
                child.passwords.push(value.to_owned());
            } else if let Some(password) = crate::connect::url_password(value) {
                child.passwords.push(password);
            }
        }
        child.passwords.retain(|p| !p.is_empty());
        child.passwords.sort();
        child.passwords.dedup();
        // Any other variable holding one of them (`EU2_PASSWORD`, an old
        // `DATABASE_URL_BACKUP`) goes too. Read as `NAME=value`, so that a
        // short or common password counts where the name says it is one
        // (`DB_PASSWORD=postgres`) but `USER=postgres` stays.
        let redactor = child.redactor(&[]);
        for (name, value) in &env {
            if by_name(name) || by_value(value) {
                continue;
            }
            let line = format!("{}={}", name.to_string_lossy(), value.to_string_lossy());
            if redactor.redact(&line) != line {
                child.remove.push(name.clone());
            }
        }
        child
    }

    /// Takes from `cmd`'s inherited environment what the child must not
    /// get; the caller then sets the child's own connection. libpq's own
    /// `PG*` variables are removed (libpq reads them itself; an empty one
    /// is not the same as none). Every other one is set to the empty
    /// string instead: the child runs in the project's folder, and a
    /// dotenv loader there (Prisma's, `dotenv/config`) fills only variables
    /// that are unset, so a removed `DIRECT_URL` would come back from the
    /// project's `.env`; an empty one stays empty.
    pub fn scrub(&self, cmd: &mut std::process::Command) {
        for name in &self.remove {
            if name.as_encoded_bytes().starts_with(b"PG") {
                cmd.env_remove(name);
            } else {
                cmd.env(name, "");
            }
        }
    }

    /// Masks every password this rule knows in a child's output; `words`
    /// are what that child's output names (its tenant's user, host,
    /// database, slug), besides the servers' users and hosts.
    pub fn redactor(&self, words: &[&str]) -> Redactor {
        let mut all: Vec<&str> = self.words.iter().map(String::as_str).collect();
        all.extend_from_slice(words);
        self.passwords
            .iter()
            .fold(Redactor::default(), |r, p| r.with(p, &all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    /// An operator's environment with every kind of server URL and
    /// password a child must not inherit, and some it may.
    fn crowded_environment() -> ChildEnv {
        ChildEnv::new(
            vec!["default-Pw-123".into(), "eu2-Pw-456".into(), "pw".into()],
            vec!["app".into(), "db.internal".into()],
            &["EU3_DB_URL".into(), "POSTGRES_BASE_URL_EU4".into()],
            env(&[
                ("PATH", "/usr/bin"),
                ("HOME", "/home/op"),
                ("LANG", "C.UTF-8"),
                ("PGHOST", "elsewhere"),
                ("PGPASSWORD", "operator-Own-pw"),
                ("PGSERVICEFILE", "/home/op/.pg_service.conf"),
                (
                    "POSTGRES_BASE_URL",
                    "postgresql://app:default-Pw-123@db.internal",
                ),
                (
                    "POSTGRES_BASE_URL_EU2",
                    "postgresql://eu2:eu2-Pw-456@10.9.9.9",
                ),
                (
                    "POSTGRES_BASE_URL_OLD",
                    "postgresql://old:old%2DPw-789@10.9.9.8",
                ),
                ("EU3_DB_URL", "postgres://h3/?user=u3&password=eu3-Pw-000"),
                (
                    "MASTER_DATABASE_URL",
                    "postgresql://m:master-Pw-111@h/master",
                ),
                ("TENANTCTL_SHARD", "1/4"),
                ("TENANTCTL_OTHER_URL", "mysql://x:tc-Pw-222@h"),
                ("EU2_PASSWORD", "eu2-Pw-456"),
                ("BACKUP_URL", "https://b:default%2DPw-123@backup"),
                ("JSON_CONF", r#"{"password": "pw"}"#),
                ("SHORT", "pw"),
                ("SHORT_PASSWORD", "pw"),
                ("USER", "pw"),
                ("WORD", "pwd"),
                ("NOTES", "pw is short"),
                ("DATABASE_URL", "postgresql://app@elsewhere/x"),
                (
                    "DIRECT_URL",
                    " POSTGRES://someone:direct-Pw-5@elsewhere/appdb",
                ),
            ]),
        )
    }

    #[test]
    fn a_child_inherits_no_server_and_no_known_password() {
        let child = crowded_environment();
        let mut removed: Vec<String> = child
            .remove
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                "BACKUP_URL",
                "DATABASE_URL",
                "DIRECT_URL",
                "EU2_PASSWORD",
                "EU3_DB_URL",
                "JSON_CONF",
                "MASTER_DATABASE_URL",
                "PGHOST",
                "PGPASSWORD",
                "PGSERVICEFILE",
                "POSTGRES_BASE_URL",
                "POSTGRES_BASE_URL_EU2",
                "POSTGRES_BASE_URL_OLD",
                "SHORT_PASSWORD",
                "TENANTCTL_OTHER_URL",
                "TENANTCTL_SHARD",
            ]
        );
        // The passwords of what was removed are masked as well as the
        // configured ones.
        let r = child.redactor(&["acme"]);
        for password in [
            "default-Pw-123",
            "eu2-Pw-456",
            "operator-Own-pw",
            "old-Pw-789",
            "eu3-Pw-000",
            "master-Pw-111",
            "tc-Pw-222",
        ] {
            assert_eq!(
                r.redact(&format!("x {password} y")),
                "x *** y",
                "{password}"
            );
        }
        assert_eq!(r.redact("PGPASSWORD=pw pw"), "PGPASSWORD=*** pw");

        scrubbed(&child, removed.len());
    }

    /// libpq's variables removed, the others emptied (a dotenv loader in
    /// the child's folder leaves an empty variable alone).
    fn scrubbed(child: &ChildEnv, removed: usize) {
        let mut cmd = std::process::Command::new("env");
        child.scrub(&mut cmd);
        let libpq = cmd.get_envs().filter(|(_, v)| v.is_none()).count();
        let emptied = cmd
            .get_envs()
            .filter(|(_, v)| v.is_some_and(OsStr::is_empty))
            .count();
        assert_eq!(libpq, 3);
        assert_eq!(emptied, removed - 3);
        assert!(
            cmd.get_envs()
                .all(|(k, v)| k.as_encoded_bytes().starts_with(b"PG") == v.is_none())
        );
    }

    #[test]
    fn nothing_known_removes_only_the_servers_variables() {
        let child = ChildEnv::new(
            Vec::new(),
            Vec::new(),
            &[],
            env(&[
                ("PATH", "/bin"),
                ("PGUSER", "x"),
                ("POSTGRES_BASE_URLX", "y"),
            ]),
        );
        assert_eq!(child.remove, ["PGUSER", "POSTGRES_BASE_URLX"]);
        assert!(!child.redactor(&[]).masks_free_text());
    }
}
