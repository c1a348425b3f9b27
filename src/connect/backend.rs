//! The server process a connection reached: the guard that notices a
//! pooler moving statements to another server connection, and the session
//! limits set on it.

use std::fmt::Write as _;
use std::time::Duration;

use super::*;

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

/// A timeout as PostgreSQL's whole milliseconds, rounded up so that a value
/// the flags accept never becomes 0, which the server reads as no timeout.
fn whole_millis(t: Duration) -> String {
    t.as_micros().div_ceil(1000).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
