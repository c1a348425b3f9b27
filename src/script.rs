//! SQL we did not write: the scripts `tenant sql` runs and the migrations
//! that run without a transaction.
//!
//! Statements are found and classified by PostgreSQL's own grammar
//! (`libpg_query`, through the `pg_query` crate), never by guessing at
//! keywords: a table named `begin`, a dollar quote or a comment defeats any
//! hand-written lexer. Where a script runs inside a transaction of ours, a
//! second wall asks the server afterwards whether that transaction is still
//! the one open.

use crate::error::sqlstate;
use std::sync::OnceLock;

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
    /// What a dry run needs to know of each statement, read from its parse
    /// tree the first time a dry run asks: walking the whole tree costs as
    /// much again as parsing, which a real run should not pay.
    dry_run: OnceLock<Result<Vec<DryRunFacts>, ScriptError>>,
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub struct Statement {
    number: usize,
    line: usize,
    text: String,
    kind: StatementKind,
}

/// What a dry run needs to know of one statement.
#[derive(Debug, Clone, Default)]
struct DryRunFacts {
    /// What in it a rollback would not undo, if anything: `--dry-run`
    /// refuses the script.
    not_undone: Option<NotUndone>,
    /// The functions and procedures it calls, anywhere in it, for the dry
    /// run's question "is any of them not PostgreSQL's own?".
    calls: Vec<Call>,
    /// The tables it writes to (`INSERT`, `UPDATE`, `DELETE`, `MERGE`), for
    /// the question "is any a foreign table?": a foreign data wrapper
    /// writes on another server, which may not roll back with us.
    writes: Vec<Call>,
    /// It is a `DO` block: code a dry run cannot see into.
    do_block: bool,
}

/// Functions whose effects a rollback does not undo, each with why: under
/// `--dry-run` a script calling one anywhere (however qualified, cased or
/// quoted, nested in a subquery, CTE, argument, `FROM`, a column default or
/// a function body) is refused before any tenant is touched. A name ending
/// in `*` stands for every function starting so. This is the one list;
/// the book's `tenant sql` section (docs/src/guide/fix.md) shows it.
///
/// Not here, because the rollback does undo them (checked on PostgreSQL
/// 15): `set_config(..., false)` and `SET` (a session setting made in a
/// transaction that rolls back is reverted), `pg_notify`/`NOTIFY` and
/// `LISTEN` (they take effect at commit only), the `_xact_` advisory locks,
/// `currval`/`lastval` (they only read).
pub const NOT_UNDONE_BY_ROLLBACK: &[(&str, &str)] = &[
    ("nextval", "advances a sequence"),
    ("setval", "sets a sequence's value"),
    (
        "dblink*",
        "works over a connection of its own, whose changes commit on their own",
    ),
    (
        "postgres_fdw_disconnect*",
        "closes connections to another server",
    ),
    ("lo_import", "reads a file on the database server"),
    ("lo_export", "writes a file on the database server"),
    ("pg_file_write", "writes a file on the database server"),
    ("pg_file_rename", "renames a file on the database server"),
    ("pg_file_unlink", "deletes a file on the database server"),
    ("pg_file_sync", "flushes a file on the database server"),
    ("pg_terminate_backend", "ends another session"),
    ("pg_cancel_backend", "cancels another session's query"),
    (
        "pg_reload_conf",
        "makes the server reload its configuration",
    ),
    ("pg_rotate_logfile", "switches the server's log file"),
    ("pg_switch_wal", "switches the server's WAL file"),
    (
        "pg_create_restore_point",
        "writes a restore point to the WAL",
    ),
    (
        "pg_log_backend_memory_contexts",
        "writes to the server's log",
    ),
    ("pg_promote", "promotes a standby server"),
    ("pg_wal_replay_pause", "pauses a standby's recovery"),
    ("pg_wal_replay_resume", "resumes a standby's recovery"),
    ("pg_backup_start", "starts a backup"),
    ("pg_backup_stop", "ends a backup"),
    (
        "pg_advisory_lock",
        "takes a session-level advisory lock, held after the rollback (pg_advisory_xact_lock is released by it)",
    ),
    (
        "pg_advisory_lock_shared",
        "takes a session-level advisory lock, held after the rollback (pg_advisory_xact_lock_shared is released by it)",
    ),
    (
        "pg_try_advisory_lock",
        "takes a session-level advisory lock, held after the rollback (pg_try_advisory_xact_lock is released by it)",
    ),
    (
        "pg_try_advisory_lock_shared",
        "takes a session-level advisory lock, held after the rollback (pg_try_advisory_xact_lock_shared is released by it)",
    ),
    (
        "pg_advisory_unlock",
        "releases a session-level advisory lock",
    ),
    (
        "pg_advisory_unlock_shared",
        "releases a session-level advisory lock",
    ),
    (
        "pg_advisory_unlock_all",
        "releases the session's advisory locks",
    ),
    ("pg_stat_reset*", "resets statistics"),
    ("pg_stat_statements_reset", "resets statistics"),
    (
        "pg_create_physical_replication_slot",
        "creates a replication slot",
    ),
    (
        "pg_create_logical_replication_slot",
        "creates a replication slot",
    ),
    (
        "pg_copy_physical_replication_slot",
        "creates a replication slot",
    ),
    (
        "pg_copy_logical_replication_slot",
        "creates a replication slot",
    ),
    ("pg_drop_replication_slot", "drops a replication slot"),
    ("pg_replication_slot_advance", "advances a replication slot"),
    (
        "pg_logical_slot_get_changes",
        "consumes a replication slot's changes",
    ),
    (
        "pg_logical_slot_get_binary_changes",
        "consumes a replication slot's changes",
    ),
    (
        "pg_logical_emit_message",
        "writes a message to the WAL (at once, when not transactional)",
    ),
    (
        "pg_replication_origin_advance",
        "moves a replication origin",
    ),
    (
        "pg_replication_origin_session_setup",
        "ties the session to a replication origin",
    ),
];

/// What a statement does that a rollback would not undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUndone {
    /// `calls pg_catalog.setval()`, `is COPY ... TO a file`.
    pub what: String,
    pub why: &'static str,
}

/// A function or procedure call as written (names as PostgreSQL's parser
/// reads them: unquoted ones folded to lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Empty when unqualified.
    pub schema: String,
    pub name: String,
}

impl Call {
    fn shown(&self) -> String {
        if self.schema.is_empty() {
            format!("{}()", self.name)
        } else {
            format!("{}.{}()", self.schema, self.name)
        }
    }
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
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error(
        "{statement} {what}, which {why}: a rollback does not undo that, so --dry-run refuses the script (leave that out to dry-run the rest)"
    )]
    NotUndoneByRollback {
        statement: String,
        what: String,
        why: &'static str,
    },
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
        Ok(Self {
            text,
            statements,
            dry_run: OnceLock::new(),
        })
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

    /// Whether a dry run of the script can be trusted to undo what it does:
    /// nothing in it calls a function of [`NOT_UNDONE_BY_ROLLBACK`] or
    /// copies to or from a file or program on the server. Checked before
    /// any tenant is touched; a real run does what it is asked.
    pub fn check_dry_run(&self) -> Result<(), ScriptError> {
        for (statement, facts) in self.statements.iter().zip(self.dry_run_facts()?) {
            if let Some(not_undone) = &facts.not_undone {
                return Err(ScriptError::NotUndoneByRollback {
                    statement: statement.described(),
                    what: not_undone.what.clone(),
                    why: not_undone.why,
                });
            }
        }
        Ok(())
    }

    /// Each statement's [`DryRunFacts`], read once.
    fn dry_run_facts(&self) -> Result<&[DryRunFacts], ScriptError> {
        self.dry_run
            .get_or_init(|| {
                self.statements
                    .iter()
                    .map(|s| dry_run_facts(&s.text).map_err(|err| syntax_error(&s.text, err)))
                    .collect()
            })
            .as_deref()
            .map_err(Clone::clone)
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
    ///
    /// A dry run also says what its rollback may not have undone: the
    /// functions the script calls that are not PostgreSQL's own and its
    /// `DO` blocks (`run.unverified`, looked up in the tenant's catalog
    /// inside the transaction, since the script may have created them),
    /// and the sequences it advanced (`run.sequences_advanced`: read before
    /// the script, inside the transaction after it, and after the
    /// rollback).
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
        // Read outside the transaction: the locks it takes on every
        // sequence are not held while the script runs. The values are the
        // server's, whichever session reads them.
        let before = if dry_run {
            sequences(conn)
                .await
                .context("read the sequences before the script")?
        } else {
            Vec::new()
        };
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
        let mut result = self.run_open(&mut tx, run).await;
        // What a dry run cannot vouch for, and the sequences this session
        // used, asked inside its transaction (behind a transaction pooler
        // `currval` means this session only there).
        let mut used = None;
        if dry_run && result.is_ok() {
            result = self
                .dry_run_findings(&mut tx, &before, run)
                .await
                .map(|found| used = Some(found));
        }
        if plain {
            let cleared = clear_session(&mut tx, result.is_ok()).await;
            // After a failure the script's error is the one to report.
            if result.is_ok() {
                cleared?;
            }
        }
        if let Err(err) = result {
            // A dry run that failed is rolled back like any failed run; the
            // sequences the script moved before failing stay moved, and the
            // report says so. Asked after the rollback (an aborted
            // transaction answers nothing), so best effort: behind a
            // transaction pooler `currval` may be asked of another session.
            if dry_run
                && !before.is_empty()
                && !run.transaction_ended
                && tx.rollback().await.is_ok()
                && let Ok(used) = used_since(conn, &before, false).await
            {
                run.sequences_advanced = still_advanced(conn, &before, &used)
                    .await
                    .unwrap_or_default();
            }
            return Err(err);
        }
        if dry_run {
            tx.rollback().await.context("roll back")?;
            run.rolled_back = true;
            run.sequences_advanced = still_advanced(conn, &before, &used.unwrap_or_default())
                .await
                .context("compare the sequences after the rollback with before the script")?;
        } else {
            tx.commit().await.context("commit")?;
        }
        Ok(())
    }

    /// After a dry run's script, in its transaction: what it cannot vouch
    /// for (into `run`), and the sequences this session used.
    async fn dry_run_findings(
        &self,
        tx: &mut PgConnection,
        before: &SequenceState,
        run: &mut ScriptRun,
    ) -> anyhow::Result<Vec<i64>> {
        run.unverified = self
            .unverified(tx)
            .await
            .context("look up the functions the script calls")?;
        used_since(tx, before, true)
            .await
            .context("find the sequences the script used")
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

    /// What the script runs that a dry run cannot vouch for: the functions
    /// and procedures it calls that are not built into PostgreSQL (an
    /// extension's, a user's, whatever schema they are in: their bodies may
    /// do anything), the foreign tables it writes to, then its `DO` blocks.
    /// One catalog query, and only when the script calls something or
    /// writes to a table; run after the script, which may have
    /// created them. An unqualified name counts if any schema has a
    /// function so named: which one the call resolved to depends on
    /// `search_path` and argument types, so all are suspects.
    async fn unverified(&self, conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
        let facts = self.dry_run_facts()?;
        let names = |of: fn(&DryRunFacts) -> &Vec<Call>| -> (Vec<&str>, Vec<&str>) {
            facts
                .iter()
                .flat_map(of)
                .map(|c| (c.schema.as_str(), c.name.as_str()))
                .unzip()
        };
        let (call_schemas, calls) = names(|f| &f.calls);
        let (write_schemas, writes) = names(|f| &f.writes);
        let mut found = if calls.is_empty() && writes.is_empty() {
            Vec::new()
        } else {
            // Functions with an oid under 16384 (FirstNormalObjectId) came
            // with PostgreSQL; anything created later, in pg_catalog or
            // not, is someone else's code. An unqualified table name counts
            // if a foreign table of that name exists in any schema.
            sqlx::query_scalar::<_, String>(
                "SELECT f FROM (\
                 SELECT DISTINCT 1 AS k, pg_catalog.format('%I.%I()', n.nspname, p.proname) AS f \
                 FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS c(nsp, fn) \
                 JOIN pg_catalog.pg_proc p ON p.proname = c.fn \
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND (c.nsp = '' OR n.nspname = c.nsp) \
                 WHERE p.oid >= 16384::pg_catalog.oid \
                 UNION \
                 SELECT 2, CASE WHEN r.relkind = 'f' \
                   THEN pg_catalog.format('writes to foreign table %I.%I', n.nspname, r.relname) \
                   ELSE pg_catalog.format('writes to %I.%I, whose triggers or rules run code of their own', n.nspname, r.relname) END \
                 FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[])) AS w(nsp, rel) \
                 JOIN pg_catalog.pg_class r ON r.relname = w.rel AND (r.relkind IN ('f', 'v') OR r.relhasrules \
                   OR EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D')) \
                 JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace AND (w.nsp = '' OR n.nspname = w.nsp)\
                 ) AS found ORDER BY k, f",
            )
            .persistent(false)
            .bind(call_schemas)
            .bind(calls)
            .bind(write_schemas)
            .bind(writes)
            .fetch_all(&mut *conn)
            .await?
        };
        found.extend(facts.iter().flat_map(|f| &f.calls).filter_map(|call| {
            let name = call.name.to_ascii_lowercase();
            RUNS_SQL_TEXT
                .contains(&name.as_str())
                .then(|| format!("{}() runs SQL text the dry run cannot see", call.name))
        }));
        found.dedup();
        found.extend(
            self.statements
                .iter()
                .zip(facts)
                .filter(|(_, f)| f.do_block)
                .map(|(s, _)| format!("DO block (statement {}, line {})", s.number, s.line)),
        );
        Ok(found)
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
    /// characters, for messages; a password it sets or connects with
    /// (`PASSWORD '...'`, `password=...` in a connection string) masked
    /// before it is cut, as `--verbose` masks it.
    pub fn snippet(&self) -> String {
        const MAX: usize = 60;
        let masked = crate::statement_log::mask_password_literals(&self.text);
        let words: Vec<&str> = masked.split_whitespace().collect();
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
    /// A dry run's: what the script called that the dry run cannot vouch
    /// for (`public.f()`, `DO block (statement 2, line 1)`), whose effects
    /// outside the transaction, if any, the rollback did not undo.
    pub unverified: Vec<String>,
    /// A dry run's: sequences the script advanced (directly, through a
    /// column default, a trigger or a function), which the rollback does not
    /// move back.
    pub sequences_advanced: Vec<SequenceAdvanced>,
}

/// A sequence a dry run's rollback left advanced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SequenceAdvanced {
    /// `public.items_id_seq`, quoted where needed.
    pub sequence: String,
    /// Its last value before the script, `None` if it had never been used
    /// (or could not be read).
    pub before: Option<i64>,
    pub after: Option<i64>,
}

impl ScriptRun {
    /// Whether a dry run's rollback may have left something behind.
    pub fn rollback_incomplete(&self) -> bool {
        !self.unverified.is_empty() || !self.sequences_advanced.is_empty()
    }
}

/// Every sequence this session may see: oid, qualified name, last value
/// (`None` if never used, or not ours to read).
type SequenceState = Vec<(i64, String, Option<i64>)>;

/// Clears what a script left in the session, inside its transaction (after
/// a failure, back to the savepoint first so the transaction answers).
async fn clear_session(tx: &mut PgConnection, succeeded: bool) -> anyhow::Result<()> {
    let cleanup = if succeeded {
        SESSION_CLEANUP.to_owned()
    } else {
        format!("ROLLBACK TO SAVEPOINT tenantctl_script; {SESSION_CLEANUP}")
    };
    tx.execute(cleanup.as_str())
        .await
        .context("clear what the script left in the session")?;
    // DEALLOCATE ALL took the statements sqlx had prepared on this
    // connection too: it forgets them, so the caller's next query
    // prepares its statement again instead of naming a gone one.
    sqlx::Connection::clear_cached_statements(tx)
        .await
        .context("forget the statements the cleanup deallocated")
}

async fn sequences(conn: &mut PgConnection) -> anyhow::Result<SequenceState> {
    Ok(sqlx::query_as(
        "SELECT c.oid::pg_catalog.int8, pg_catalog.format('%I.%I', n.nspname, c.relname), \
         CASE WHEN pg_catalog.has_sequence_privilege(c.oid, 'SELECT,USAGE') \
         THEN pg_catalog.pg_sequence_last_value(c.oid) END \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND NOT pg_catalog.pg_is_other_temp_schema(n.oid)",
    )
    .persistent(false)
    .fetch_all(conn)
    .await?)
}

/// The second wall for sequences, in the script's transaction: the
/// sequences read before the script that have moved since and that this
/// session used (it has a `currval` for them), so that the application's
/// own inserts meanwhile are not blamed on the script. Asked here, not
/// after the rollback, because `currval` is the session's and a
/// transaction-mode pooler may run the next transaction elsewhere. Each
/// `currval` that fails (never used here) is undone by a savepoint. Outside
/// a transaction (`in_transaction` false: after a failed script's
/// rollback) no savepoint is needed.
async fn used_since(
    conn: &mut PgConnection,
    before: &SequenceState,
    in_transaction: bool,
) -> anyhow::Result<Vec<i64>> {
    if before.is_empty() {
        return Ok(Vec::new());
    }
    let now: std::collections::HashMap<i64, Option<i64>> = sequences(conn)
        .await?
        .into_iter()
        .map(|(oid, _, value)| (oid, value))
        .collect();
    let moved: Vec<i64> = before
        .iter()
        .filter(|(oid, _, was)| now.get(oid).is_some_and(|value| value != was))
        .map(|(oid, _, _)| *oid)
        .collect();
    if moved.is_empty() {
        return Ok(moved);
    }
    let mut used = Vec::new();
    if in_transaction {
        conn.execute("SAVEPOINT tenantctl_currval").await?;
    }
    for oid in moved {
        let asked =
            sqlx::query("SELECT pg_catalog.currval($1::pg_catalog.oid::pg_catalog.regclass)")
                .persistent(false)
                .bind(oid)
                .execute(&mut *conn)
                .await;
        // 55000: "currval ... is not yet defined in this session". Any
        // other failure may still be ours.
        let not_ours = matches!(&asked, Err(err) if err
            .as_database_error()
            .and_then(sqlx::error::DatabaseError::code)
            .as_deref()
            == Some(sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE));
        if asked.is_err() && in_transaction {
            conn.execute("ROLLBACK TO SAVEPOINT tenantctl_currval")
                .await?;
        }
        if !not_ours {
            used.push(oid);
        }
    }
    if in_transaction {
        conn.execute("RELEASE SAVEPOINT tenantctl_currval").await?;
    }
    Ok(used)
}

/// Of the sequences the script used, those the rollback left moved: read
/// again after it, so that what the rollback does undo (`ALTER SEQUENCE
/// ... RESTART`, `TRUNCATE ... RESTART IDENTITY`, then `nextval` on the
/// restarted sequence) is not reported. No query when none was used.
async fn still_advanced(
    conn: &mut PgConnection,
    before: &SequenceState,
    used: &[i64],
) -> anyhow::Result<Vec<SequenceAdvanced>> {
    if used.is_empty() {
        return Ok(Vec::new());
    }
    let after: std::collections::HashMap<i64, Option<i64>> = sequences(conn)
        .await?
        .into_iter()
        .map(|(oid, _, value)| (oid, value))
        .collect();
    let mut advanced: Vec<SequenceAdvanced> = before
        .iter()
        .filter(|(oid, _, _)| used.contains(oid))
        .filter_map(|(oid, name, was)| {
            let now = after.get(oid)?;
            (now != was).then(|| SequenceAdvanced {
                sequence: name.clone(),
                before: *was,
                after: *now,
            })
        })
        .collect();
    advanced.sort_by(|a, b| a.sequence.cmp(&b.sequence));
    Ok(advanced)
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

/// Parses one statement and reads, for a dry run, what a rollback would
/// not undo, the functions it calls and whether it is a `DO` block.
fn dry_run_facts(statement: &str) -> Result<DryRunFacts, pg_query::Error> {
    let parsed = pg_query::parse(statement, 0)?;
    let node = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|raw| raw.stmt.as_ref())
        .and_then(|n| n.node.as_ref());
    let mut not_undone = match node {
        Some(NodeEnum::CopyStmt(copy)) => copy_not_undone(copy),
        _ => None,
    };
    if not_undone.is_none() {
        not_undone = statement_not_undone(node);
    }
    let do_block = matches!(node, Some(NodeEnum::DoStmt(_)));
    // Every node, whatever its type: the crate's own walker
    // (`ParseResult::functions`) skips some (VALUES lists, column
    // defaults), but the whole tree serializes, so a walk over that misses
    // nothing.
    let tree = serde_json::to_value(&parsed.protobuf)
        .map_err(|e| pg_query::Error::Parse(format!("read the parse tree: {e}")))?;
    let mut calls = Vec::new();
    let mut writes = Vec::new();
    collect_calls(&tree, &mut calls, &mut writes);
    let mut kept = Vec::with_capacity(calls.len());
    for call in calls {
        match not_undone_by_rollback(&call.name) {
            Some(why) => {
                if not_undone.is_none() {
                    not_undone = Some(NotUndone {
                        what: format!("calls {}", call.shown()),
                        why,
                    });
                }
            }
            None => kept.push(call),
        }
    }
    Ok(DryRunFacts {
        not_undone,
        calls: kept,
        writes,
        do_block,
    })
}

/// Statements a dry run refuses for what they are, not what they call:
/// `CHECKPOINT` (server-wide), `LOAD` (a library stays loaded in the
/// session) and `DISCARD` (it clears the `currval`s the dry run's own
/// check of the sequences reads, hiding what the script advanced).
fn statement_not_undone(node: Option<&NodeEnum>) -> Option<NotUndone> {
    let (what, why) = match node? {
        NodeEnum::CheckPointStmt(_) => ("is CHECKPOINT", "forces a checkpoint of the whole server"),
        NodeEnum::LoadStmt(_) => ("is LOAD", "loads a library into the session, for good"),
        NodeEnum::DiscardStmt(_) => (
            "is DISCARD",
            "clears session state the dry run's own checks read (which sequences this session used)",
        ),
        _ => return None,
    };
    Some(NotUndone {
        what: what.to_owned(),
        why,
    })
}

/// Built-in functions that run SQL text they are given, which the parse
/// tree does not show: a dry run cannot vouch for what that text does.
const RUNS_SQL_TEXT: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "cursor_to_xml",
    "ts_stat",
    "ts_rewrite",
];

/// Why [`NOT_UNDONE_BY_ROLLBACK`] lists a function of this name, if it
/// does. Case-insensitive: `"SETVAL"` (quoted) is some other function,
/// but one nobody should be surprised to see refused.
fn not_undone_by_rollback(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    NOT_UNDONE_BY_ROLLBACK
        .iter()
        .find(|(listed, _)| match listed.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *listed,
        })
        .map(|(_, why)| *why)
}

/// A server-side COPY: the file it writes, the file it reads (which may be
/// a pipe someone else is waiting on), the program it runs.
fn copy_not_undone(copy: &pg_query::protobuf::CopyStmt) -> Option<NotUndone> {
    let (what, why) = match (copy.is_program, copy.is_from, copy.filename.is_empty()) {
        (true, _, _) => (
            if copy.is_from {
                "is COPY ... FROM PROGRAM"
            } else {
                "is COPY ... TO PROGRAM"
            },
            "runs a program on the database server",
        ),
        (false, false, false) => (
            "is COPY ... TO a file",
            "writes a file on the database server",
        ),
        (false, true, false) => (
            "is COPY ... FROM a file",
            "reads a file on the database server (a pipe or device is consumed by reading)",
        ),
        (false, _, true) => return None,
    };
    Some(NotUndone {
        what: what.to_owned(),
        why,
    })
}

/// Every function call in a serialized parse tree: a `FuncCall` node
/// wherever it is, and the procedure of a `CALL` (a `FuncCall` held
/// directly, not as a node); and the target table of every `INSERT`,
/// `UPDATE`, `DELETE` and `MERGE`, in CTEs too.
fn collect_calls(value: &serde_json::Value, calls: &mut Vec<Call>, writes: &mut Vec<Call>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    "FuncCall" => calls.extend(call_of(inner)),
                    "CallStmt" => calls.extend(inner.get("funccall").and_then(call_of)),
                    "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                        writes.extend(inner.get("relation").and_then(|r| {
                            Some(Call {
                                schema: r.get("schemaname")?.as_str()?.to_owned(),
                                name: r.get("relname")?.as_str()?.to_owned(),
                            })
                        }));
                    }
                    _ => {}
                }
                collect_calls(inner, calls, writes);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_calls(item, calls, writes);
            }
        }
        _ => {}
    }
}

/// The name of a serialized `FuncCall`: its `funcname`, a list of strings
/// (`[name]`, `[schema, name]` or `[catalog, schema, name]`).
fn call_of(func_call: &serde_json::Value) -> Option<Call> {
    let parts: Vec<&str> = func_call
        .get("funcname")?
        .as_array()?
        .iter()
        .filter_map(|n| n.pointer("/node/String/sval")?.as_str())
        .collect();
    let (name, qualifiers) = parts.split_last()?;
    Some(Call {
        schema: qualifiers
            .last()
            .map_or_else(String::new, |s| (*s).to_owned()),
        name: (*name).to_owned(),
    })
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

    /// Every DML statement returns rows with a `RETURNING` list and only
    /// then: a `DELETE ... RETURNING` that deletes nothing still shows its
    /// columns. `MERGE ... RETURNING` is PostgreSQL 17's; the parser here
    /// (`pg_query` 18) reads it, though a server test on 15 cannot run it.
    #[test]
    fn dml_returns_rows_exactly_when_it_has_a_returning_list() {
        assert_eq!(
            kinds(
                "DELETE FROM t RETURNING *; delete from t using u where t.a = u.a returning t.a, u.b; \
                 DELETE FROM t WHERE false; \
                 MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE RETURNING merge_action(), t.*; \
                 MERGE INTO t USING u ON t.a = u.a WHEN NOT MATCHED THEN INSERT VALUES (u.a); \
                 UPDATE t SET a = 2; INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING RETURNING a"
            ),
            [
                StatementKind::ReturnsRows,
                StatementKind::ReturnsRows,
                StatementKind::Other,
                StatementKind::ReturnsRows,
                StatementKind::Other,
                StatementKind::Other,
                StatementKind::ReturnsRows,
            ]
        );
    }

    #[test]
    fn statements_are_found_and_labelled_by_number() {
        let script = Script::parse("SELECT 1;\n\nSELECT 2; SELECT 3").expect("parses");
        let texts: Vec<Option<&str>> = (0..5)
            .map(|n| script.statement(n).map(Statement::text))
            .collect();
        assert_eq!(
            texts,
            [
                None,
                Some("SELECT 1"),
                Some("SELECT 2"),
                Some("SELECT 3"),
                None
            ]
        );
        assert_eq!(script.label(2), "statement 2 (line 3)");
        // A number past the end (a server's extra result) keeps its number.
        assert_eq!(script.label(7), "statement 7");
        assert_eq!(
            ResultSet::for_statement(4),
            ResultSet {
                statement: 4,
                ..ResultSet::default()
            }
        );
    }

    #[test]
    fn a_snippet_is_one_line_cut_at_sixty_characters() {
        let snippet = |sql: &str| Script::parse(sql).expect("parses").statements()[0].snippet();
        assert_eq!(snippet("SELECT\n\t1,   2\r\n  AS x"), "SELECT 1, 2 AS x");
        // 60 characters stay whole, 61 become 59 and an ellipsis.
        let sixty = format!("SELECT '{}'", "é".repeat(51));
        assert_eq!(sixty.chars().count(), 60);
        assert_eq!(snippet(&sixty), sixty);
        let long = format!("SELECT '{}'", "é".repeat(52));
        assert_eq!(snippet(&long), format!("SELECT '{}…", "é".repeat(51)));
    }

    #[test]
    fn a_rollback_is_incomplete_if_anything_is_unverified_or_advanced() {
        let advanced = SequenceAdvanced {
            sequence: "public.s".to_owned(),
            before: Some(1),
            after: Some(2),
        };
        let run = |unverified: &[&str], advanced: &[SequenceAdvanced]| ScriptRun {
            unverified: unverified.iter().map(|s| (*s).to_owned()).collect(),
            sequences_advanced: advanced.to_vec(),
            ..ScriptRun::default()
        };
        assert!(!run(&[], &[]).rollback_incomplete());
        assert!(run(&["public.f()"], &[]).rollback_incomplete());
        assert!(run(&[], std::slice::from_ref(&advanced)).rollback_incomplete());
        assert!(run(&["public.f()"], &[advanced]).rollback_incomplete());
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

#[cfg(test)]
mod dry_run_tests {
    use super::*;

    /// What `--dry-run` says about a one-statement script: refused (and
    /// what), or the calls left for the catalog to judge.
    fn verdict(sql: &str) -> Result<Vec<String>, String> {
        let script = Script::parse(sql).unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        match script.check_dry_run() {
            Err(e) => Err(e.to_string()),
            Ok(()) => Ok(script
                .dry_run_facts()
                .expect("parses")
                .iter()
                .flat_map(|f| &f.calls)
                .map(Call::shown)
                .collect()),
        }
    }

    #[test]
    fn every_listed_function_is_refused_however_spelled_and_wherever_called() {
        for (listed, _) in NOT_UNDONE_BY_ROLLBACK {
            let name = listed.strip_suffix('*').map_or_else(
                || (*listed).to_owned(),
                |prefix| format!("{prefix}_anything"),
            );
            let upper = name.to_uppercase();
            for sql in [
                format!("SELECT {name}('x')"),
                format!("select {upper}('x')"),
                format!("SELECT \"{name}\"('x')"),
                format!("SELECT pg_catalog.{name}('x')"),
                format!("SELECT \"public\".\"{name}\"('x')"),
                format!("SELECT mydb.public.{name}('x')"),
                format!("WITH c AS (SELECT {name}('x') AS v) SELECT * FROM c"),
                format!("SELECT * FROM t WHERE a IN (SELECT {name}('x'))"),
                format!("SELECT coalesce(lower({name}('x')::text), 'y')"),
                format!("SELECT * FROM {name}('x')"),
                format!("INSERT INTO t VALUES (1), ({name}('x'))"),
                format!("UPDATE t SET a = {name}('x') WHERE b > 1"),
                format!("CREATE TABLE t2 (a bigint DEFAULT {name}('x'))"),
                format!("CREATE TABLE t3 (a bigint CHECK (a < {name}('x')))"),
                format!("ALTER TABLE t ADD COLUMN c bigint DEFAULT {name}('x')"),
                format!("SELECT count(*) FILTER (WHERE {name}('x') > 0) FROM t"),
                format!("SELECT CASE WHEN a THEN {name}('x') END FROM t"),
                format!("CALL {name}('x')"),
            ] {
                let refused = verdict(&sql).expect_err(&sql);
                assert!(
                    refused.starts_with("statement 1 (line 1, ")
                        && refused.contains("--dry-run refuses")
                        && refused.to_lowercase().contains(&format!("{name}()")),
                    "{sql}: {refused}"
                );
            }
        }
    }

    #[test]
    fn what_a_rollback_undoes_is_not_refused() {
        for sql in [
            "SELECT currval('s'), lastval()",
            "SELECT set_config('work_mem', '8MB', false)",
            "SELECT set_config('work_mem', '8MB', true)",
            "SET work_mem = '8MB'",
            "SELECT pg_notify('c', 'x')",
            "NOTIFY c",
            "LISTEN c",
            "SELECT pg_advisory_xact_lock(1), pg_try_advisory_xact_lock_shared(2)",
            "SELECT 'nextval(''s'')', nextval_count FROM t",
            "SELECT lo_create(0)",
            "COPY t FROM STDIN",
            "SELECT * FROM dblinks",
        ] {
            assert!(verdict(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn server_side_copy_is_refused() {
        for (sql, what) in [
            ("COPY t TO '/tmp/x'", "is COPY ... TO a file"),
            (
                "copy (select 1) to '/tmp/x' with (format csv)",
                "is COPY ... TO a file",
            ),
            ("COPY t FROM '/tmp/x'", "is COPY ... FROM a file"),
            ("COPY t TO PROGRAM 'cat'", "is COPY ... TO PROGRAM"),
            ("COPY t FROM PROGRAM 'echo 1'", "is COPY ... FROM PROGRAM"),
        ] {
            let refused = verdict(sql).expect_err(sql);
            assert!(refused.contains(what), "{sql}: {refused}");
        }
    }

    #[test]
    fn checkpoint_load_and_discard_are_refused_for_what_they_are() {
        for (sql, what) in [
            (
                "CHECKPOINT",
                "is CHECKPOINT, which forces a checkpoint of the whole server",
            ),
            (
                "LOAD 'auto_explain'",
                "is LOAD, which loads a library into the session, for good",
            ),
            (
                "DISCARD SEQUENCES",
                "is DISCARD, which clears session state the dry run's own checks read",
            ),
        ] {
            let refused = verdict(sql).expect_err(sql);
            assert!(
                refused.starts_with(&format!("statement 1 (line 1, {sql:?}) {what}")),
                "{sql}: {refused}"
            );
        }
    }

    #[test]
    fn the_tables_written_to_are_kept_with_their_schema() {
        let script = Script::parse(
            "INSERT INTO s.t VALUES (1); UPDATE u SET a = 1; \
             WITH d AS (DELETE FROM \"Ft\" RETURNING x) SELECT count(*) FROM d; \
             MERGE INTO m USING n ON m.a = n.a WHEN MATCHED THEN DELETE; SELECT * FROM r",
        )
        .expect("parses");
        let writes: Vec<Vec<String>> = script
            .dry_run_facts()
            .expect("parses")
            .iter()
            .map(|f| f.writes.iter().map(Call::shown).collect())
            .collect();
        assert_eq!(
            writes,
            [
                vec!["s.t()".to_owned()],
                vec!["u()".to_owned()],
                vec!["Ft()".to_owned()],
                vec!["m()".to_owned()],
                vec![],
            ]
        );
    }

    #[test]
    fn calls_are_kept_for_the_catalog_with_their_schema() {
        let mut calls = verdict(
            "WITH x AS (SELECT public.f(1)) SELECT lower(g(a)), \"Odd\".\"H\"() FROM x, LATERAL k() WHERE a = pg_catalog.upper('b')",
        )
        .expect("allowed");
        calls.sort();
        assert_eq!(
            calls,
            [
                "Odd.H()",
                "g()",
                "k()",
                "lower()",
                "pg_catalog.upper()",
                "public.f()"
            ]
        );
        let script = Script::parse("DO $$ BEGIN PERFORM 1; END $$; CALL p(1)").expect("parses");
        assert!(script.check_dry_run().is_ok());
        let flags: Vec<(bool, Vec<String>)> = script
            .dry_run_facts()
            .expect("parses")
            .iter()
            .map(|f| (f.do_block, f.calls.iter().map(Call::shown).collect()))
            .collect();
        assert_eq!(flags, [(true, vec![]), (false, vec!["p()".to_owned()])]);
    }
}
