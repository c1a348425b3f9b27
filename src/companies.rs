//! The master database's `"Company"` table: the only record of which tenants
//! exist and which database each one uses.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use crate::connect::has_sqlstate;
use crate::dbname::DbName;
use crate::tenant::{Lifecycle, Slug, Tenant};

// Every column is read as text and may be NULL: `::text` lets the same
// query read a master whose ORM made `status` an enum type or the id an
// integer, and one NULL, written by another tool, must fail its own row
// only, never the whole read.
const SELECT: &str = r#"SELECT id::text, slug::text, name::text, "dbName"::text, status::text AS status, "createdAt"::timestamptz AS created_at FROM "Company""#;

type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
);

fn tenant((id, slug, name, db_name, status, created_at): Row) -> Tenant {
    // The id is the primary key, so never NULL in practice; an empty one
    // still yields a row that fails on its own.
    Tenant::new(
        id.unwrap_or_default(),
        slug,
        name,
        db_name,
        status,
        created_at,
    )
}

/// Every company, optionally only those with one of the given statuses,
/// ordered by slug.
pub async fn list(
    conn: &mut PgConnection,
    statuses: Option<&[Lifecycle]>,
) -> anyhow::Result<Vec<Tenant>> {
    let statuses: Option<Vec<&str>> = statuses.map(|s| s.iter().map(|s| s.as_str()).collect());
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE $1::text[] IS NULL OR lower(status::text) = ANY($1) ORDER BY slug, id"
    ))
    .bind(statuses)
    .fetch_all(conn)
    .await
    .map_err(master_error)?;
    Ok(rows.into_iter().map(tenant).collect())
}

/// The company whose slug or id is `key` (slug wins if both match).
pub async fn find(conn: &mut PgConnection, key: &str) -> anyhow::Result<Option<Tenant>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE slug = $1 OR id::text = $1 ORDER BY slug = $1 DESC NULLS LAST LIMIT 1"
    ))
    .bind(key)
    .fetch_optional(conn)
    .await
    .map_err(master_error)?;
    Ok(row.map(tenant))
}

/// Like [`find`], but a missing tenant is an error that says so.
pub async fn get(conn: &mut PgConnection, key: &str) -> anyhow::Result<Tenant> {
    find(conn, key).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "unknown tenant {key:?}: no company has that slug or id (see `tenantctl tenant list`)"
        )
    })
}

/// The company with this slug (only: `create` must not pick up a company
/// whose id happens to look like the new slug).
pub async fn find_by_slug(conn: &mut PgConnection, slug: &Slug) -> anyhow::Result<Option<Tenant>> {
    let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE slug = $1"))
        .bind(slug.as_str())
        .fetch_optional(conn)
        .await
        .map_err(master_error)?;
    Ok(row.map(tenant))
}

/// The company, if any, whose database is `db`.
pub async fn find_by_db(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<Option<Tenant>> {
    let row: Option<Row> = sqlx::query_as(&format!(r#"{SELECT} WHERE "dbName" = $1"#))
        .bind(db.as_str())
        .fetch_optional(conn)
        .await
        .map_err(master_error)?;
    Ok(row.map(tenant))
}

/// Takes a session-level advisory lock on this slug in the master, held
/// until the connection closes, so two `tenant create` runs of one slug
/// never provision it at once: the second waits, then finds the row.
pub async fn lock_slug(conn: &mut PgConnection, slug: &Slug) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('tenantctl create ' || $1, 0))")
        .bind(slug.as_str())
        .execute(conn)
        .await
        .context("take the master's lock for this slug")?;
    Ok(())
}

/// Records a new company in `provisioning`.
pub async fn insert(
    conn: &mut PgConnection,
    slug: &Slug,
    name: &str,
    db: &DbName,
) -> anyhow::Result<Tenant> {
    let row: Row = sqlx::query_as(&format!(
        r#"WITH new AS (
             INSERT INTO "Company" (id, slug, name, "dbName", status, "createdAt", "updatedAt")
             VALUES (gen_random_uuid()::text, $1, $2, $3, 'provisioning', now(), now())
             RETURNING *)
           {}"#,
        SELECT.replace(r#"FROM "Company""#, "FROM new")
    ))
    .bind(slug.as_str())
    .bind(name)
    .bind(db.as_str())
    .fetch_one(conn)
    .await
    .map_err(|err| {
        let err = anyhow::Error::new(err);
        if has_sqlstate(&err, "23505") {
            anyhow::anyhow!(
                "tenant {slug} or database {db} is already recorded in the master; pick another slug or --db-name"
            )
        } else {
            master_error_any(err)
        }
    })?;
    Ok(tenant(row))
}

/// Sets a company's status.
pub async fn set_status(
    conn: &mut PgConnection,
    id: &str,
    status: Lifecycle,
) -> anyhow::Result<()> {
    // The status is one of our own constants, written as a literal so that it
    // also fits a master whose `status` column is an enum type, which a text
    // bind parameter would not.
    let sql = format!(
        r#"UPDATE "Company" SET status = '{}', "updatedAt" = now() WHERE id::text = $1"#,
        status.as_str()
    );
    sqlx::query(&sql)
        .bind(id)
        .execute(conn)
        .await
        .map_err(master_error)
        .with_context(|| format!("set status {status} on company {id}"))?;
    Ok(())
}

/// Deletes a company's row.
pub async fn delete(conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
    sqlx::query(r#"DELETE FROM "Company" WHERE id::text = $1"#)
        .bind(id)
        .execute(conn)
        .await
        .map_err(master_error)?;
    Ok(())
}

fn master_error(err: sqlx::Error) -> anyhow::Error {
    master_error_any(anyhow::Error::new(err))
}

fn master_error_any(err: anyhow::Error) -> anyhow::Error {
    if has_sqlstate(&err, "42P01") {
        err.context(
            "the master database has no \"Company\" table; run `tenantctl master migrate` first",
        )
    } else {
        err.context("query the master database")
    }
}
