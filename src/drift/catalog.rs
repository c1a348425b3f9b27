//! Reading a database's catalog (`catalog.sql`) as raw rows, in one round
//! trip; `build` turns them into a schema.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::{Executor, PgConnection, Row};

/// Every statement, with the repair columns: what the reference is read
/// with.
const WITH_REPAIRS: &str = include_str!("catalog.sql");

/// Comments, read only when they are compared.
const COMMENTS: &str = "SELECT 'C', d.classoid::text, d.objoid::text, d.objsubid::text, d.description \
     FROM pg_description d WHERE d.objoid >= 16384 OR (d.objoid = 2200 AND d.classoid = 2615);";

/// The statements without the repair columns (each `/*repair*/ ... /*end*/`
/// span made NULL): what each tenant is read with.
fn without_repairs() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| strip_repairs(WITH_REPAIRS))
}

fn strip_repairs(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find("/*repair*/") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("/*end*/")
            .expect("every /*repair*/ in catalog.sql has its /*end*/");
        out.push_str("NULL");
        rest = &rest[start + end + "/*end*/".len()..];
    }
    out.push_str(rest);
    out
}

/// One row: its columns after the tag, as text.
#[derive(Debug, Clone, Default)]
pub struct Raw(pub Vec<Option<String>>);

impl Raw {
    /// Column `i` (0: the first after the tag), `None` when NULL or absent.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.0.get(i).and_then(|c| c.as_deref())
    }

    /// Column `i`, empty when NULL.
    pub fn text(&self, i: usize) -> &str {
        self.get(i).unwrap_or_default()
    }

    /// Column `i` as a boolean (`true`, `t`).
    pub fn flag(&self, i: usize) -> bool {
        matches!(self.get(i), Some("true" | "t"))
    }

    /// Column `i` as an OID (0 when NULL).
    pub fn oid(&self, i: usize) -> u32 {
        self.get(i).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// The rows of every statement, by tag.
#[derive(Debug, Default)]
pub struct Rows(HashMap<String, Vec<Raw>>);

impl Rows {
    pub fn of(&self, tag: &str) -> &[Raw] {
        self.0.get(tag).map_or(&[], Vec::as_slice)
    }

    #[cfg(test)]
    pub fn push(&mut self, tag: &str, cols: &[Option<&str>]) {
        self.0
            .entry(tag.to_owned())
            .or_default()
            .push(Raw(cols.iter().map(|c| c.map(str::to_owned)).collect()));
    }
}

/// Reads the catalog of the database `conn` is connected to, in one round
/// trip. `repairs`: also what only the reference's repairs need;
/// `comments`: also the comments.
pub async fn fetch(conn: &mut PgConnection, repairs: bool, comments: bool) -> anyhow::Result<Rows> {
    let base = if repairs {
        WITH_REPAIRS
    } else {
        without_repairs()
    };
    let sql = if comments {
        format!("{base}\n{COMMENTS}")
    } else {
        base.to_owned()
    };
    let mut rows = Rows::default();
    let mut stream = conn.fetch_many(sql.as_str());
    while let Some(item) = stream
        .try_next()
        .await
        .context("read the schema from the catalog")?
    {
        if let sqlx::Either::Right(row) = item {
            let tag: String = row.try_get(0).context("read the catalog's rows")?;
            let cols = (1..row.len())
                .map(|i| row.try_get::<Option<String>, _>(i))
                .collect::<Result<Vec<_>, _>>()
                .context("read the catalog's rows")?;
            rows.0.entry(tag).or_default().push(Raw(cols));
        }
    }
    drop(stream);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripping_repairs_leaves_every_statement_and_no_marker() {
        let light = without_repairs();
        assert!(!light.contains("/*repair*/") && !light.contains("/*end*/"));
        assert_eq!(
            light.matches("\nSELECT").count(),
            WITH_REPAIRS.matches("\nSELECT").count()
        );
        assert!(WITH_REPAIRS.contains("/*repair*/"));
        assert_eq!(
            strip_repairs("a /*repair*/x(1,\n2)/*end*/, b /*repair*/y/*end*/"),
            "a NULL, b NULL"
        );
    }
}
