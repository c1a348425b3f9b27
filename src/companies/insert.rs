//! Recording a new company: the row `create` inserts, filled the way the
//! application would fill it, and read back as the table stored it.

use crate::error::sqlstate;
use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _, Row as _};

use super::layout::{Column, Layout};
use super::quote;
use crate::connect::has_sqlstate;
use crate::dbname::DbName;
use crate::error::UsageError;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Slug, Tenant};

impl Layout {
    /// Records a new company in `provisioning`, filling the columns the
    /// table requires the way its application would: an id when the column
    /// has no default (a UUID), timestamps with now, and any other required
    /// column from `extra` (`--column NAME=VALUE`), refusing to guess.
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        new: &NewCompany<'_>,
    ) -> anyhow::Result<Tenant> {
        self.insert_or_try(conn, new, true).await
    }

    /// Inserts the row as [`Self::insert`] would, with every check, and
    /// rolls it back: whether the table will take it, known before a
    /// claimed company's database is made rather than after.
    pub async fn check_insert(
        &self,
        conn: &mut PgConnection,
        new: &NewCompany<'_>,
    ) -> anyhow::Result<()> {
        self.insert_or_try(conn, new, false).await.map(|_| ())
    }

    async fn insert_or_try(
        &self,
        conn: &mut PgConnection,
        new: &NewCompany<'_>,
        keep: bool,
    ) -> anyhow::Result<Tenant> {
        self.check_can_record_lifecycle()?;
        self.check_can_record_server(new.server)?;
        let values = self.insert_values(new)?;
        let (sql, binds, checked) = self.insert_sql(&values);
        let mut tx = conn.begin().await.context("begin")?;
        // Deferred constraints and constraint triggers fire at each
        // statement, so the row read back below is what COMMIT keeps.
        tx.execute("SET CONSTRAINTS ALL IMMEDIATE")
            .await
            .context("check the master's deferred constraints as they happen")?;
        let mut query = sqlx::query(&sql).persistent(false);
        for bind in &binds {
            query = query.bind(bind);
        }
        let row = query
            .fetch_one(&mut *tx)
            .await
            .map_err(|err| self.insert_error(err.into(), new))?;
        let id: Option<String> = row.try_get(0).context("read the new company's id")?;
        let id = id.context("the master gave the new company no id")?;
        for (i, (column, wanted)) in checked.iter().enumerate() {
            let stored: Option<String> = row.try_get(i + 1).context("read back the new row")?;
            // Dropped with the transaction: nothing is recorded or created.
            self.check_stored(column, wanted, stored.as_deref())?;
        }
        if self.uses_bookkeeping() {
            self.record_own(&mut tx, &id, Lifecycle::Provisioning, None)
                .await?;
        }
        if self.server.is_none() && !new.server.is_default() {
            self.record_placement(&mut tx, &id, new.server).await?;
        }
        let stored = self.read_inserted(&mut tx, &id, new).await?;
        if keep {
            tx.commit().await.context("commit")?;
        } else {
            tx.rollback().await.context("roll back")?;
        }
        Ok(stored)
    }

    /// The INSERT of these values, its binds, and the columns whose value
    /// is read back (RETURNING, after the id).
    ///
    /// Every value written is read back as the table stored it: a
    /// `varchar(n)` cuts a cast value short without a word, a trigger or a
    /// domain may rewrite it, and a database name stored as another
    /// company's would hand that company's database to this one.
    fn insert_sql<'v>(
        &'v self,
        values: &'v [(String, Value)],
    ) -> (String, Vec<String>, Vec<(&'v Column, &'v str)>) {
        let names: Vec<String> = values.iter().map(|(c, _)| quote(c)).collect();
        let mut binds = Vec::new();
        let exprs: Vec<String> = values
            .iter()
            .map(|(_, value)| match value {
                Value::Sql(sql) => sql.clone(),
                Value::Bind(text, sql_type) => {
                    binds.push(text.clone());
                    format!("CAST(${}::text AS {sql_type})", binds.len())
                }
            })
            .collect();
        let checked: Vec<(&Column, &str)> = values
            .iter()
            .filter_map(|(name, value)| match value {
                Value::Bind(text, _) => {
                    let column = self.columns.iter().find(|c| &c.name == name)?;
                    self.read_back(column).then_some((column, text.as_str()))
                }
                Value::Sql(_) => None,
            })
            .collect();
        let returning: Vec<String> = std::iter::once(format!("c.{}::text", self.id.quoted()))
            .chain(
                checked
                    .iter()
                    .map(|(c, _)| format!("c.{}::text", c.quoted())),
            )
            .collect();
        let sql = format!(
            "INSERT INTO {} AS c ({}) VALUES ({}) RETURNING {}",
            self.table_sql,
            names.join(", "),
            exprs.join(", "),
            returning.join(", ")
        );
        (sql, binds, checked)
    }

    /// The error of an INSERT the master refused, in the operator's terms.
    fn insert_error(&self, err: anyhow::Error, new: &NewCompany<'_>) -> anyhow::Error {
        if has_sqlstate(&err, sqlstate::UNIQUE_VIOLATION) {
            anyhow::anyhow!(
                "tenant {} or database {} is already recorded in the master; pick another slug or --db-name",
                new.slug,
                new.db
            )
        } else if [
            sqlstate::CHECK_VIOLATION,
            sqlstate::NOT_NULL_VIOLATION,
            sqlstate::STRING_DATA_RIGHT_TRUNCATION,
            sqlstate::INVALID_TEXT_REPRESENTATION,
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            sqlstate::INVALID_DATETIME_FORMAT,
            sqlstate::DATETIME_FIELD_OVERFLOW,
        ]
        .iter()
        .any(|code| has_sqlstate(&err, code))
        {
            // A value the column refuses (a domain's CHECK, a type it
            // does not parse): the operator's input to change.
            let why = crate::error::render(&err);
            UsageError(format!(
                "the master's {} refuses the new company's row: {why}; nothing was recorded",
                self.label
            ))
            .into()
        } else {
            self.error(err).context("record the company")
        }
    }

    /// The new row as the transaction would commit it: RETURNING shows it
    /// before AFTER triggers ran, so it is read again, and refused if they
    /// changed what identifies the tenant.
    async fn read_inserted(
        &self,
        conn: &mut PgConnection,
        id: &str,
        new: &NewCompany<'_>,
    ) -> anyhow::Result<Tenant> {
        let stored = self
            .find_by_id(conn, id)
            .await?
            .context("the new company row is not there after inserting it (a trigger removed it?); nothing was recorded")?;
        let slug_kept = self.slug.is_none() || stored.slug.as_deref() == Some(new.slug.as_str());
        anyhow::ensure!(
            stored.db_name_raw.as_deref() == Some(new.db.as_str())
                && slug_kept
                && stored.server.as_ref() == Ok(new.server),
            "the master's {} changed the new company's row after inserting it (a trigger?): it names database {} on server {}{}; nothing was recorded",
            self.label,
            crate::text::shown(stored.db_label()),
            crate::text::shown(stored.server_label()),
            stored
                .slug
                .as_deref()
                .map(|s| format!(" with slug {}", crate::text::shown(s)))
                .unwrap_or_default()
        );
        Ok(stored)
    }

    /// Whether a value tenantctl writes into this column must come back
    /// exactly as written: always for the columns that identify a tenant
    /// (database name, slug, server), and for any text or enum column; a
    /// number or a date may come back spelled otherwise (`007` as `7`).
    pub(super) fn read_back(&self, column: &Column) -> bool {
        let identity = [
            Some(&self.db_name),
            self.slug.as_ref(),
            self.server.as_ref(),
        ];
        identity.iter().flatten().any(|c| c.name == column.name)
            || matches!(column.category, 'S' | 'E')
    }

    /// Fails unless the column stored exactly what was written.
    pub(super) fn check_stored(
        &self,
        column: &Column,
        wanted: &str,
        stored: Option<&str>,
    ) -> anyhow::Result<()> {
        if stored == Some(wanted) {
            return Ok(());
        }
        Err(UsageError(format!(
            "the master's {} column {} ({}) stores {:?} as {} (its type, a domain or a trigger changes it): it cannot hold that value exactly, so nothing was written; {}",
            self.label,
            column.quoted(),
            column.sql_type,
            crate::text::shown(wanted),
            stored.map_or_else(|| "NULL".to_owned(), |s| format!("{:?}", crate::text::shown(s))),
            if column.name == self.db_name.name {
                "pick a database name it keeps as it is (--db-name), or fix the column"
            } else {
                "pick a value it keeps as it is, or fix the column"
            }
        ))
        .into())
    }

    /// What `insert` writes into each column it fills.
    fn insert_values(&self, new: &NewCompany<'_>) -> anyhow::Result<Vec<(String, Value)>> {
        self.check_not_own(new)?;
        let mut values: Vec<(String, Value)> = Vec::new();
        let mut missing = Vec::new();
        for column in &self.columns {
            match self.value_for(column, new) {
                Ok(Some(value)) => values.push((column.name.clone(), value)),
                Ok(None) => {}
                Err(Unfilled) => missing.push(column.name.clone()),
            }
        }
        if let Some(name) = new
            .extra
            .iter()
            .map(|(n, _)| n)
            .find(|n| !self.columns.iter().any(|c| &c.name == *n))
        {
            return Err(UsageError(format!(
                "--column {name}: the master table {} has no such column",
                self.label
            ))
            .into());
        }
        if !missing.is_empty() {
            return Err(UsageError(format!(
                "the master table {} requires {} that tenantctl cannot fill; give {} with --column NAME=VALUE",
                self.label,
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ))
            .into());
        }
        Ok(values)
    }

    /// Refuses `--column` for a column tenantctl fills and checks itself:
    /// it would get past those checks (a database name never verified
    /// free, a status that says active before anything exists).
    fn check_not_own(&self, new: &NewCompany<'_>) -> anyhow::Result<()> {
        let own = [
            Some(&self.id),
            Some(&self.db_name),
            self.slug.as_ref(),
            self.name.as_ref(),
            self.status.as_ref(),
        ];
        if let Some((name, _)) = new
            .extra
            .iter()
            .find(|(name, _)| own.iter().flatten().any(|c| &c.name == name))
        {
            return Err(UsageError(format!(
                "--column {name}: tenantctl fills that column itself (use the slug, --name or --db-name)"
            ))
            .into());
        }
        Ok(())
    }

    /// The value `insert` writes into one column: `--column`'s, else what
    /// tenantctl or the application's ORM would fill, else none where the
    /// column has a default or takes NULL; [`Unfilled`] where it can do
    /// neither.
    fn value_for(&self, column: &Column, new: &NewCompany<'_>) -> Result<Option<Value>, Unfilled> {
        let given = new
            .extra
            .iter()
            .find(|(name, _)| *name == column.name)
            .map(|(_, v)| Value::Bind(v.clone(), column.sql_type.clone()));
        let ours = |c: &Option<Column>| c.as_ref().is_some_and(|c| c.name == column.name);
        let value = if let Some(value) = given {
            Some(value)
        } else if column.name == self.db_name.name {
            Some(Value::Bind(
                new.db.as_str().to_owned(),
                column.sql_type.clone(),
            ))
        } else if ours(&self.slug) {
            Some(Value::Bind(
                new.slug.as_str().to_owned(),
                column.sql_type.clone(),
            ))
        } else if ours(&self.name) {
            Some(Value::Bind(new.name.to_owned(), column.sql_type.clone()))
        } else if ours(&self.server) {
            // NULL means the default server, as on rows written before
            // there were servers; a NOT NULL column gets the name.
            (!new.server.is_default() || column.not_null)
                .then(|| Value::Bind(new.server.as_str().to_owned(), column.sql_type.clone()))
        } else if ours(&self.status)
            && let Some(value) = self.status_value(Lifecycle::Provisioning)
        {
            Some(Value::Bind(value, column.sql_type.clone()))
        } else if ours(&self.status)
            && !column.has_default
            && column.not_null
            && let Some(value) = self.status_value(Lifecycle::Active)
        {
            // A required status with no default and no value for
            // "provisioning": the application's own "active"; tenantctl's
            // row says provisioning until it is.
            Some(Value::Bind(value, column.sql_type.clone()))
        } else if (ours(&self.created_at) || ours(&self.updated_at)) && !column.has_default {
            // What an ORM fills in, nullable or not.
            Some(Value::Sql(format!("CAST(now() AS {})", column.sql_type)))
        } else if column.has_default || !column.not_null {
            None
        } else if column.name == self.id.name && matches!(column.category, 'S' | 'U') {
            Some(Value::Sql(format!(
                "CAST(gen_random_uuid() AS {})",
                column.sql_type
            )))
        } else if column.category == 'D' {
            Some(Value::Sql(format!("CAST(now() AS {})", column.sql_type)))
        } else {
            return Err(Unfilled);
        };
        Ok(value)
    }
}

/// The row `create` records.
pub struct NewCompany<'a> {
    pub slug: &'a Slug,
    /// The server its database goes on, recorded before it is created.
    pub server: &'a ServerName,
    pub name: &'a str,
    pub db: &'a DbName,
    /// `--column NAME=VALUE` pairs.
    pub extra: &'a [(String, String)],
}

/// A required column `insert` has no value for.
struct Unfilled;

enum Value {
    /// An SQL expression of our own (`now()`, a UUID).
    Sql(String),
    /// Text bound as a parameter and cast to the column's type.
    Bind(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::companies::layout::tests::{OWN, column, prisma};
    use crate::config::Config;

    #[test]
    fn insert_fills_what_the_application_would_and_names_the_rest() {
        let config = Config::default().master;
        let mut columns = prisma();
        columns.push(column("plan", "text", 'S', true, false));
        let layout =
            Layout::from_columns(&config, "public", "\"Company\"", columns, OWN).expect("layout");
        let slug = Slug::parse("acme").expect("slug");
        let db = DbName::parse("tenant_acme").expect("db");
        let server = ServerName::default();
        let new = NewCompany {
            server: &server,
            slug: &slug,
            name: "Acme",
            db: &db,
            extra: &[],
        };
        let err = layout.insert_values(&new).err().expect("plan is required");
        assert!(err.to_string().contains("plan"), "{err}");
        let extra = [("plan".to_owned(), "pro".to_owned())];
        let new = NewCompany {
            extra: &extra,
            ..new
        };
        let values = layout.insert_values(&new).expect("values");
        let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["id", "name", "dbName", "updatedAt", "plan"]);
    }
}
