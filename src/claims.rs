//! Companies being created on a master whose companies table cannot say
//! "not ready": a status column without `provisioning` and `failed` values
//! (Prisma's `ACTIVE`/`SUSPENDED`), or none at all.
//!
//! On such a table every row is a live company to the application: its
//! `findMany({ where: { status: "ACTIVE" } })` would hand out a company
//! whose database is still being made, or whose create failed. So until
//! its database is ready, a new company exists only here, in tenantctl's
//! own schema, as a claim on its slug and database name; `tenant create`
//! inserts the application's row in the same transaction that removes the
//! claim. A failed create leaves its claim `failed`, with the error, for
//! the next `tenant create` of the slug to finish or `tenant drop` to
//! give up.

use anyhow::Context as _;
use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use crate::dbname::DbName;
use crate::servers::ServerName;
use crate::state::CLAIMS;
use crate::tenant::{Lifecycle, Slug, Tenant};

/// A company tenantctl has begun to create and not yet recorded in the
/// application's table.
#[derive(Debug, Clone)]
pub struct Claim {
    pub slug: Slug,
    pub name: String,
    pub db: DbName,
    pub server: ServerName,
    /// `--column NAME=VALUE` values, kept for the row inserted at the end.
    pub columns: Vec<(String, String)>,
    /// `provisioning` or `failed`.
    pub lifecycle: Lifecycle,
    pub last_error: Option<String>,
}

impl Claim {
    /// The claim as a tenant, for provisioning and for display: no id yet
    /// (the application's row, which gives it one, does not exist).
    pub fn tenant(&self) -> Tenant {
        Tenant {
            id: String::new(),
            slug: Some(self.slug.as_str().to_owned()),
            name: Some(self.name.clone()),
            db_name_raw: Some(self.db.as_str().to_owned()),
            db: Ok(self.db.clone()),
            status: Some(self.lifecycle.as_str().to_owned()),
            // The application has no row for it: nothing it goes by.
            app_status: None,
            lifecycle: Some(self.lifecycle),
            created_at: None,
            server_raw: (!self.server.is_default()).then(|| self.server.as_str().to_owned()),
            server: Ok(self.server.clone()),
            moving_to: None,
            sharing: None,
            read_at: None,
        }
    }
}

fn create_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CLAIMS} (\
           db_name    text PRIMARY KEY, \
           slug       text NOT NULL UNIQUE, \
           name       text NOT NULL, \
           server     text NOT NULL, \
           columns    jsonb NOT NULL DEFAULT '[]', \
           lifecycle  text NOT NULL CHECK (lifecycle IN ('provisioning', 'failed')), \
           last_error text, \
           claimed_at timestamptz NOT NULL DEFAULT now(), \
           updated_at timestamptz NOT NULL DEFAULT now())"
    )
}

/// Creates the claims table if it is missing (`master migrate` does, and
/// the first create that needs it).
pub async fn ensure_table(conn: &mut PgConnection) -> anyhow::Result<()> {
    if exists(conn).await? {
        return Ok(());
    }
    crate::state::ensure_schema(conn).await?;
    // Whoever may use tenantctl's lifecycle records (a role that runs
    // tenantctl without owning its tables) gets the same on the claims,
    // which an older version did not have: an upgrade keeps it working.
    let grants: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT format('GRANT %s ON {CLAIMS} TO %s', a.privilege_type, \
                       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee \
          WHERE n.nspname = $1 AND c.relname = $2 AND a.grantee <> c.relowner \
            AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')"
    ))
    .persistent(false)
    .bind(crate::state::SCHEMA)
    .bind(crate::state::short(crate::state::LIFECYCLE))
    .fetch_all(&mut *conn)
    .await
    .context("read who may use tenantctl's lifecycle records")?;
    let mut ddl = create_sql();
    for grant in grants {
        ddl.push_str("; ");
        ddl.push_str(&grant);
    }
    crate::companies::create_under_lock(conn, &ddl)
        .await
        .with_context(|| format!("create tenantctl's {CLAIMS} table"))
}

async fn exists(conn: &mut PgConnection) -> anyhow::Result<bool> {
    sqlx::query_scalar(&format!("SELECT {}", crate::state::exists_sql("$1")))
        .persistent(false)
        .bind(crate::state::short(CLAIMS))
        .fetch_one(&mut *conn)
        .await
        .context("look for tenantctl's claims")
}

const COLUMNS: &str = "slug, name, db_name, server, columns::text, lifecycle, last_error";

/// Every claim, oldest first; none where the table does not exist.
pub async fn all(conn: &mut PgConnection) -> anyhow::Result<Vec<Claim>> {
    if !exists(conn).await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {CLAIMS} ORDER BY claimed_at, db_name"
    ))
    .persistent(false)
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("read {CLAIMS}"))?;
    rows.iter().map(parse).collect()
}

/// The claim on this slug or this database name, if any.
pub async fn find(
    conn: &mut PgConnection,
    slug: Option<&str>,
    db: Option<&str>,
) -> anyhow::Result<Option<Claim>> {
    if !exists(conn).await? {
        return Ok(None);
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {CLAIMS} WHERE slug = $1 OR db_name = $2 ORDER BY db_name"
    ))
    .persistent(false)
    .bind(slug)
    .bind(db)
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("read {CLAIMS}"))?;
    match rows.as_slice() {
        [] => Ok(None),
        [one] => parse(one).map(Some),
        // One claim's slug and another's database: never a guess.
        many => {
            let claims = many.iter().map(parse).collect::<anyhow::Result<Vec<_>>>()?;
            let named: Vec<String> = claims
                .iter()
                .map(|c| format!("{} (database {})", c.slug, c.db))
                .collect();
            anyhow::bail!(
                "{} names more than one unfinished create: {}; name one by its database",
                slug.or(db).unwrap_or_default(),
                named.join(", ")
            )
        }
    }
}

/// The claim on this database, locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<Option<Claim>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {CLAIMS} WHERE db_name = $1 FOR UPDATE"
    ))
    .persistent(false)
    .bind(db.as_str())
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("read {CLAIMS}"))?;
    row.as_ref().map(parse).transpose()
}

fn parse(row: &sqlx::postgres::PgRow) -> anyhow::Result<Claim> {
    let raw = |i: usize| -> anyhow::Result<String> {
        row.try_get::<String, _>(i)
            .with_context(|| format!("read {CLAIMS}"))
    };
    let slug = raw(0)?;
    let db = raw(2)?;
    let server = raw(3)?;
    let columns: Vec<(String, String)> =
        serde_json::from_str(&raw(4)?).with_context(|| format!("{CLAIMS}: columns of {slug}"))?;
    Ok(Claim {
        slug: Slug::parse(&slug).with_context(|| format!("{CLAIMS}: slug {slug:?}"))?,
        name: raw(1)?,
        db: DbName::parse(&db).with_context(|| format!("{CLAIMS}: database {db:?}"))?,
        server: ServerName::parse(&server)
            .with_context(|| format!("{CLAIMS}: server {server:?}"))?,
        columns,
        lifecycle: if raw(5)? == "failed" {
            Lifecycle::Failed
        } else {
            Lifecycle::Provisioning
        },
        last_error: row.try_get(6).with_context(|| format!("read {CLAIMS}"))?,
    })
}

/// Records a new claim (`provisioning`).
pub async fn record(conn: &mut PgConnection, claim: &Claim) -> anyhow::Result<()> {
    ensure_table(conn).await?;
    let columns = serde_json::to_string(&claim.columns).expect("pairs of strings serialize");
    sqlx::query(&format!(
        "INSERT INTO {CLAIMS} (slug, name, db_name, server, columns, lifecycle) \
         VALUES ($1, $2, $3, $4, $5::jsonb, 'provisioning')"
    ))
    .persistent(false)
    .bind(claim.slug.as_str())
    .bind(&claim.name)
    .bind(claim.db.as_str())
    .bind(claim.server.as_str())
    .bind(columns)
    .execute(&mut *conn)
    .await
    .map_err(|err| {
        let err = anyhow::Error::new(err);
        if crate::connect::has_sqlstate(&err, crate::error::sqlstate::UNIQUE_VIOLATION) {
            anyhow::anyhow!(
                "tenant {} or database {} is already being created (see `tenantctl tenant list`); pick another slug or --db-name",
                claim.slug,
                claim.db
            )
        } else if crate::connect::has_sqlstate(&err, crate::error::sqlstate::INSUFFICIENT_PRIVILEGE) {
            err.context(format!(
                "record the claim on {} in {CLAIMS}: this role needs INSERT, UPDATE, DELETE and SELECT on it (GRANT ... ON ALL TABLES IN SCHEMA {} TO <role>)",
                claim.slug,
                crate::state::SCHEMA
            ))
        } else {
            err.context(format!("record the claim on {} in {CLAIMS}", claim.slug))
        }
    })?;
    Ok(())
}

/// Marks a claim failed (or provisioning again, `error` None), exactly one row.
pub async fn set_state(
    conn: &mut PgConnection,
    db: &DbName,
    lifecycle: Lifecycle,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let touched = sqlx::query(&format!(
        "UPDATE {CLAIMS} SET lifecycle = $2, last_error = $3, updated_at = now() WHERE db_name = $1"
    ))
    .persistent(false)
    .bind(db.as_str())
    .bind(lifecycle.as_str())
    .bind(error)
    .execute(&mut *conn)
    .await
    .with_context(|| format!("record status {lifecycle} for the claim on database {db}"))?
    .rows_affected();
    anyhow::ensure!(
        touched == 1,
        "the claim on database {db} is no longer in {CLAIMS} (removed by hand, or by a `tenant drop` at the same time)"
    );
    Ok(())
}

/// Removes a claim: exactly one row.
pub async fn forget(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    let touched = sqlx::query(&format!("DELETE FROM {CLAIMS} WHERE db_name = $1"))
        .persistent(false)
        .bind(db.as_str())
        .execute(&mut *conn)
        .await
        .with_context(|| format!("remove the claim on database {db}"))?
        .rows_affected();
    anyhow::ensure!(
        touched == 1,
        "the claim on database {db} is no longer in {CLAIMS} (removed by hand, or by a `tenant drop` at the same time)"
    );
    Ok(())
}
