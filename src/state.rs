//! tenantctl's own state in the master: a schema of its own, `tenantctl`,
//! never the application's.
//!
//! The application's ORM owns the schema its companies table lives in
//! (Prisma, Rails, Django and Laravel all diff `public` by default): a table
//! of ours there is drift to it, which `prisma migrate dev` answers by
//! offering to reset the schema, and `prisma db push` by dropping the table.
//! So every table of tenantctl's lives in `tenantctl`, named here and only
//! here, and every query names the schema. Older versions put them beside
//! the companies table as `_tenantctl_*`; `master migrate` moves them
//! ([`move_legacy`]), and every other command refuses to run on a master
//! that still has them, rather than write records where the next
//! `master migrate` would not look.

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::connect::has_sqlstate;

/// The schema.
pub const SCHEMA: &str = "tenantctl";

/// Each company's lifecycle, where the companies table cannot hold it,
/// and the claim of a company not yet in it (see [`crate::companies`]).
pub const LIFECYCLE: &str = "tenantctl.lifecycle";
/// Companies being created, kept out of a companies table that cannot
/// say "not ready" until their database is (see [`crate::claims`]).
pub const CLAIMS: &str = "tenantctl.claims";
/// Each company's server, where the companies table has no column for it.
pub const PLACEMENT: &str = "tenantctl.placement";
/// Moves between servers in progress (see [`crate::moves`]).
pub const MOVES: &str = "tenantctl.moves";
/// The steps of a row of [`MOVES`] while its company is being moved (the
/// master still places it on the source), as an SQL list: what reading the
/// companies table joins on to call a tenant `moving`, without knowing the
/// steps themselves (`moves::Step` holds itself to this list in a test).
pub const MOVES_UNSWITCHED_SQL: &str =
    "'started', 'source_closed', 'copied', 'verified', 'switching'";
/// One row per recorded run (see [`crate::runs`]).
pub const RUNS: &str = "tenantctl.runs";
/// One row per tenant a run changed or failed on.
pub const RUN_TENANTS: &str = "tenantctl.run_tenants";
/// The master migrations tenantctl applied, where tenantctl created the
/// companies table itself (sqlx's ledger layout, in our schema).
pub const MASTER_LEDGER: &str = "tenantctl._sqlx_migrations";

/// Where older versions kept each table (beside the companies table), and
/// its name in [`SCHEMA`].
pub const LEGACY: [(&str, &str); 5] = [
    ("_tenantctl_lifecycle", "lifecycle"),
    ("_tenantctl_placement", "placement"),
    ("_tenantctl_moves", "moves"),
    ("_tenantctl_runs", "runs"),
    ("_tenantctl_run_tenants", "run_tenants"),
];

/// A table's name within [`SCHEMA`] (`runs` for [`RUNS`]).
pub fn short(table: &str) -> &str {
    table.rsplit_once('.').map_or(table, |(_, name)| name)
}

/// SQL for whether table `$n` (a short name) exists in [`SCHEMA`], read
/// from the catalog alone: `to_regclass` needs USAGE on the schema and
/// fails without it, where a role that may not read our tables should
/// get as far as the statement that needs them, and its clear error.
pub fn exists_sql(param: &str) -> String {
    format!(
        "EXISTS (SELECT FROM pg_class o JOIN pg_namespace s ON s.oid = o.relnamespace \
                 WHERE s.nspname = '{SCHEMA}' AND o.relname = {param})"
    )
}

/// The legacy names, for a catalog query's `= ANY($n)`.
pub fn legacy_names() -> Vec<&'static str> {
    LEGACY.iter().map(|(old, _)| *old).collect()
}

/// Creates the schema if it is missing. Checked first: `CREATE SCHEMA IF
/// NOT EXISTS` needs CREATE on the database even when the schema exists,
/// and a role that may only write rows must still get through.
///
/// A schema of that name that is already there must belong to this role,
/// the database's owner or a superuser (not merely a group this role is
/// in: its other members would control it too): its owner controls every record
/// tenantctl keeps in it (a claim names a database `tenant drop` drops),
/// so one another role made before us (anyone with CREATE on the
/// database can) is refused, not adopted.
pub async fn ensure_schema(conn: &mut PgConnection) -> anyhow::Result<()> {
    let found: Option<(String, bool)> = sqlx::query_as(&format!(
        "SELECT pg_get_userbyid(n.nspowner), {} \
           FROM pg_namespace n, pg_database d \
          WHERE n.nspname = $1 AND d.datname = current_database()",
        trusted("n.nspowner")
    ))
    .persistent(false)
    .bind(SCHEMA)
    .fetch_optional(&mut *conn)
    .await
    .context("look for tenantctl's schema in the master")?;
    if let Some((owner, trusted)) = found {
        anyhow::ensure!(
            trusted,
            "schema {SCHEMA} in the master belongs to role {owner:?}, which is neither this role, the database's owner nor a superuser: whoever owns it can forge the records tenantctl acts on, so it is not used; if {owner:?} is trusted, `ALTER SCHEMA {SCHEMA} OWNER TO <this role>`, else drop it (`DROP SCHEMA {SCHEMA}`) and run `tenantctl master migrate` again"
        );
        return Ok(());
    }
    create_under_lock(conn, &format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .await
        .map_err(|err| {
            if has_sqlstate(&err, crate::error::sqlstate::INSUFFICIENT_PRIVILEGE) {
                err.context(format!(
                    "create schema {SCHEMA} in the master for tenantctl's own records: this role may not (grant it CREATE on the master database, or have the database's owner run `CREATE SCHEMA {SCHEMA} AUTHORIZATION <this role>`)"
                ))
            } else {
                err.context(format!("create schema {SCHEMA} in the master"))
            }
        })
}

/// SQL for whether the role `owner` (an oid expression) may be trusted
/// with tenantctl's records: this role, the database's owner (`d`, the
/// current database's `pg_database` row, must be in the query) or a
/// superuser, who could change them anyway.
fn trusted(owner: &str) -> String {
    format!(
        "({owner} = d.datdba \
          OR {owner} = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
          OR coalesce((SELECT rolsuper FROM pg_roles WHERE oid = {owner}), false))"
    )
}

/// Refuses tables, views, sequences or functions in [`SCHEMA`] that an
/// untrusted role owns (see [`ensure_schema`]): made there beforehand by
/// someone granted CREATE on it, a trigger on one runs as whoever writes
/// to it, tenantctl's operator included.
pub async fn check_owners(conn: &mut PgConnection) -> anyhow::Result<()> {
    let foreign: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT format('%s (owner %s)', c.relname, pg_get_userbyid(c.relowner)) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_database d \
          WHERE n.nspname = $1 AND d.datname = current_database() AND NOT {} \
         UNION ALL \
         SELECT format('function %s (owner %s)', p.proname, pg_get_userbyid(p.proowner)) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, pg_database d \
          WHERE n.nspname = $1 AND d.datname = current_database() AND NOT {}",
        trusted("c.relowner"),
        trusted("p.proowner")
    ))
    .persistent(false)
    .bind(SCHEMA)
    .fetch_all(&mut *conn)
    .await
    .context("check who owns what is in tenantctl's schema")?;
    anyhow::ensure!(
        foreign.is_empty(),
        "schema {SCHEMA} holds objects owned by roles that are neither this role, the database's owner nor a superuser: {}; whoever owns them can forge or act on tenantctl's records (a trigger runs as whoever writes), so nothing was done: drop them, or change their owner if that role is trusted",
        foreign.join(", ")
    );
    Ok(())
}

/// Takes [`SCHEMA`] out of this transaction's search path. A role named
/// `tenantctl` has it there first (`"$user"`, in the default path), where
/// the master migrations' unqualified `CREATE TABLE "Company"` would put
/// the application's table in our schema, out of the application's sight.
pub async fn keep_out_of_search_path(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query(
        "SELECT set_config('search_path', coalesce((SELECT string_agg(quote_ident(s), ', ') \
                 FROM unnest(current_schemas(false)) s WHERE s <> $1), ''), true)",
    )
    .persistent(false)
    .bind(SCHEMA)
    .execute(&mut *conn)
    .await
    .context("keep tenantctl's schema out of the search path")?;
    Ok(())
}

/// Moves the tables an older tenantctl kept in `from` (the companies
/// table's schema, quoted) into [`SCHEMA`], under their new names, rows,
/// indexes, constraints and owned sequences with them. Returns the tables
/// moved. A table found in both places (an older tenantctl ran after the
/// move and made a new one) is refused: merging records is for a person.
pub async fn move_legacy(
    conn: &mut PgConnection,
    from: &str,
    found: &[String],
) -> anyhow::Result<Vec<String>> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let foreign: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT format('%s (owner %s)', c.relname, pg_get_userbyid(c.relowner)) \
           FROM pg_class c, pg_database d \
          WHERE c.relnamespace = to_regnamespace($1) AND c.relname = ANY($2) \
            AND d.datname = current_database() AND NOT {}",
        trusted("c.relowner")
    ))
    .persistent(false)
    .bind(from)
    .bind(found)
    .fetch_all(&mut *conn)
    .await
    .context("check who owns tenantctl's older tables")?;
    anyhow::ensure!(
        foreign.is_empty(),
        "tables named like tenantctl's older ones in {from} belong to roles that are neither this role, the database's owner nor a superuser: {}; they are not moved into schema {SCHEMA} (whoever owns them could forge records, or run a trigger as tenantctl's operator): if they are tenantctl's, `ALTER TABLE ... OWNER TO <this role>` first, else drop or rename them; nothing was done",
        foreign.join(", ")
    );
    ensure_schema(conn).await?;
    grant_usage_to_users_of(conn, from, found).await?;
    let mut moved = Vec::new();
    for (old, new) in LEGACY {
        if !found.iter().any(|f| f == old) {
            continue;
        }
        let target = format!("{SCHEMA}.{new}");
        let both: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .persistent(false)
            .bind(&target)
            .fetch_one(&mut *conn)
            .await
            .context("look for tenantctl's tables")?;
        anyhow::ensure!(
            !both,
            "both {from}.{old} and {target} exist (an older tenantctl ran after its tables were moved?): move the rows of {from}.{old} into {target} by hand, then drop {from}.{old}"
        );
        create_under_lock(
            conn,
            &format!(
                "ALTER TABLE {from}.\"{old}\" SET SCHEMA {SCHEMA}; \
                 ALTER TABLE {SCHEMA}.\"{old}\" RENAME TO \"{new}\""
            ),
        )
        .await
        .with_context(|| {
            format!("move {from}.{old} to {target} (the role needs to own it; `tenantctl master migrate` as its owner does it)")
        })?;
        moved.push(format!("{from}.{old} -> {target}"));
    }
    Ok(moved)
}

/// Whoever had a privilege on one of the tables about to move (a role
/// that runs tenantctl without owning them, granted rights on the tables
/// in the companies table's schema) keeps its reach into them: USAGE on
/// [`SCHEMA`], which the table privileges, kept by the move, need.
async fn grant_usage_to_users_of(
    conn: &mut PgConnection,
    from: &str,
    found: &[String],
) -> anyhow::Result<()> {
    let grantees: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END \
           FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a \
           LEFT JOIN pg_roles r ON r.oid = a.grantee \
          WHERE c.relnamespace = to_regnamespace($1) AND c.relname = ANY($2) \
            AND a.grantee <> c.relowner",
    )
    .persistent(false)
    .bind(from)
    .bind(found)
    .fetch_all(&mut *conn)
    .await
    .context("read who may use tenantctl's tables")?;
    if grantees.is_empty() {
        return Ok(());
    }
    create_under_lock(
        conn,
        &format!("GRANT USAGE ON SCHEMA {SCHEMA} TO {}", grantees.join(", ")),
    )
    .await
    .with_context(|| format!("grant USAGE on schema {SCHEMA} to {}", grantees.join(", ")))
}

/// The advisory lock (in the master) that every change tenantctl makes to
/// the master's schema holds: `master migrate` for all it does, and each
/// `CREATE TABLE IF NOT EXISTS` of tenantctl's own tables (the first run
/// creating the run tables, the first move creating its table). Two
/// sessions creating one table at once collide in the catalog (23505 on
/// `pg_type`'s unique index) however `IF NOT EXISTS` is spelled; under
/// this lock the second waits, then finds the table. (The value is the one
/// the run tables' creation has always taken, so older versions exclude
/// newer ones.)
pub const SCHEMA_LOCK: i64 = 0x7465_6e61_6e74_7275; // "tenantru"

/// Runs DDL that creates tenantctl's own tables in a transaction of its
/// own (a savepoint on a pinned connection) under [`SCHEMA_LOCK`], held
/// until that transaction ends: the table is committed before the next
/// creator looks for it.
pub async fn create_under_lock(conn: &mut PgConnection, ddl: &str) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    tx.execute(format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {ddl}").as_str())
        .await?;
    tx.commit().await.context("commit")?;
    Ok(())
}
