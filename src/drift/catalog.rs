//! Reading a database's schema from its catalog (`catalog.sql`) into a
//! [`Schema`]: the rows of every statement, less what belongs to an
//! extension, with each object's privileges split into one grant apiece.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::{Executor, PgConnection, Row};

use super::{Key, Object, PARTS, Schema, Scope};

/// Every statement, with the repairs: what the reference is read with.
const WITH_REPAIRS: &str = include_str!("catalog.sql");

/// The statements without the repairs (each `/*repair*/ ... /*end*/` span
/// made NULL): what each tenant is read with. A tenant's own statements
/// are needed only to drop what it has and the reference has not, and the
/// deparsing the repairs repeat is a good part of a read's cost.
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

/// One row of `catalog.sql`.
struct Row8 {
    kind: String,
    name: Option<String>,
    props: Option<String>,
    create: Option<String>,
    drop: Option<String>,
    fixes: Option<String>,
    class: Option<String>,
    oid: Option<String>,
}

impl Row8 {
    fn of(row: &sqlx::postgres::PgRow) -> anyhow::Result<Self> {
        let text = |i: usize| -> anyhow::Result<Option<String>> {
            row.try_get::<Option<String>, _>(i)
                .with_context(|| format!("read column {i} of the catalog's rows"))
        };
        Ok(Self {
            kind: text(0)?.unwrap_or_default(),
            name: text(1)?,
            props: text(2)?,
            create: text(3)?,
            drop: text(4)?,
            fixes: text(5)?,
            class: text(6)?,
            oid: text(7)?,
        })
    }
}

/// Reads the schema of the database `conn` is connected to, in one round
/// trip. `repairs`: also read the statements that would make each object
/// as it is here (for the reference).
pub async fn read(conn: &mut PgConnection, repairs: bool, scope: Scope) -> anyhow::Result<Schema> {
    let sql = if repairs {
        WITH_REPAIRS
    } else {
        without_repairs()
    };
    let mut rows = Vec::new();
    let mut stream = conn.fetch_many(sql);
    while let Some(item) = stream
        .try_next()
        .await
        .context("read the schema from the catalog")?
    {
        if let sqlx::Either::Right(row) = item {
            rows.push(Row8::of(&row)?);
        }
    }
    drop(stream);
    Ok(assemble(rows, scope))
}

/// The rows into a schema: extension members left out, privileges split.
fn assemble(rows: Vec<Row8>, scope: Scope) -> Schema {
    let members: HashSet<(String, String)> = rows
        .iter()
        .filter(|r| r.kind == "member")
        .filter_map(|r| Some((r.class.clone()?, r.oid.clone()?)))
        .collect();
    let wholes = wholes(&rows);
    let mut schema = Schema::default();
    for row in rows {
        if row.kind == "member" {
            continue;
        }
        if let (Some(class), Some(oid)) = (&row.class, &row.oid)
            && members.contains(&(class.clone(), oid.clone()))
        {
            continue;
        }
        let Some(name) = row.name.clone() else {
            continue;
        };
        let within = match (&row.class, &row.oid) {
            (Some(class), Some(oid))
                if row.kind == "privileges" || PARTS.contains(&row.kind.as_str()) =>
            {
                wholes.get(&(class.clone(), oid.clone())).cloned()
            }
            _ => None,
        };
        if row.kind == "privileges" {
            for (key, mut object) in super::acl::grants(&name, row.props.as_deref()) {
                object.within.clone_from(&within);
                schema.insert(key, object);
            }
            continue;
        }
        let object = Object {
            props: props(row.props.as_deref(), scope),
            create: row.create,
            drop: row.drop,
            fixes: fixes(row.fixes.as_deref()),
            within,
        };
        schema.insert(
            Key {
                kind: row.kind,
                name,
            },
            object,
        );
    }
    own_sequences(&mut schema);
    schema
}

/// A sequence a column owns (`serial`, identity) is a part of that
/// column's table: it is made and dropped with the table, never alone.
fn own_sequences(schema: &mut Schema) {
    let tables: Vec<Key> = schema
        .objects
        .keys()
        .filter(|k| k.kind == "table")
        .cloned()
        .collect();
    for (key, object) in &mut schema.objects {
        let Some(owner) = object
            .props
            .get("owned by")
            .filter(|_| key.kind == "sequence")
        else {
            continue;
        };
        // `owned by` is `table.column`: the longest table name it starts with.
        object.within = tables
            .iter()
            .filter(|t| {
                owner
                    .strip_prefix(t.name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|t| t.name.len())
            .cloned();
    }
}

/// The objects that others are parts of (tables, functions, types,
/// schemas...), by the catalog row that is each one's own: a part's row
/// (a column, an index, a grant) names its whole's.
fn wholes(rows: &[Row8]) -> HashMap<(String, String), Key> {
    rows.iter()
        .filter(|r| !matches!(r.kind.as_str(), "member" | "privileges"))
        .filter(|r| !PARTS.contains(&r.kind.as_str()))
        .filter_map(|r| {
            let key = Key {
                kind: r.kind.clone(),
                name: r.name.clone()?,
            };
            Some(((r.class.clone()?, r.oid.clone()?), key))
        })
        .collect()
}

/// A JSON object of properties as text, nulls left out (absent and null
/// are the same), and `owner`/`comment` only when the scope asks.
fn props(json: Option<&str>, scope: Scope) -> BTreeMap<String, String> {
    let Some(serde_json::Value::Object(map)) = json.and_then(|j| serde_json::from_str(j).ok())
    else {
        return BTreeMap::new();
    };
    map.into_iter()
        .filter(|(k, _)| match k.as_str() {
            "owner" => scope.owners,
            "comment" => scope.comments,
            _ => true,
        })
        .filter_map(|(k, v)| Some((k, value_text(v)?)))
        .collect()
}

/// A property's value as compared and shown.
pub(super) fn value_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn fixes(json: Option<&str>) -> BTreeMap<String, String> {
    let Some(serde_json::Value::Object(map)) = json.and_then(|j| serde_json::from_str(j).ok())
    else {
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect()
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

    #[test]
    fn owner_and_comment_count_only_when_asked() {
        let json = r#"{"owner": "alice", "comment": null, "type": "text", "not null": true}"#;
        let plain = props(Some(json), Scope::default());
        assert_eq!(
            plain.into_iter().collect::<Vec<_>>(),
            [
                ("not null".to_owned(), "true".to_owned()),
                ("type".to_owned(), "text".to_owned())
            ]
        );
        let all = props(
            Some(json),
            Scope {
                owners: true,
                comments: true,
            },
        );
        assert_eq!(all.get("owner").map(String::as_str), Some("alice"));
        // A null comment is no comment: equal to a database without one.
        assert!(!all.contains_key("comment"));
    }
}
