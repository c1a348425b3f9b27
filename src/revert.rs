//! Undoing applied migrations: planning which down scripts a database would
//! run to get back to a version, and running them as sqlx's
//! `Migrator::undo` does, one transaction per migration that also removes
//! its `_sqlx_migrations` row.

use std::fmt;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::Migration;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::connect::{Backend, SessionLimits};
use crate::dbname::DbName;
use crate::migrations::{self, AppliedRow, Done, MigrationSet, Problem, hex};

/// Where a revert stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Revert every applied migration newer than this version; the version
    /// itself stays applied. 0 reverts everything, and every one of those
    /// migrations must have a down script.
    Version(i64),
    /// `--to 0`: revert every reversible migration applied after the newest
    /// irreversible one. A plain `.sql` migration has no down script, so
    /// nothing older than it can be taken back in order.
    AllReversible,
    /// `--run`: exactly the versions one run applied that are still
    /// applied. A migration newer than the tenant's newest before the run
    /// (`before`) that the run did not apply came later, and would have to
    /// be reverted first: it is refused, not reverted. Migrations the run
    /// applied out of order, below `before`, are taken back all the same.
    Run {
        id: i64,
        versions: Vec<i64>,
        before: Option<i64>,
        /// When the run recorded the last of them on this tenant (tenant
        /// server's clock); a row recorded later came after the run, even
        /// one with an older version or one of the run's own versions
        /// applied again. `None` for runs that did not record it.
        installed_until: Option<DateTime<Utc>>,
    },
}

impl Target {
    /// The target of `--to VERSION` as the operator types it.
    pub fn from_flag(to: i64) -> Self {
        if to == 0 {
            Self::AllReversible
        } else {
            Self::Version(to)
        }
    }

    /// Whether an applied version is the revert's business: to revert, or
    /// to refuse over.
    fn covers(&self, version: i64) -> bool {
        match self {
            Self::Version(v) => version > *v,
            Self::AllReversible => true,
            Self::Run {
                versions, before, ..
            } => versions.contains(&version) || version > before.unwrap_or(0),
        }
    }

    /// For `--run`: whether a row was recorded after the run.
    fn later_than_run(&self, row: &AppliedRow) -> bool {
        match self {
            Self::Run {
                installed_until: Some(until),
                ..
            } => row.installed_on.is_some_and(|at| at > *until),
            _ => false,
        }
    }
}

/// Why a database cannot be reverted as asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// A migration to revert is irreversible (a plain `.sql` file) or its
    /// `.down.sql` is missing.
    NoDownScript { version: i64, description: String },
    /// `revert --run`: a migration the run did not apply is applied after
    /// the oldest one it did, so the run cannot be taken back on its own.
    NotFromRun { version: i64, run: i64 },
    /// Another company's row names the same database: reverting it would
    /// take back the other company's schema too.
    SharedDatabase { with: Vec<String> },
    /// The database's migration records have a problem (dirty, edited,
    /// unknown to the folder).
    #[serde(untagged)]
    Problem(Problem),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDownScript {
                version,
                description,
            } => write!(
                f,
                "migration {version} ({description}) has no down script ({version}_{}.down.sql), so it cannot be reverted",
                description.replace(' ', "_")
            ),
            Self::NotFromRun { version, run } => write!(
                f,
                "migration {version} was applied after run {run}, by something else: revert that first (the later run, or tenant revert --to)"
            ),
            Self::SharedDatabase { with } => write!(
                f,
                "its database is also named by {}: reverting it would revert theirs; give each company a database of its own first",
                with.join(", ")
            ),
            Self::Problem(problem) => problem.fmt(f),
        }
    }
}

/// What reverting one database would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevertPlan {
    /// Versions whose down scripts would run, newest first.
    pub to_revert: Vec<i64>,
    /// Why it cannot go ahead; empty when it can.
    pub refusals: Vec<Refusal>,
    /// The newest applied version now.
    pub latest: Option<i64>,
}

impl RevertPlan {
    /// Plans a revert from a database's recorded rows (`None`: no
    /// migrations table, nothing to revert).
    ///
    /// Every migration to revert must be known to the set with the
    /// checksum it was applied with and have a down script; a dirty row
    /// anywhere refuses the whole database, as sqlx's `undo` does, since
    /// its schema is in a state no script was written for.
    pub fn compare(set: &MigrationSet, rows: Option<&[AppliedRow]>, target: &Target) -> Self {
        let rows = rows.unwrap_or_default();
        let mut plan = Self {
            latest: migrations::newest(rows),
            ..Self::default()
        };
        for row in rows.iter().filter(|r| !r.success) {
            plan.refusals.push(Refusal::Problem(Problem::Dirty {
                version: row.version,
            }));
        }
        let mut newer: Vec<&AppliedRow> = rows
            .iter()
            .filter(|r| r.success && (target.covers(r.version) || target.later_than_run(r)))
            .collect();
        newer.sort_by_key(|r| std::cmp::Reverse(r.version));
        for row in newer {
            if let Target::Run { id, versions, .. } = target
                && (!versions.contains(&row.version) || target.later_than_run(row))
            {
                plan.refusals.push(Refusal::NotFromRun {
                    version: row.version,
                    run: *id,
                });
                continue;
            }
            let up = set.get(row.version);
            // `--to 0` stops at the newest plain migration, whatever its
            // record says: it is never reverted, so never refused.
            if *target == Target::AllReversible
                && up.is_some_and(|m| !m.migration_type.is_reversible())
            {
                break;
            }
            let Some(up) = up else {
                plan.refusals.push(Refusal::Problem(Problem::Unknown {
                    version: row.version,
                }));
                continue;
            };
            if hex(&up.checksum) != row.checksum_hex {
                plan.refusals
                    .push(Refusal::Problem(Problem::ChecksumMismatch {
                        version: up.version,
                        description: up.description.to_string(),
                    }));
                continue;
            }
            if set.down(row.version).is_none() {
                plan.refusals.push(Refusal::NoDownScript {
                    version: up.version,
                    description: up.description.to_string(),
                });
                continue;
            }
            plan.to_revert.push(row.version);
        }
        plan
    }

    /// The refusals as one error, if any.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.refusals.is_empty() {
            return Ok(());
        }
        let reasons: Vec<String> = self.refusals.iter().map(ToString::to_string).collect();
        Err(anyhow::anyhow!("{}", reasons.join("; ")))
    }
}

/// Reads a database's records and plans a revert.
pub async fn plan(
    conn: &mut PgConnection,
    set: &MigrationSet,
    target: &Target,
) -> anyhow::Result<RevertPlan> {
    let rows = migrations::read_applied(conn).await?;
    Ok(RevertPlan::compare(set, rows.as_deref(), target))
}

/// Runs the down scripts `expected` names (newest first), under sqlx's
/// migration lock, recording each in `done` as it commits.
///
/// The state is planned again once the lock is held: if it no longer
/// calls for exactly `expected` (another deploy ran in between), nothing is
/// reverted, since the operator agreed to that list and no other.
///
/// The limits are set in each transaction (around a `-- no-transaction`
/// script, for the session, then reset), and on a plain connection every
/// step runs on the server process that took the lock (see
/// [`migrations::apply_with`]).
pub async fn revert(
    conn: &mut PgConnection,
    db: &DbName,
    set: &MigrationSet,
    target: &Target,
    expected: &[i64],
    limits: &SessionLimits,
    done: &mut Done,
) -> anyhow::Result<()> {
    let mut backend = Backend::default();
    // The lock and the state under it in one round trip. Its failure on a
    // connection found gone is marked: nothing was done on it.
    let read = migrations::lock_and_read_on(conn, db, limits, &mut backend)
        .await
        .map_err(|err| {
            if crate::error::sqlstate::connection_lost(&err) {
                crate::error::Unused(err.into()).into()
            } else {
                err
            }
        })?;
    let result = match read {
        Ok(rows) => revert_locked(conn, set, target, expected, rows, limits, &backend, done).await,
        Err(err) => Err(err),
    };
    let released = migrations::unlock_and_clear_on(conn, db, &mut backend).await;
    result?;
    released
}

#[expect(
    clippy::too_many_arguments,
    reason = "the state read under the lock joins the revert's own inputs"
)]
async fn revert_locked(
    conn: &mut PgConnection,
    set: &MigrationSet,
    target: &Target,
    expected: &[i64],
    rows: Option<Vec<AppliedRow>>,
    limits: &SessionLimits,
    backend: &Backend,
    done: &mut Done,
) -> anyhow::Result<()> {
    let plan = RevertPlan::compare(set, rows.as_deref(), target);
    *done = Done {
        before: plan.latest,
        after: plan.latest,
        ..Done::default()
    };
    plan.check()?;
    if plan.to_revert != expected {
        anyhow::bail!(
            "its migrations changed after the revert was planned (it would now revert {}, not {}); nothing was reverted on it: run the revert again",
            versions(&plan.to_revert),
            versions(expected)
        );
    }
    let mut remaining: Vec<i64> = rows
        .unwrap_or_default()
        .iter()
        .filter(|r| r.success)
        .map(|r| r.version)
        .collect();
    for &version in expected {
        let down = set
            .down(version)
            .expect("planned versions have down scripts");
        if down.no_tx {
            // Marked dirty first (see `revert_one`): from then on it no
            // longer counts as applied, whether or not its script finishes.
            remaining.retain(|&v| v != version);
            done.after = remaining.iter().copied().max();
        }
        revert_one(conn, down, limits, backend)
            .await
            .map_err(|err| {
                Backend::step_failed(err, || {
                    format!("revert migration {}_{}", down.version, down.description)
                })
            })?;
        remaining.retain(|&v| v != version);
        done.versions.push(version);
        done.after = remaining.iter().copied().max();
    }
    Ok(())
}

/// Runs one down script and removes the migration's row in the same
/// transaction, so the record never disagrees with the schema. A
/// `-- no-transaction` down script runs one statement at a time, as its up
/// script did, and its row goes once every statement has run.
async fn revert_one(
    conn: &mut PgConnection,
    down: &Migration,
    limits: &SessionLimits,
    backend: &Backend,
) -> anyhow::Result<()> {
    if down.no_tx {
        // Marked failed (dirty) first: if a statement fails, or the run is
        // killed, half way, the schema is between versions, and every later
        // run must refuse this tenant until someone repairs it, as sqlx
        // does for a migration that failed part-way.
        //
        // In a transaction of its own, guarded: the parameterized UPDATE
        // takes two round trips.
        let mut tx = migrations::begin_guarded(conn, &SessionLimits::default(), backend).await?;
        sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
            .persistent(false)
            .bind(down.version)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("mark migration {} as being reverted", down.version))?;
        tx.commit().await.context("commit")?;
        migrations::run_statements_with(conn, down, limits, backend).await?;
        let mut tx = migrations::begin_guarded(conn, &SessionLimits::default(), backend).await?;
        forget(&mut tx, down.version).await?;
        tx.commit().await.context("commit")
    } else if conn.is_in_transaction() {
        // Pinned: the pooled connection's transaction holds it all.
        let mut tx = migrations::begin_guarded(conn, limits, backend).await?;
        tx.execute(&*down.sql).await?;
        forget(&mut tx, down.version).await?;
        tx.commit().await.context("commit")
    } else {
        revert_in_one_query(conn, down, limits, backend).await
    }
}

/// What the row check raises when the migration's row was not there to
/// delete: text PostgreSQL cannot read as a number, as the backend guard's
/// (built from the count, so the planner cannot fold it into an error
/// raised whether or not the row went).
const NOT_RECORDED_MARK: &str = "tenantctl migration no longer recorded";

/// A transactional down script on a plain connection, in one round trip:
/// `BEGIN`, the guard and the limits, the script, the deletion of its row
/// (refused, so nothing commits, unless exactly that one row went), and
/// `COMMIT`. After any error the transaction is rolled back: the server
/// skipped everything after the failing statement, `COMMIT` included.
async fn revert_in_one_query(
    conn: &mut PgConnection,
    down: &Migration,
    limits: &SessionLimits,
    backend: &Backend,
) -> anyhow::Result<()> {
    let version = down.version;
    // The script's own text ends where it ends: a line break closes a
    // trailing `--` comment, and the `;` a statement it left open.
    let sql = format!(
        "BEGIN; {guard}{limits}{script}\n;\n\
         WITH gone AS (DELETE FROM _sqlx_migrations WHERE version = {version} RETURNING 1) \
         SELECT ('{NOT_RECORDED_MARK} ' || n)::int FROM (SELECT pg_catalog.count(*) AS n FROM gone) AS c WHERE n <> 1; \
         COMMIT",
        guard = backend.guard(),
        limits = limits.local().unwrap_or_default(),
        script = &*down.sql,
    );
    let Err(err) = conn.execute(sql.as_str()).await else {
        return Ok(());
    };
    // Best effort: on a broken connection the server rolls back anyway.
    let _ = conn.execute("ROLLBACK").await;
    let err = Backend::check(anyhow::Error::new(err));
    if is_not_recorded(&err) {
        // Under the migration lock nobody else can have removed it; if
        // the row is gone anyway, the down script must not commit.
        anyhow::bail!("migration {version} was no longer recorded in _sqlx_migrations");
    }
    Err(err)
}

/// Whether an error is the row check's of [`revert_in_one_query`].
fn is_not_recorded(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .is_some_and(|db| db.message().contains(NOT_RECORDED_MARK))
    })
}

/// Deletes a migration's `_sqlx_migrations` row, as sqlx's revert does.
async fn forget(conn: &mut PgConnection, version: i64) -> anyhow::Result<()> {
    let deleted = sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .persistent(false)
        .bind(version)
        .execute(conn)
        .await
        .with_context(|| format!("remove migration {version} from _sqlx_migrations"))?;
    // Under the migration lock nobody else can have removed it; if the row
    // is gone anyway, the transaction must not commit the down script.
    anyhow::ensure!(
        deleted.rows_affected() == 1,
        "migration {version} was no longer recorded in _sqlx_migrations"
    );
    Ok(())
}

/// Versions as a comma-separated list, `none` when empty.
fn versions(list: &[i64]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    crate::text::join_versions(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::MigrationType;

    /// 1 plain, 2 reversible, 3 plain, 4 and 5 reversible, 6 an up file
    /// whose down file is missing.
    fn set() -> MigrationSet {
        let m = |v: i64, t: MigrationType| {
            Migration::new(
                v,
                format!("m{v}").into(),
                t,
                format!("SELECT {v}").into(),
                false,
            )
        };
        MigrationSet::from_migrations(vec![
            m(1, MigrationType::Simple),
            m(2, MigrationType::ReversibleUp),
            m(2, MigrationType::ReversibleDown),
            m(3, MigrationType::Simple),
            m(4, MigrationType::ReversibleUp),
            m(4, MigrationType::ReversibleDown),
            m(5, MigrationType::ReversibleUp),
            m(5, MigrationType::ReversibleDown),
            m(6, MigrationType::ReversibleUp),
        ])
    }

    fn rows(set: &MigrationSet, versions: &[i64]) -> Vec<AppliedRow> {
        versions
            .iter()
            .map(|&v| AppliedRow {
                version: v,
                checksum_hex: hex(&set.get(v).expect("in set").checksum),
                success: true,
                installed_on: None,
            })
            .collect()
    }

    fn no_down(version: i64) -> Refusal {
        Refusal::NoDownScript {
            version,
            description: format!("m{version}"),
        }
    }

    #[test]
    fn reverts_newest_first_down_to_the_target_which_stays() {
        let set = set();
        let plan = RevertPlan::compare(
            &set,
            Some(&rows(&set, &[1, 2, 3, 4, 5])),
            &Target::Version(3),
        );
        assert_eq!(plan.to_revert, [5, 4]);
        assert!(plan.refusals.is_empty());
        assert_eq!(plan.latest, Some(5));
        // At or below the target: nothing to do.
        let plan = RevertPlan::compare(&set, Some(&rows(&set, &[1, 2])), &Target::Version(3));
        assert!(plan.to_revert.is_empty() && plan.refusals.is_empty());
        let plan = RevertPlan::compare(&set, None, &Target::Version(3));
        assert_eq!(plan, RevertPlan::default());
    }

    #[test]
    fn an_irreversible_migration_in_the_way_is_refused_but_bounds_to_zero() {
        let set = set();
        let applied = rows(&set, &[1, 2, 3, 4, 5]);
        let plan = RevertPlan::compare(&set, Some(&applied), &Target::Version(1));
        assert_eq!(plan.refusals, [no_down(3)]);
        assert!(plan.check().is_err());
        // --to 0 stops above the newest plain migration.
        let plan = RevertPlan::compare(&set, Some(&applied), &Target::from_flag(0));
        assert_eq!(plan.to_revert, [5, 4]);
        assert!(plan.refusals.is_empty());
        // A plain migration newest of all: --to 0 has nothing to do.
        let plan = RevertPlan::compare(&set, Some(&rows(&set, &[1, 2, 3])), &Target::from_flag(0));
        assert!(plan.to_revert.is_empty() && plan.refusals.is_empty());
        // An up file whose down file is missing is refused even by --to 0.
        let plan = RevertPlan::compare(
            &set,
            Some(&rows(&set, &[1, 2, 3, 4, 5, 6])),
            &Target::from_flag(0),
        );
        assert_eq!(plan.refusals, [no_down(6)]);
    }

    #[test]
    fn a_run_is_taken_back_exactly_even_out_of_order_and_not_past_a_later_one() {
        let set = set();
        let run = |versions: Vec<i64>, before| Target::Run {
            id: 7,
            versions,
            before,
            installed_until: None,
        };
        // 4 and 5 were there; the run applied 2 late, out of order.
        let applied = rows(&set, &[1, 2, 3, 4, 5]);
        let plan = RevertPlan::compare(&set, Some(&applied), &run(vec![2], Some(5)));
        assert_eq!(plan.to_revert, [2]);
        assert!(plan.refusals.is_empty());
        // The run applied 4 and 5; something later applied 6 (no down
        // script either): refused, naming 6.
        let applied = rows(&set, &[1, 2, 3, 4, 5, 6]);
        let plan = RevertPlan::compare(&set, Some(&applied), &run(vec![4, 5], Some(3)));
        assert_eq!(plan.refusals, [Refusal::NotFromRun { version: 6, run: 7 }]);
        assert_eq!(plan.to_revert, [5, 4]);
        // Already taken back by hand: nothing to do.
        let applied = rows(&set, &[1, 2, 3]);
        let plan = RevertPlan::compare(&set, Some(&applied), &run(vec![4, 5], Some(3)));
        assert!(plan.to_revert.is_empty() && plan.refusals.is_empty());
        // A run from nothing that applied a plain migration cannot be undone.
        let plan = RevertPlan::compare(&set, Some(&rows(&set, &[1, 2])), &run(vec![1, 2], None));
        assert_eq!(plan.to_revert, [2]);
        assert_eq!(plan.refusals, [no_down(1)]);
    }

    #[test]
    fn a_row_recorded_after_the_run_is_refused_even_below_or_among_its_versions() {
        let set = set();
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0);
        let mut applied = rows(&set, &[1, 2, 3, 4, 5]);
        for (row, when) in applied.iter_mut().zip([10, 11, 20, 21, 30]) {
            row.installed_on = at(when);
        }
        // The run applied 4 at 21 (3 was there); 5 came at 30, and is newer
        // than `before` too; 2 was re-recorded at 31 by someone else.
        applied[1].installed_on = at(31);
        let target = Target::Run {
            id: 7,
            versions: vec![2, 4],
            before: Some(3),
            installed_until: at(21),
        };
        let plan = RevertPlan::compare(&set, Some(&applied), &target);
        assert_eq!(
            plan.refusals,
            [
                Refusal::NotFromRun { version: 5, run: 7 },
                Refusal::NotFromRun { version: 2, run: 7 },
            ]
        );
        assert_eq!(plan.to_revert, [4]);
    }

    #[test]
    fn dirty_anywhere_and_edited_or_unknown_in_range_are_refused() {
        let set = set();
        let mut applied = rows(&set, &[1, 2, 3, 4, 5]);
        applied[0].success = false;
        let plan = RevertPlan::compare(&set, Some(&applied), &Target::Version(3));
        assert_eq!(
            plan.refusals,
            [Refusal::Problem(Problem::Dirty { version: 1 })]
        );

        let mut applied = rows(&set, &[1, 2, 3, 4, 5]);
        applied[4].checksum_hex = "00".into();
        applied[1].checksum_hex = "00".into();
        let plan = RevertPlan::compare(&set, Some(&applied), &Target::Version(3));
        assert_eq!(
            plan.refusals,
            [Refusal::Problem(Problem::ChecksumMismatch {
                version: 5,
                description: "m5".into()
            })],
            "2 is edited too, but stays applied"
        );

        let mut applied = rows(&set, &[1, 2, 3, 4]);
        applied.push(AppliedRow {
            version: 9,
            checksum_hex: "00".into(),
            success: true,
            installed_on: None,
        });
        let plan = RevertPlan::compare(&set, Some(&applied), &Target::Version(3));
        assert_eq!(
            plan.refusals,
            [Refusal::Problem(Problem::Unknown { version: 9 })]
        );
        assert_eq!(plan.to_revert, [4]);
    }
}
