//! Moving a tenant's database to another server (`tenant move`).
//!
//! Each step is recorded in the master's `_tenantctl_moves` before the
//! next begins, so a rerun after an interrupt or `kill -9` knows where the
//! move stood and either finishes it or undoes it. The tenant is `moving`
//! from the first record until the switch; fleet commands skip it.

use std::fmt;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use crate::companies::{Layout, MOVES};

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

    /// The steps during which the tenant is `moving`, as an SQL list.
    pub const UNSWITCHED_SQL: &'static str =
        "'started', 'source_closed', 'copied', 'verified', 'switching'";

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

/// The DDL of `_tenantctl_moves` (`table` quoted and schema-qualified).
pub fn create_table_sql(table: &str) -> String {
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

/// One row of `_tenantctl_moves`: a move of one company's database.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    pub company_id: String,
    pub db_name: String,
    pub from_server: String,
    pub to_server: String,
    /// The source's name from `SourceClosed` on, on `from_server`.
    pub parked_name: String,
    /// The copy's name on `to_server` until the switch.
    pub incoming_name: String,
    pub step: Step,
    /// Bytes that went through the copy, once it is done.
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
    let step = Step::parse(&step)
        .with_context(|| format!("{MOVES}: company {company_id} has unknown step {step:?}"))?;
    Ok(MoveRecord {
        company_id,
        db_name,
        from_server,
        to_server,
        parked_name,
        incoming_name,
        step,
        bytes,
        started_at,
    })
}

const COLUMNS: &str = "company_id, db_name, from_server, to_server, parked_name, incoming_name, step, bytes, started_at";

/// Every recorded move (none when the table is not there yet).
pub async fn list(conn: &mut PgConnection, layout: &Layout) -> anyhow::Result<Vec<MoveRecord>> {
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
    rows.into_iter().map(record).collect()
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

/// Records a new move at [`Step::Started`], replacing a finished one
/// (`done`) of the same company; refuses while another is recorded.
pub async fn start(
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
    .bind(&record.db_name)
    .bind(&record.from_server)
    .bind(&record.to_server)
    .bind(&record.parked_name)
    .bind(&record.incoming_name)
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

/// Records that a move reached `step`.
pub async fn set_step(
    conn: &mut PgConnection,
    layout: &Layout,
    company_id: &str,
    step: Step,
    bytes: Option<i64>,
) -> anyhow::Result<()> {
    sqlx::query(&format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(unswitched.join(", "), Step::UNSWITCHED_SQL);
    }
}
