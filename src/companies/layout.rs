//! Reading the layout of the master's companies table from the catalog:
//! which column holds what, how a lifecycle state is spelled in the status
//! column, and which of tenantctl's own tables the master has. One catalog
//! query per run ([`Layout::load`]); everything else reads the result.

use crate::error::sqlstate;
use std::collections::BTreeMap;

use anyhow::Context as _;
use sqlx::postgres::PgConnection;

use super::visibility::{Visibility, row_security};
use super::{BOOKKEEPING, MOVES, MissingTable, PLACEMENT, quote};
use crate::config::MasterConfig;
use crate::connect::has_sqlstate;
use crate::error::UsageError;
use crate::tenant::Lifecycle;
use crate::text::shown;

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
    pub(super) fn quoted(&self) -> String {
        quote(&self.name)
    }
}

/// How the master's companies table is laid out and where lifecycles live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The table as configured, for messages.
    pub label: String,
    pub(super) table_sql: String,
    pub(super) bookkeeping_sql: String,
    pub(super) placement_sql: String,
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
    pub(super) mapped: BTreeMap<Lifecycle, String>,
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

/// Which of tenantctl's own tables the master has.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OwnTables {
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
        let rows = catalog_rows(conn, &regclass).await?;
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
        let columns: Vec<Column> = rows.into_iter().map(column_of).collect();
        let mut layout = Self::from_columns(config, &schema, &regclass, columns, own)?;
        layout.visibility = visibility;
        layout.legacy = legacy;
        Ok(layout)
    }

    pub(super) fn from_columns(
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
    pub(super) fn uses_bookkeeping(&self) -> bool {
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

    pub(super) fn error(&self, err: anyhow::Error) -> anyhow::Error {
        if has_sqlstate(&err, sqlstate::UNDEFINED_TABLE) {
            err.context(format!(
                "the master database has no {} table; run `tenantctl master migrate` first",
                self.label
            ))
        } else if has_sqlstate(&err, sqlstate::INSUFFICIENT_PRIVILEGE) && self.reads_own_tables() {
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

/// One column of the catalog query's rows.
fn column_of(row: CatalogRow) -> Column {
    let (name, sql_type, not_null, has_default, category, labels, _, _, _, _, checks, _, _, _) =
        row;
    Column {
        name,
        sql_type,
        not_null,
        has_default,
        category: category.chars().next().unwrap_or('X'),
        labels,
        checks,
    }
}

/// The catalog query of [`Layout::load`]: one row per column of the table
/// `regclass`, each carrying what is known of the table as a whole too
/// (its schema, which of tenantctl's own tables exist, its kind, whether
/// row security is active, the legacy tables beside it).
async fn catalog_rows(conn: &mut PgConnection, regclass: &str) -> anyhow::Result<Vec<CatalogRow>> {
    sqlx::query_as(&format!(
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
    .bind(regclass)
    .bind(crate::state::short(BOOKKEEPING))
    .bind(crate::state::short(PLACEMENT))
    .bind(crate::state::short(MOVES))
    .bind(crate::state::legacy_names())
    .fetch_all(conn)
    .await
    .context("read the master table's columns")
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
pub(super) mod tests {
    use super::*;
    use crate::config::Config;

    pub(crate) fn column(
        name: &str,
        sql_type: &str,
        category: char,
        not_null: bool,
        default: bool,
    ) -> Column {
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

    pub(crate) const OWN: OwnTables = OwnTables {
        bookkeeping: true,
        placement: true,
        moves: true,
    };

    pub(crate) fn prisma() -> Vec<Column> {
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
