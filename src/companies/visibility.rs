//! What reading the companies table may leave out: row-level security
//! on the table or beneath a view, which tenantctl cannot see through and
//! so refuses to treat a listing as the whole fleet.

use anyhow::Context as _;
use sqlx::postgres::PgConnection;

use super::quote;
use crate::error::UsageError;
use crate::text::shown;

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
/// catalog query of [`super::Layout::load`] at no extra round trip: the rows are
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
/// query of [`super::Layout::load`] found row security active on the table or
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
pub(super) async fn row_security(
    conn: &mut PgConnection,
    regclass: &str,
) -> anyhow::Result<Vec<RowSecurity>> {
    let found: Option<sqlx::types::Json<Vec<RowSecurity>>> = sqlx::query_scalar(VISIBILITY_SQL)
        .persistent(false)
        .bind(regclass)
        .fetch_one(conn)
        .await
        .context("read the row-level security on the master table")?;
    Ok(found.map(|j| j.0).unwrap_or_default())
}
