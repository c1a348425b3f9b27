//! Reading and writing company rows: the select that joins tenantctl's
//! own records to the application's table, and the updates and deletes
//! that keep both in step.

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use super::layout::{Column, Layout};
use super::{BOOKKEEPING, PLACEMENT, quote};
use crate::dbname::DbName;
use crate::error::UsageError;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, MovingTo, Slug, Tenant, find_tenant, unknown_tenant};

impl Layout {
    fn select(&self) -> String {
        let or_null = |c: &Option<Column>, cast: &str| {
            c.as_ref().map_or_else(
                || format!("NULL::{cast}"),
                |c| format!("c.{}::{cast}", c.quoted()),
            )
        };
        let (lifecycle, join) = if self.uses_bookkeeping() && self.has_bookkeeping {
            (
                "l.lifecycle",
                format!(
                    " LEFT JOIN {} l ON l.company_id = c.{}::text",
                    self.bookkeeping_sql,
                    self.id.quoted()
                ),
            )
        } else {
            ("NULL::text", String::new())
        };
        let mut join = join;
        let server = if let Some(column) = &self.server {
            format!("c.{}::text", column.quoted())
        } else if self.has_placement {
            let _ = write!(
                join,
                " LEFT JOIN {} p ON p.company_id = c.{}::text",
                self.placement_sql,
                self.id.quoted()
            );
            "p.server".to_owned()
        } else {
            "NULL::text".to_owned()
        };
        let moving_to = if self.has_moves {
            let _ = write!(
                join,
                " LEFT JOIN {} m ON m.company_id = c.{}::text AND m.step IN ({})",
                self.moves_sql,
                self.id.quoted(),
                crate::state::MOVES_UNSWITCHED_SQL
            );
            "m.to_server"
        } else {
            "NULL::text"
        };
        format!(
            "SELECT c.{}::text, {}, {}, c.{}::text, {}, {}, {lifecycle}, {server}, {moving_to} FROM {} c{join}",
            self.id.quoted(),
            or_null(&self.slug, "text"),
            or_null(&self.name, "text"),
            self.db_name.quoted(),
            or_null(&self.status, "text"),
            or_null(&self.created_at, "timestamptz"),
            self.table_sql,
        )
    }

    fn tenant(&self, row: Row) -> Tenant {
        let (id, slug, name, db_name, status, created_at, own, server, moving_to) = row;
        let mut tenant = Tenant::new(
            id.unwrap_or_default(),
            slug,
            name,
            db_name,
            status.clone(),
            created_at,
        )
        .with_server(server);
        tenant.read_at = Some(std::time::Instant::now());
        // Name this table's own column in what the operator must fix.
        let (id, column, table) = (&tenant.id, quote(&self.db_name.name), &self.label);
        tenant.db = match &tenant.db_name_raw {
            Some(raw) => DbName::parse(raw).map_err(|err| {
                format!("company {id}: refusing its {column} from the master's {table}: {err}; fix that row")
            }),
            None => Err(format!(
                "company {id}: column {column} is NULL in the master's {table}; set it"
            )),
        };
        // tenantctl's own record wins while it has one (provisioning, failed,
        // dropped); otherwise the application's status says, through the
        // mapping, and a table without a status column means active.
        tenant.lifecycle = match own.as_deref().and_then(Lifecycle::parse) {
            Some(own) => {
                tenant.status = Some(own.as_str().to_owned());
                Some(own)
            }
            None => match (&self.status, status.as_deref()) {
                (None, _) => Some(Lifecycle::Active),
                (Some(_), Some(value)) => self.lifecycle_of(value),
                (Some(_), None) => None,
            },
        };
        // A move only ever takes an active tenant, which stays active in
        // the application's status; tenantctl's record says it is moving.
        if let Some(to) = moving_to {
            tenant.lifecycle = Some(Lifecycle::Moving);
            tenant.status = Some(Lifecycle::Moving.as_str().to_owned());
            tenant.moving_to = Some(match ServerName::parse(&to) {
                Ok(to) => MovingTo::Server(to),
                // Edited by hand into no server's name: still a move, and
                // shown as recorded.
                Err(_) => MovingTo::Unreadable(to),
            });
        }
        tenant
    }

    /// Every company, ordered by slug then id.
    pub async fn list(&self, conn: &mut PgConnection) -> anyhow::Result<Vec<Tenant>> {
        let order = self.slug.as_ref().map_or_else(
            || format!("c.{}", self.id.quoted()),
            |s| format!("c.{}, c.{}", s.quoted(), self.id.quoted()),
        );
        let rows: Vec<Row> = sqlx::query_as(&format!("{} ORDER BY {order}", self.select()))
            .persistent(false)
            .fetch_all(conn)
            .await
            .map_err(|e| self.error(e.into()))?;
        Ok(rows.into_iter().map(|r| self.tenant(r)).collect())
    }

    /// The company an operator means by `key`: slug, else id, else database.
    pub async fn find(&self, conn: &mut PgConnection, key: &str) -> anyhow::Result<Option<Tenant>> {
        let everyone = self.list(conn).await?;
        Ok(find_tenant(&everyone, key)?.cloned())
    }

    /// Like [`Self::find`], but a missing tenant is an error that says so.
    pub async fn get(&self, conn: &mut PgConnection, key: &str) -> anyhow::Result<Tenant> {
        self.find(conn, key)
            .await?
            .ok_or_else(|| unknown_tenant(key))
    }

    /// The company `create` would resume: by slug where the table has one,
    /// else by the database it would get.
    pub async fn find_for_create(
        &self,
        conn: &mut PgConnection,
        slug: &Slug,
        db: Option<&DbName>,
    ) -> anyhow::Result<Option<Tenant>> {
        let everyone = self.list(conn).await?;
        Ok(match (&self.slug, db) {
            (Some(_), _) => everyone
                .into_iter()
                .find(|t| t.slug.as_deref() == Some(slug.as_str())),
            (None, Some(db)) => everyone
                .into_iter()
                .find(|t| t.db_name_raw.as_deref() == Some(db.as_str())),
            (None, None) => None,
        })
    }

    /// The company, if any, whose database is `db`.
    pub async fn find_by_db(
        &self,
        conn: &mut PgConnection,
        db: &DbName,
    ) -> anyhow::Result<Option<Tenant>> {
        Ok(self.naming(conn, db.as_str()).await?.into_iter().next())
    }

    /// The company with this id, if it is (still) there.
    pub async fn find_by_id(
        &self,
        conn: &mut PgConnection,
        id: &str,
    ) -> anyhow::Result<Option<Tenant>> {
        self.rows_where(conn, "c.{id}::text COLLATE \"C\" = $1", id, "")
            .await
            .map(|rows| rows.into_iter().next())
    }

    /// The company with this id, read again with its row locked (`FOR
    /// UPDATE`) until the transaction on `conn` ends: what a destructive
    /// step acts on, since the application may have repointed or deleted
    /// the row since it was selected. `None` if the row is gone (or hidden).
    pub async fn lock_row(
        &self,
        conn: &mut PgConnection,
        id: &str,
    ) -> anyhow::Result<Option<Tenant>> {
        self.rows_where(
            conn,
            "c.{id}::text COLLATE \"C\" = $1",
            id,
            " FOR UPDATE OF c",
        )
        .await
        .map(|rows| rows.into_iter().next())
    }

    /// The companies with these ids, as they are now (one query).
    pub async fn by_ids(
        &self,
        conn: &mut PgConnection,
        ids: &[String],
    ) -> anyhow::Result<Vec<Tenant>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "{} WHERE c.{}::text COLLATE \"C\" = ANY($1)",
            self.select(),
            self.id.quoted()
        ))
        .persistent(false)
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        Ok(rows.into_iter().map(|r| self.tenant(r)).collect())
    }

    /// Every company whose database-name column holds exactly `db` (on any
    /// server: the caller tells which of them are the same database).
    pub async fn naming(&self, conn: &mut PgConnection, db: &str) -> anyhow::Result<Vec<Tenant>> {
        self.rows_where(conn, "c.{db}::text COLLATE \"C\" = $1", db, "")
            .await
    }

    /// Rows of [`Self::select`] matching `condition` (`{id}` and `{db}`
    /// stand for those columns) with `value` bound as `$1`.
    async fn rows_where(
        &self,
        conn: &mut PgConnection,
        condition: &str,
        value: &str,
        suffix: &str,
    ) -> anyhow::Result<Vec<Tenant>> {
        let condition = condition
            .replace("{id}", &self.id.quoted())
            .replace("{db}", &self.db_name.quoted());
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "{} WHERE {condition} ORDER BY c.{}::text{suffix}",
            self.select(),
            self.id.quoted()
        ))
        .persistent(false)
        .bind(value)
        .fetch_all(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        Ok(rows.into_iter().map(|r| self.tenant(r)).collect())
    }

    /// Refuses to place a tenant off the default server where the master
    /// has nowhere to say so (it would then be looked for on `default`).
    pub fn check_can_record_server(&self, server: &ServerName) -> anyhow::Result<()> {
        if !server.is_default() && self.server.is_none() && !self.has_placement {
            return Err(UsageError(format!(
                "the master has nowhere to record that a tenant is on server {server}: run `tenantctl master migrate` (it adds a \"dbServer\" column to tenantctl's own table, or tenantctl's own {PLACEMENT} table beside an application's)"
            ))
            .into());
        }
        Ok(())
    }

    /// Records a company's server: the column, or tenantctl's placement
    /// table (a row only off the default server).
    pub async fn set_server(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        server: &ServerName,
    ) -> anyhow::Result<()> {
        self.check_can_record_server(server)?;
        if let Some(column) = &self.server {
            let value = (!server.is_default() || column.not_null).then(|| server.as_str());
            self.set_column(conn, column, value, &tenant.id, "")
                .await
                .with_context(|| format!("record server {server} for company {}", tenant.id))?;
            return Ok(());
        }
        self.record_placement(conn, &tenant.id, server).await
    }

    pub(super) async fn record_placement(
        &self,
        conn: &mut PgConnection,
        id: &str,
        server: &ServerName,
    ) -> anyhow::Result<()> {
        if !self.has_placement {
            return self.check_can_record_server(server);
        }
        let sql = if server.is_default() {
            format!("DELETE FROM {} WHERE company_id = $1", self.placement_sql)
        } else {
            format!(
                "INSERT INTO {} (company_id, server, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (company_id) DO UPDATE SET server = EXCLUDED.server, updated_at = now()",
                self.placement_sql
            )
        };
        let mut query = sqlx::query(&sql).persistent(false).bind(id);
        if !server.is_default() {
            query = query.bind(server.as_str());
        }
        query
            .execute(conn)
            .await
            .with_context(|| format!("record server {server} for company {id} in {PLACEMENT}"))?;
        Ok(())
    }

    pub(super) fn check_can_record_lifecycle(&self) -> anyhow::Result<()> {
        if self.uses_bookkeeping() && !self.has_bookkeeping {
            return Err(UsageError(format!(
                "the master table {} cannot hold tenantctl's lifecycle states and tenantctl's own {BOOKKEEPING} table is not there yet; run `tenantctl master migrate` (it adds that table and leaves {} as it is)",
                self.label, self.label
            ))
            .into());
        }
        Ok(())
    }

    /// Records a company's lifecycle state (and, for `failed`, why).
    pub async fn set_lifecycle(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        lifecycle: Lifecycle,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        if self.uses_bookkeeping() {
            self.check_can_record_lifecycle()?;
            self.record_own(conn, &tenant.id, lifecycle, error).await?;
            // The application's column says what it can of the same state
            // (its `active`, once provisioning is done), so that it and
            // tenantctl agree once tenantctl's own row is gone; states it
            // has no value for leave it as it is.
            if self.status_value(lifecycle).is_none() {
                return Ok(());
            }
        }
        let (Some(status), Some(value)) = (&self.status, self.status_value(lifecycle)) else {
            anyhow::bail!("the master table cannot record status {lifecycle}");
        };
        let touch = self
            .updated_at
            .as_ref()
            .map(|u| format!(", {} = now()", u.quoted()))
            .unwrap_or_default();
        self.set_column(conn, status, Some(&value), &tenant.id, &touch)
            .await
            .with_context(|| format!("set status {lifecycle} on company {}", tenant.id))
    }

    /// Sets one column of a company's row to a value given as text and
    /// cast to the column's own type (an enum, say); `touch` adds more
    /// assignments (`, "updatedAt" = now()`).
    async fn set_column(
        &self,
        conn: &mut PgConnection,
        column: &Column,
        value: Option<&str>,
        company_id: &str,
        touch: &str,
    ) -> anyhow::Result<()> {
        let stored: Vec<(Option<String>,)> = sqlx::query_as(&format!(
            "UPDATE {} AS c SET {} = CAST($1::text AS {}){touch} WHERE c.{}::text COLLATE \"C\" = $2 RETURNING c.{}::text",
            self.table_sql,
            column.quoted(),
            column.sql_type,
            self.id.quoted(),
            column.quoted()
        ))
        .persistent(false)
        .bind(value)
        .bind(company_id)
        .fetch_all(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        match stored.as_slice() {
            [] => Err(self.untouched(company_id, "update")),
            [(stored,)] => match value {
                Some(wanted) if self.read_back(column) => {
                    self.check_stored(column, wanted, stored.as_deref())
                }
                Some(_) => Ok(()),
                None if stored.is_none() => Ok(()),
                None => Err(self.untouched(company_id, "clear")),
            },
            more => anyhow::bail!(
                "the master's {} has {} rows with id {}: an id must name one company; fix the table",
                self.label,
                more.len(),
                crate::text::shown(company_id)
            ),
        }
    }

    /// The error for a write to a company's row that touched nothing: the
    /// row was deleted meanwhile, row-level security hides it from this
    /// role, or a trigger skipped it (a soft delete's `RETURN NULL`).
    fn untouched(&self, company_id: &str, verb: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "the master's {} did not let tenantctl {verb} company {}'s row: 0 rows changed (the row is gone, hidden from this role by row-level security, or a trigger on the table skipped the change)",
            self.label,
            crate::text::shown(company_id)
        )
    }

    /// tenantctl's own record: a row while the state is anything but
    /// active, none once the application's own status speaks for it.
    pub(super) async fn record_own(
        &self,
        conn: &mut PgConnection,
        id: &str,
        lifecycle: Lifecycle,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let sql = if lifecycle == Lifecycle::Active {
            format!("DELETE FROM {} WHERE company_id = $1", self.bookkeeping_sql)
        } else {
            format!(
                "INSERT INTO {} (company_id, lifecycle, last_error, updated_at) VALUES ($1, $2, $3, now()) \
                 ON CONFLICT (company_id) DO UPDATE SET lifecycle = EXCLUDED.lifecycle, \
                 last_error = EXCLUDED.last_error, updated_at = now()",
                self.bookkeeping_sql
            )
        };
        let mut query = sqlx::query(&sql).persistent(false).bind(id);
        if lifecycle != Lifecycle::Active {
            query = query.bind(lifecycle.as_str()).bind(error);
        }
        query.execute(conn).await.with_context(|| {
            format!("record status {lifecycle} for company {id} in {BOOKKEEPING}")
        })?;
        Ok(())
    }

    /// Deletes a company's row (and tenantctl's records of it).
    pub async fn delete(&self, conn: &mut PgConnection, tenant: &Tenant) -> anyhow::Result<()> {
        for (exists, table) in [
            (self.has_bookkeeping, &self.bookkeeping_sql),
            (self.has_placement, &self.placement_sql),
            (self.has_moves, &self.moves_sql),
        ] {
            if exists {
                sqlx::query(&format!("DELETE FROM {table} WHERE company_id = $1"))
                    .persistent(false)
                    .bind(&tenant.id)
                    .execute(&mut *conn)
                    .await
                    .context("forget the company in tenantctl's bookkeeping")?;
            }
        }
        let deleted: Vec<(Option<String>,)> = sqlx::query_as(&format!(
            "DELETE FROM {} AS c WHERE c.{}::text COLLATE \"C\" = $1 RETURNING c.{}::text",
            self.table_sql,
            self.id.quoted(),
            self.db_name.quoted()
        ))
        .persistent(false)
        .bind(&tenant.id)
        .fetch_all(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        match deleted.as_slice() {
            [] => Err(self.untouched(&tenant.id, "delete")),
            [(db,)] if db.as_deref() == tenant.db_name_raw.as_deref() => Ok(()),
            [(db,)] => anyhow::bail!(
                "company {}'s row named database {} when deleted, not {}: it changed meanwhile",
                crate::text::shown(&tenant.id),
                db.as_deref()
                    .map_or_else(|| "NULL".into(), crate::text::shown),
                crate::text::shown(tenant.db_label())
            ),
            more => anyhow::bail!(
                "the master's {} has {} rows with id {}: an id must name one company; fix the table",
                self.label,
                more.len(),
                crate::text::shown(&tenant.id)
            ),
        }
    }
}

pub(super) type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
);
