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
            if has_sqlstate(&err, crate::error::sqlstate::DUPLICATE_DATABASE)
                || has_sqlstate(&err, crate::error::sqlstate::UNIQUE_VIOLATION)
            {
                Ok(false)
            } else {
                Err(err.context(format!("create database {db}")))
            }
        }
    }
}

/// One database on the server, as `pg_database` describes it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listed {
    pub name: String,
    /// `IS_TEMPLATE`: copyable by anyone with CREATEDB, and not droppable.
    pub template: bool,
    /// `ALLOW_CONNECTIONS`: false makes it unreachable (a move parks a
    /// source database this way).
    pub allows_connections: bool,
}

/// Every database on the server, templates included (a tenant database
/// marked as one is still a tenant's), for `doctor`.
pub async fn list(conn: &mut PgConnection) -> anyhow::Result<Vec<Listed>> {
    let mut tx = conn.begin().await.context("begin")?;
    let listed = sqlx::query_as(
        "SELECT datname::text AS name, datistemplate AS template, datallowconn AS allows_connections \
         FROM pg_database ORDER BY datname",
    )
    .persistent(false)
    .fetch_all(&mut *tx)
    .await
    .context("list databases")?;
    tx.commit().await.context("commit")?;
    Ok(listed)
}

/// Fails with the reason if `DROP DATABASE` would refuse this database:
/// a template, one this role does not own, or one with prepared
/// transactions. A database that is not there passes (nothing to drop).
pub async fn check_droppable(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    let found: Option<(bool, bool, i64)> = sqlx::query_as(
        "SELECT d.datistemplate, pg_has_role(d.datdba, 'USAGE'), \
                (SELECT count(*) FROM pg_prepared_xacts p WHERE p.database = d.datname) \
         FROM pg_database d WHERE d.datname = $1",
    )
    .persistent(false)
    .bind(db.as_str())
    .fetch_optional(&mut *tx)
    .await
    .with_context(|| format!("look up database {db}"))?;
    tx.commit().await.context("commit")?;
    match found {
        Some((true, _, _)) => anyhow::bail!(
            "database {db} is marked as a template, which DROP DATABASE refuses: `ALTER DATABASE {} IS_TEMPLATE false` first, if it really is this tenant's",
            db.quoted()
        ),
        Some((_, false, _)) => {
            anyhow::bail!("this role does not own database {db}, and only its owner may drop it")
        }
        Some((_, _, prepared)) if prepared > 0 => anyhow::bail!(
            "database {db} has {prepared} prepared transaction(s), which DROP DATABASE refuses: COMMIT PREPARED or ROLLBACK PREPARED them first"
        ),
        _ => Ok(()),
    }
}

/// Drops the database, disconnecting its sessions first (PostgreSQL 13+).
pub async fn drop_force(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.quoted()).as_str())
        .await
        .with_context(|| format!("drop database {db}"))?;
    Ok(())
}

/// Ends every other session connected to the database.
pub async fn end_sessions(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .persistent(false)
    .bind(db.as_str())
    .execute(&mut *tx)
    .await
    .with_context(|| format!("end the sessions on database {db}"))?;
    tx.commit().await.context("commit")?;
    Ok(())
}

/// Renames a database, first ending its sessions; one that reconnects in
/// between (55006, object in use) is ended again, a few times.
pub async fn rename(conn: &mut PgConnection, from: &DbName, to: &DbName) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        end_sessions(conn, from).await?;
        let renamed = conn
            .execute(format!("ALTER DATABASE {} RENAME TO {}", from.quoted(), to.quoted()).as_str())
            .await;
        match renamed {
            Ok(_) => return Ok(()),
            Err(err) => {
                let err = anyhow::Error::new(err);
                attempt += 1;
                if has_sqlstate(&err, crate::error::sqlstate::OBJECT_IN_USE) && attempt < 20 {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                return Err(err.context(format!("rename database {from} to {to}")));
            }
        }
    }
}

/// Lets the database accept connections again, or stops it from.
pub async fn allow_connections(
    conn: &mut PgConnection,
    db: &DbName,
    allow: bool,
) -> anyhow::Result<()> {
    conn.execute(format!("ALTER DATABASE {} ALLOW_CONNECTIONS {allow}", db.quoted()).as_str())
        .await
        .with_context(|| format!("set ALLOW_CONNECTIONS {allow} on database {db}"))?;
    Ok(())
}

/// A database's encoding and locale, to create its copy with.
#[derive(Debug, Clone)]
pub struct Character {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub size_bytes: i64,
}

/// The encoding, locale and size of a database.
pub async fn character(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<Character> {
    let mut tx = conn.begin().await.context("begin")?;
    let (encoding, collate, ctype, size_bytes): (String, String, String, i64) = sqlx::query_as(
        "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, \
                pg_database_size(oid) \
         FROM pg_database WHERE datname = $1",
    )
    .persistent(false)
    .bind(db.as_str())
    .fetch_optional(&mut *tx)
    .await
    .with_context(|| format!("read database {db}'s encoding and locale"))?
    .with_context(|| format!("database {db} does not exist"))?;
    tx.commit().await.context("commit")?;
    Ok(Character {
        encoding,
        collate,
        ctype,
        size_bytes,
    })
}

/// Creates an empty database (from `template0`, as a restore needs) with
/// this encoding and locale. The values come from the source server's
/// catalog and go in as string literals, quoted as such.
pub async fn create_empty(
    conn: &mut PgConnection,
    db: &DbName,
    like: &Character,
) -> anyhow::Result<()> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    conn.execute(
        format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            db.quoted(),
            literal(&like.encoding),
            literal(&like.collate),
            literal(&like.ctype)
        )
        .as_str(),
    )
    .await
    .with_context(|| format!("create database {db}"))?;
    Ok(())
}

/// The server's major version (15 for 15.4).
pub async fn server_major(conn: &mut PgConnection) -> anyhow::Result<u32> {
    let num: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .persistent(false)
        .fetch_one(conn)
        .await
        .context("read the server's version")?;
    let num: u32 = num.parse().context("read the server's version")?;
    Ok(num / 10_000)
}
