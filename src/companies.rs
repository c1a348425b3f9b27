//! The master's companies table: the only record of which tenants exist and
//! which database each one uses.
//!
//! tenantctl reads the table as it finds it. It needs only an id and a
//! database name; slug, name, status and timestamps are used when the table
//! has them ([`Layout::load`] looks at the catalog once per run). A tenant's
//! lifecycle (`provisioning`, `active`, `failed`, `dropped`) lives in the
//! table's status column when that column can hold it, and otherwise in
//! tenantctl's own `_tenantctl_lifecycle` table beside it, so an
//! application's table is never altered behind its back.
//!
//! A company's server (NULL or absent: `default`) lives the same way: in a
//! column (`"dbServer"`, which tenantctl's own master migration adds, or
//! one named in `tenantctl.toml`), else in tenantctl's own
//! `_tenantctl_placement`. A move in progress (`_tenantctl_moves`, see
//! [`crate::moves`]) makes the tenant `moving`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::config::MasterConfig;
use crate::connect::has_sqlstate;
use crate::dbname::DbName;
use crate::error::UsageError;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Slug, Tenant, find_tenant, unknown_tenant};

/// tenantctl's own bookkeeping table, created by `master migrate` beside an
/// application's companies table that cannot hold tenantctl's states.
pub const BOOKKEEPING: &str = "_tenantctl_lifecycle";

/// tenantctl's record of each company's server, beside an application's
/// companies table that has no column for it.
pub const PLACEMENT: &str = "_tenantctl_placement";

/// tenantctl's record of moves between servers (see [`crate::moves`]).
pub const MOVES: &str = "_tenantctl_moves";

/// Names tried, in order, for each column the configuration leaves out.
const DEFAULTS: [(&str, &[&str]); 8] = [
    ("id", &["id"]),
    (
        "db_name",
        &["dbName", "db_name", "database_name", "database"],
    ),
    ("slug", &["slug"]),
    ("name", &["name"]),
    ("status", &["status"]),
    ("created_at", &["createdAt", "created_at"]),
    ("updated_at", &["updatedAt", "updated_at"]),
    ("server", &["dbServer"]),
];

/// One column of the companies table, as the catalog describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `format_type()`: the type as SQL spells it, quoted where needed.
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
    /// `pg_type.typcategory`: `S` string, `D` date/time, `N` numeric, `E` enum, ...
    pub category: char,
    /// The labels of an enum type.
    pub labels: Option<Vec<String>>,
    /// The CHECK constraints on this column, as SQL (for a text status
    /// column: which values it admits).
    pub checks: String,
}

impl Column {
    fn quoted(&self) -> String {
        quote(&self.name)
    }
}

/// How the master's companies table is laid out and where lifecycles live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The table as configured, for messages.
    pub label: String,
    table_sql: String,
    bookkeeping_sql: String,
    placement_sql: String,
    pub(crate) moves_sql: String,
    /// The companies table's schema, quoted: tenantctl's own tables live
    /// beside it.
    schema_sql: String,
    pub id: Column,
    pub db_name: Column,
    pub slug: Option<Column>,
    pub name: Option<Column>,
    pub status: Option<Column>,
    pub created_at: Option<Column>,
    pub updated_at: Option<Column>,
    /// The column that records each company's server, if the table has one.
    pub server: Option<Column>,
    /// Every column, in table order.
    pub columns: Vec<Column>,
    /// Whether `_tenantctl_lifecycle` exists.
    pub has_bookkeeping: bool,
    /// Whether `_tenantctl_placement` exists.
    pub has_placement: bool,
    /// Whether `_tenantctl_moves` exists.
    pub has_moves: bool,
    /// The table's value for each lifecycle state, from the configuration.
    mapped: BTreeMap<Lifecycle, String>,
}

type CatalogRow = (
    String,
    String,
    bool,
    bool,
    String,
    Option<Vec<String>>,
    String,
    bool,
    bool,
    bool,
    String,
);

/// Which of tenantctl's own tables sit beside the companies table.
#[derive(Debug, Clone, Copy, Default)]
struct OwnTables {
    bookkeeping: bool,
    placement: bool,
    moves: bool,
}

impl Layout {
    /// Reads the table's columns from the catalog (one query).
    pub async fn load(conn: &mut PgConnection, config: &MasterConfig) -> anyhow::Result<Self> {
        let (schema, table) = split_table(&config.table)?;
        let regclass = match &schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&table)),
            None => quote(&table),
        };
        let rows: Vec<CatalogRow> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', \
                    t.typcategory::text, \
                    CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e \
                         WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END, \
                    n.nspname::text, \
                    to_regclass(quote_ident(n.nspname) || '.' || quote_ident($2)) IS NOT NULL, \
                    to_regclass(quote_ident(n.nspname) || '.' || quote_ident($3)) IS NOT NULL, \
                    to_regclass(quote_ident(n.nspname) || '.' || quote_ident($4)) IS NOT NULL, \
                    coalesce((SELECT string_agg(pg_get_constraintdef(k.oid), ' ') FROM pg_constraint k \
                              WHERE k.conrelid = a.attrelid AND k.contype = 'c' \
                                AND a.attnum = ANY(k.conkey)), '') \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .persistent(false)
        .bind(&regclass)
        .bind(BOOKKEEPING)
        .bind(PLACEMENT)
        .bind(MOVES)
        .fetch_all(&mut *conn)
        .await
        .context("read the master table's columns")?;
        let Some(first) = rows.first() else {
            return Err(MissingTable {
                table: config.table.clone(),
                configured: config.table != MasterConfig::default().table,
            }
            .into());
        };
        let schema = first.6.clone();
        let own = OwnTables {
            bookkeeping: first.7,
            placement: first.8,
            moves: first.9,
        };
        let columns: Vec<Column> = rows
            .into_iter()
            .map(
                |(name, sql_type, not_null, has_default, category, labels, _, _, _, _, checks)| {
                    Column {
                        name,
                        sql_type,
                        not_null,
                        has_default,
                        category: category.chars().next().unwrap_or('X'),
                        labels,
                        checks,
                    }
                },
            )
            .collect();
        Self::from_columns(config, &schema, &regclass, columns, own)
    }

    fn from_columns(
        config: &MasterConfig,
        schema: &str,
        regclass: &str,
        columns: Vec<Column>,
        own: OwnTables,
    ) -> anyhow::Result<Self> {
        let configured = &config.columns;
        let pick = |key: &str, named: Option<&String>| -> Result<Option<Column>, UsageError> {
            if let Some(name) = named {
                return columns
                    .iter()
                    .find(|c| &c.name == name)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        UsageError(format!(
                            "tenantctl.toml names column {name:?} for {key}, but the master table {} has no such column",
                            config.table
                        ))
                    });
            }
            let candidates = DEFAULTS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(&[][..], |(_, names)| *names);
            Ok(candidates
                .iter()
                .find_map(|want| columns.iter().find(|c| c.name == *want))
                .cloned())
        };
        let required = |key: &str, named: Option<&String>| -> anyhow::Result<Column> {
            pick(key, named)?.ok_or_else(|| {
                UsageError(format!(
                    "the master table {} has no {key} column (looked for {}); name it in tenantctl.toml under [master.columns]",
                    config.table,
                    DEFAULTS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(String::new(), |(_, names)| names.join(", "))
                ))
                .into()
            })
        };
        Ok(Self {
            label: config.table.clone(),
            table_sql: regclass.to_owned(),
            bookkeeping_sql: format!("{}.{}", quote(schema), quote(BOOKKEEPING)),
            placement_sql: format!("{}.{}", quote(schema), quote(PLACEMENT)),
            moves_sql: format!("{}.{}", quote(schema), quote(MOVES)),
            schema_sql: quote(schema),
            id: required("id", configured.id.as_ref())?,
            db_name: required("db_name", configured.db_name.as_ref())?,
            slug: pick("slug", configured.slug.as_ref())?,
            name: pick("name", configured.name.as_ref())?,
            status: pick("status", configured.status.as_ref())?,
            created_at: pick("created_at", configured.created_at.as_ref())?
                .filter(|c| c.category == 'D'),
            updated_at: pick("updated_at", configured.updated_at.as_ref())?
                .filter(|c| c.category == 'D'),
            server: pick("server", configured.server.as_ref())?,
            columns,
            has_bookkeeping: own.bookkeeping,
            has_placement: own.placement,
            has_moves: own.moves,
            mapped: config
                .statuses
                .iter()
                .map(|(k, v)| (Lifecycle::from(*k), v.clone()))
                .collect(),
        })
    }

    /// The value the status column takes for a lifecycle state, if it can
    /// hold it: the configured value, else the state's name, for an enum
    /// the label that matches it ignoring case. A text column is trusted
    /// with a state only when the configuration maps it or the column's own
    /// CHECK names it (tenantctl's own table does): an application's free
    /// text status would otherwise get words its code does not know.
    pub fn status_value(&self, lifecycle: Lifecycle) -> Option<String> {
        let column = self.status.as_ref()?;
        let mapped = self.mapped.get(&lifecycle).cloned();
        let wanted = mapped
            .clone()
            .unwrap_or_else(|| lifecycle.as_str().to_owned());
        match &column.labels {
            Some(labels) => labels
                .iter()
                .find(|l| **l == wanted)
                .or_else(|| labels.iter().find(|l| l.eq_ignore_ascii_case(&wanted)))
                .cloned(),
            None if column.category == 'S' => mapped.or_else(|| {
                column
                    .checks
                    .contains(&format!("'{wanted}'"))
                    .then_some(wanted)
            }),
            None => None,
        }
    }

    /// The lifecycle state a status value stands for.
    pub fn lifecycle_of(&self, value: &str) -> Option<Lifecycle> {
        Lifecycle::STORED.into_iter().find(|l| {
            self.mapped.get(l).map_or_else(
                || value.eq_ignore_ascii_case(l.as_str()),
                |m| m == value || m.eq_ignore_ascii_case(value),
            )
        })
    }

    /// Whether the table's status column can record every lifecycle state;
    /// if not, they are kept in `_tenantctl_lifecycle`.
    pub fn status_holds_lifecycle(&self) -> bool {
        Lifecycle::STORED
            .into_iter()
            .all(|l| self.status_value(l).is_some())
    }

    /// Whether lifecycle states are read from (and written to) the
    /// bookkeeping table.
    fn uses_bookkeeping(&self) -> bool {
        !self.status_holds_lifecycle()
    }

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
                crate::moves::Step::UNSWITCHED_SQL
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
            tenant.moving_to = Some(to);
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
        Ok(find_tenant(&everyone, key).cloned())
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
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "{} WHERE c.{}::text = $1",
            self.select(),
            self.db_name.quoted()
        ))
        .persistent(false)
        .bind(db.as_str())
        .fetch_all(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        Ok(rows.into_iter().next().map(|r| self.tenant(r)))
    }

    /// Records a new company in `provisioning`, filling the columns the
    /// table requires the way its application would: an id when the column
    /// has no default (a UUID), timestamps with now, and any other required
    /// column from `extra` (`--column NAME=VALUE`), refusing to guess.
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        new: &NewCompany<'_>,
    ) -> anyhow::Result<Tenant> {
        self.check_can_record_lifecycle()?;
        self.check_can_record_server(new.server)?;
        let values = self.insert_values(new)?;
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
        let sql = format!(
            "INSERT INTO {} AS c ({}) VALUES ({}) RETURNING c.{}::text",
            self.table_sql,
            names.join(", "),
            exprs.join(", "),
            self.id.quoted()
        );
        let mut tx = conn.begin().await.context("begin")?;
        let mut query = sqlx::query_as::<_, (String,)>(&sql).persistent(false);
        for bind in &binds {
            query = query.bind(bind);
        }
        let (id,) = query.fetch_one(&mut *tx).await.map_err(|err| {
            let err = anyhow::Error::new(err);
            if has_sqlstate(&err, "23505") {
                anyhow::anyhow!(
                    "tenant {} or database {} is already recorded in the master; pick another slug or --db-name",
                    new.slug,
                    new.db
                )
            } else {
                self.error(err).context("record the company")
            }
        })?;
        if self.uses_bookkeeping() {
            self.record_own(&mut tx, &id, Lifecycle::Provisioning, None)
                .await?;
        }
        if self.server.is_none() && !new.server.is_default() {
            self.record_placement(&mut tx, &id, new.server).await?;
        }
        tx.commit().await.context("commit")?;
        self.find_by_db(conn, new.db)
            .await?
            .context("the new company row is not there after inserting it")
    }

    /// What `insert` writes into each column it fills.
    fn insert_values(&self, new: &NewCompany<'_>) -> anyhow::Result<Vec<(String, Value)>> {
        // The columns tenantctl fills and checks itself: `--column` setting
        // one would get past those checks (a database name never verified
        // free, a status that says active before anything exists).
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
        let mut values: Vec<(String, Value)> = Vec::new();
        let given = |column: &Column| {
            new.extra
                .iter()
                .find(|(name, _)| *name == column.name)
                .map(|(_, v)| Value::Bind(v.clone(), column.sql_type.clone()))
        };
        let mut missing = Vec::new();
        for column in &self.columns {
            let ours = |c: &Option<Column>| c.as_ref().is_some_and(|c| c.name == column.name);
            let value = if let Some(value) = given(column) {
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
                missing.push(column.name.clone());
                None
            };
            if let Some(value) = value {
                values.push((column.name.clone(), value));
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

    async fn record_placement(
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

    fn check_can_record_lifecycle(&self) -> anyhow::Result<()> {
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
        sqlx::query(&format!(
            "UPDATE {} AS c SET {} = CAST($1::text AS {}){touch} WHERE c.{}::text = $2",
            self.table_sql,
            column.quoted(),
            column.sql_type,
            self.id.quoted()
        ))
        .persistent(false)
        .bind(value)
        .bind(company_id)
        .execute(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        Ok(())
    }

    /// tenantctl's own record: a row while the state is anything but
    /// active, none once the application's own status speaks for it.
    async fn record_own(
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
        sqlx::query(&format!(
            "DELETE FROM {} AS c WHERE c.{}::text = $1",
            self.table_sql,
            self.id.quoted()
        ))
        .persistent(false)
        .bind(&tenant.id)
        .execute(conn)
        .await
        .map_err(|e| self.error(e.into()))?;
        Ok(())
    }

    /// Creates tenantctl's bookkeeping table if this table needs it.
    /// Returns whether it was needed.
    pub async fn ensure_bookkeeping(&mut self, conn: &mut PgConnection) -> anyhow::Result<bool> {
        if !self.uses_bookkeeping() {
            return Ok(false);
        }
        conn.execute(
            format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                   company_id text PRIMARY KEY, \
                   lifecycle  text NOT NULL CHECK (lifecycle IN ('provisioning', 'active', 'failed', 'dropped')), \
                   last_error text, \
                   updated_at timestamptz NOT NULL DEFAULT now())",
                self.bookkeeping_sql
            )
            .as_str(),
        )
        .await
        .with_context(|| format!("create tenantctl's {BOOKKEEPING} table"))?;
        self.has_bookkeeping = true;
        Ok(true)
    }

    /// Creates tenantctl's placement table if the companies table has no
    /// column for the server. Returns whether it was needed.
    pub async fn ensure_placement(&mut self, conn: &mut PgConnection) -> anyhow::Result<bool> {
        if self.server.is_some() {
            return Ok(false);
        }
        conn.execute(
            format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                   company_id text PRIMARY KEY, \
                   server     text NOT NULL, \
                   updated_at timestamptz NOT NULL DEFAULT now())",
                self.placement_sql
            )
            .as_str(),
        )
        .await
        .with_context(|| format!("create tenantctl's {PLACEMENT} table"))?;
        self.has_placement = true;
        Ok(true)
    }

    /// One of tenantctl's own tables beside the companies table, as SQL
    /// (schema-qualified and quoted).
    pub fn own_table(&self, name: &str) -> String {
        format!("{}.{}", self.schema_sql, quote(name))
    }

    /// Creates tenantctl's record of moves between servers.
    pub async fn ensure_moves(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.has_moves {
            return Ok(());
        }
        conn.execute(crate::moves::create_table_sql(&self.moves_sql).as_str())
            .await
            .with_context(|| format!("create tenantctl's {MOVES} table"))?;
        self.has_moves = true;
        Ok(())
    }

    /// One line per thing `master migrate` found and will use.
    pub fn describe(&self) -> Vec<String> {
        let column = |what: &str, c: &Option<Column>| match c {
            Some(c) => format!("{what}: column {:?} ({})", c.name, c.sql_type),
            None => format!("{what}: none"),
        };
        let mut lines = vec![
            format!("companies table: {}", self.label),
            column("id", &Some(self.id.clone())),
            column("database name", &Some(self.db_name.clone())),
            column("slug", &self.slug),
            column("name", &self.name),
            column("status", &self.status),
        ];
        lines.push(if self.uses_bookkeeping() {
            format!("lifecycle (provisioning, failed, dropped): kept in tenantctl's own {BOOKKEEPING} table")
        } else {
            "lifecycle: kept in the status column".to_owned()
        });
        lines.push(match &self.server {
            Some(c) => format!(
                "server: column {:?} ({}); NULL means default",
                c.name, c.sql_type
            ),
            None => format!(
                "server: kept in tenantctl's own {PLACEMENT} table (none recorded: default)"
            ),
        });
        lines
    }

    fn error(&self, err: anyhow::Error) -> anyhow::Error {
        if has_sqlstate(&err, "42P01") {
            err.context(format!(
                "the master database has no {} table; run `tenantctl master migrate` first",
                self.label
            ))
        } else {
            err.context("query the master database")
        }
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

enum Value {
    /// An SQL expression of our own (`now()`, a UUID).
    Sql(String),
    /// Text bound as a parameter and cast to the column's type.
    Bind(String, String),
}

type Row = (
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

/// The companies table is not in the master: not migrated yet (exit 1),
/// or, when tenantctl.toml names the table, a configuration to fix (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct MissingTable {
    pub table: String,
    pub configured: bool,
}

impl MissingTable {
    fn message(&self) -> String {
        if self.configured {
            format!(
                "the master database has no table {} (named in tenantctl.toml); fix [master] table, or run `tenantctl master migrate` if it is tenantctl's own",
                self.table
            )
        } else {
            format!(
                "the master database has no {} table; run `tenantctl master migrate` first, or name the companies table in tenantctl.toml ([master] table = ...)",
                quote(&self.table)
            )
        }
    }
}

/// Takes a session-level advisory lock on this slug in the master, held
/// until the connection is released, so two `tenant create` runs of one
/// slug never provision it at once: the second waits, then finds the row.
/// (Behind a transaction-mode pooler the connection stays pinned until
/// then, and its release unlocks every advisory lock it holds.)
///
/// On a plain connection, in a transaction of its own: the parameterized
/// query takes two round trips, which a transaction-mode pooler nobody
/// declared could send to two server connections.
pub async fn lock_slug(conn: &mut PgConnection, slug: &Slug) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('tenantctl create ' || $1, 0))")
        .persistent(false)
        .bind(slug.as_str())
        .execute(&mut *tx)
        .await
        .context("take the master's lock for this slug")?;
    tx.commit().await.context("commit")?;
    Ok(())
}

/// Gives back [`lock_slug`]'s lock on a plain connection before it is
/// closed: closing it ends the session on a direct connection, but a
/// pooler nobody declared keeps the server connection, and the lock with
/// it, for its next client. (A pinned connection's release unlocks all.)
pub async fn unlock_slug(conn: &mut PgConnection, slug: &Slug) -> anyhow::Result<()> {
    if conn.is_in_transaction() {
        return Ok(());
    }
    let mut tx = conn.begin().await.context("begin")?;
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('tenantctl create ' || $1, 0))")
        .persistent(false)
        .bind(slug.as_str())
        .execute(&mut *tx)
        .await
        .context("release the master's lock for this slug")?;
    tx.commit().await.context("commit")?;
    Ok(())
}

/// An identifier quoted for SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, as configured.
fn split_table(raw: &str) -> Result<(Option<String>, String), UsageError> {
    let bad = || UsageError(format!("[master] table {raw:?} is not a table name"));
    if raw.contains('\0') || raw.trim().is_empty() {
        return Err(bad());
    }
    match raw.split_once('.') {
        Some((schema, table)) if !schema.is_empty() && !table.is_empty() => {
            Ok((Some(schema.to_owned()), table.to_owned()))
        }
        Some(_) => Err(bad()),
        None => Ok((None, raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn column(name: &str, sql_type: &str, category: char, not_null: bool, default: bool) -> Column {
        Column {
            name: name.into(),
            sql_type: sql_type.into(),
            not_null,
            has_default: default,
            category,
            labels: None,
            checks: String::new(),
        }
    }

    const OWN: OwnTables = OwnTables {
        bookkeeping: true,
        placement: true,
        moves: true,
    };

    fn prisma() -> Vec<Column> {
        let mut status = column("status", "\"CompanyStatus\"", 'E', true, true);
        status.labels = Some(vec!["ACTIVE".into(), "SUSPENDED".into()]);
        vec![
            column("id", "text", 'S', true, false),
            column("name", "text", 'S', true, false),
            column("dbName", "text", 'S', true, false),
            status,
            column(
                "createdAt",
                "timestamp(3) without time zone",
                'D',
                true,
                true,
            ),
            column(
                "updatedAt",
                "timestamp(3) without time zone",
                'D',
                true,
                false,
            ),
        ]
    }

    #[test]
    fn a_prisma_master_keeps_lifecycle_in_bookkeeping_and_reads_upper_case() {
        let config = Config::default().master;
        let layout =
            Layout::from_columns(&config, "public", "\"Company\"", prisma(), OWN).expect("layout");
        assert!(layout.slug.is_none());
        assert!(!layout.status_holds_lifecycle());
        assert_eq!(layout.lifecycle_of("ACTIVE"), Some(Lifecycle::Active));
        assert_eq!(layout.lifecycle_of("SUSPENDED"), None);
        assert_eq!(
            layout.status_value(Lifecycle::Active).as_deref(),
            Some("ACTIVE")
        );
        assert_eq!(layout.status_value(Lifecycle::Provisioning), None);
    }

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

    #[test]
    fn a_configured_table_with_integer_ids_and_a_text_status() {
        let config = Config::parse(
            "[master]\ntable = \"app.tenants\"\n[master.statuses]\nactive = \"live\"\nprovisioning = \"new\"\nfailed = \"broken\"\ndropped = \"gone\"\n",
        )
        .expect("config")
        .master;
        let columns = vec![
            column("id", "bigint", 'N', true, true),
            column("database_name", "character varying(63)", 'S', true, false),
            column("status", "text", 'S', false, false),
        ];
        let layout = Layout::from_columns(
            &config,
            "app",
            "\"app\".\"tenants\"",
            columns,
            OwnTables::default(),
        )
        .expect("layout");
        assert_eq!(layout.db_name.name, "database_name");
        assert!(layout.status_holds_lifecycle());
        assert_eq!(layout.lifecycle_of("LIVE"), Some(Lifecycle::Active));
        assert_eq!(layout.lifecycle_of("active"), None);
        assert_eq!(
            layout.status_value(Lifecycle::Failed).as_deref(),
            Some("broken")
        );
        assert_eq!(
            split_table("app.tenants").expect("ok").0.as_deref(),
            Some("app")
        );
        assert!(split_table(".x").is_err());
    }
}
