//! Creating tenantctl's own tables in the master (lifecycle bookkeeping,
//! placement), each under the one lock every change to the master's
//! schema takes ([`crate::state::create_under_lock`]).

use anyhow::Context as _;
use sqlx::postgres::PgConnection;

use super::layout::Layout;
use super::{BOOKKEEPING, PLACEMENT, create_under_lock};

impl Layout {
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
}
