//! Tenant and master schemas: where the migrations come from, what a database
//! has applied, and applying what is pending under sqlx's migration lock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use serde::Serialize;
use sqlx::Row as _;
use sqlx::migrate::{Migrate as _, Migration, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::connect::{BACKEND_PID, Backend, BackendChanged, SessionLimits, has_sqlstate, pid_of};
use crate::dbname::DbName;
use crate::script::Script;

static TENANT_MIGRATIONS: Migrator = sqlx::migrate!("./tenant-migrations");
static MASTER_MIGRATIONS: Migrator = sqlx::migrate!("./master-migrations");

/// An ordered set of up-migrations and where it came from.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    migrations: Cow<'static, [Migration]>,
    origin: String,
    /// The table that records what is applied: sqlx's `_sqlx_migrations`
    /// (a tenant's, where sqlx-cli looks for it), or for the master's own
    /// migrations [`crate::state::MASTER_LEDGER`], out of the application's
    /// schema.
    ledger: &'static str,
}

/// Where a tenant's (and sqlx-cli's) migrations are recorded.
pub const TENANT_LEDGER: &str = "_sqlx_migrations";

impl MigrationSet {
    /// The tenant schema compiled into this binary.
    pub fn embedded_tenant() -> Self {
        Self::embedded(&TENANT_MIGRATIONS, "embedded tenant-migrations")
    }

    /// The master schema compiled into this binary.
    pub fn embedded_master() -> Self {
        Self {
            ledger: crate::state::MASTER_LEDGER,
            ..Self::embedded(&MASTER_MIGRATIONS, "embedded master-migrations")
        }
    }

    fn embedded(migrator: &'static Migrator, origin: &str) -> Self {
        Self {
            migrations: Cow::Borrowed(&migrator.migrations),
            origin: origin.to_owned(),
            ledger: TENANT_LEDGER,
        }
    }

    /// The table that records what of this set a database has applied.
    pub fn ledger(&self) -> &'static str {
        self.ledger
    }

    /// Reads migrations from a folder at run time, in sqlx's file layout.
    /// Refuses a folder where two files carry the same version
    /// (`20240201000001_a.sql` and `020240201000001_b.sql` both read as one
    /// number): sqlx would apply one of them twice and the other never.
    pub async fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        check_unique_versions(dir)?;
        let migrator = Migrator::new(dir)
            .await
            .with_context(|| format!("read tenant migrations from {}", dir.display()))?;
        anyhow::ensure!(
            migrator
                .iter()
                .any(|m| !m.migration_type.is_down_migration()),
            "no migrations found in {}: expected files named <VERSION>_<DESCRIPTION>.sql",
            dir.display()
        );
        Ok(Self {
            migrations: migrator.migrations,
            origin: dir.display().to_string(),
            ledger: TENANT_LEDGER,
        })
    }

    /// A set made in memory, for unit tests of what reads sets.
    #[cfg(test)]
    pub(crate) fn from_migrations(migrations: Vec<Migration>) -> Self {
        Self {
            migrations: Cow::Owned(migrations),
            origin: "test".into(),
            ledger: TENANT_LEDGER,
        }
    }

    /// The up-migrations in version order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.migrations
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The up-migration (simple or reversible) of a version.
    pub fn get(&self, version: i64) -> Option<&Migration> {
        self.iter().find(|m| m.version == version)
    }

    /// The down script of a reversible migration (`<version>_<name>.down.sql`).
    pub fn down(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .iter()
            .find(|m| m.version == version && m.migration_type.is_down_migration())
    }

    /// The first `-- no-transaction` script, up or down.
    pub fn first_no_tx(&self) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.no_tx)
    }

    /// Checks a `--to VERSION` against the set: a version that is not one
    /// of its migrations is almost always a typo, and going ahead would
    /// silently apply or revert more than meant.
    pub fn check_target(&self, to: i64) -> Result<(), crate::error::UsageError> {
        if self.get(to).is_some() {
            return Ok(());
        }
        let newest = self.iter().last().map_or(0, |m| m.version);
        Err(crate::error::UsageError(format!(
            "--to {to}: no migration has that version in {} (the newest is {newest}); see `tenantctl tenant status` for what each tenant has",
            self.origin
        )))
    }

    /// Whether a recorded row is one of these migrations, same version and
    /// same checksum (two schemas may well reuse a version number).
    pub fn recorded(&self, row: &AppliedRow) -> bool {
        self.get(row.version)
            .is_some_and(|m| hex(&m.checksum) == row.checksum_hex)
    }
}

/// The files of a migrations folder that share a version with another of
/// the same kind (up or down), as an error naming both.
fn check_unique_versions(dir: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("read tenant migrations from {}", dir.display()))?;
    let mut seen: BTreeMap<(i64, bool), String> = BTreeMap::new();
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(stem) = name.strip_suffix(".sql") else {
            continue;
        };
        let Some((version, _)) = stem.split_once('_') else {
            continue;
        };
        let Ok(version) = version.parse::<i64>() else {
            continue;
        };
        // sqlx itself only knows the lower-case suffix.
        let down = std::path::Path::new(stem)
            .extension()
            .is_some_and(|ext| ext == "down");
        if let Some(first) = seen.insert((version, down), name.clone()) {
            anyhow::bail!(
                "{}: {first} and {name} both have version {version}; give one of them another version",
                dir.display()
            );
        }
    }
    Ok(())
}

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone)]
pub struct AppliedRow {
    pub version: i64,
    pub checksum_hex: String,
    pub success: bool,
    /// When it was applied, by the tenant server's clock (`installed_on`).
    pub installed_on: Option<DateTime<Utc>>,
}

/// Something about a database's recorded migrations that stops `migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A migration failed part-way outside a transaction and left its row
    /// with `success = false`.
    Dirty { version: i64 },
    /// An applied migration's file has changed since it was applied.
    ChecksumMismatch { version: i64, description: String },
    /// The database has a migration the folder in use does not.
    Unknown { version: i64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dirty { version } => write!(
                f,
                "migration {version} failed part-way and is marked dirty; repair the schema by hand, then delete its row from _sqlx_migrations"
            ),
            Self::ChecksumMismatch {
                version,
                description,
            } => write!(
                f,
                "migration {version} ({description}) was edited after it was applied (checksum mismatch); restore the original file and put the change in a new migration"
            ),
            Self::Unknown { version } => write!(
                f,
                "migration {version} is applied in the database but missing from the migrations in use; use the folder that has it"
            ),
        }
    }
}

/// What a database has and would get.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Versions recorded as applied.
    pub applied: Vec<i64>,
    /// Versions that `migrate` would apply, in order.
    pub pending: Vec<i64>,
    pub problems: Vec<Problem>,
}

impl Plan {
    /// Compares recorded rows (`None`: no migrations table yet) with the set.
    ///
    /// Not called `new`: cargo-mutants never mutates a function of that
    /// name, and this one is the planner's whole logic.
    pub fn compare(set: &MigrationSet, rows: Option<&[AppliedRow]>) -> Self {
        let rows = rows.unwrap_or_default();
        let recorded: BTreeMap<i64, &AppliedRow> = rows.iter().map(|r| (r.version, r)).collect();
        let mut plan = Self {
            applied: rows
                .iter()
                .filter(|r| r.success)
                .map(|r| r.version)
                .collect(),
            ..Self::default()
        };
        for row in rows {
            if !row.success {
                plan.problems.push(Problem::Dirty {
                    version: row.version,
                });
            }
            match set.get(row.version) {
                None => plan.problems.push(Problem::Unknown {
                    version: row.version,
                }),
                Some(m) if hex(&m.checksum) != row.checksum_hex => {
                    plan.problems.push(Problem::ChecksumMismatch {
                        version: m.version,
                        description: m.description.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
        plan.pending = set
            .iter()
            .filter(|m| !recorded.contains_key(&m.version))
            .map(|m| m.version)
            .collect();
        plan
    }

    /// The plan of `migrate --to VERSION`: nothing past that version.
    #[must_use]
    pub fn up_to(mut self, to: Option<i64>) -> Self {
        if let Some(to) = to {
            self.pending.retain(|&v| v <= to);
        }
        self
    }

    /// The first problem as an error, if any.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.problems.first() {
            Some(problem) => Err(anyhow::anyhow!("{problem}")),
            None => Ok(()),
        }
    }
}

/// Reads `_sqlx_migrations`, or `None` if the database has no such table.
///
/// One simple-protocol round trip: this runs once per tenant on every deploy,
/// usually to find nothing to do.
pub async fn read_applied(conn: &mut PgConnection) -> anyhow::Result<Option<Vec<AppliedRow>>> {
    let mut backend = Backend::default();
    read_applied_on(conn, &SessionLimits::default(), &mut backend).await
}

/// [`read_applied`] as one step of a plain connection's work: refused on
/// any server process but the one `backend` saw (see [`Backend::guard`]),
/// under `limits`, and recording the server process it ran on, all in the
/// same round trip.
pub async fn read_applied_on(
    conn: &mut PgConnection,
    limits: &SessionLimits,
    backend: &mut Backend,
) -> anyhow::Result<Option<Vec<AppliedRow>>> {
    read_ledger_on(conn, TENANT_LEDGER, limits, backend).await
}

/// The master's own migrations, as [`read_applied`] reads a tenant's.
pub async fn read_master_applied(
    conn: &mut PgConnection,
) -> anyhow::Result<Option<Vec<AppliedRow>>> {
    read_ledger_on(
        conn,
        crate::state::MASTER_LEDGER,
        &SessionLimits::default(),
        &mut Backend::default(),
    )
    .await
}

/// Whether this database records tenantctl's master migrations, in
/// tenantctl's ledger or where an older version kept them: it is a master
/// (another installation's, or a staging copy), not a tenant. Also true
/// for an adopted master, which records none but has tenantctl's run
/// tables.
pub async fn holds_master(conn: &mut PgConnection) -> anyhow::Result<bool> {
    let master = MigrationSet::embedded_master();
    let own: bool = sqlx::query_scalar(&format!(
        "SELECT {} OR {}",
        crate::state::exists_sql("$1"),
        crate::state::exists_sql("$2")
    ))
    .persistent(false)
    .bind(crate::state::short(crate::state::MASTER_LEDGER))
    .bind(crate::state::short(crate::state::RUNS))
    .fetch_one(&mut *conn)
    .await
    .context("look for tenantctl's schema")?;
    if own {
        return Ok(true);
    }
    Ok(read_applied(conn)
        .await?
        .is_some_and(|rows| rows.iter().any(|row| master.recorded(row))))
}

/// The rows a multi-statement query returned, and the error that stopped
/// it, if one did (checked for a changed server process).
async fn fetch_rows(
    conn: &mut PgConnection,
    sql: &str,
) -> (Vec<sqlx::postgres::PgRow>, Option<anyhow::Error>) {
    let mut rows = Vec::new();
    let mut stream = conn.fetch_many(sql);
    loop {
        match stream.try_next().await {
            Ok(Some(sqlx::Either::Right(row))) => rows.push(row),
            Ok(Some(sqlx::Either::Left(_))) => {}
            Ok(None) => return (rows, None),
            Err(err) => return (rows, Some(Backend::check(anyhow::Error::new(err)))),
        }
    }
}

async fn read_ledger_on(
    conn: &mut PgConnection,
    ledger: &str,
    limits: &SessionLimits,
    backend: &mut Backend,
) -> anyhow::Result<Option<Vec<AppliedRow>>> {
    // A plain &str runs through the simple query protocol: no prepare step.
    // (`sqlx::raw_sql(..).fetch_all` would too, but its future is not Send
    // for every lifetime, so it cannot run on a spawned task.)
    let guarded = conn.is_in_transaction();
    let sql = read_statements(ledger, limits, *backend, guarded);
    let (rows, failed) = fetch_rows(conn, &sql).await;
    backend.observe(pid_of(&rows))?;
    read_outcome(conn, rows, failed, guarded).await
}

/// The statements that read a ledger, for one simple-protocol query.
///
/// Inside a pooled connection's transaction a missing table would abort
/// the transaction, so there the read is guarded by a savepoint (same
/// round trip); that transaction's limits and server process are set.
/// On a plain connection the guard, the limits (SET LOCAL: the query is
/// one implicit transaction) and the server process's pid come first,
/// so they are in before a missing table ends the query.
fn read_statements(
    ledger: &str,
    limits: &SessionLimits,
    backend: Backend,
    guarded: bool,
) -> String {
    // `pg_catalog.encode`: a tenant database's owner may set its
    // search_path to `public, pg_catalog` and make `public.encode(bytea,
    // text)`, which an unqualified call would run with our privileges.
    if guarded {
        format!(
            "SAVEPOINT tenantctl_read_applied; \
         SELECT version, pg_catalog.encode(checksum, 'hex') AS checksum, success, installed_on \
         FROM {ledger} ORDER BY version; \
         RELEASE SAVEPOINT tenantctl_read_applied"
        )
    } else {
        format!(
            "{}{}{BACKEND_PID}; \
             SELECT version, pg_catalog.encode(checksum, 'hex') AS checksum, success, installed_on \
             FROM {ledger} ORDER BY version",
            backend.guard(),
            limits.local().unwrap_or_default()
        )
    }
}

/// The applied rows among a read's rows, or what its error means (a
/// missing table: never migrated, `None`).
async fn read_outcome(
    conn: &mut PgConnection,
    rows: Vec<sqlx::postgres::PgRow>,
    failed: Option<anyhow::Error>,
    guarded: bool,
) -> anyhow::Result<Option<Vec<AppliedRow>>> {
    if let Some(err) = failed {
        // 42P01 undefined_table: never migrated.
        if has_sqlstate(&err, crate::error::sqlstate::UNDEFINED_TABLE) {
            if guarded {
                conn.execute(
                    "ROLLBACK TO SAVEPOINT tenantctl_read_applied; \
                     RELEASE SAVEPOINT tenantctl_read_applied",
                )
                .await
                .context("recover from reading a missing _sqlx_migrations")?;
            }
            return Ok(None);
        }
        if err.is::<BackendChanged>() {
            return Err(err);
        }
        return Err(err.context("read _sqlx_migrations"));
    }
    // Only the ledger's rows carry a checksum: not the pid's, nor those of
    // statements sent in the same query (a lock's).
    rows.iter()
        .filter(|row| row.try_column("checksum").is_ok())
        .map(|row| {
            Ok(AppliedRow {
                version: row.try_get("version")?,
                checksum_hex: row.try_get("checksum")?,
                success: row.try_get("success")?,
                installed_on: row.try_get("installed_on")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
        .context("read _sqlx_migrations")
}

/// Moves a cloned database's ledger times to now, their spacing kept: the
/// rows came from its template, applied when the template was built.
pub async fn restamp(conn: &mut PgConnection, ledger: &str) -> anyhow::Result<()> {
    conn.execute(
        format!(
            "UPDATE {ledger} SET installed_on = installed_on \
             + (pg_catalog.now() - (SELECT pg_catalog.max(installed_on) FROM {ledger}))"
        )
        .as_str(),
    )
    .await
    .with_context(|| format!("record the migrations in {ledger} as applied now"))?;
    Ok(())
}

/// [`lock_on`] then [`read_applied_on`], in one round trip on a plain
/// connection (two on a pinned one): what every step under the lock starts
/// with. The outer error: the lock was not taken. The inner one: it was,
/// and must be given back, but the read failed.
pub(crate) async fn lock_and_read_on(
    conn: &mut PgConnection,
    db: &DbName,
    limits: &SessionLimits,
    backend: &mut Backend,
) -> anyhow::Result<anyhow::Result<Option<Vec<AppliedRow>>>> {
    if conn.is_in_transaction() {
        lock_on(conn, db, backend).await?;
        return Ok(read_applied_on(conn, limits, backend).await);
    }
    let sql = format!(
        "{}; {}",
        lock_statements(db, false, *backend),
        read_statements(TENANT_LEDGER, limits, Backend::default(), false)
    );
    let (rows, failed) = fetch_rows(conn, &sql).await;
    let locked = rows
        .iter()
        .any(|r| r.try_column("tenantctl_locked").is_ok());
    if !locked {
        let err = failed.unwrap_or_else(|| anyhow::anyhow!("the lock query returned no rows"));
        return Err(lock_failed(err));
    }
    if let Err(changed) = backend.observe(pid_of(&rows)) {
        return Ok(Err(changed.into()));
    }
    Ok(read_outcome(conn, rows, failed, false).await)
}

/// Reads the database's migration state and compares it with the set.
pub async fn plan(conn: &mut PgConnection, set: &MigrationSet) -> anyhow::Result<Plan> {
    let rows = read_applied(conn).await?;
    Ok(Plan::compare(set, rows.as_deref()))
}

/// What a run did to one database's migrations, filled in as it goes, so a
/// caller still knows what was done when a later migration fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    /// The newest version applied before the run (`None`: none).
    pub before: Option<i64>,
    /// The newest version applied now.
    pub after: Option<i64>,
    /// The versions applied (or reverted) by this run, in the order done.
    pub versions: Vec<i64>,
    /// When the last of the versions this run applied was recorded, by the
    /// tenant server's clock: anything recorded later came after the run.
    pub installed_until: Option<DateTime<Utc>>,
}

impl Done {
    fn start(rows: Option<&[AppliedRow]>) -> Self {
        let before = newest(rows.unwrap_or_default());
        Self {
            before,
            after: before,
            ..Self::default()
        }
    }
}

/// The newest version recorded as applied.
pub fn newest(rows: &[AppliedRow]) -> Option<i64> {
    rows.iter().filter(|r| r.success).map(|r| r.version).max()
}

/// Applies every pending migration (with `to`, those up to and including
/// that version), recording each in `done` as it commits.
///
/// An up-to-date database costs one query and takes no lock. Otherwise the
/// work happens under sqlx's advisory lock, re-reading the state once the
/// lock is held, so two runners at once never apply a migration twice: the
/// second waits, then finds nothing pending.
pub async fn apply(
    conn: &mut PgConnection,
    db: &DbName,
    set: &MigrationSet,
    to: Option<i64>,
    done: &mut Done,
) -> anyhow::Result<()> {
    apply_with(conn, db, set, to, &SessionLimits::default(), done).await
}

/// [`apply`] under `--lock-timeout` and `--statement-timeout`, set in each
/// transaction it runs (session-level, then reset, only around the
/// statements of a `-- no-transaction` migration), so none outlives its
/// work on the server connection. On a plain connection every step after
/// the first runs only on the server process the first ran on (see
/// [`Backend`]): behind a transaction-mode pooler nobody declared, the
/// tenant stops with [`BackendChanged`] instead of taking the lock in one
/// place and migrating in another.
pub async fn apply_with(
    conn: &mut PgConnection,
    db: &DbName,
    set: &MigrationSet,
    to: Option<i64>,
    limits: &SessionLimits,
    done: &mut Done,
) -> anyhow::Result<()> {
    let mut backend = Backend::default();
    let rows = read_applied_on(conn, limits, &mut backend).await?;
    *done = Done::start(rows.as_deref());
    if let Some(rows) = rows {
        let plan = Plan::compare(set, Some(&rows)).up_to(to);
        plan.check()?;
        if plan.pending.is_empty() {
            return Ok(());
        }
    }

    lock_on(conn, db, &mut backend).await?;
    let result = apply_locked(conn, set, to, limits, &mut backend, done).await;
    let unlocked = unlock_on(conn, db, &mut backend).await;
    let cleared = crate::connect::clear_session(conn).await;
    result?;
    unlocked?;
    cleared
}

async fn apply_locked(
    conn: &mut PgConnection,
    set: &MigrationSet,
    to: Option<i64>,
    limits: &SessionLimits,
    backend: &mut Backend,
    done: &mut Done,
) -> anyhow::Result<()> {
    // Unguarded, but harmless wherever it runs: the table is the
    // database's, not the session's.
    ensure_ledger(conn, set.ledger).await?;
    let rows = read_ledger_on(conn, set.ledger, limits, backend).await?;
    *done = Done::start(rows.as_deref());
    let plan = Plan::compare(set, rows.as_deref()).up_to(to);
    plan.check()?;
    for version in plan.pending {
        let migration = set
            .get(version)
            .expect("pending versions come from the set");
        let installed = apply_one(conn, set.ledger, migration, limits, backend)
            .await
            .map_err(|err| {
                Backend::step_failed(err, || {
                    format!(
                        "apply migration {}_{}",
                        migration.version, migration.description
                    )
                })
            })?;
        done.versions.push(version);
        done.installed_until = done.installed_until.max(Some(installed));
        done.after = done.after.max(Some(version));
    }
    Ok(())
}

/// Runs one migration and records it, as sqlx's own `apply` does, except
/// that the row, execution time included, is written inside the
/// migration's transaction. sqlx updates the time in a second transaction
/// afterwards: one more commit, and WAL flush, per migration for a figure
/// only `sqlx migrate info` shows.
///
/// A `-- no-transaction` migration is split with PostgreSQL's grammar and
/// sent one statement at a time: sent whole, the server would run it as one
/// implicit transaction block, where `CREATE INDEX CONCURRENTLY` and the
/// like refuse to run.
async fn apply_one(
    conn: &mut PgConnection,
    ledger: &str,
    migration: &Migration,
    limits: &SessionLimits,
    backend: &Backend,
) -> anyhow::Result<DateTime<Utc>> {
    let started = Instant::now();
    if migration.no_tx {
        run_statements_with(conn, migration, limits, backend).await?;
        record(conn, ledger, migration, started.elapsed()).await
    } else {
        let mut tx = begin_guarded(conn, limits, backend).await?;
        tx.execute(&*migration.sql).await?;
        let installed = record(&mut tx, ledger, migration, started.elapsed()).await?;
        tx.commit().await.context("commit")?;
        Ok(installed)
    }
}

/// Begins a transaction, and on a plain connection, in the same round
/// trip, refuses to go on anywhere but on `backend` and sets the limits
/// for it. (A pinned connection's transaction has both already.)
pub(crate) async fn begin_guarded<'c>(
    conn: &'c mut PgConnection,
    limits: &SessionLimits,
    backend: &Backend,
) -> anyhow::Result<sqlx::Transaction<'c, sqlx::Postgres>> {
    if conn.is_in_transaction() {
        return conn.begin().await.context("begin");
    }
    let extra = format!("{}{}", backend.guard(), limits.local().unwrap_or_default());
    if extra.is_empty() {
        return conn.begin().await.context("begin");
    }
    conn.begin_with(format!("BEGIN; {extra}"))
        .await
        .map_err(|err| Backend::check(anyhow::Error::new(err)))
        .map_err(|err| {
            if err.is::<BackendChanged>() {
                err
            } else {
                err.context("begin")
            }
        })
}

/// Runs a `-- no-transaction` script one statement at a time, each its own
/// implicit transaction; a failure names the statement. Under the limits: set for the session before the
/// first statement (each statement must be alone in its query, outside
/// any transaction, so `SET LOCAL` cannot reach it) on `backend` only, and
/// reset after the last, also when one fails.
pub(crate) async fn run_statements_with(
    conn: &mut PgConnection,
    migration: &Migration,
    limits: &SessionLimits,
    backend: &Backend,
) -> anyhow::Result<()> {
    let script = Script::parse(&*migration.sql).context("split into statements")?;
    let (Some(set), Some(reset)) = (limits.session(), limits.reset()) else {
        for statement in script.statements() {
            conn.execute(statement.text())
                .await
                .with_context(|| statement.label())?;
        }
        return Ok(());
    };
    conn.execute(format!("{}{set}", backend.guard()).as_str())
        .await
        .map_err(|err| Backend::check(anyhow::Error::new(err)))?;
    let mut result = Ok(());
    for statement in script.statements() {
        if let Err(err) = conn.execute(statement.text()).await {
            result = Err(anyhow::Error::new(err).context(statement.label()));
            break;
        }
    }
    let reset = conn
        .execute(format!("{}{reset}", backend.guard()).as_str())
        .await
        .map_err(|err| Backend::check(anyhow::Error::new(err)))
        .map(|_| ());
    result.and(reset)
}

/// Creates the ledger if missing: a tenant's through sqlx (its own DDL,
/// where sqlx-cli expects it), the master's with the same columns in
/// tenantctl's schema.
async fn ensure_ledger(conn: &mut PgConnection, ledger: &str) -> anyhow::Result<()> {
    if ledger == TENANT_LEDGER {
        return conn
            .ensure_migrations_table()
            .await
            .context("create _sqlx_migrations");
    }
    crate::state::ensure_schema(conn).await?;
    conn.execute(
        format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (\
               version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
               installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, \
               checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
        )
        .as_str(),
    )
    .await
    .with_context(|| format!("create {ledger}"))?;
    Ok(())
}

/// Inserts the `_sqlx_migrations` row sqlx would write for this migration;
/// returns its `installed_on`.
async fn record(
    conn: &mut PgConnection,
    ledger: &str,
    migration: &Migration,
    took: Duration,
) -> anyhow::Result<DateTime<Utc>> {
    sqlx::query_scalar(&format!(
        "INSERT INTO {ledger} (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, TRUE, $3, $4) RETURNING installed_on"
    ))
    .persistent(false)
    .bind(migration.version)
    .bind(&*migration.description)
    .bind(&*migration.checksum)
    .bind(i64::try_from(took.as_nanos()).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await
    .with_context(|| format!("record migration {}", migration.version))
}

/// sqlx's advisory-lock key for a database (`generate_lock_id` in
/// sqlx-postgres), so two tenantctl runs exclude each other, and so do
/// tenantctl and sqlx's `Migrator` (sqlx-cli's `migrate run` takes no lock). Computed
/// here from the name we already know, instead of asking the server for
/// `current_database()` first as sqlx does.
pub fn lock_id(db: &DbName) -> i64 {
    const CRC_IEEE: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    0x3d32_ad9e * i64::from(CRC_IEEE.checksum(db.as_str().as_bytes()))
}

/// Waits for the database's migration lock. The key is a number computed
/// above, so it is written into the statement: one simple-protocol round
/// trip instead of a prepare and an execute.
///
/// `--lock-timeout` and `--statement-timeout` are for migrations blocked by
/// application traffic, not for another deploy holding this lock: while
/// waiting for it both are lifted, then put back as they were, all in one
/// round trip and all transaction-local: a several-statement query is one
/// implicit transaction, so on a plain connection nothing outlives it, and
/// inside a pooled connection's transaction the values are restored
/// explicitly (RESET would restore the server's defaults, not the values
/// tenantctl set, and a session-level SET would reach the pooler's next
/// client).
///
/// On a pinned connection (transaction-mode pooler), whose work commits
/// only when it is released, the lock is the transaction-level one: it
/// comes off exactly at that commit, never before the rows are visible, and
/// never outlives a failed commit on a server connection the pooler reuses.
/// It shares its key space with the session-level lock sqlx takes, so the
/// two still exclude each other.
pub(crate) async fn lock(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    lock_on(conn, db, &mut Backend::default()).await
}

/// Waits for the advisory lock with this key, as [`lock`] does (timeouts
/// lifted while waiting; transaction-level on a pinned connection or
/// inside a transaction, session-level otherwise).
pub(crate) async fn lock_key(conn: &mut PgConnection, key: i64) -> anyhow::Result<()> {
    let function = if conn.is_in_transaction() {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_lock"
    };
    conn.execute(
        format!(
            "SELECT set_config('tenantctl.lock_timeout', current_setting('lock_timeout'), true), \
                    set_config('tenantctl.statement_timeout', current_setting('statement_timeout'), true); \
             SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; \
             SELECT {function}({key}); \
             SELECT set_config('lock_timeout', current_setting('tenantctl.lock_timeout'), true), \
                    set_config('statement_timeout', current_setting('tenantctl.statement_timeout'), true)"
        )
        .as_str(),
    )
    .await?;
    Ok(())
}

/// [`lock`] on a plain connection's `backend` only: the lock is taken in
/// the same query as a guard that refuses any other server process, so it
/// is never left on a server connection the work does not run on.
pub(crate) async fn lock_on(
    conn: &mut PgConnection,
    db: &DbName,
    backend: &mut Backend,
) -> anyhow::Result<()> {
    let sql = lock_statements(db, conn.is_in_transaction(), *backend);
    let rows = conn
        .fetch_all(sql.as_str())
        .await
        .map_err(|err| lock_failed(anyhow::Error::new(err)))?;
    backend.observe(pid_of(&rows))?;
    Ok(())
}

/// The statements of [`lock_on`], ending with the server process's pid.
fn lock_statements(db: &DbName, pinned: bool, backend: Backend) -> String {
    let function = if pinned {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_lock"
    };
    format!(
        "{guard}SELECT set_config('tenantctl.lock_timeout', current_setting('lock_timeout'), true), \
                set_config('tenantctl.statement_timeout', current_setting('statement_timeout'), true); \
         SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; \
         SELECT true AS tenantctl_locked FROM {function}({}); \
         SELECT set_config('lock_timeout', current_setting('tenantctl.lock_timeout'), true), \
                set_config('statement_timeout', current_setting('tenantctl.statement_timeout'), true); \
         {BACKEND_PID}",
        lock_id(db),
        guard = if pinned {
            String::new()
        } else {
            backend.guard()
        },
    )
}

/// A lock query's error, named, unless the guard raised it.
fn lock_failed(err: anyhow::Error) -> anyhow::Error {
    let err = Backend::check(err);
    if err.is::<BackendChanged>() {
        err
    } else {
        err.context("take the migration lock")
    }
}

pub(crate) async fn unlock(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    unlock_on(conn, db, &mut Backend::default()).await
}

/// Gives the lock back, on `backend` only. `false` from the server (it
/// did not hold the lock) means this query ran elsewhere.
pub(crate) async fn unlock_on(
    conn: &mut PgConnection,
    db: &DbName,
    backend: &mut Backend,
) -> anyhow::Result<()> {
    unlock_then(conn, db, backend, "").await
}

/// [`unlock_on`], then [`crate::connect::clear_session`], in one round
/// trip on a plain connection (a pinned one is cleared by its release).
pub(crate) async fn unlock_and_clear_on(
    conn: &mut PgConnection,
    db: &DbName,
    backend: &mut Backend,
) -> anyhow::Result<()> {
    if conn.is_in_transaction() {
        return Ok(());
    }
    let then = format!("; {}", crate::connect::SESSION_CLEANUP);
    unlock_then(conn, db, backend, &then).await?;
    conn.clear_cached_statements()
        .await
        .context("forget the statements the cleanup deallocated")
}

/// [`unlock_on`], with `then` (statements after a `; `) sent in the same
/// query once the lock is given back.
async fn unlock_then(
    conn: &mut PgConnection,
    db: &DbName,
    backend: &mut Backend,
    then: &str,
) -> anyhow::Result<()> {
    // A pinned connection holds the transaction-level lock (see `lock`),
    // which its commit releases.
    if conn.is_in_transaction() {
        return Ok(());
    }
    let sql = format!(
        "{}SELECT pg_advisory_unlock({}) AS unlocked, pg_catalog.pg_backend_pid() AS tenantctl_backend{then}",
        backend.guard(),
        lock_id(db)
    );
    // A pooler that moved this connection may hand the lock's server
    // connection back on a later try: a few, so the lock is not left there
    // for the application's clients (and the next deploy) to find.
    let mut tries = 0;
    let rows = loop {
        tries += 1;
        match conn.fetch_all(sql.as_str()).await {
            Ok(rows) => break rows,
            Err(err) => {
                let err = Backend::check(anyhow::Error::new(err));
                if !err.is::<BackendChanged>() {
                    return Err(err.context("release the migration lock"));
                }
                if tries == 8 {
                    return Err(err);
                }
            }
        }
    };
    backend.observe(pid_of(&rows))?;
    let unlocked = rows
        .first()
        .and_then(|row| row.try_get::<bool, _>("unlocked").ok())
        .unwrap_or(false);
    anyhow::ensure!(
        unlocked,
        "release the migration lock: this session did not hold it"
    );
    Ok(())
}

/// Records every migration up to `to` as applied without running it, for a
/// database whose schema another tool created. Checksums are the files'
/// own, as sqlx would record them, so later runs validate cleanly. Refuses
/// if any of those versions is already recorded with another checksum or as
/// failed; a version already recorded identically is left alone.
pub async fn baseline(
    conn: &mut PgConnection,
    db: &DbName,
    set: &MigrationSet,
    to: i64,
    recorded: &mut Vec<i64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        set.get(to).is_some(),
        "version {to} is not one of the migrations in use ({})",
        set.origin()
    );
    lock(conn, db).await?;
    let result = baseline_locked(conn, set, to, recorded).await;
    let unlocked = unlock(conn, db).await;
    result?;
    unlocked
}

async fn baseline_locked(
    conn: &mut PgConnection,
    set: &MigrationSet,
    to: i64,
    recorded: &mut Vec<i64>,
) -> anyhow::Result<()> {
    conn.ensure_migrations_table()
        .await
        .context("create _sqlx_migrations")?;
    let rows = read_applied(conn).await?.unwrap_or_default();
    let existing: BTreeMap<i64, &AppliedRow> = rows.iter().map(|r| (r.version, r)).collect();
    let mut to_record = Vec::new();
    for migration in set.iter().filter(|m| m.version <= to) {
        match existing.get(&migration.version) {
            Some(row) if row.success && row.checksum_hex == hex(&migration.checksum) => {}
            Some(_) => anyhow::bail!(
                "migration {} is already recorded differently (another checksum, or failed); refusing to baseline",
                migration.version
            ),
            None => to_record.push(migration),
        }
    }
    let mut tx = conn.begin().await.context("begin")?;
    for migration in &to_record {
        record(&mut tx, set.ledger, migration, Duration::ZERO).await?;
    }
    tx.commit().await.context("commit")?;
    recorded.extend(to_record.iter().map(|m| m.version));
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(set: &MigrationSet, version: i64) -> AppliedRow {
        AppliedRow {
            version,
            checksum_hex: hex(&set.get(version).expect("exists").checksum),
            success: true,
            installed_on: None,
        }
    }

    #[test]
    fn embedded_sets_have_one_migration_per_version() {
        for set in [
            MigrationSet::embedded_tenant(),
            MigrationSet::embedded_master(),
        ] {
            let versions: Vec<i64> = set.iter().map(|m| m.version).collect();
            let unique: std::collections::BTreeSet<i64> = versions.iter().copied().collect();
            assert_eq!(versions.len(), unique.len(), "{}", set.origin());
        }
    }

    #[test]
    fn a_folder_with_two_files_of_one_version_is_refused() {
        let dir = std::env::temp_dir().join(format!("tenantctl-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, sql) in [
            ("20240201000001_a.sql", "SELECT 1;"),
            ("020240201000001_b.sql", "SELECT 2;"),
            ("20240201000002_c.up.sql", "SELECT 3;"),
            ("20240201000002_c.down.sql", "SELECT 4;"),
        ] {
            std::fs::write(dir.join(name), sql).expect("write");
        }
        let err = check_unique_versions(&dir).expect_err("duplicate");
        let text = err.to_string();
        std::fs::remove_file(dir.join("020240201000001_b.sql")).expect("rm");
        let ok = check_unique_versions(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            text.contains("20240201000001_a.sql") && text.contains("020240201000001_b.sql"),
            "{text}"
        );
        assert!(ok.is_ok(), "an up/down pair shares its version: {ok:?}");
    }

    #[test]
    fn embedded_tenant_schema_has_settings() {
        let set = MigrationSet::embedded_tenant();
        assert!(set.iter().count() >= 4);
        assert!(set.iter().any(|m| m.sql.contains("CREATE TABLE settings")));
    }

    #[test]
    fn plan_finds_pending_and_problems() {
        let set = MigrationSet::embedded_tenant();
        let versions: Vec<i64> = set.iter().map(|m| m.version).collect();

        let fresh = Plan::compare(&set, None);
        assert_eq!(fresh.pending, versions);
        assert!(fresh.problems.is_empty());

        let mut rows = vec![row(&set, versions[0]), row(&set, versions[1])];
        rows[1].checksum_hex = "00".into();
        rows.push(AppliedRow {
            version: 1,
            checksum_hex: "00".into(),
            success: false,
            installed_on: None,
        });
        let plan = Plan::compare(&set, Some(&rows));
        assert_eq!(plan.pending, versions[2..].to_vec());
        assert_eq!(plan.applied, versions[..2].to_vec());
        assert!(plan.problems.contains(&Problem::Dirty { version: 1 }));
        assert!(plan.problems.contains(&Problem::Unknown { version: 1 }));
        assert!(plan.problems.iter().any(|p| matches!(
            p,
            Problem::ChecksumMismatch { version, .. } if *version == versions[1]
        )));
    }
}
