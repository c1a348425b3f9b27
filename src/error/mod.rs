//! The errors code branches on, the SQLSTATE codes it asks about
//! ([`sqlstate`]), and the process exit codes they map to ([`Exit`]): a leaf
//! that imports no other module of the crate.

pub mod sqlstate;

use std::fmt::Write as _;
use std::process::ExitCode;

/// Bad configuration or arguments: exit status 2, like a clap usage error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error that is the operator's to fix (a migrations folder that does
/// not read, a script that does not parse): exit status 2 like
/// [`UsageError`], but the error itself is kept, with its causes, rather
/// than turned into a string where it is found.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Usage(pub anyhow::Error);

impl Usage {
    pub fn of(err: impl Into<anyhow::Error>) -> Self {
        Self(err.into())
    }
}

/// The companies table is not in the master: not migrated yet (exit 1),
/// or, when tenantctl.toml names the table, a configuration to fix (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct MissingTable {
    pub table: String,
    pub configured: bool,
}

impl MissingTable {
    fn message(&self) -> String {
        if self.configured {
            format!(
                "the master database has no table {} (named in tenantctl.toml); fix [master] table, or run `tenantctl master migrate` if it is tenantctl's own",
                self.table
            )
        } else {
            format!(
                "the master database has no \"{}\" table; run `tenantctl master migrate` first, or name the companies table in tenantctl.toml ([master] table = ...)",
                self.table.replace('"', "\"\"")
            )
        }
    }
}

/// Marks a tenant's error as the result of an interrupt: its statement in
/// flight was cancelled on the server (see `fleet::INTERRUPT_GRACE`), so
/// the tenant is reported `interrupted`, not `failed`. Added as the
/// outermost context of the error the cancelled work returned, which says
/// what was cut (and, for a `-- no-transaction` script, what was left).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: its statement in flight was cancelled on the server")]
pub struct Cancelled;

/// Work found its connection gone before it did anything on it (a
/// connection a first pass kept open, which the server ended meanwhile:
/// `idle_session_timeout`, a restart, an administrator): the runner opens a
/// fresh one and runs the work again. Shows as the error it wraps.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Unused(pub Box<dyn std::error::Error + Send + Sync + 'static>);

/// The second interrupt came and the command did not return in time to
/// print its report: exit status 130 all the same.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: quit without waiting for the command to finish")]
pub struct Quit;

/// An interrupt that stopped a command before it changed anything (while
/// it waited, say): exit status 130, with this message as its error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done.
    Success,
    /// Some tenant failed or was skipped; the report says which.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM after finishing what was in flight.
    Interrupted,
    /// Refused before changing anything, for reasons the report lists
    /// (exit status 2, like a usage error).
    Refused,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => Exit::Success,
            Self::Failed => Exit::Failed,
            Self::Interrupted => Exit::Interrupted,
            Self::Refused => Exit::Usage,
        }
        .into()
    }
}

/// Every exit status tenantctl gives, decided here and nowhere else (the
/// crate root maps each way a run can end to one of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success,
    /// A failure: the command's, or some tenant's.
    Failed,
    /// Bad configuration or arguments, or refused before changing anything:
    /// 2, like a clap usage error.
    Usage,
    /// Ctrl-C or SIGTERM: 130, the shell's own status for SIGINT.
    Interrupted,
    /// stdout closed before everything was printed: 141, the shell's own
    /// status for a process ended by SIGPIPE.
    StdoutClosed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Interrupted => 130,
            Self::StdoutClosed => 141,
        }
    }

    /// How a command that ended in this error exits.
    pub fn of(err: &anyhow::Error) -> Self {
        if is_interrupt(err) {
            Self::Interrupted
        } else if is_usage(err) {
            Self::Usage
        } else {
            Self::Failed
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit.code())
    }
}

/// Exit status for an error that ended the command.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    Exit::of(err).into()
}

/// The error and its causes on one line, `outer: inner: root`.
///
/// Many errors (sqlx's among them) print their source inside their own
/// message as well as chaining it, so a cause whose text the previous part
/// already holds is left out. PostgreSQL errors gain their SQLSTATE,
/// position, detail and hint.
pub fn render(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = describe(cause);
        if parts.last().is_some_and(|prev| prev.contains(&text)) {
            continue;
        }
        // The previous part ends with this cause's plain message (sqlx's
        // `MigrateError` does): keep only the fuller description of it.
        let plain = cause.to_string();
        if let Some(prev) = parts.last_mut()
            && plain != text
            && prev.ends_with(&plain)
        {
            prev.truncate(prev.len() - plain.len());
            let kept = prev.trim_end_matches([':', ' ']).len();
            prev.truncate(kept);
            if prev.is_empty() {
                parts.pop();
            }
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn describe(cause: &(dyn std::error::Error + 'static)) -> String {
    use sqlx::postgres::PgDatabaseError;

    let pg = cause
        .downcast_ref::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>());
    let Some(pg) = pg else {
        return cause.to_string();
    };
    let mut text = format!("{} (SQLSTATE {}", pg.message(), pg.code());
    if let Some(sqlx::postgres::PgErrorPosition::Original(at)) = pg.position() {
        let _ = write!(text, ", at character {at}");
    }
    text.push(')');
    if let Some(detail) = pg.detail() {
        let _ = write!(text, "; detail: {detail}");
    }
    if let Some(hint) = pg.hint() {
        let _ = write!(text, "; hint: {hint}");
    }
    // A statement prepared on one server connection and used on another:
    // what a transaction-mode pooler does to a client that does not know.
    if [
        sqlstate::INVALID_SQL_STATEMENT_NAME,
        sqlstate::DUPLICATE_PREPARED_STATEMENT,
    ]
    .contains(&pg.code())
    {
        let _ = write!(
            text,
            "; hint: behind a transaction-mode pooler (PgBouncer pool_mode = transaction)? set pooler = \"transaction\" in tenantctl.toml [servers.default] (or add ?pgbouncer=true to POSTGRES_BASE_URL and MASTER_DATABASE_URL), or use a session-mode pool"
        );
    }
    text
}

/// Whether the command ended because of an interrupt (exit status 130).
pub fn is_interrupt(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Quit>().is_some()
        || err.downcast_ref::<Cancelled>().is_some()
        || err.downcast_ref::<Interrupted>().is_some()
}

/// Whether the error is the operator's to fix in the command line or the
/// configuration (exit status 2).
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<Usage>()
            || cause
                .downcast_ref::<MissingTable>()
                .is_some_and(|missing| missing.configured)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_usage_error_renders_as_itself_and_exits_2() {
        let inner = anyhow::anyhow!("no such folder").context("read the migrations in ./m");
        let plain = render(&inner);
        let usage = anyhow::Error::new(Usage(inner));
        assert_eq!(render(&usage), plain);
        assert_eq!(plain, "read the migrations in ./m: no such folder");
        assert_eq!(Exit::of(&usage), Exit::Usage);
        assert_eq!(Exit::of(&anyhow::anyhow!("boom")), Exit::Failed);
        assert_eq!(
            Exit::of(&anyhow::Error::new(UsageError("bad".into())).context("while parsing")),
            Exit::Usage
        );
        assert_eq!(Exit::of(&anyhow::Error::new(Quit)), Exit::Interrupted);
    }

    #[test]
    fn every_exit_status_has_its_number() {
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Failed,
            Exit::Usage,
            Exit::Interrupted,
            Exit::StdoutClosed,
        ]
        .map(Exit::code)
        .to_vec();
        assert_eq!(codes, [0, 1, 2, 130, 141]);
    }
}
