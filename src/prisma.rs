//! Prisma's migrations, read and applied the way Prisma's schema engine
//! does (prisma-engines 6.x, `schema-engine`): a folder of
//! `<name>/migration.sql` in name order, and the `_prisma_migrations` table
//! that records them. Applying here instead of starting `prisma migrate
//! deploy` per tenant saves a Node start-up (about a second of CPU) per
//! tenant, and an up-to-date tenant costs one query; the rows written are
//! Prisma's own, so `prisma migrate status`/`deploy`/`resolve` keep working.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _, Row as _};

use crate::connect::{BACKEND_PID, Backend, BackendChanged, SessionLimits, has_sqlstate, pid_of};

/// The advisory-lock key Prisma's schema engine takes on PostgreSQL before
/// it touches `_prisma_migrations` (`SELECT pg_advisory_lock(72707369)` in
/// its Postgres flavour): tenantctl takes the same, so it and a concurrent
/// `prisma migrate deploy` never both apply.
pub const LOCK_KEY: i64 = 72_707_369;

/// Prisma's own DDL for its table (`create_migrations_table`).
const CREATE_TABLE: &str = "CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);";

/// One `<name>/migration.sql`.
#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    pub script: String,
}

impl Migration {
    /// The checksum Prisma records for this script.
    pub fn checksum(&self) -> String {
        checksum(&self.script)
    }
}

/// A Prisma migrations folder, read once per command.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
}

impl Folder {
    /// Reads the folder as Prisma does: every subfolder is a migration whose
    /// script is its `migration.sql`, ordered by name; a
    /// `migration_lock.toml`, if there is one, must say PostgreSQL.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            anyhow::anyhow!(
                "read the Prisma migrations folder {}: {} (set [tenants.migrator] migrations to the folder holding <name>/migration.sql)",
                dir.display(),
                e.kind()
            )
        })?;
        let lock = dir.join("migration_lock.toml");
        if lock.is_file() {
            let text = std::fs::read_to_string(&lock)
                .with_context(|| format!("read {}", lock.display()))?;
            let provider = text.lines().find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == "provider").then(|| value.trim().trim_matches('"').to_owned())
            });
            // "postgres" is the provider's other spelling in schema.prisma.
            if let Some(provider) = provider
                && provider != "postgresql"
                && provider != "postgres"
            {
                anyhow::bail!(
                    "{}: provider is {provider:?}, but tenants are PostgreSQL databases (Prisma refuses a folder made for another provider too, P3019)",
                    lock.display()
                );
            }
        }
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().into_string().map_err(|name| {
                anyhow::anyhow!(
                    "{}: migration folder {} is not UTF-8",
                    dir.display(),
                    name.display()
                )
            })?;
            names.push(name);
        }
        names.sort();
        check_order(dir, &names)?;
        let mut migrations = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name).join("migration.sql");
            let script = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "read {}: {} (each folder in the Prisma migrations folder must hold a migration.sql)",
                    path.display(),
                    e.kind()
                )
            })?;
            anyhow::ensure!(
                name.len() <= 255,
                "{}: migration name {name} is longer than _prisma_migrations.migration_name holds (255)",
                dir.display()
            );
            migrations.push(Migration { name, script });
        }
        Ok(Self {
            dir: dir.to_owned(),
            migrations,
        })
    }
}

/// Prisma's CLI orders the folder with JavaScript's `localeCompare`
/// (ICU's collation: punctuation before digits before letters, case
/// ignored first); tenantctl orders by bytes. Two names the two orders
/// disagree on (`10_tag` before `1_init` by bytes, after it for Prisma;
/// `_B` before `_a`) would be applied in one order here and in the other
/// by `prisma migrate deploy`: refused, naming both. Names equal at ICU's
/// first level (differing only in case) are refused too: which comes
/// first then is ICU's finer rules, not ours to guess.
fn check_order(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    for (i, first) in names.iter().enumerate() {
        for second in &names[i + 1..] {
            if collation_key(first) >= collation_key(second) {
                anyhow::bail!(
                    "{}: migrations {first} and {second} are ordered one way by bytes and the other way by Prisma's CLI (which sorts punctuation before digits before letters, ignoring case): rename one so both orders agree",
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

/// The first-level weights ICU's root collation gives an ASCII name,
/// which is what `localeCompare` compares first: the punctuation in ICU's
/// order, then digits, then letters without case; anything else after
/// them, by code point.
fn collation_key(name: &str) -> Vec<u32> {
    const PUNCTUATION: &str = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";
    name.chars()
        .map(|c| {
            if let Some(i) = PUNCTUATION.find(c) {
                u32::try_from(i).unwrap_or(0)
            } else if c.is_ascii_digit() {
                100 + u32::from(c) - u32::from('0')
            } else if c.is_ascii_alphabetic() {
                200 + u32::from(c.to_ascii_lowercase()) - u32::from('a')
            } else {
                1000 + u32::from(c)
            }
        })
        .collect()
}

/// sha256 of the script, lowercase hex, as Prisma computes it
/// (`render_checksum` in schema-engine's `checksum.rs`).
pub fn checksum(script: &str) -> String {
    crate::migrations::hex(&Sha256::digest(script.as_bytes()))
}

/// Whether a recorded checksum is this script's, as Prisma decides it
/// (`script_matches_checksum`): the script as it is, with CRLF turned into
/// LF, or with LF turned into CRLF (git changes line endings on checkout);
/// and a checksum shorter than 64 characters is the old engine's format,
/// which did not zero-pad each byte.
pub fn matches(script: &str, recorded: &str) -> bool {
    let variants = [
        Some(script.to_owned()),
        script
            .contains("\r\n")
            .then(|| script.replace("\r\n", "\n")),
        Some(script.replace('\n', "\r\n")),
    ];
    variants.into_iter().flatten().any(|variant| {
        let digest = Sha256::digest(variant.as_bytes());
        if !recorded.is_empty() && recorded.len() != 64 {
            use fmt::Write as _;
            let old = digest.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:x}");
                s
            });
            old == recorded
        } else {
            crate::migrations::hex(&digest) == recorded
        }
    })
}

/// One row of `_prisma_migrations`.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub checksum: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub migration_name: String,
    pub logs: Option<String>,
    pub rolled_back_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub applied_steps_count: i32,
}

impl Row {
    /// Applied: finished and not rolled back.
    fn applied(&self) -> bool {
        self.finished_at.is_some() && self.rolled_back_at.is_none()
    }

    /// Failed: started, never finished, not marked rolled back
    /// (`prisma migrate resolve --rolled-back` marks it).
    fn failed(&self) -> bool {
        self.finished_at.is_none() && self.rolled_back_at.is_none()
    }
}

/// Where a tenant's Prisma migrations stand, as Prisma classifies them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    /// Whether `_prisma_migrations` exists.
    pub table: bool,
    /// Applied (finished, not rolled back), in folder order.
    pub applied: Vec<String>,
    /// To apply, in folder order: never recorded, or only rolled back.
    pub pending: Vec<String>,
    /// Started and never finished nor rolled back: Prisma's `migrate
    /// deploy` refuses to go on (P3009) until it is resolved.
    pub failed: Vec<String>,
    /// Started and not finished while Prisma's lock is held on the
    /// database: being applied right now by a `prisma migrate deploy` or
    /// another tenantctl, not failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_progress: Vec<String>,
    /// Pending again after `prisma migrate resolve --rolled-back`.
    pub rolled_back: Vec<String>,
    /// Applied, but the file has changed since (Prisma applies nothing for
    /// it and goes on).
    pub checksum_changed: Vec<String>,
    /// Applied in the database, not in the folder (Prisma goes on).
    pub missing_from_folder: Vec<String>,
    /// No `_prisma_migrations`, but the schema has tables: Prisma's
    /// `migrate deploy` refuses (P3005) until the database is baselined.
    pub not_empty: bool,
}

impl State {
    /// Compares the rows (`None`: no table) with the folder; `locked`:
    /// someone holds Prisma's lock on the database, so an unfinished row is
    /// a migration being applied, not a failed one.
    pub fn compare(folder: &Folder, rows: Option<&[Row]>, locked: bool) -> Self {
        let mut state = Self {
            table: rows.is_some(),
            ..Self::default()
        };
        let rows = rows.unwrap_or_default();
        for migration in &folder.migrations {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.migration_name == migration.name)
                .collect();
            if let Some(row) = mine.iter().find(|r| r.applied()) {
                state.applied.push(migration.name.clone());
                if !matches(&migration.script, &row.checksum) {
                    state.checksum_changed.push(migration.name.clone());
                }
            } else if !mine.iter().any(|r| r.failed()) {
                if !mine.is_empty() {
                    state.rolled_back.push(migration.name.clone());
                }
                state.pending.push(migration.name.clone());
            }
        }
        for row in rows {
            let list = if locked {
                &mut state.in_progress
            } else {
                &mut state.failed
            };
            if row.failed() && !list.contains(&row.migration_name) {
                list.push(row.migration_name.clone());
            }
            let known = folder
                .migrations
                .iter()
                .any(|m| m.name == row.migration_name);
            if !known && row.applied() && !state.missing_from_folder.contains(&row.migration_name) {
                state.missing_from_folder.push(row.migration_name.clone());
            }
        }
        state
    }

    /// What stops a deploy, as Prisma's `migrate deploy` would refuse.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(first) = self.failed.first() {
            anyhow::bail!(
                "migration {first} failed and is recorded as failed in _prisma_migrations (Prisma: P3009); nothing more is applied until it is resolved: fix the database, then `prisma migrate resolve --rolled-back {first}` (or --applied) with this tenant's DATABASE_URL (tenantctl tenant exec <tenant> -- npx prisma migrate resolve ...)"
            );
        }
        if self.not_empty {
            anyhow::bail!(
                "the database schema is not empty and has no _prisma_migrations (Prisma: P3005); baseline it first (prisma migrate resolve --applied <migration>), see https://pris.ly/d/migrate-baseline"
            );
        }
        Ok(())
    }
}

/// What [`read`] found.
pub struct Read {
    /// The rows, or `None` if there is no `_prisma_migrations`.
    pub rows: Option<Vec<Row>>,
    /// Whether the schema holds a table of its own (not an extension's).
    pub has_tables: bool,
    /// Whether some session holds Prisma's lock on this database.
    pub locked: bool,
}

/// The rows of `_prisma_migrations` in `schema`, or `None` if there is no
/// such table; with whether the schema holds any table (for P3005) and
/// whether Prisma's lock is held on the database. One simple-protocol
/// round trip: an up-to-date tenant costs this query only.
/// One round trip: whether the schema has tables, whether Prisma's lock is
/// held, and the rows of `_prisma_migrations`.
fn read_sql(schema: &str, guarded: bool) -> String {
    format!(
        "{begin}SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {literal} AND c.relkind IN ('r', 'p') \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
                     AND d.deptype = 'e')) AS tenantctl_has_tables, \
                EXISTS (SELECT 1 FROM pg_catalog.pg_locks \
                 WHERE locktype = 'advisory' AND classid = 0 AND objid = {LOCK_KEY} AND objsubid = 1 \
                 AND granted AND database = (SELECT oid FROM pg_catalog.pg_database \
                     WHERE datname = pg_catalog.current_database())) AS tenantctl_locked; \
         SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count \
         FROM {quoted}._prisma_migrations ORDER BY started_at{end}",
        begin = if guarded {
            "SAVEPOINT tenantctl_read_prisma; "
        } else {
            ""
        },
        end = if guarded {
            "; RELEASE SAVEPOINT tenantctl_read_prisma"
        } else {
            ""
        },
        literal = quote_literal(schema),
        quoted = quote_ident(schema),
    )
}

/// Runs [`read_sql`]: what it says of the schema and the lock, the rows it
/// read, and the error that stopped it (a missing table, say).
async fn fetch_read(
    conn: &mut PgConnection,
    sql: &str,
) -> anyhow::Result<(Option<bool>, bool, Vec<Row>, Option<anyhow::Error>)> {
    let mut has_tables = None;
    let mut locked = false;
    let mut rows = Vec::new();
    let mut failed = None;
    {
        let mut stream = conn.fetch_many(sql);
        loop {
            match stream.try_next().await {
                Ok(Some(sqlx::Either::Right(row))) => {
                    if let Ok(value) = row.try_get::<bool, _>("tenantctl_has_tables") {
                        has_tables = Some(value);
                        locked = row.try_get("tenantctl_locked")?;
                        continue;
                    }
                    rows.push(Row {
                        id: row.try_get("id")?,
                        checksum: row.try_get("checksum")?,
                        finished_at: row.try_get("finished_at")?,
                        migration_name: row.try_get("migration_name")?,
                        logs: row.try_get("logs")?,
                        rolled_back_at: row.try_get("rolled_back_at")?,
                        started_at: row.try_get("started_at")?,
                        applied_steps_count: row.try_get("applied_steps_count")?,
                    });
                }
                Ok(Some(sqlx::Either::Left(_))) => {}
                Ok(None) => break,
                Err(err) => {
                    failed = Some(anyhow::Error::new(err));
                    break;
                }
            }
        }
    }
    Ok((has_tables, locked, rows, failed))
}

pub async fn read(conn: &mut PgConnection, schema: &str) -> anyhow::Result<Read> {
    // Inside a pooled connection's transaction a missing table would abort
    // the transaction: there the read is guarded by a savepoint.
    let guarded = conn.is_in_transaction();
    let sql = read_sql(schema, guarded);
    let (has_tables, locked, rows, failed) = fetch_read(conn, &sql).await?;
    let has_tables = has_tables.unwrap_or(false);
    match failed {
        None => Ok(Read {
            rows: Some(rows),
            has_tables,
            locked,
        }),
        Some(err) if is_undefined_table(&err) => {
            if guarded {
                conn.execute(
                    "ROLLBACK TO SAVEPOINT tenantctl_read_prisma; \
                     RELEASE SAVEPOINT tenantctl_read_prisma",
                )
                .await
                .context("recover from reading a missing _prisma_migrations")?;
            }
            Ok(Read {
                rows: None,
                has_tables,
                locked,
            })
        }
        Some(err) => Err(err.context("read _prisma_migrations")),
    }
}

/// Reads the tenant's state against the folder, without taking Prisma's
/// lock (read-only callers): an unfinished migration while the lock is
/// held elsewhere is in progress, not failed.
pub async fn state(
    conn: &mut PgConnection,
    folder: &Folder,
    schema: &str,
) -> anyhow::Result<State> {
    read_state(conn, folder, schema, true).await
}

async fn read_state(
    conn: &mut PgConnection,
    folder: &Folder,
    schema: &str,
    lock_elsewhere: bool,
) -> anyhow::Result<State> {
    let read = read(conn, schema).await?;
    let mut state = State::compare(folder, read.rows.as_deref(), lock_elsewhere && read.locked);
    state.not_empty = read.rows.is_none() && read.has_tables;
    Ok(state)
}

/// Moves a cloned database's `_prisma_migrations` times to now, their
/// spacing kept: the rows came from its template, applied when the
/// template was built.
pub async fn restamp(conn: &mut PgConnection, schema: &str) -> anyhow::Result<()> {
    let table = format!("{}._prisma_migrations", quote_ident(schema));
    conn.execute(
        format!(
            "UPDATE {table} SET started_at = started_at + d, finished_at = finished_at + d \
             FROM (SELECT pg_catalog.now() - pg_catalog.max(COALESCE(finished_at, started_at)) AS d \
                   FROM {table}) AS shift"
        )
        .as_str(),
    )
    .await
    .context("record the migrations in _prisma_migrations as applied now")?;
    Ok(())
}

/// Prisma's `?schema=` for an application command's `DATABASE_URL`:
/// given only for a schema other than `public`, Prisma's default.
pub fn url_schema(schema: &str) -> Option<&str> {
    (schema != "public").then_some(schema)
}

/// After the application's command (`apply = "command"`), what it
/// returned (`ran`); when it exited 0, the state read again, and anything
/// still pending fails the tenant (a command that looked at another
/// schema, or did nothing, is no success).
pub async fn check_after_command(
    conn: &mut PgConnection,
    folder: &Folder,
    schema: &str,
    ran: anyhow::Result<()>,
) -> anyhow::Result<()> {
    ran?;
    let state = state(conn, folder, schema).await?;
    anyhow::ensure!(
        state.pending.is_empty(),
        "the command exited 0 but {} migration(s) are still pending in schema {schema} ({}): check that it applies Prisma's migrations to this DATABASE_URL (with ?schema={schema})",
        state.pending.len(),
        state.pending.join(", ")
    );
    state.check()
}

/// What a native apply did, filled in as it goes.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub names: Vec<String>,
}

/// Where the migrations go: the schema holding `_prisma_migrations` (and,
/// with `search_path`, the one the scripts run in).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub schema: &'a str,
    /// Set `search_path` to the schema for the scripts: only when the
    /// schema is configured explicitly (Prisma's `?schema=`). Otherwise the
    /// scripts run with the role's own `search_path`, as the kit's Prisma
    /// runs them (a function from an `extensions` schema on it resolves).
    pub search_path: bool,
}

/// Applies the pending migrations as `prisma migrate deploy` does.
///
/// An up-to-date tenant costs one query and takes no lock. Otherwise,
/// under Prisma's own advisory lock (waited for at most `--lock-timeout`),
/// the state is read again and checked (a failed migration refused, P3009;
/// a schema with tables and no `_prisma_migrations` refused, P3005), the
/// schema and the table created with Prisma's DDL if missing; then for each
/// pending migration a row (`id`, `checksum`, `migration_name`,
/// `started_at`) is committed before the script, the script is sent as ONE
/// simple-protocol query, as Prisma sends it (with `search_path` and the
/// limits set LOCAL in front of it), and `finished_at` and
/// `applied_steps_count` recorded after it. A script that fails leaves its
/// row with the error in `logs` and no `finished_at`, so `prisma migrate
/// status` calls it failed and `prisma migrate resolve` works on it.
pub async fn apply(
    conn: &mut PgConnection,
    folder: &Folder,
    target: Target<'_>,
    limits: &SessionLimits,
    redact: &(dyn Fn(&str) -> String + Send + Sync),
    applied: &mut Applied,
) -> anyhow::Result<()> {
    // Read without the lock only to skip an up-to-date tenant: anything
    // else (a failed-looking row above all, which may be a migration
    // another deploy is applying right now) is judged under the lock.
    let state = read_state(conn, folder, target.schema, false).await?;
    if state.pending.is_empty() && state.failed.is_empty() && !state.not_empty {
        return Ok(());
    }
    let pinned = conn.is_in_transaction();
    // On a plain connection the lock is the session's (the one
    // session-level thing tenantctl takes): every step runs only on the
    // server process that took it (see [`Backend`]), so a
    // transaction-mode pooler nobody declared stops the tenant instead of
    // migrating on a server connection without the lock. Every setting is
    // transaction-local, so none can reach the pooler's next client.
    let mut backend = Backend::default();
    lock(conn, target, limits, &mut backend).await?;
    let result = apply_locked(conn, folder, target, limits, redact, &backend, applied).await;
    let unlocked = if pinned {
        // A transaction-level lock: its commit releases it.
        Ok(())
    } else {
        unlock(conn, &mut backend).await
    };
    let cleared = crate::connect::clear_session(conn).await;
    result?;
    unlocked?;
    cleared
}

/// Waits for Prisma's lock, for at most `--lock-timeout` if one is given
/// (`pg_advisory_lock` honours `lock_timeout`), with no statement timeout
/// (that is for the scripts), in one query on one server process, whose pid
/// `backend` records. The timeouts are set LOCAL and put back in the same
/// transaction. On a pinned connection the lock is the transaction's, and
/// `search_path` is set LOCAL there too (everything runs in it).
/// How long Prisma's schema engine waits for its migration lock before it
/// gives up (P1002), and tenantctl by default.
const PRISMA_LOCK_WAIT_MS: u128 = 10_000;

async fn lock(
    conn: &mut PgConnection,
    target: Target<'_>,
    limits: &SessionLimits,
    backend: &mut Backend,
) -> anyhow::Result<()> {
    let pinned = conn.is_in_transaction();
    let function = if pinned {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_lock"
    };
    // Prisma's own schema engine gives up on this lock after 10 s (P1002);
    // so does tenantctl, unless --lock-timeout says otherwise.
    let wait_ms = limits
        .lock_timeout
        .map_or(PRISMA_LOCK_WAIT_MS, |t| t.as_millis().max(1));
    let path = if pinned && target.search_path {
        format!("SET LOCAL search_path TO {}; ", quote_ident(target.schema))
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT set_config('tenantctl.lock_timeout', current_setting('lock_timeout'), true), \
                set_config('tenantctl.statement_timeout', current_setting('statement_timeout'), true); \
         SET LOCAL lock_timeout = {wait_ms}; SET LOCAL statement_timeout = 0; \
         SELECT {function}({LOCK_KEY}); \
         SELECT set_config('lock_timeout', current_setting('tenantctl.lock_timeout'), true), \
                set_config('statement_timeout', current_setting('tenantctl.statement_timeout'), true); \
         {path}{BACKEND_PID}"
    );
    let rows = match conn.fetch_all(sql.as_str()).await {
        Ok(rows) => rows,
        Err(err) => {
            let err = anyhow::Error::new(err);
            if has_sqlstate(&err, crate::error::sqlstate::LOCK_NOT_AVAILABLE) {
                return Err(err.context(format!(
                    "Prisma's migration lock (pg_advisory_lock({LOCK_KEY})) on this database was not granted within {wait_ms} ms (--lock-timeout, else Prisma's own 10 s): a `prisma migrate deploy` elsewhere (or another tenantctl tenant migrate) holds it while it applies migrations; run again once it is done"
                )));
            }
            return Err(err.context(format!("take Prisma's migration lock ({LOCK_KEY})")));
        }
    };
    backend.observe(pid_of(&rows))?;
    Ok(())
}

/// Gives Prisma's lock back, on `backend` only; a pooler that moved the
/// connection may hand the lock's server connection back on a later try.
async fn unlock(conn: &mut PgConnection, backend: &mut Backend) -> anyhow::Result<()> {
    let sql = format!(
        "{}SELECT pg_advisory_unlock({LOCK_KEY}) AS unlocked, pg_catalog.pg_backend_pid() AS tenantctl_backend",
        backend.guard()
    );
    let mut tries = 0;
    loop {
        tries += 1;
        match conn.fetch_all(sql.as_str()).await {
            Ok(rows) => {
                backend.observe(pid_of(&rows))?;
                return Ok(());
            }
            Err(err) => {
                let err = Backend::check(anyhow::Error::new(err));
                if !err.is::<BackendChanged>() || tries == 8 {
                    return Err(err.context("release Prisma's migration lock"));
                }
            }
        }
    }
}

async fn apply_locked(
    conn: &mut PgConnection,
    folder: &Folder,
    target: Target<'_>,
    limits: &SessionLimits,
    redact: &(dyn Fn(&str) -> String + Send + Sync),
    backend: &Backend,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let schema = target.schema;
    // The table is named with its schema wherever tenantctl writes it, so
    // these statements do not depend on the session's search_path.
    let table = format!("{}._prisma_migrations", quote_ident(schema));
    // Under the lock: an unfinished row now is a failed migration (the lock
    // is ours, no one else is applying).
    let state = read_state(conn, folder, schema, false).await?;
    state.check()?;
    if !state.table {
        create_table(conn, schema, &table).await?;
    }
    // What each script's transaction needs, set LOCAL in front of it; on a
    // pinned connection it is all set for the one transaction already.
    let settings = if conn.is_in_transaction() {
        String::new()
    } else {
        let mut sql = if target.search_path {
            format!("SET LOCAL search_path TO {}; ", quote_ident(schema))
        } else {
            String::new()
        };
        sql.push_str(&limits.local().unwrap_or_default());
        sql
    };
    for name in &state.pending {
        let migration = folder
            .migrations
            .iter()
            .find(|m| &m.name == name)
            .expect("pending names come from the folder");
        let step = Step {
            table: &table,
            settings: &settings,
            backend,
            redact,
        };
        apply_one(conn, migration, &step, applied).await?;
    }
    Ok(())
}

/// As Prisma's engine: the schema first if it is missing (CREATE SCHEMA IF
/// NOT EXISTS needs CREATE on the database even when the schema exists,
/// hence the look first), then `_prisma_migrations`.
async fn create_table(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
    )
    .persistent(false)
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("look for the schema {schema}"))?;
    if !exists {
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)).as_str())
            .await
            .with_context(|| format!("create the schema {schema}"))?;
    }
    conn.execute(
        CREATE_TABLE
            .replacen("_prisma_migrations", table, 1)
            .as_str(),
    )
    .await
    .context("create _prisma_migrations")?;
    Ok(())
}

/// What applying each pending migration of one run shares.
struct Step<'a> {
    /// `_prisma_migrations`, named with its schema.
    table: &'a str,
    /// `SET LOCAL`s to send in front of each script.
    settings: &'a str,
    backend: &'a Backend,
    redact: &'a (dyn Fn(&str) -> String + Send + Sync),
}

/// Records one migration as started, runs its script, and records how it
/// ended, as Prisma's engine does.
async fn apply_one(
    conn: &mut PgConnection,
    migration: &Migration,
    step: &Step<'_>,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let Step {
        table,
        settings,
        backend,
        redact,
    } = *step;
    let name = &migration.name;
    let id: String = sqlx::query_scalar(&format!(
        "INSERT INTO {table} (id, checksum, started_at, migration_name) \
         VALUES (gen_random_uuid()::text, $1, clock_timestamp(), $2) RETURNING id"
    ))
    .persistent(false)
    .bind(migration.checksum())
    .bind(&migration.name)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("record migration {name} as started"))?;
    let ran = run_script(conn, &migration.script, settings, backend).await;
    match ran {
        Ok(()) => {
            let done = sqlx::query(&format!(
                "UPDATE {table} SET applied_steps_count = applied_steps_count + 1, \
                 finished_at = clock_timestamp() WHERE id = $1"
            ))
            .persistent(false)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("record migration {name} as finished"))?;
            if done.rows_affected() != 1 {
                anyhow::bail!(
                    "migration {name} ran, but its row in {table} (id {id}) was gone when it was to be marked finished: someone deleted it meanwhile; `prisma migrate status` will call the migration pending although its script ran: check the database, then `prisma migrate resolve --applied {name}`"
                );
            }
            applied.names.push(name.clone());
            Ok(())
        }
        Err(err) if err.is::<BackendChanged>() => {
            // The script never ran: the started row goes.
            let _ = sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
                .persistent(false)
                .bind(&id)
                .execute(&mut *conn)
                .await;
            Err(err.context(format!("apply migration {name}")))
        }
        Err(err) => Err(record_failure(conn, table, migration, &id, err, redact).await),
    }
}

/// Whether the server undid a script whole when one of its statements was
/// cut short: it ran as one transaction, and nothing in it has effects a
/// rollback does not undo (a sequence advanced, dblink, COPY to a program,
/// `CREATE INDEX CONCURRENTLY`, which commits as it goes...).
fn undone_by_rollback(script: &str) -> bool {
    let Ok(parsed) = crate::script::Script::parse(script) else {
        return false;
    };
    parsed.check_single_transaction().is_ok()
        && parsed.check_dry_run().is_ok()
        && !parsed
            .statements()
            .iter()
            .any(|s| outside_transaction(s.text()) || may_take_sequence_values(s.text()))
}

/// Whether a statement may draw values from a sequence without naming it:
/// rows written into a table whose column defaults to `nextval` (a
/// `serial`, an identity). A rollback does not give them back, so a
/// script that writes rows is never called undone whole.
fn may_take_sequence_values(statement: &str) -> bool {
    let words: Vec<String> = without_leading_comments(statement)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let writes = |w: &str| matches!(w, "INSERT" | "MERGE" | "COPY");
    match words.first().map(String::as_str) {
        Some("WITH") => words.iter().any(|w| writes(w)),
        Some(first) => writes(first),
        None => false,
    }
}

/// Whether a statement cannot run inside a transaction block (it commits
/// on its own as it goes, so a cancel leaves part of it done).
fn outside_transaction(statement: &str) -> bool {
    let words: Vec<String> = without_leading_comments(statement)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(12)
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first().map_or("", String::as_str);
    words.iter().any(|w| w == "CONCURRENTLY")
        || matches!(first, "VACUUM")
        || (first == "ALTER" && words.get(1).is_some_and(|w| w == "SYSTEM"))
        || ((first == "CREATE" || first == "DROP")
            && words
                .get(1)
                .is_some_and(|w| w == "DATABASE" || w == "TABLESPACE"))
}

/// The statement from its first word on: the comments Prisma writes
/// before each statement (`-- CreateIndex`) and any other go.
fn without_leading_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = text.strip_prefix("/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 1;
            let mut end = rest.len();
            let bytes = rest.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            text = &rest[end..];
        } else {
            return text;
        }
    }
}

/// Records a script's failure as Prisma does (its `logs`, no
/// `finished_at`), or as rolled back when the server undid it whole after
/// a cancel; returns the error to report.
async fn record_failure(
    conn: &mut PgConnection,
    table: &str,
    migration: &Migration,
    id: &str,
    err: anyhow::Error,
    redact: &(dyn Fn(&str) -> String + Send + Sync),
) -> anyhow::Error {
    let name = &migration.name;
    let logs = redact(&prisma_logs(&err));
    // Cut short by an interrupt, a --statement-timeout or a
    // --lock-timeout, a script run as one transaction with nothing a
    // rollback cannot undo was undone whole by the server: marked rolled
    // back (what `prisma migrate resolve --rolled-back` would record), so
    // a rerun applies it. Any other failure stays failed, as Prisma
    // leaves it, for a person to look at.
    let undone = (has_sqlstate(&err, crate::error::sqlstate::QUERY_CANCELED)
        || has_sqlstate(&err, crate::error::sqlstate::LOCK_NOT_AVAILABLE))
        && undone_by_rollback(&migration.script);
    let pinned = conn.is_in_transaction();
    // Behind a transaction-mode pooler the failure aborted the
    // one transaction everything runs in: nothing can be
    // recorded, and the started row rolls back with it.
    if !pinned {
        let sql = if undone {
            format!(
                "UPDATE {table} SET logs = $1, rolled_back_at = clock_timestamp() WHERE id = $2"
            )
        } else {
            format!("UPDATE {table} SET logs = $1 WHERE id = $2")
        };
        let recorded = sqlx::query(&sql)
            .persistent(false)
            .bind(&logs)
            .bind(id)
            .execute(&mut *conn)
            .await;
        if let Err(also) = recorded {
            return err.context(format!(
                "apply migration {name} (and record its failure: {}); `prisma migrate status` will show it as failed",
                crate::error::render(&anyhow::Error::new(also))
            ));
        }
    }
    err.context(if pinned {
        format!(
            "apply migration {name}: its transaction (behind a transaction-mode pooler, the whole tenant's work is one) is rolled back, the migration recorded nowhere; fix the cause and run again"
        )
    } else if undone {
        format!(
            "apply migration {name}: cut short; the server undid it whole and it is marked rolled back, so the next run applies it again"
        )
    } else {
        format!(
            "apply migration {name}; it is recorded as failed in _prisma_migrations: fix the database, then `prisma migrate resolve --rolled-back {name}`"
        )
    })
}

/// Sends a script as one simple-protocol query, as Prisma does: the server
/// runs a multi-statement script as one implicit transaction, with
/// `settings` (SET LOCAL) in front of it. The guard (a no-op SELECT on the
/// right server process) goes in front too. A leading UTF-8 BOM is not
/// sent (Prisma strips it; the checksum stays over the file's bytes).
///
/// A script of one statement that cannot run inside a transaction block
/// (`CREATE INDEX CONCURRENTLY` alone in its file) is sent alone, as
/// Prisma sends it, with the guard as the query just before; what it needs
/// set is set for the session just before and reset just after, on the
/// guarded server process (the one exception: there is no transaction to
/// make it local to). Any other single statement runs after its settings
/// in one implicit transaction, which is what it was alone.
async fn run_script(
    conn: &mut PgConnection,
    script: &str,
    settings: &str,
    backend: &Backend,
) -> anyhow::Result<()> {
    let script = script.strip_prefix('\u{feff}').unwrap_or(script);
    let guard = backend.guard();
    let parsed = crate::script::Script::parse(script).ok();
    let single = parsed
        .as_ref()
        .is_some_and(|parsed| parsed.statements().len() <= 1);
    let alone = single
        && parsed.as_ref().is_some_and(|parsed| {
            parsed
                .statements()
                .iter()
                .all(|s| outside_transaction(s.text()))
        });
    if !alone {
        let body = with_settings_again(parsed.as_ref(), script, settings);
        let ran = conn
            .execute(format!("{guard}{settings}{body}").as_str())
            .await
            .map(|_| ())
            .map_err(|err| Backend::check(anyhow::Error::new(err)));
        // Prisma sends a one-statement script as it is, outside any
        // transaction block; one our list does not know (REINDEX SCHEMA,
        // say) is refused inside ours before it does anything (25001),
        // and is then sent alone, as Prisma would have sent it.
        match ran {
            Err(err)
                if single && has_sqlstate(&err, crate::error::sqlstate::ACTIVE_SQL_TRANSACTION) => {
            }
            ran => return ran,
        }
    }
    let session = settings.replace("SET LOCAL ", "SET ");
    if !guard.is_empty() || !session.is_empty() {
        conn.execute(format!("{guard}{session}").as_str())
            .await
            .map_err(|err| Backend::check(anyhow::Error::new(err)))?;
    }
    let ran = conn
        .execute(script)
        .await
        .map(|_| ())
        .map_err(anyhow::Error::new);
    if !session.is_empty() {
        conn.execute(
            format!("{guard}RESET search_path; RESET lock_timeout; RESET statement_timeout")
                .as_str(),
        )
        .await
        .map_err(|err| Backend::check(anyhow::Error::new(err)))
        .context("reset the settings of a statement run outside a transaction")?;
    }
    ran
}

/// The script with `settings` set again after each of its own
/// transaction-control statements: a `COMMIT` in the script ends the
/// transaction the settings were LOCAL to, and what follows it must still
/// be bounded by the limits. Unchanged when it has none (or there is
/// nothing to set). Statements are separated by a line break before the
/// `;`, so one ending in a `--` comment stays whole.
fn with_settings_again<'a>(
    parsed: Option<&crate::script::Script>,
    script: &'a str,
    settings: &str,
) -> std::borrow::Cow<'a, str> {
    use crate::script::StatementKind;
    let Some(parsed) = parsed else {
        return script.into();
    };
    let control =
        |s: &crate::script::Statement| matches!(s.kind(), StatementKind::TransactionControl(_));
    if settings.is_empty() || !parsed.statements().iter().any(control) {
        return script.into();
    }
    let mut body = String::with_capacity(script.len() + settings.len() * 2);
    for statement in parsed.statements() {
        body.push_str(statement.text());
        body.push_str("\n;\n");
        if control(statement) {
            body.push_str(settings);
        }
    }
    body.into()
}

/// The `logs` Prisma writes for a failed script: the database's error code
/// and message.
fn prisma_logs(err: &anyhow::Error) -> String {
    let db = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<sqlx::Error>()?.as_database_error());
    match db {
        Some(db) => format!(
            "Database error code: {}\n\nDatabase error:\n{}\n",
            db.code().unwrap_or_default(),
            db.message()
        ),
        None => format!("{}\n", crate::error::render(err)),
    }
}

/// Whether an error is PostgreSQL's "relation does not exist".
pub fn is_undefined_table(err: &anyhow::Error) -> bool {
    has_sqlstate(err, crate::error::sqlstate::UNDEFINED_TABLE)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(names: &[(&str, &str)]) -> Folder {
        Folder {
            dir: PathBuf::from("m"),
            migrations: names
                .iter()
                .map(|(n, s)| Migration {
                    name: (*n).into(),
                    script: (*s).into(),
                })
                .collect(),
        }
    }

    fn row(name: &str, script: &str, finished: bool, rolled_back: bool) -> Row {
        Row {
            id: name.into(),
            checksum: checksum(script),
            finished_at: finished.then(Utc::now),
            migration_name: name.into(),
            logs: None,
            rolled_back_at: rolled_back.then(Utc::now),
            started_at: Utc::now(),
            applied_steps_count: i32::from(finished),
        }
    }

    #[test]
    fn checksums_as_prisma_computes_them() {
        // Prisma's own test value for "hello".
        assert_eq!(
            checksum("hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let lf = "CREATE TABLE a (x int);\nCREATE TABLE b (y int);\n";
        let crlf = lf.replace('\n', "\r\n");
        assert!(matches(&crlf, &checksum(lf)));
        assert!(matches(lf, &checksum(&crlf)));
        assert!(!matches("abc\n", &checksum("abc")));
        // The old engine's unpadded format.
        let digest = Sha256::digest(b"x");
        let old = digest.iter().fold(String::new(), |mut s, b| {
            use fmt::Write as _;
            let _ = write!(s, "{b:x}");
            s
        });
        assert!(old.len() < 64);
        assert!(matches("x", &old));
    }

    #[test]
    fn reads_a_folder_as_prisma_does() {
        let dir = std::env::temp_dir().join(format!("tenantctl-prisma-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, sql) in [("20240102_b", "B"), ("20240101_a", "A")] {
            std::fs::create_dir_all(dir.join(name)).expect("mkdir");
            std::fs::write(dir.join(name).join("migration.sql"), sql).expect("write");
        }
        std::fs::write(
            dir.join("migration_lock.toml"),
            "provider = \"postgresql\"\n",
        )
        .expect("lock");
        std::fs::write(dir.join("README.md"), "not a migration").expect("readme");
        let folder = Folder::read(&dir).expect("read");
        let names: Vec<&str> = folder.migrations.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["20240101_a", "20240102_b"]);
        std::fs::write(dir.join("migration_lock.toml"), "provider = \"mysql\"\n").expect("lock");
        let err = Folder::read(&dir).expect_err("mysql");
        assert!(err.to_string().contains("mysql"), "{err}");
        std::fs::write(
            dir.join("migration_lock.toml"),
            "provider = \"postgresql\"\n",
        )
        .expect("lock");
        std::fs::create_dir_all(dir.join("20240103_c")).expect("mkdir");
        let err = Folder::read(&dir).expect_err("no migration.sql");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.to_string().contains("20240103_c"), "{err}");
    }

    #[test]
    fn names_prisma_orders_otherwise_are_refused() {
        let dir = Path::new("m");
        let names = |list: &[&str]| {
            let mut names: Vec<String> = list.iter().map(|n| (*n).to_owned()).collect();
            names.sort();
            names
        };
        for clash in [
            &["20240101_B", "20240101_a"][..],
            &["20240101_a", "20240101_A"],
            &["1_init", "2_Users", "2_accounts", "3_z"],
            &["1_init", "2_note", "10_tag"],
            &["20240102000000_x", "20240102000000-y", "20240102000000.z"],
        ] {
            let err = check_order(dir, &names(clash)).expect_err("clash");
            assert!(err.to_string().contains("rename one"), "{err}");
        }
        for fine in [
            &["20240101_a", "20240102_B"][..],
            &["1_Init", "2_init_more", "3_Z"],
        ] {
            check_order(dir, &names(fine)).expect("same order both ways");
        }
    }

    #[test]
    fn a_script_that_writes_rows_is_never_undone_whole() {
        for writes in [
            "INSERT INTO \"Order\" (total) VALUES (1); SELECT pg_sleep(1);",
            "-- Seed\nINSERT INTO t VALUES (1);",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x;",
            "COPY t FROM '/dev/null';",
        ] {
            assert!(!undone_by_rollback(writes), "{writes}");
        }
        assert!(undone_by_rollback(
            "ALTER TABLE t ADD COLUMN note text; SELECT pg_sleep(1);"
        ));
    }

    #[test]
    fn statements_that_cannot_run_in_a_transaction_block() {
        for yes in [
            "CREATE INDEX CONCURRENTLY \"a\" ON \"T\"(\"x\")",
            "-- CreateIndex\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS a ON t (x)",
            "/* a /* nested */ comment */ -- and a line\n  drop index concurrently a",
            "ALTER TABLE \"Some\" DETACH PARTITION \"Part\" CONCURRENTLY",
            "REINDEX TABLE CONCURRENTLY t",
            "VACUUM t",
            "ALTER SYSTEM SET work_mem = '8MB'",
            "CREATE DATABASE x",
        ] {
            assert!(outside_transaction(yes), "{yes}");
        }
        for no in [
            "CREATE INDEX a ON t (x)",
            "-- CREATE INDEX CONCURRENTLY is not used here\nALTER TABLE t ADD COLUMN c int",
            "ALTER TABLE t ADD COLUMN x int",
            "SELECT 1",
        ] {
            assert!(!outside_transaction(no), "{no}");
        }
    }

    #[test]
    fn classifies_as_prisma_does() {
        let f = folder(&[
            ("1_a", "A"),
            ("2_b", "B"),
            ("3_c", "C"),
            ("4_d", "D"),
            ("5_e", "E"),
        ]);
        let mut edited = row("2_b", "B", true, false);
        edited.checksum = checksum("B2");
        let rows = vec![
            row("1_a", "A", true, false),
            edited,
            row("3_c", "C", false, true),
            row("4_d", "D", false, false),
            row("9_gone", "G", true, false),
        ];
        let state = State::compare(&f, Some(&rows), false);
        assert_eq!(state.applied, ["1_a", "2_b"]);
        assert_eq!(state.checksum_changed, ["2_b"]);
        assert_eq!(state.rolled_back, ["3_c"]);
        assert_eq!(state.pending, ["3_c", "5_e"]);
        assert_eq!(state.failed, ["4_d"]);
        assert_eq!(state.missing_from_folder, ["9_gone"]);
        assert!(state.check().is_err());
        let fresh = State::compare(&f, None, false);
        assert_eq!(fresh.pending.len(), 5);
        assert!(!fresh.table);
        assert!(fresh.check().is_ok());
    }
}
