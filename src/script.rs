//! SQL we did not write: the scripts `tenant sql` runs and the migrations
//! that run without a transaction.
//!
//! Statements are found and classified by PostgreSQL's own grammar
//! (`libpg_query`, through the `pg_query` crate), never by guessing at
//! keywords: a table named `begin`, a dollar quote or a comment defeats any
//! hand-written lexer. Where a script runs inside a transaction of ours, a
//! second wall asks the server afterwards whether that transaction is still
//! the one open.

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use pg_query::NodeEnum;
use pg_query::protobuf::TransactionStmtKind;
use serde::Serialize;
use sqlx::postgres::PgConnection;

use crate::connect::{SESSION_CLEANUP, SessionLimits};
use sqlx::{Column as _, Connection as _, Executor as _, Row as _, Statement as _, ValueRef as _};

/// A script and the statements PostgreSQL's parser finds in it.
#[derive(Debug, Clone)]
pub struct Script {
    text: String,
    statements: Vec<Statement>,
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub struct Statement {
    number: usize,
    line: usize,
    text: String,
    kind: StatementKind,
}

/// What a statement is, as far as running it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// `BEGIN`, `COMMIT`, `SAVEPOINT`, `PREPARE TRANSACTION`... (a
    /// `TransactionStmt`), with the command's canonical name.
    TransactionControl(&'static str),
    /// `COPY ... FROM STDIN`: the client has to send the data.
    CopyFromClient,
    /// `COPY ... TO STDOUT`: the server sends the data to the client.
    CopyToClient,
    /// May return rows: `SELECT` (not `SELECT INTO`), `VALUES`, `TABLE`,
    /// DML with `RETURNING`, `EXECUTE`, `FETCH`, `EXPLAIN`, `SHOW`.
    ReturnsRows,
    /// Anything else.
    Other,
}

/// Why a script cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// PostgreSQL's parser rejected it; `at` is the line and column of the
    /// offending token, when it can be found.
    #[error("the SQL does not parse: {message}{}", at.map(|(l, c)| format!(" at line {l}, column {c}")).unwrap_or_default())]
    Syntax {
        message: String,
        at: Option<(usize, usize)>,
    },
    #[error("the SQL contains a NUL character, which PostgreSQL does not accept")]
    Nul,
    #[error("the SQL has no statements, only comments or white space")]
    Empty,
    #[error(
        "{statement} is transaction control ({command}): tenant sql runs the script in a transaction of its own (committed, or rolled back with --dry-run), so leave transaction control out"
    )]
    TransactionControl {
        statement: String,
        command: &'static str,
    },
    #[error(
        "{statement} is COPY ... FROM STDIN, which needs data streamed from the client and tenant sql has none to send; use INSERT, or COPY from a file on the server"
    )]
    CopyFromClient { statement: String },
    #[error(
        "{statement} is COPY ... TO STDOUT, which streams data tenant sql does not receive; use a SELECT to see the rows"
    )]
    CopyToClient { statement: String },
}

impl Script {
    /// Splits and classifies a script. A script with no statements is
    /// fine here (an empty migration runs nothing); see
    /// [`Self::check_single_transaction`].
    pub fn parse(text: impl Into<String>) -> Result<Self, ScriptError> {
        let text = text.into();
        if text.contains('\0') {
            return Err(ScriptError::Nul);
        }
        let pieces = pg_query::split_with_parser(&text).map_err(|err| syntax_error(&text, err))?;
        let mut statements = Vec::with_capacity(pieces.len());
        for (index, piece) in pieces.iter().enumerate() {
            // `piece` is a slice of `text`: where it starts is the distance
            // between the two.
            let offset = piece.as_ptr().addr() - text.as_ptr().addr();
            statements.push(Statement {
                number: index + 1,
                line: line_and_column(&text, offset).0,
                text: piece.trim_end().to_owned(),
                kind: classify(piece).map_err(|err| syntax_error(piece, err))?,
            });
        }
        Ok(Self { text, statements })
    }

    /// The script as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The statement with this number (from 1).
    pub fn statement(&self, number: usize) -> Option<&Statement> {
        number.checked_sub(1).and_then(|i| self.statements.get(i))
    }

    /// Whether the script can run inside one transaction of ours and be
    /// committed or rolled back as a whole: it has a statement, none that
    /// would end or reshape that transaction, and no COPY that streams data
    /// to or from the client.
    pub fn check_single_transaction(&self) -> Result<(), ScriptError> {
        if self.statements.is_empty() {
            return Err(ScriptError::Empty);
        }
        for statement in &self.statements {
            let described = statement.described();
            match statement.kind {
                StatementKind::TransactionControl(command) => {
                    return Err(ScriptError::TransactionControl {
                        statement: described,
                        command,
                    });
                }
                StatementKind::CopyFromClient => {
                    return Err(ScriptError::CopyFromClient {
                        statement: described,
                    });
                }
                StatementKind::CopyToClient => {
                    return Err(ScriptError::CopyToClient {
                        statement: described,
                    });
                }
                StatementKind::ReturnsRows | StatementKind::Other => {}
            }
        }
        Ok(())
    }

    /// Runs the script in a transaction of its own and commits it, or
    /// rolls it back for a dry run, filling in `run` as it goes (so a
    /// caller still has what ran when a statement fails).
    ///
    /// The whole script goes to the server as one simple-protocol query,
    /// exactly as written: the server sees the statements the parser saw,
    /// and an error's position counts from the start of the script. Then,
    /// before committing or reporting a rollback, the server is asked
    /// whether our transaction is still the one open; if the script ended
    /// it (however it got past [`Self::check_single_transaction`]), this
    /// fails with [`TransactionEnded`], commits nothing more, and leaves
    /// `run.rolled_back` false.
    pub async fn run_in_transaction(
        &self,
        conn: &mut PgConnection,
        dry_run: bool,
        run: &mut ScriptRun,
    ) -> anyhow::Result<()> {
        self.run_in_transaction_with(conn, dry_run, &SessionLimits::default(), run)
            .await
    }

    /// [`Self::run_in_transaction`] under the limits, set for its
    /// transaction only. On a plain connection, what the script left in
    /// the session (settings, prepared statements, cursors, listeners,
    /// temporary tables, advisory locks) is cleared inside the same
    /// transaction before it ends, failed or not, so none of it can reach
    /// the next client of a server connection a pooler nobody declared
    /// hands on. (A pinned connection is cleared by its release.)
    pub async fn run_in_transaction_with(
        &self,
        conn: &mut PgConnection,
        dry_run: bool,
        limits: &SessionLimits,
        run: &mut ScriptRun,
    ) -> anyhow::Result<()> {
        let plain = !conn.is_in_transaction();
        let mut tx = if plain {
            // The savepoint lets the cleanup run in this transaction even
            // after a statement fails.
            conn.begin_with(format!(
                "BEGIN; {}SAVEPOINT tenantctl_script",
                limits.local().unwrap_or_default()
            ))
            .await
            .context("begin")?
        } else {
            conn.begin().await.context("begin")?
        };
        let result = self.run_open(&mut tx, run).await;
        if plain {
            let cleanup = if result.is_ok() {
                SESSION_CLEANUP.to_owned()
            } else {
                format!("ROLLBACK TO SAVEPOINT tenantctl_script; {SESSION_CLEANUP}")
            };
            let cleared = tx
                .execute(cleanup.as_str())
                .await
                .context("clear what the script left in the session");
            // After a failure the script's error is the one to report.
            if result.is_ok() {
                cleared?;
            }
        }
        result?;
        if dry_run {
            tx.rollback().await.context("roll back")?;
            run.rolled_back = true;
        } else {
            tx.commit().await.context("commit")?;
        }
        Ok(())
    }

    /// The script and the walls around it, in the open transaction.
    async fn run_open(&self, tx: &mut PgConnection, run: &mut ScriptRun) -> anyhow::Result<()> {
        let ours = transaction_id(tx).await?;
        self.run_whole(tx, run).await?;
        match transaction_id(tx).await {
            Ok(now) if now == ours => {}
            Ok(_) => {
                run.transaction_ended = true;
                return Err(TransactionEnded.into());
            }
            Err(err) => {
                // Unverified is treated as ended: nothing may claim a rollback.
                run.transaction_ended = true;
                return Err(err.context("check that the script's transaction is still open"));
            }
        }
        self.describe_empty_results(tx, run)
            .await
            .context("describe the statements that returned no rows")
    }

    /// Sends the script and collects each statement's rows. sqlx yields one
    /// `Left` per `CommandComplete`, so the k-th `Left` ends statement k.
    async fn run_whole(&self, conn: &mut PgConnection, run: &mut ScriptRun) -> anyhow::Result<()> {
        let mut current = ResultSet::for_statement(1);
        let mut stream = conn.fetch_many(self.text.as_str());
        loop {
            let step = match stream.try_next().await {
                Ok(Some(step)) => step,
                Ok(None) => return Ok(()),
                Err(err) => {
                    return Err(anyhow::Error::new(err).context(self.label(current.statement)));
                }
            };
            match step {
                sqlx::Either::Left(done) => {
                    current.rows_affected = done.rows_affected();
                    run.rows_affected += current.rows_affected;
                    let next = ResultSet::for_statement(current.statement + 1);
                    run.result_sets.push(std::mem::replace(&mut current, next));
                }
                sqlx::Either::Right(row) => {
                    if current.rows.is_empty() {
                        current.columns =
                            row.columns().iter().map(|c| c.name().to_owned()).collect();
                    }
                    current
                        .rows
                        .push(text_values(&row).with_context(|| self.label(current.statement))?);
                }
            }
        }
    }

    /// Fills in the columns of statements that may return rows but returned
    /// none: the simple protocol's `RowDescription` for them never reaches
    /// us, so each is prepared (parsed and described, not run) after the
    /// script, in the same transaction. Under a savepoint, since one may no
    /// longer prepare (the script dropped its table later): its columns
    /// then stay unknown (empty), and the transaction is unharmed.
    async fn describe_empty_results(
        &self,
        conn: &mut PgConnection,
        run: &mut ScriptRun,
    ) -> anyhow::Result<()> {
        let wanted: Vec<usize> = run
            .result_sets
            .iter()
            .enumerate()
            .filter(|(_, set)| {
                set.rows.is_empty()
                    && self
                        .statement(set.statement)
                        .is_some_and(|s| s.kind == StatementKind::ReturnsRows)
            })
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        conn.execute("SAVEPOINT tenantctl_describe").await?;
        for i in wanted {
            let Some(statement) = self.statement(run.result_sets[i].statement) else {
                continue;
            };
            match conn.prepare(statement.text.as_str()).await {
                Ok(prepared) => {
                    run.result_sets[i].columns = prepared
                        .columns()
                        .iter()
                        .map(|c| c.name().to_owned())
                        .collect();
                }
                Err(_) => {
                    conn.execute("ROLLBACK TO SAVEPOINT tenantctl_describe")
                        .await?;
                }
            }
        }
        conn.execute("RELEASE SAVEPOINT tenantctl_describe").await?;
        Ok(())
    }

    /// `statement 2 (line 5)`, for errors.
    fn label(&self, number: usize) -> String {
        self.statement(number)
            .map_or_else(|| format!("statement {number}"), Statement::label)
    }
}

impl Statement {
    /// Its place in the script, from 1.
    pub fn number(&self) -> usize {
        self.number
    }

    /// The line it starts on, from 1.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Its text, without the `;` that ends it.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> StatementKind {
        self.kind
    }

    /// `statement 2 (line 5)`.
    pub fn label(&self) -> String {
        format!("statement {} (line {})", self.number, self.line)
    }

    /// Its text on one line, white space collapsed and cut at 60
    /// characters, for messages.
    pub fn snippet(&self) -> String {
        const MAX: usize = 60;
        let words: Vec<&str> = self.text.split_whitespace().collect();
        let flat = words.join(" ");
        if flat.chars().count() <= MAX {
            flat
        } else {
            let mut cut: String = flat.chars().take(MAX - 1).collect();
            cut.push('…');
            cut
        }
    }

    /// `statement 3 (line 1, "COMMIT")`: which one, and what it says.
    fn described(&self) -> String {
        format!(
            "statement {} (line {}, {:?})",
            self.number,
            self.line,
            self.snippet()
        )
    }
}

/// What a script did in one database. Values are in PostgreSQL's text form.
#[derive(Debug, Default, Serialize)]
pub struct ScriptRun {
    /// Every statement's row count (affected or returned) added up.
    pub rows_affected: u64,
    /// One per statement that completed, in order.
    pub result_sets: Vec<ResultSet>,
    /// The transaction was rolled back as asked (a dry run), after checking
    /// it was still ours.
    pub rolled_back: bool,
    /// The script ended the transaction it was run in (or that could not
    /// be checked), so its changes may have been committed.
    #[serde(skip)]
    pub transaction_ended: bool,
}

/// The outcome of one statement: its columns (empty if it returns no rows,
/// or if they could not be learned), rows and row count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResultSet {
    /// The statement's place in the script, from 1.
    pub statement: usize,
    pub columns: Vec<String>,
    /// Values in PostgreSQL's text form; NULL is `None`.
    pub rows: Vec<Vec<Option<String>>>,
    pub rows_affected: u64,
}

impl ResultSet {
    fn for_statement(statement: usize) -> Self {
        Self {
            statement,
            ..Self::default()
        }
    }
}

/// The second wall: the script ended the transaction it was run in.
#[derive(Debug, thiserror::Error)]
#[error("the script ended its transaction; changes may have been committed")]
pub struct TransactionEnded;

/// This session's virtual transaction id. Every transaction holds a lock on
/// its own, and the next transaction gets a new one, so two equal answers
/// mean the same transaction. Unlike `pg_current_xact_id()` it assigns no
/// transaction id: a read-only script still commits without a WAL flush.
/// Schema-qualified, since the script may have changed `search_path`.
async fn transaction_id(conn: &mut PgConnection) -> anyhow::Result<Option<String>> {
    let row = conn
        .fetch_optional(
            "SELECT virtualxid FROM pg_catalog.pg_locks \
             WHERE locktype = 'virtualxid' AND granted AND pid = pg_catalog.pg_backend_pid()",
        )
        .await
        .context("read the session's transaction id")?;
    row.map(|row| row.try_get::<String, _>(0))
        .transpose()
        .context("read the session's transaction id")
}

/// A row's values as text (the simple protocol sends every value so).
fn text_values(row: &sqlx::postgres::PgRow) -> Result<Vec<Option<String>>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                Ok(None)
            } else {
                raw.as_str()
                    .map(|s| Some(s.to_owned()))
                    .map_err(sqlx::Error::Decode)
            }
        })
        .collect()
}

/// Classifies one statement by its parse tree.
fn classify(statement: &str) -> Result<StatementKind, pg_query::Error> {
    let parsed = pg_query::parse(statement, 0)?;
    let node = match parsed.protobuf.stmts.as_slice() {
        [raw] => raw.stmt.as_ref().and_then(|n| n.node.as_ref()),
        _ => {
            return Err(pg_query::Error::Parse(format!(
                "expected one statement in {statement:?}"
            )));
        }
    };
    let returning = |clause: Option<&pg_query::protobuf::ReturningClause>| {
        if clause.is_some_and(|r| !r.exprs.is_empty()) {
            StatementKind::ReturnsRows
        } else {
            StatementKind::Other
        }
    };
    Ok(match node {
        Some(NodeEnum::TransactionStmt(stmt)) => {
            StatementKind::TransactionControl(transaction_command(stmt.kind()))
        }
        Some(NodeEnum::CopyStmt(copy)) if copy.filename.is_empty() && !copy.is_program => {
            if copy.is_from {
                StatementKind::CopyFromClient
            } else {
                StatementKind::CopyToClient
            }
        }
        Some(NodeEnum::SelectStmt(select)) if select.into_clause.is_none() => {
            StatementKind::ReturnsRows
        }
        Some(NodeEnum::InsertStmt(stmt)) => returning(stmt.returning_clause.as_ref()),
        Some(NodeEnum::UpdateStmt(stmt)) => returning(stmt.returning_clause.as_ref()),
        Some(NodeEnum::DeleteStmt(stmt)) => returning(stmt.returning_clause.as_ref()),
        Some(NodeEnum::MergeStmt(stmt)) => returning(stmt.returning_clause.as_ref()),
        Some(NodeEnum::FetchStmt(fetch)) if !fetch.ismove => StatementKind::ReturnsRows,
        Some(
            NodeEnum::ExecuteStmt(_) | NodeEnum::ExplainStmt(_) | NodeEnum::VariableShowStmt(_),
        ) => StatementKind::ReturnsRows,
        _ => StatementKind::Other,
    })
}

fn transaction_command(kind: TransactionStmtKind) -> &'static str {
    match kind {
        TransactionStmtKind::TransStmtBegin => "BEGIN",
        TransactionStmtKind::TransStmtStart => "START TRANSACTION",
        TransactionStmtKind::TransStmtCommit => "COMMIT",
        TransactionStmtKind::TransStmtRollback => "ROLLBACK",
        TransactionStmtKind::TransStmtSavepoint => "SAVEPOINT",
        TransactionStmtKind::TransStmtRelease => "RELEASE SAVEPOINT",
        TransactionStmtKind::TransStmtRollbackTo => "ROLLBACK TO SAVEPOINT",
        TransactionStmtKind::TransStmtPrepare => "PREPARE TRANSACTION",
        TransactionStmtKind::TransStmtCommitPrepared => "COMMIT PREPARED",
        TransactionStmtKind::TransStmtRollbackPrepared => "ROLLBACK PREPARED",
        TransactionStmtKind::Undefined => "transaction control",
    }
}

/// PostgreSQL's message for a script it cannot parse, with where.
fn syntax_error(text: &str, err: pg_query::Error) -> ScriptError {
    let message = match err {
        pg_query::Error::Conversion(_) => return ScriptError::Nul,
        pg_query::Error::Split(m) | pg_query::Error::Parse(m) | pg_query::Error::Scan(m) => m,
        other => other.to_string(),
    };
    let at = locate(text, &message).map(|offset| line_and_column(text, offset));
    ScriptError::Syntax { message, at }
}

/// Where the parser stopped. `libpg_query` knows, but the `pg_query` crate
/// passes on only the message, which quotes the text there (`syntax error
/// at or near "selct"`). So: the first token with that text such that the
/// script cut just after it fails with the same message. Before the real
/// place a cut script parses, or fails otherwise (at its end); from it on,
/// the parser stops at the same token whatever follows, so a binary search
/// over the candidates finds it. Candidates are PostgreSQL's own tokens, or
/// where the scanner itself failed (an unterminated string), every place
/// the text occurs.
fn locate(text: &str, message: &str) -> Option<usize> {
    let near = message
        .split_once(" at or near \"")?
        .1
        .strip_suffix('"')
        .filter(|near| !near.is_empty())?;
    let candidates: Vec<usize> = match pg_query::scan(text) {
        Ok(scanned) => scanned
            .tokens
            .iter()
            .filter_map(|t| Some((usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?)))
            .filter(|&(start, end)| text.get(start..end) == Some(near))
            .map(|(start, _)| start)
            .collect(),
        Err(_) => text.match_indices(near).map(|(i, _)| i).collect(),
    };
    let fails_there = |start: &usize| {
        matches!(
            pg_query::split_with_parser(&text[..start + near.len()]),
            Err(pg_query::Error::Split(m)) if m == message
        )
    };
    let first = candidates.partition_point(|start| !fails_there(start));
    candidates.get(first).copied()
}

/// 1-based line and column (in characters) of a byte offset; `\n`, `\r\n`
/// and a lone `\r` each end a line.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    let mut previous = None;
    for c in text[..offset].chars() {
        match c {
            '\n' if previous == Some('\r') => {}
            '\n' | '\r' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
        previous = Some(c);
    }
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<StatementKind> {
        Script::parse(sql)
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"))
            .statements()
            .iter()
            .map(Statement::kind)
            .collect()
    }

    #[test]
    fn every_transaction_statement_is_transaction_control() {
        for (sql, command) in [
            ("begin", "BEGIN"),
            ("BEGIN WORK", "BEGIN"),
            ("begin isolation level serializable, read only", "BEGIN"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("commit", "COMMIT"),
            ("END", "COMMIT"),
            ("end transaction", "COMMIT"),
            ("COMMIT AND CHAIN", "COMMIT"),
            ("rollback", "ROLLBACK"),
            ("ABORT", "ROLLBACK"),
            ("savepoint s", "SAVEPOINT"),
            ("RELEASE s", "RELEASE SAVEPOINT"),
            ("release savepoint s", "RELEASE SAVEPOINT"),
            ("ROLLBACK TO s", "ROLLBACK TO SAVEPOINT"),
            ("rollback work to savepoint s", "ROLLBACK TO SAVEPOINT"),
            ("PREPARE TRANSACTION 'g'", "PREPARE TRANSACTION"),
            ("commit prepared 'g'", "COMMIT PREPARED"),
            ("ROLLBACK PREPARED 'g'", "ROLLBACK PREPARED"),
        ] {
            assert_eq!(
                kinds(sql),
                [StatementKind::TransactionControl(command)],
                "{sql}"
            );
        }
    }

    #[test]
    fn look_alikes_are_not_transaction_control() {
        for sql in [
            "CREATE TABLE begin (commit int, rollback text, \"end\" text)",
            "SELECT 'commit'",
            r"SELECT E'\'; COMMIT; BEGIN'",
            "SELECT $$; COMMIT; $$, $é$ ROLLBACK $é$",
            "PREPARE q AS SELECT 1",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
            "CREATE PROCEDURE p() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END",
            "DO $$ BEGIN COMMIT; END $$",
            "SELECT 1 AS a$b$",
        ] {
            let script = Script::parse(sql).expect("parses");
            assert_eq!(script.statements().len(), 1, "{sql}");
            assert!(
                script.check_single_transaction().is_ok(),
                "{sql}: {:?}",
                script.statements()
            );
        }
    }

    #[test]
    fn copy_to_or_from_the_client_is_told_apart_from_server_side_copy() {
        assert_eq!(
            kinds(
                "COPY t FROM STDIN; copy t (a) to stdout with (format csv); COPY (SELECT 1) TO STDOUT; \
                 COPY t FROM '/tmp/f'; COPY (SELECT 1) TO '/tmp/x'; COPY t FROM PROGRAM 'cat'; COPY t TO PROGRAM 'cat'"
            ),
            [
                StatementKind::CopyFromClient,
                StatementKind::CopyToClient,
                StatementKind::CopyToClient,
                StatementKind::Other,
                StatementKind::Other,
                StatementKind::Other,
                StatementKind::Other,
            ]
        );
    }

    #[test]
    fn statements_that_may_return_rows() {
        assert_eq!(
            kinds(
                "SELECT 1; VALUES (1); TABLE t; SELECT 1 INTO t2; INSERT INTO t VALUES (1); \
                 INSERT INTO t VALUES (1) RETURNING *; UPDATE t SET a = 1 RETURNING a; \
                 DELETE FROM t; EXECUTE q; FETCH 1 FROM c; MOVE 1 IN c; EXPLAIN SELECT 1; SHOW work_mem; \
                 CREATE TABLE u (a int)"
            ),
            [
                StatementKind::ReturnsRows,
                StatementKind::ReturnsRows,
                StatementKind::ReturnsRows,
                StatementKind::Other,
                StatementKind::Other,
                StatementKind::ReturnsRows,
                StatementKind::ReturnsRows,
                StatementKind::Other,
                StatementKind::ReturnsRows,
                StatementKind::ReturnsRows,
                StatementKind::Other,
                StatementKind::ReturnsRows,
                StatementKind::ReturnsRows,
                StatementKind::Other,
            ]
        );
    }

    #[test]
    fn splits_at_the_statements_postgresql_sees() {
        let sql = "/* lead; */ select 1;;\r\n-- commit;\r\nINSERT INTO t VALUES (';');\rCREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC SELECT 1; END;  ";
        let script = Script::parse(sql).expect("parses");
        let found: Vec<(usize, usize, &str)> = script
            .statements()
            .iter()
            .map(|s| (s.number(), s.line(), s.text()))
            .collect();
        assert_eq!(
            found,
            [
                (1, 1, "select 1"),
                (2, 3, "INSERT INTO t VALUES (';')"),
                (
                    3,
                    4,
                    "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC SELECT 1; END"
                ),
            ]
        );
        assert_eq!(script.text(), sql);
    }

    #[test]
    fn refusals_name_the_statement() {
        let script =
            Script::parse("CREATE TABLE begin (x int);\nINSERT INTO begin VALUES (1);\ncommit;")
                .expect("parses");
        let err = script.check_single_transaction().expect_err("refused");
        let text = err.to_string();
        assert!(
            text.starts_with(r#"statement 3 (line 3, "commit") is transaction control (COMMIT)"#),
            "{text}"
        );
        let long = format!(
            "SELECT 1; COPY t FROM STDIN WITH (FORMAT csv, DELIMITER ';', HEADER){}",
            " ".repeat(10)
        );
        let text = Script::parse(long)
            .expect("parses")
            .check_single_transaction()
            .expect_err("refused")
            .to_string();
        assert!(
            text.starts_with(r#"statement 2 (line 1, "COPY t FROM STDIN WITH (FORMAT csv, DELIMITER ';', HEADER)")"#),
            "{text}"
        );
    }

    #[test]
    fn empty_scripts_parse_but_cannot_run_alone() {
        for sql in ["", " \n\t", "-- nothing\n/* at all */", ";;"] {
            let script = Script::parse(sql).expect("parses");
            assert!(script.statements().is_empty());
            assert!(matches!(
                script.check_single_transaction(),
                Err(ScriptError::Empty)
            ));
        }
        assert!(matches!(
            Script::parse("SELECT 1;\0"),
            Err(ScriptError::Nul)
        ));
    }

    #[test]
    fn syntax_errors_carry_postgresql_message_and_place() {
        let at = |sql: &str| match Script::parse(sql) {
            Err(ScriptError::Syntax { message, at }) => (message, at),
            other => panic!("{sql:?}: {other:?}"),
        };
        // The first "selct" is inside a string; the error is at the second.
        assert_eq!(
            at("SELECT 'selct';\n  selct 1"),
            (
                r#"syntax error at or near "selct""#.to_owned(),
                Some((2, 3))
            )
        );
        assert_eq!(
            at("SELECT 1,\r\n  2 FROM t WHERE (a = 1"),
            ("syntax error at end of input".to_owned(), None)
        );
        // Repeated tokens: the one where the parser stopped.
        assert_eq!(
            at("SELECT (1), (2);\nSELECT (1) (2)"),
            (r#"syntax error at or near "(""#.to_owned(), Some((2, 12)))
        );
        assert_eq!(
            at("SELECT 'é';\rSELECT 'unterminated"),
            (
                r#"unterminated quoted string at or near "'unterminated""#.to_owned(),
                Some((2, 8))
            )
        );
        // Inside a longer word is no candidate.
        assert_eq!(
            at("SELECT 1;\n  SELEC 2"),
            (
                r#"syntax error at or near "SELEC""#.to_owned(),
                Some((2, 3))
            )
        );
        let shown = Script::parse("SELECT 1;\nselct 2")
            .expect_err("syntax")
            .to_string();
        assert_eq!(
            shown,
            r#"the SQL does not parse: syntax error at or near "selct" at line 2, column 1"#
        );
    }
}
