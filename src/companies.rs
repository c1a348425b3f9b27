//! The master's companies table: the only record of which tenants exist and
//! which database each one uses.
//!
//! tenantctl reads the table as it finds it. It needs only an id and a
//! database name; slug, name, status and timestamps are used when the table
//! has them ([`Layout::load`] looks at the catalog once per run). A tenant's
//! lifecycle (`provisioning`, `active`, `failed`, `dropped`) lives in the
//! table's status column when that column can hold it, and otherwise in
//! tenantctl's own `tenantctl.lifecycle` table (see [`crate::state`]), so an
//! application's table is never altered behind its back.
//!
//! A company's server (NULL or absent: `default`) lives the same way: in a
//! column (`"dbServer"`, which tenantctl's own master migration adds, or
//! one named in `tenantctl.toml`), else in tenantctl's own
//! `tenantctl.placement`. A move in progress (`tenantctl.moves`, see
//! [`crate::moves`]) makes the tenant `moving`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _, Row as _};

use crate::config::MasterConfig;
use crate::connect::has_sqlstate;
use crate::dbname::DbName;
use crate::error::UsageError;
use crate::output::shown;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Slug, Tenant, find_tenant, unknown_tenant};

/// tenantctl's own bookkeeping table, created by `master migrate` for an
/// application's companies table that cannot hold tenantctl's states.
pub const BOOKKEEPING: &str = crate::state::LIFECYCLE;

/// tenantctl's record of each company's server, for an application's
/// companies table that has no column for it.
pub const PLACEMENT: &str = crate::state::PLACEMENT;

/// tenantctl's record of moves between servers (see [`crate::moves`]).
pub const MOVES: &str = crate::state::MOVES;

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
    /// The companies table's schema, quoted: where older versions kept
    /// tenantctl's own tables.
    pub(crate) schema_sql: String,
    /// tenantctl's tables still in that schema under their old names
    /// (`master migrate` moves them into [`crate::state::SCHEMA`]).
    pub legacy: Vec<String>,
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
    /// Whether `tenantctl.lifecycle` exists.
    pub has_bookkeeping: bool,
    /// Whether `tenantctl.placement` exists.
    pub has_placement: bool,
    /// Whether `tenantctl.moves` exists.
    pub has_moves: bool,
    /// The table's value for each lifecycle state, from the configuration.
    mapped: BTreeMap<Lifecycle, String>,
    /// What reading the table may leave out (see [`Visibility`]).
    pub visibility: Visibility,
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
    String,
    bool,
    Vec<String>,
);

/// A table of the master whose row-level security applies to the role that
/// reads it for tenantctl: the companies table itself (for tenantctl's own
/// role), or a table beneath it when it is a view (for the role the view
/// reads it with). Its policies may hide companies, and tenantctl cannot
/// tell which.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RowSecurity {
    /// The table, as `regclass` spells it (quoted and schema-qualified
    /// where needed).
    pub table: String,
    /// The role the policies apply to.
    pub role: String,
    /// The table's owner.
    pub owner: String,
    /// `FORCE ROW LEVEL SECURITY`: the policies apply to the owner too.
    pub forced: bool,
}

/// What reading the companies table may leave out, worked out by the
/// catalog query of [`Layout::load`] at no extra round trip: the rows are
/// read through `SELECT`, and whatever filters that select (row-level
/// security, a view's own `WHERE`) is invisible in what comes back.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// Row-level security that applies, on the table or beneath the view.
    /// Policies that provably show every row (a permissive `USING (true)`
    /// for the role, no restrictive one) do not count.
    pub row_security: Vec<RowSecurity>,
    /// `pg_class.relkind` of the configured table: `r`/`p` a table, `v` a
    /// view, `m` a materialized view, `f` a foreign table.
    pub relkind: char,
}

impl Default for Visibility {
    fn default() -> Self {
        Self {
            row_security: Vec::new(),
            relkind: 'r',
        }
    }
}

impl Visibility {
    /// Why tenantctl cannot trust the master to show it every company, if
    /// it cannot: row-level security that applies (on the table, or
    /// beneath the view). `refused` says what is refused ("--all and
    /// --status", "doctor").
    pub fn hiding(&self, label: &str, refused: &str) -> Option<UsageError> {
        let first = self.row_security.first()?;
        let (role, table, owner) = (shown(&first.role), shown(&first.table), shown(&first.owner));
        let role_sql = shown(&quote(&first.role));
        let beneath = if self.is_table() {
            String::new()
        } else {
            format!(" (read through the master's view {})", shown(label))
        };
        let others = if self.row_security.len() > 1 {
            let rest: Vec<String> = self.row_security[1..]
                .iter()
                .map(|r| format!("{} (role {})", shown(&r.table), shown(&r.role)))
                .collect();
            format!("; also on {}", rest.join(", "))
        } else {
            String::new()
        };
        let owner_way = if first.forced && first.owner == first.role {
            format!(
                "or let the owner through again with `ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY`"
            )
        } else if first.forced {
            format!(
                "or run as its owner {owner} after `ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY`"
            )
        } else {
            format!("or run as its owner {owner} (the policies do not apply to the owner)")
        };
        Some(UsageError(format!(
            "row-level security applies to role {role} on table {table}{beneath}{others}: its policies may hide companies, and tenantctl cannot tell which, so it refuses {refused}; \
             exempt the role with `ALTER ROLE {role_sql} BYPASSRLS`, or a policy that shows it every row \
             (`CREATE POLICY tenantctl_reads_all ON {table} FOR SELECT TO {role_sql} USING (true)`), {owner_way}; \
             tenants named one by one still work"
        )))
    }

    /// Whether the configured companies "table" is a table (plain or
    /// partitioned): a view, a materialized view or a foreign table may
    /// leave companies out by its own definition.
    pub fn is_table(&self) -> bool {
        matches!(self.relkind, 'r' | 'p')
    }
}

/// The catalog's verdict on which row-level security hides rows from
/// whom, as JSON, for the table or view `$1`. Asked only when the catalog
/// query of [`Layout::load`] found row security active on the table or
/// found a view: planning it costs more than that whole query (cold, in a
/// new session, some 10 ms), which no ordinary master should pay on every
/// command. For a table, `row_security_active()` asks the server itself; for a
/// view the relations beneath it are walked through its rewrite rules,
/// each read with the view owner's rights unless the view is
/// `security_invoker`, and row security applies to that role as the server
/// decides it: unless it is a superuser or `BYPASSRLS`, or owns the table
/// (is a member of its owner) and the table does not `FORCE` it.
const VISIBILITY_SQL: &str = "SELECT (WITH RECURSIVE reads(rel, reader) AS ( \
        SELECT c.oid, (SELECT r.oid FROM pg_roles r WHERE r.rolname = current_user) \
        UNION \
        SELECT d.refobjid, \
               CASE WHEN EXISTS (SELECT 1 FROM unnest(v.reloptions) o \
                                 WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', \
                                                    'security_invoker=yes', 'security_invoker=1')) \
                    THEN x.reader ELSE v.relowner END \
        FROM reads x \
        JOIN pg_class v ON v.oid = x.rel AND v.relkind = 'v' \
        JOIN pg_rewrite w ON w.ev_class = v.oid \
        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid \
             AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> v.oid) \
      SELECT json_agg(json_build_object('table', t.oid::regclass::text, \
                                        'role', pg_get_userbyid(h.reader), \
                                        'owner', pg_get_userbyid(t.relowner), \
                                        'forced', t.relforcerowsecurity) \
                      ORDER BY t.oid::regclass::text) \
      FROM (SELECT DISTINCT rel, reader FROM reads) h \
      JOIN pg_class t ON t.oid = h.rel \
      WHERE t.relkind IN ('r', 'p') AND t.relrowsecurity \
        AND CASE WHEN t.oid = c.oid THEN row_security_active(c.oid) \
                 ELSE NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.oid = h.reader) \
                      AND NOT (pg_has_role(h.reader, t.relowner, 'USAGE') AND NOT t.relforcerowsecurity) END \
        AND NOT (EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = t.oid AND p.polpermissive \
                           AND p.polcmd IN ('r', '*') \
                           AND pg_get_expr(p.polqual, p.polrelid) = 'true' \
                           AND EXISTS (SELECT 1 FROM unnest(p.polroles) pr WHERE CASE WHEN pr = 0 THEN true \
                                       ELSE pg_has_role(h.reader, pr, 'USAGE') END)) \
                 AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = t.oid AND NOT p.polpermissive \
                           AND p.polcmd IN ('r', '*') \
                           AND pg_get_expr(p.polqual, p.polrelid) IS DISTINCT FROM 'true' \
                           AND EXISTS (SELECT 1 FROM unnest(p.polroles) pr WHERE CASE WHEN pr = 0 THEN true \
                                       ELSE pg_has_role(h.reader, pr, 'USAGE') END)))) \
     FROM pg_class c WHERE c.oid = to_regclass($1)";

/// The row-level security that applies to the companies table or beneath
/// the view (see [`VISIBILITY_SQL`]).
async fn row_security(conn: &mut PgConnection, regclass: &str) -> anyhow::Result<Vec<RowSecurity>> {
    let found: Option<sqlx::types::Json<Vec<RowSecurity>>> = sqlx::query_scalar(VISIBILITY_SQL)
        .persistent(false)
        .bind(regclass)
        .fetch_one(conn)
        .await
        .context("read the row-level security on the master table")?;
    Ok(found.map(|j| j.0).unwrap_or_default())
}

/// Which of tenantctl's own tables the master has.
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
        let rows: Vec<CatalogRow> = sqlx::query_as(&format!(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', \
                    t.typcategory::text, \
                    CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e \
                         WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END, \
                    n.nspname::text, \
                    {lifecycle}, {placement}, {moves}, \
                    coalesce((SELECT string_agg(pg_get_constraintdef(k.oid), ' ') FROM pg_constraint k \
                              WHERE k.conrelid = a.attrelid AND k.contype = 'c' \
                                AND a.attnum = ANY(k.conkey)), ''), \
                    c.relkind::text, row_security_active(c.oid), \
                    ARRAY(SELECT o.relname::text FROM pg_class o \
                          WHERE o.relnamespace = n.oid AND o.relname = ANY($5) \
                          ORDER BY o.relname) \
             FROM pg_class c \
             JOIN pg_attribute a ON a.attrelid = c.oid \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            lifecycle = crate::state::exists_sql("$2"),
            placement = crate::state::exists_sql("$3"),
            moves = crate::state::exists_sql("$4"),
        ))
        .persistent(false)
        .bind(&regclass)
        .bind(crate::state::short(BOOKKEEPING))
        .bind(crate::state::short(PLACEMENT))
        .bind(crate::state::short(MOVES))
        .bind(crate::state::legacy_names())
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
        let legacy = first.13.clone();
        let relkind = first.11.chars().next().unwrap_or('r');
        let row_security = if first.12 || relkind == 'v' {
            row_security(conn, &regclass).await?
        } else {
            Vec::new()
        };
        let visibility = Visibility {
            row_security,
            relkind,
        };
        let columns: Vec<Column> = rows
            .into_iter()
            .map(
                |(
                    name,
                    sql_type,
                    not_null,
                    has_default,
                    category,
                    labels,
                    _,
                    _,
                    _,
                    _,
                    checks,
                    _,
                    _,
                    _,
                )| {
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
        let mut layout = Self::from_columns(config, &schema, &regclass, columns, own)?;
        layout.visibility = visibility;
        layout.legacy = legacy;
        Ok(layout)
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
        let layout = Self {
            label: config.table.clone(),
            table_sql: regclass.to_owned(),
            bookkeeping_sql: BOOKKEEPING.to_owned(),
            placement_sql: PLACEMENT.to_owned(),
            moves_sql: MOVES.to_owned(),
            schema_sql: quote(schema),
            legacy: Vec::new(),
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
            visibility: Visibility::default(),
        };
        layout.check_mapping()?;
        Ok(layout)
    }

    /// Refuses a `[master.statuses]` value the table cannot hold: no status
    /// column at all, or an enum without that label. Left alone, the state
    /// would silently never be written or recognised (every company read
    /// as not active, say).
    fn check_mapping(&self) -> Result<(), UsageError> {
        for (lifecycle, value) in &self.mapped {
            let Some(column) = &self.status else {
                return Err(UsageError(format!(
                    "tenantctl.toml [master.statuses] {lifecycle} = {value:?}: {} has no status column to hold it; name the column ([master.columns] status = \"...\") or remove [master.statuses]",
                    shown(&self.label)
                )));
            };
            if let Some(labels) = &column.labels
                && !labels.iter().any(|l| l.eq_ignore_ascii_case(value))
            {
                return Err(UsageError(format!(
                    "tenantctl.toml [master.statuses] {lifecycle} = {value:?}: column {} ({}) of {} cannot hold it, its values are {}; map {lifecycle} to one of them, or leave it out (tenantctl then keeps that state in its own table)",
                    quote(&column.name),
                    column.sql_type,
                    shown(&self.label),
                    labels.join(", ")
                )));
            }
        }
        // What each state stands for in the column, the states left out
        // included: a value that is no state's mapping reads as the state
        // of that name (an enum's ACTIVE, a text column's `active`), so
        // mapping another state onto it, or two states onto one value,
        // leaves rows that cannot be told apart when read back.
        let stands_for = |lifecycle: Lifecycle| {
            self.mapped
                .get(&lifecycle)
                .cloned()
                .unwrap_or_else(|| lifecycle.as_str().to_owned())
        };
        let mut by_value: BTreeMap<String, Vec<Lifecycle>> = BTreeMap::new();
        for lifecycle in Lifecycle::STORED {
            by_value
                .entry(stands_for(lifecycle).to_lowercase())
                .or_default()
                .push(lifecycle);
        }
        if let Some(states) = by_value.values().find(|states| states.len() > 1) {
            let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            let value = stands_for(states[0]);
            return Err(UsageError(format!(
                "tenantctl.toml [master.statuses]: {} would all be written as {value:?} in {} (a state left out takes the value of its own name), so tenantctl could not tell them apart; map each to a value of its own, or map none of them to {value:?}",
                names.join(", "),
                shown(&self.label)
            )));
        }
        Ok(())
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
    /// if not, they are kept in `tenantctl.lifecycle`.
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

    /// Whether a new company waits in tenantctl's claims until its
    /// database is ready, instead of as a row of the application's that
    /// the application would take for a live company (see
    /// [`crate::claims`]): where the status column has no value for
    /// `provisioning` or `failed`, or there is none.
    pub fn keeps_claims(&self) -> bool {
        self.status_value(Lifecycle::Provisioning).is_none()
            || self.status_value(Lifecycle::Failed).is_none()
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
        // Every value written is read back as the table stored it: a
        // `varchar(n)` cuts a cast value short without a word, a trigger or
        // a domain may rewrite it, and a database name stored as another
        // company's would hand that company's database to this one.
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
        let row = query.fetch_one(&mut *tx).await.map_err(|err| {
            let err = anyhow::Error::new(err);
            if has_sqlstate(&err, "23505") {
                anyhow::anyhow!(
                    "tenant {} or database {} is already recorded in the master; pick another slug or --db-name",
                    new.slug,
                    new.db
                )
            } else if ["23514", "23502", "22001", "22P02", "22003", "22007", "22008"]
                .iter()
                .any(|code| has_sqlstate(&err, code))
            {
                // A value the column refuses (a domain's CHECK, a type it
                // does not parse): the operator's input to change.
                let why = crate::error::render(&err);
                UsageError(format!("the master's {} refuses the new company's row: {why}; nothing was recorded", self.label)).into()
            } else {
                self.error(err).context("record the company")
            }
        })?;
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
            crate::output::shown(stored.db_label()),
            crate::output::shown(stored.server_label()),
            stored
                .slug
                .as_deref()
                .map(|s| format!(" with slug {}", crate::output::shown(s)))
                .unwrap_or_default()
        );
        Ok(stored)
    }

    /// Whether a value tenantctl writes into this column must come back
    /// exactly as written: always for the columns that identify a tenant
    /// (database name, slug, server), and for any text or enum column; a
    /// number or a date may come back spelled otherwise (`007` as `7`).
    fn read_back(&self, column: &Column) -> bool {
        let identity = [
            Some(&self.db_name),
            self.slug.as_ref(),
            self.server.as_ref(),
        ];
        identity.iter().flatten().any(|c| c.name == column.name)
            || matches!(column.category, 'S' | 'E')
    }

    /// Fails unless the column stored exactly what was written.
    fn check_stored(
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
            crate::output::shown(wanted),
            stored.map_or_else(|| "NULL".to_owned(), |s| format!("{:?}", crate::output::shown(s))),
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
                crate::output::shown(company_id)
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
            crate::output::shown(company_id)
        )
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
                crate::output::shown(&tenant.id),
                db.as_deref()
                    .map_or_else(|| "NULL".into(), crate::output::shown),
                crate::output::shown(tenant.db_label())
            ),
            more => anyhow::bail!(
                "the master's {} has {} rows with id {}: an id must name one company; fix the table",
                self.label,
                more.len(),
                crate::output::shown(&tenant.id)
            ),
        }
    }

    /// Creates tenantctl's bookkeeping table if this table needs it.
    /// Returns whether it was needed.
    pub async fn ensure_bookkeeping(&mut self, conn: &mut PgConnection) -> anyhow::Result<bool> {
        if !self.uses_bookkeeping() {
            return Ok(false);
        }
        crate::state::ensure_schema(conn).await?;
        create_under_lock(
            conn,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                   company_id text PRIMARY KEY, \
                   lifecycle  text NOT NULL CHECK (lifecycle IN ('provisioning', 'active', 'failed', 'dropped')), \
                   last_error text, \
                   updated_at timestamptz NOT NULL DEFAULT now())",
                self.bookkeeping_sql
            ),
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
        crate::state::ensure_schema(conn).await?;
        create_under_lock(
            conn,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                   company_id text PRIMARY KEY, \
                   server     text NOT NULL, \
                   updated_at timestamptz NOT NULL DEFAULT now())",
                self.placement_sql
            ),
        )
        .await
        .with_context(|| format!("create tenantctl's {PLACEMENT} table"))?;
        self.has_placement = true;
        Ok(true)
    }

    /// One of tenantctl's own tables ([`crate::state`]'s names), as SQL.
    pub fn own_table(&self, name: &str) -> String {
        name.to_owned()
    }

    /// Refuses a master whose tenantctl tables are still where an older
    /// version kept them: records written elsewhere now would be split
    /// from those `master migrate` is about to move.
    pub fn check_current(&self) -> Result<(), UsageError> {
        if self.legacy.is_empty() {
            return Ok(());
        }
        Err(UsageError(format!(
            "tenantctl's own tables in the master are still beside {} ({}): run `tenantctl master migrate` once to move them into schema {}, where the application's ORM does not see them (nothing is lost)",
            self.label,
            self.legacy.join(", "),
            crate::state::SCHEMA
        )))
    }

    /// Creates tenantctl's record of moves between servers.
    pub async fn ensure_moves(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.has_moves {
            return Ok(());
        }
        crate::state::ensure_schema(conn).await?;
        create_under_lock(conn, &crate::moves::create_table_sql(&self.moves_sql))
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
        if self.keeps_claims() {
            lines.push(format!(
                "new companies: kept in tenantctl's own {} until their database is ready, then inserted (the application never sees one that is not ready)",
                crate::state::CLAIMS
            ));
        }
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
        } else if has_sqlstate(&err, "42501") && self.reads_own_tables() {
            // Privileges granted on the application's schema do not reach
            // ours: say what a role that runs tenantctl needs there.
            err.context(format!(
                "query the master database (a role that runs tenantctl needs USAGE on schema {s} and SELECT, INSERT, UPDATE, DELETE on its tables: GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO <role>)",
                s = crate::state::SCHEMA
            ))
        } else {
            err.context("query the master database")
        }
    }

    /// Whether reading companies joins any table of tenantctl's own.
    fn reads_own_tables(&self) -> bool {
        self.has_bookkeeping || self.has_placement || self.has_moves
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
    lock_session(conn, "tenantctl create ", slug.as_str())
        .await
        .context("take the master's lock for this slug")
}

/// Takes a session-level advisory lock on `prefix || name`, and makes sure
/// the session keeps it: behind a transaction-mode pooler nobody declared,
/// the next statement runs on another server connection, and the lock
/// would stay on this one for the application's next client (and block
/// every later create or drop of that name until the pooler closes it).
/// Then the lock is given back there, as far as the pooler lets us, and
/// the command stops, saying to declare the pooler. (A pinned connection
/// is in its transaction already: nothing moves under it.)
async fn lock_session(conn: &mut PgConnection, prefix: &str, name: &str) -> anyhow::Result<()> {
    let key = "hashtextextended($1 || $2, 0)";
    let mut tx = conn.begin().await.context("begin")?;
    // A new connection of ours never holds this lock already; one that
    // does shares its server connection with another client (a pooler
    // nobody declared, with one server connection): the lock would be
    // granted again, and exclude nothing.
    let held: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted \
                AND pid = pg_backend_pid() AND objsubid = 1 \
                AND ((classid::bigint << 32) | objid::bigint) = {key})"
    ))
    .persistent(false)
    .bind(prefix)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    if held {
        // Ended cleanly, so the pooler keeps the server connection, and
        // with it the other client's lock.
        let _ = tx.rollback().await;
        anyhow::bail!(
            "the master is behind a transaction-mode pooler (PgBouncer or similar) that tenantctl.toml does not declare: this session already holds a lock another client of that server connection took; set pooler = \"transaction\" in tenantctl.toml [servers.default] (the server the master is on), or point the master's URL at a session-mode pool or the server itself; nothing was changed"
        );
    }
    anyhow::ensure!(
        !held,
        "the master is behind a transaction-mode pooler (PgBouncer or similar) that tenantctl.toml does not declare: this session already holds a lock another client of that server connection took; set pooler = \"transaction\" in tenantctl.toml [servers.default] (the server the master is on), or point the master's URL at a session-mode pool or the server itself; nothing was changed"
    );
    let pid: i32 = sqlx::query_scalar(&format!(
        "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock({key})) l"
    ))
    .persistent(false)
    .bind(prefix)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await.context("commit")?;
    if conn.is_in_transaction() {
        return Ok(());
    }
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((pid, format!("{prefix}{name}")));
    // Each statement below in a transaction of its own, which such a
    // pooler keeps on one server connection (a parameterized statement
    // alone may be split across two).
    let mut tx = conn.begin().await.context("begin")?;
    let now: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await.context("commit")?;
    if now == pid {
        return Ok(());
    }
    // Only a statement that lands on that server connection can give the
    // lock back; a round-robin pool gets there within a few tries.
    let mut given_back = false;
    for _ in 0..32 {
        let mut tx = conn.begin().await.context("begin")?;
        let released: Option<bool> = sqlx::query_scalar(&format!(
            "SELECT CASE WHEN pg_backend_pid() = $3 THEN pg_advisory_unlock({key}) END"
        ))
        .persistent(false)
        .bind(prefix)
        .bind(name)
        .bind(pid)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await.context("commit")?;
        if released.is_some() {
            given_back = true;
            break;
        }
    }
    anyhow::bail!(
        "the master is behind a transaction-mode pooler (PgBouncer or similar) that tenantctl.toml does not declare: its statements moved from server process {pid} to {now}, so a lock it must hold across them cannot be kept{}; set pooler = \"transaction\" in tenantctl.toml [servers.default] (the server the master is on), or point the master's URL at a session-mode pool or the server itself; nothing was changed",
        if given_back {
            ""
        } else {
            " (and the lock taken may stay with that server connection until the pooler closes it)"
        }
    )
}

/// Gives back the session-level locks [`lock_slug`] and [`lock_db`] took,
/// on a plain connection, before it is closed: closing it ends the session
/// on a direct connection, but a pooler nobody declared keeps the server
/// connection, and the locks with it, for its next client. (A pinned
/// connection's release unlocks all.)
pub async fn unlock_all(conn: &mut PgConnection) -> anyhow::Result<()> {
    if conn.is_in_transaction() {
        return Ok(());
    }
    let held = std::mem::take(
        &mut *HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    // Each lock where it was taken: behind a pooler nobody declared, the
    // server connection may have changed since (under load, a pool that
    // reuses its most recent connection first moves a client now and
    // then), and `pg_advisory_unlock_all` elsewhere would leave it held
    // for the pooler's next client.
    let mut stuck = Vec::new();
    for (pid, key) in held {
        let mut released = false;
        for _ in 0..32 {
            let mut tx = conn.begin().await.context("begin")?;
            let here: Option<bool> = sqlx::query_scalar(
                "SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock(hashtextextended($1, 0)) \
                             WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $2) THEN true END",
            )
            .persistent(false)
            .bind(&key)
            .bind(pid)
            .fetch_one(&mut *tx)
            .await
            .context("release the master's locks")?;
            tx.commit().await.context("commit")?;
            // Given back there, or gone with its server process.
            if here.is_some() {
                released = true;
                break;
            }
        }
        if !released {
            stuck.push(pid);
        }
    }
    conn.execute("SELECT pg_advisory_unlock_all()")
        .await
        .context("release the master's locks")?;
    anyhow::ensure!(
        stuck.is_empty(),
        "a lock tenantctl took in the master may stay with server process(es) {stuck:?} of a transaction-mode pooler tenantctl.toml does not declare (its statements moved between server connections) until the pooler closes them; set pooler = \"transaction\" in tenantctl.toml [servers.default]"
    );
    Ok(())
}

/// The session-level locks this process holds in the master (server
/// process, key text), to give back where they were taken.
static HELD: std::sync::Mutex<Vec<(i32, String)>> = std::sync::Mutex::new(Vec::new());

/// Takes a session-level advisory lock on this database name in the
/// master, held until the connection is released: `create` holds it while
/// it provisions the database, `drop` while it drops one, so the two never
/// act on one database at once, whatever slug (or none) names it.
///
/// On a plain connection, in a transaction of its own, as [`lock_slug`].
pub async fn lock_db(conn: &mut PgConnection, db: &str) -> anyhow::Result<()> {
    lock_session(conn, "tenantctl database ", db)
        .await
        .context("take the master's lock for this database")
}

/// The advisory lock (in the master) that every change tenantctl makes to
/// the master's schema holds: `master migrate` for all it does, and each
/// `CREATE TABLE IF NOT EXISTS` of tenantctl's own tables (the first run
/// creating the run tables, the first move creating its table). Two
/// sessions creating one table at once collide in the catalog (23505 on
/// `pg_type`'s unique index) however `IF NOT EXISTS` is spelled; under
/// this lock the second waits, then finds the table. (The value is the one
/// the run tables' creation has always taken, so older versions exclude
/// newer ones.)
pub const SCHEMA_LOCK: i64 = 0x7465_6e61_6e74_7275; // "tenantru"

/// Runs DDL that creates tenantctl's own tables in a transaction of its
/// own (a savepoint on a pinned connection) under [`SCHEMA_LOCK`], held
/// until that transaction ends: the table is committed before the next
/// creator looks for it.
pub(crate) async fn create_under_lock(conn: &mut PgConnection, ddl: &str) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    tx.execute(format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {ddl}").as_str())
        .await?;
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
