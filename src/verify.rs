//! Checking that a copied database matches its source before a move
//! switches to it: the same `_sqlx_migrations` (and `_prisma_migrations`) rows, the same number of
//! rows in every table, the same value in every sequence.
//!
//! A move reads the source while it copies, in the very snapshot `pg_dump`
//! copies ([`export_snapshot`], [`read_open`]), so only the copy is left
//! to read once the restore commits ([`compare_with`]). A move resumed at
//! its `copied` step reads both sides afresh, side by side ([`compare`]).

use std::collections::BTreeMap;

use anyhow::Context as _;
use sqlx::postgres::PgConnection;

/// What both sides agreed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Matched {
    pub tables: usize,
    pub rows: i64,
    pub sequences: usize,
    pub migrations: usize,
}

/// The copy differs from the source; each entry says where.
#[derive(Debug, thiserror::Error)]
#[error("the copy does not match the source: {}", .0.join("; "))]
pub struct Mismatch(pub Vec<String>);

/// One side's contents, as far as the comparison looks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contents {
    migrations: Vec<(i64, String, bool, String)>,
    /// `_prisma_migrations` in any schema: name, checksum, finished,
    /// rolled back (an application's Prisma migrator owns the schema).
    prisma: Vec<(String, String, String, bool, bool)>,
    /// Row count by table, `schema.table` quoted.
    tables: BTreeMap<String, i64>,
    /// `(last_value, is_called)` by sequence.
    sequences: BTreeMap<String, (i64, bool)>,
}

async fn read(conn: &mut PgConnection) -> anyhow::Result<Contents> {
    Ok(Contents {
        migrations: read_migrations(conn).await?,
        prisma: read_prisma(conn).await?,
        tables: count_rows(conn).await?,
        sequences: read_sequences(conn).await?,
    })
}

async fn read_migrations(
    conn: &mut PgConnection,
) -> anyhow::Result<Vec<(i64, String, bool, String)>> {
    let has_migrations: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .persistent(false)
            .fetch_one(&mut *conn)
            .await?;
    Ok(if has_migrations {
        sqlx::query_as(
            "SELECT version, description, success, pg_catalog.encode(checksum, 'hex') \
             FROM _sqlx_migrations ORDER BY version",
        )
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .context("read _sqlx_migrations")?
    } else {
        Vec::new()
    })
}

/// Every `_prisma_migrations` table's rows, by table.
async fn read_prisma(
    conn: &mut PgConnection,
) -> anyhow::Result<Vec<(String, String, String, bool, bool)>> {
    let prisma_tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = '_prisma_migrations' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .persistent(false)
    .fetch_all(&mut *conn)
    .await
    .context("look for _prisma_migrations")?;
    let mut prisma = Vec::new();
    for table in prisma_tables {
        let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(&format!(
            "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NOT NULL \
             FROM {table} ORDER BY id"
        ))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("read {table}"))?;
        prisma.extend(
            rows.into_iter()
                .map(|(name, sum, finished, rolled)| (table.clone(), name, sum, finished, rolled)),
        );
    }
    Ok(prisma)
}

/// Row count by table.
async fn count_rows(conn: &mut PgConnection) -> anyhow::Result<BTreeMap<String, i64>> {
    // Names quoted by the server itself (format's %I), so any identifier
    // an application used reads back as the same table.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' \
           AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
    )
    .persistent(false)
    .fetch_all(&mut *conn)
    .await
    .context("list the tables")?;
    let mut counts = BTreeMap::new();
    for table in tables {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("count the rows of {table}"))?;
        counts.insert(table, count);
    }
    Ok(counts)
}

/// `(last_value, is_called)` by sequence.
async fn read_sequences(conn: &mut PgConnection) -> anyhow::Result<BTreeMap<String, (i64, bool)>> {
    let sequences: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1",
    )
    .persistent(false)
    .fetch_all(&mut *conn)
    .await
    .context("list the sequences")?;
    let mut values = BTreeMap::new();
    for sequence in sequences {
        let value: (i64, bool) =
            sqlx::query_as(&format!("SELECT last_value, is_called FROM {sequence}"))
                .persistent(false)
                .fetch_one(&mut *conn)
                .await
                .with_context(|| format!("read sequence {sequence}"))?;
        values.insert(sequence, value);
    }
    Ok(values)
}

/// Reads both databases (each in one repeatable-read snapshot, both at
/// once) and compares them; a difference is a [`Mismatch`].
pub async fn compare(
    source: &mut PgConnection,
    copy: &mut PgConnection,
) -> anyhow::Result<Matched> {
    let (source, copied) = tokio::join!(snapshot(source), snapshot(copy));
    let source = source.context("read the source")?;
    matched(&source, &copied.context("read the copy")?)
}

/// Reads the copy and compares it with the source's contents read
/// before; a difference is a [`Mismatch`].
pub async fn compare_with(source: &Contents, copy: &mut PgConnection) -> anyhow::Result<Matched> {
    let copied = snapshot(copy).await.context("read the copy")?;
    matched(source, &copied)
}

fn matched(source: &Contents, copied: &Contents) -> anyhow::Result<Matched> {
    let differences = differences(source, copied);
    if !differences.is_empty() {
        return Err(Mismatch(differences).into());
    }
    Ok(Matched {
        tables: source.tables.len(),
        rows: source.tables.values().sum(),
        sequences: source.sequences.len(),
        migrations: source.migrations.len() + source.prisma.len(),
    })
}

/// Opens a repeatable-read, read-only transaction and exports its
/// snapshot for `pg_dump --snapshot`: what [`read_open`] then reads in it
/// is exactly what the dump holds. End it with [`end_snapshot`] once the
/// dump is over (the snapshot can be imported only while it is open).
pub async fn export_snapshot(conn: &mut PgConnection) -> anyhow::Result<String> {
    use sqlx::Executor as _;
    // Idle in its transaction while the copy runs, as long as that takes:
    // a server's idle_in_transaction_session_timeout must not end it (nor
    // the snapshot pg_dump reads in), as pg_dump's own session sets too.
    conn.execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
         SET LOCAL idle_in_transaction_session_timeout = 0",
    )
    .await
    .context("begin the source's snapshot")?;
    sqlx::query_scalar("SELECT pg_catalog.pg_export_snapshot()")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .context("export the source's snapshot")
}

/// Reads the contents in the transaction [`export_snapshot`] opened. It
/// runs beside the copy, so each count takes one process, not a parallel
/// query's several: the cores are the copy's.
pub async fn read_open(conn: &mut PgConnection) -> anyhow::Result<Contents> {
    use sqlx::Executor as _;
    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        .await
        .context("read the source on one process")?;
    read(conn).await
}

/// Ends the transaction [`export_snapshot`] opened.
pub async fn end_snapshot(conn: &mut PgConnection) -> anyhow::Result<()> {
    use sqlx::Executor as _;
    conn.execute("ROLLBACK")
        .await
        .context("end the source's snapshot")?;
    Ok(())
}

async fn snapshot(conn: &mut PgConnection) -> anyhow::Result<Contents> {
    use sqlx::Executor as _;
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let contents = read(conn).await;
    let _ = conn.execute("ROLLBACK").await;
    contents
}

fn differences(source: &Contents, copy: &Contents) -> Vec<String> {
    let mut found = Vec::new();
    if source.migrations != copy.migrations {
        found.push(format!(
            "_sqlx_migrations differs ({} rows on the source, {} on the copy)",
            source.migrations.len(),
            copy.migrations.len()
        ));
    }
    if source.prisma != copy.prisma {
        found.push(format!(
            "_prisma_migrations differs ({} rows on the source, {} on the copy)",
            source.prisma.len(),
            copy.prisma.len()
        ));
    }
    for (table, rows) in &source.tables {
        match copy.tables.get(table) {
            None => found.push(format!("table {table} is missing from the copy")),
            Some(copied) if copied != rows => found.push(format!(
                "table {table} has {rows} rows on the source and {copied} on the copy"
            )),
            Some(_) => {}
        }
    }
    for table in copy.tables.keys() {
        if !source.tables.contains_key(table) {
            found.push(format!("table {table} is only on the copy"));
        }
    }
    for (sequence, value) in &source.sequences {
        match copy.sequences.get(sequence) {
            None => found.push(format!("sequence {sequence} is missing from the copy")),
            Some(copied) if copied != value => found.push(format!(
                "sequence {sequence} is at {} on the source and {} on the copy",
                value.0, copied.0
            )),
            Some(_) => {}
        }
    }
    for sequence in copy.sequences.keys() {
        if !source.sequences.contains_key(sequence) {
            found.push(format!("sequence {sequence} is only on the copy"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prisma_history_is_compared() {
        let mut source = Contents::default();
        source.prisma.push((
            "public._prisma_migrations".into(),
            "1_init".into(),
            "ab".into(),
            true,
            false,
        ));
        let mut copy = Contents::default();
        copy.prisma.push((
            "public._prisma_migrations".into(),
            "1_init".into(),
            "ab".into(),
            false,
            false,
        ));
        assert!(differences(&source, &source).is_empty());
        assert_eq!(
            differences(&source, &copy),
            ["_prisma_migrations differs (1 rows on the source, 1 on the copy)"]
        );
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let mut source = Contents::default();
        source.tables.insert("public.items".into(), 3);
        source.tables.insert("public.gone".into(), 0);
        source
            .sequences
            .insert("public.items_id_seq".into(), (3, true));
        source
            .migrations
            .push((1, "items".into(), true, "ab".into()));
        assert!(differences(&source, &source).is_empty());
        let mut copy = Contents::default();
        copy.tables.insert("public.items".into(), 2);
        copy.tables.insert("public.extra".into(), 1);
        copy.sequences
            .insert("public.items_id_seq".into(), (2, true));
        let found = differences(&source, &copy);
        assert_eq!(
            found,
            [
                "_sqlx_migrations differs (1 rows on the source, 0 on the copy)",
                "table public.gone is missing from the copy",
                "table public.items has 3 rows on the source and 2 on the copy",
                "table public.extra is only on the copy",
                "sequence public.items_id_seq is at 3 on the source and 2 on the copy",
            ]
        );
    }
}
