//! Creating, finding and dropping whole databases on the server. Every
//! statement here takes a validated [`DbName`].

use anyhow::Context as _;
use sqlx::Executor as _;
use sqlx::postgres::PgConnection;

use crate::connect::has_sqlstate;
use crate::dbname::DbName;

/// Whether the database exists on the server `conn` is connected to.
pub async fn exists(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(db.as_str())
        .fetch_one(conn)
        .await
        .with_context(|| format!("look up database {db}"))
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
    sqlx::query_scalar("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")
        .fetch_all(conn)
        .await
        .context("list databases")
}

/// Drops the database, disconnecting its sessions first (PostgreSQL 13+).
pub async fn drop_force(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.quoted()).as_str())
        .await
        .with_context(|| format!("drop database {db}"))?;
    Ok(())
}
