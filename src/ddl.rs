//! Creating, finding and dropping whole databases on the server. Every
//! statement here takes a validated [`DbName`].

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::connect::has_sqlstate;
use crate::dbname::DbName;

/// Whether the database exists on the server `conn` is connected to.
///
/// In a transaction of its own: a parameterized query takes two round
/// trips, which a transaction-mode pooler would otherwise be free to send
/// to two different server connections.
pub async fn exists(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<bool> {
    let mut tx = conn.begin().await.context("begin")?;
    let found = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .persistent(false)
        .bind(db.as_str())
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("look up database {db}"))?;
    tx.commit().await.context("commit")?;
    Ok(found)
}

/// Creates the database unless it exists; returns whether it created it.
pub async fn create_if_missing(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<bool> {
    if exists(conn, db).await? {
        return Ok(false);
    }
    match conn
        .execute(format!("CREATE DATABASE {}", db.quoted()).as_str())
        .await
    {
        Ok(_) => Ok(true),
        Err(err) => {
            let err = anyhow::Error::new(err);
            // Another process created it meanwhile: 42P04 duplicate_database,
            // or, when both got past the catalog check at once, 23505 from
            // pg_database's unique index.
            if has_sqlstate(&err, "42P04") || has_sqlstate(&err, "23505") {
                Ok(false)
            } else {
                Err(err.context(format!("create database {db}")))
            }
        }
    }
}

/// Names of all databases on the server, for finding orphans.
pub async fn list(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let mut tx = conn.begin().await.context("begin")?;
    let names = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname",
    )
    .persistent(false)
    .fetch_all(&mut *tx)
    .await
    .context("list databases")?;
    tx.commit().await.context("commit")?;
    Ok(names)
}

/// Drops the database, disconnecting its sessions first (PostgreSQL 13+).
pub async fn drop_force(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.quoted()).as_str())
        .await
        .with_context(|| format!("drop database {db}"))?;
    Ok(())
}
