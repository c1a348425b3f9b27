//! Moving a tenant's database to another server (`tenant move`).
//!
//! Each step is recorded in the master's `tenantctl.moves` before the
//! next begins, so a rerun after an interrupt or `kill -9` knows where the
//! move stood and either finishes it or undoes it. The tenant is `moving`
//! from the first record until the switch; fleet commands skip it.
//!
//! The steps: record the move; end the source's sessions and rename it to
//! a parked name the application does not know (so it stays out, while
//! tenantctl's own `pg_dump` can still connect, which `ALLOW_CONNECTIONS
//! false` would prevent); create the copy on the target under an incoming
//! name and `pg_dump | pg_restore` into it, reading the source's side of
//! the verification in the snapshot `pg_dump` copies; verify (see
//! [`crate::verify`]) while closing the parked source to connections; give
//! the copy the tenant's name; switch the placement and the step in one
//! master transaction. Any failure before the switch undoes everything: the copy
//! is dropped and the source renamed back and reopened. The parked source
//! is dropped only after the switch (`--drop-source`, `--finish`).

mod mover;

pub use mover::{Moved, Mover};

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use crate::companies::{Layout, MOVES};
use crate::dbname::DbName;
use crate::servers::ServerName;

/// Where a move stands, as recorded. In order: every step is recorded once
/// the work it names is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The record exists: the tenant is `moving`; nothing touched yet.
    Started,
    /// The source's sessions were ended and it was renamed to its parked
    /// name, which the application does not know.
    SourceClosed,
    /// The target database exists under its incoming name and holds the
    /// restored copy.
    Copied,
    /// The copy matched the source; the source no longer accepts
    /// connections.
    Verified,
    /// About to give the copy the tenant's database name and repoint the
    /// master: a database of that name on the target is the copy.
    Switching,
    /// The master points at the target; the parked source is kept.
    Switched,
    /// The parked source was dropped.
    Done,
}

impl Step {
    pub const ALL: [Self; 7] = [
        Self::Started,
        Self::SourceClosed,
        Self::Copied,
        Self::Verified,
        Self::Switching,
        Self::Switched,
        Self::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::SourceClosed => "source_closed",
            Self::Copied => "copied",
            Self::Verified => "verified",
            Self::Switching => "switching",
            Self::Switched => "switched",
            Self::Done => "done",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the master still points at the source.
    pub fn before_switch(self) -> bool {
        self < Self::Switched
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Creates tenantctl's record of moves between servers, if the master has
/// none yet. The master's companies table only joins it; the table and
/// its steps are this module's.
pub async fn ensure_table(conn: &mut PgConnection, layout: &mut Layout) -> anyhow::Result<()> {
    if layout.has_moves {
        return Ok(());
    }
    crate::state::ensure_schema(conn).await?;
    crate::state::create_under_lock(conn, &create_table_sql(&layout.moves_sql))
        .await
        .with_context(|| format!("create tenantctl's {MOVES} table"))?;
    layout.has_moves = true;
    Ok(())
}

/// The DDL of `tenantctl.moves` (`table` quoted and schema-qualified).
fn create_table_sql(table: &str) -> String {
    let steps: Vec<String> = Step::ALL
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
           company_id    text PRIMARY KEY, \
           db_name       text NOT NULL, \
           from_server   text NOT NULL, \
           to_server     text NOT NULL, \
           parked_name   text NOT NULL, \
           incoming_name text NOT NULL, \
           step          text NOT NULL CHECK (step IN ({})), \
           bytes         bigint, \
           started_at    timestamptz NOT NULL DEFAULT now(), \
           updated_at    timestamptz NOT NULL DEFAULT now())",
        steps.join(", ")
    )
}

/// One row of `tenantctl.moves`: a move of one company's database, its
/// names validated once, when read.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    /// The company's id as the master's table spells it (any type, as text).
    pub company_id: String,
    pub db_name: DbName,
    pub from_server: ServerName,
    pub to_server: ServerName,
    /// The source's name from `SourceClosed` on, on `from_server`.
    pub parked_name: DbName,
    /// The copy's name on `to_server` until the switch.
    pub incoming_name: DbName,
    pub step: Step,
    /// The size of the database copied, once it is.
    pub bytes: Option<i64>,
    pub started_at: DateTime<Utc>,
}

type RecordRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<i64>,
    DateTime<Utc>,
);

/// A recorded step; one tenantctl does not know is refused (a newer
/// tenantctl's move, or a row edited by hand).
fn step_of(company_id: &str, raw: &str) -> anyhow::Result<Step> {
    Step::parse(raw)
        .with_context(|| format!("{MOVES}: company {company_id} has unknown step {raw:?}"))
}

fn record(row: RecordRow) -> anyhow::Result<MoveRecord> {
    let (
        company_id,
        db_name,
        from_server,
        to_server,
        parked_name,
        incoming_name,
        step,
        bytes,
        started_at,
    ) = row;
    let step = step_of(&company_id, &step)?;
    // A name edited by hand is refused as the record is read, in the words
    // the move itself used to refuse it with.
    let server =
        |raw: &str| ServerName::parse(raw).with_context(|| format!("{MOVES}: server {raw:?}"));
    let db = |raw: &str| DbName::parse(raw).with_context(|| format!("{MOVES}: database {raw:?}"));
    Ok(MoveRecord {
        from_server: server(&from_server)?,
        to_server: server(&to_server)?,
        db_name: db(&db_name)?,
        parked_name: db(&parked_name)?,
        incoming_name: db(&incoming_name)?,
        company_id,
        step,
        bytes,
        started_at,
    })
}

const COLUMNS: &str = "company_id, db_name, from_server, to_server, parked_name, incoming_name, step, bytes, started_at";

/// One row of `tenantctl.moves` as recorded, its names as text: what a
/// report on every move shows (`doctor`), so that a row edited by hand into
/// names tenantctl refuses to act on is still shown, and does not hide the
/// rest of the fleet. Acting on a move reads it with [`get`], which parses
/// it into a [`MoveRecord`].
#[derive(Debug, Clone)]
pub struct MoveRow {
    pub company_id: String,
    pub db_name: String,
    pub from_server: String,
    pub to_server: String,
    pub parked_name: String,
    pub incoming_name: String,
    pub step: Step,
}

/// Every recorded move (none when the table is not there yet).
pub async fn list(conn: &mut PgConnection, layout: &Layout) -> anyhow::Result<Vec<MoveRow>> {
    if !layout.has_moves {
        return Ok(Vec::new());
    }
    let rows: Vec<RecordRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {} ORDER BY company_id",
        layout.moves_sql
    ))
    .persistent(false)
    .fetch_all(conn)
    .await
    .with_context(|| format!("read {MOVES}"))?;
    rows.into_iter()
        .map(|row| {
            let (company_id, db_name, from_server, to_server, parked_name, incoming_name, step, ..) =
                row;
            let step = step_of(&company_id, &step)?;
            Ok(MoveRow {
                company_id,
                db_name,
                from_server,
                to_server,
                parked_name,
                incoming_name,
                step,
            })
        })
        .collect()
}

/// The recorded move of this company, if any.
pub async fn get(
    conn: &mut PgConnection,
    layout: &Layout,
    company_id: &str,
) -> anyhow::Result<Option<MoveRecord>> {
    if !layout.has_moves {
        return Ok(None);
    }
    let row: Option<RecordRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {} WHERE company_id = $1",
        layout.moves_sql
    ))
    .persistent(false)
    .bind(company_id)
    .fetch_optional(conn)
    .await
    .with_context(|| format!("read {MOVES}"))?;
    row.map(record).transpose()
}

/// Records a new move at [`Step::Started`] (for `Steps::enter`), replacing a finished one
/// (`done`) of the same company; refuses while another is recorded.
async fn insert(
    conn: &mut PgConnection,
    layout: &Layout,
    record: &MoveRecord,
) -> anyhow::Result<()> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO {} AS m (company_id, db_name, from_server, to_server, parked_name, incoming_name, step) \
         VALUES ($1, $2, $3, $4, $5, $6, 'started') \
         ON CONFLICT (company_id) DO UPDATE SET db_name = EXCLUDED.db_name, \
           from_server = EXCLUDED.from_server, to_server = EXCLUDED.to_server, \
           parked_name = EXCLUDED.parked_name, incoming_name = EXCLUDED.incoming_name, \
           step = 'started', bytes = NULL, started_at = now(), updated_at = now() \
         WHERE m.step = 'done'",
        layout.moves_sql
    ))
    .persistent(false)
    .bind(&record.company_id)
    .bind(record.db_name.as_str())
    .bind(record.from_server.as_str())
    .bind(record.to_server.as_str())
    .bind(record.parked_name.as_str())
    .bind(record.incoming_name.as_str())
    .execute(conn)
    .await
    .with_context(|| format!("record the move in {MOVES}"))?;
    anyhow::ensure!(
        inserted.rows_affected() == 1,
        "another move of company {} is recorded in {MOVES}",
        record.company_id
    );
    Ok(())
}

/// Records that a move reached `step` (its one caller: `Steps::enter`, in
/// [`mover`]).
async fn set_step(
    conn: &mut PgConnection,
    layout: &Layout,
    company_id: &str,
    step: Step,
    bytes: Option<i64>,
) -> anyhow::Result<()> {
    let updated = sqlx::query(&format!(
        "UPDATE {} SET step = $2, bytes = COALESCE($3, bytes), updated_at = now() WHERE company_id = $1",
        layout.moves_sql
    ))
    .persistent(false)
    .bind(company_id)
    .bind(step.as_str())
    .bind(bytes)
    .execute(conn)
    .await
    .with_context(|| format!("record step {step} of the move in {MOVES}"))?;
    // The record is what a rerun or --abort resumes from: a step that was
    // not written is a failure, whatever removed the row.
    anyhow::ensure!(
        updated.rows_affected() == 1,
        "record step {step} of the move in {MOVES}: the move's row is gone (removed by hand?); check `tenantctl doctor` before going on"
    );
    Ok(())
}

/// Forgets an undone move: the tenant is where it was.
pub async fn forget(
    conn: &mut PgConnection,
    layout: &Layout,
    company_id: &str,
) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "DELETE FROM {} WHERE company_id = $1",
        layout.moves_sql
    ))
    .persistent(false)
    .bind(company_id)
    .execute(conn)
    .await
    .with_context(|| format!("forget the undone move in {MOVES}"))?;
    Ok(())
}

/// The parked and incoming names of a move of `db`: the name cut to fit,
/// a marker, and a token unique to the move (at most 63 bytes).
pub fn names(db: &DbName, token: &str) -> anyhow::Result<(DbName, DbName)> {
    let name = |marker: &str| {
        let keep = crate::dbname::MAX_LEN - marker.len() - token.len() - 2;
        let base: String = db.as_str().chars().take(keep).collect();
        DbName::parse(&format!("{base}_{marker}_{token}"))
            .with_context(|| format!("derive a name for database {db} during its move"))
    };
    Ok((name("moved")?, name("moving")?))
}

/// A short token for a new move's names.
pub fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = nanos ^ (u128::from(std::process::id()) << 64);
    format!("{:08x}", (mixed % 0xffff_ffff) as u32)
}

/// Takes the master's lock on moving this company, held until the master
/// connection closes (a killed move's lock goes with its connection).
///
/// Tried for a few seconds: the server may not yet have noticed that the
/// run holding it was killed a moment ago.
pub async fn lock(conn: &mut PgConnection, company_id: &str) -> anyhow::Result<()> {
    for attempt in 0..20 {
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('tenantctl move ' || $1, 0))",
        )
        .persistent(false)
        .bind(company_id)
        .fetch_one(&mut *conn)
        .await
        .context("take the master's lock on this move")?;
        if locked {
            return Ok(());
        }
        if attempt < 19 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    anyhow::bail!("another `tenantctl tenant move` of company {company_id} is running")
}

/// Gives back [`lock`]'s lock (closing the connection does too, but not
/// behind a pooler, which keeps the server connection for its next client).
pub async fn unlock(conn: &mut PgConnection, company_id: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('tenantctl move ' || $1, 0))")
        .persistent(false)
        .bind(company_id)
        .execute(&mut *conn)
        .await
        .context("release the master's lock on this move")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_and_incoming_names_fit_and_differ() {
        let long = DbName::parse(&"a".repeat(63)).expect("valid");
        let (parked, incoming) = names(&long, "0123abcd").expect("names");
        assert!(parked.as_str().len() <= 63 && incoming.as_str().len() <= 63);
        assert!(parked.as_str().ends_with("_moved_0123abcd"));
        assert!(incoming.as_str().ends_with("_moving_0123abcd"));
        let short = DbName::parse("Tenant-A").expect("valid");
        let (parked, _) = names(&short, &token()).expect("names");
        assert!(parked.as_str().starts_with("Tenant-A_moved_"));
    }

    #[test]
    fn steps_round_trip_and_the_moving_list_is_the_unswitched_ones() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        let unswitched: Vec<String> = Step::ALL
            .iter()
            .filter(|s| s.before_switch())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(unswitched.join(", "), crate::state::MOVES_UNSWITCHED_SQL);
    }
}
