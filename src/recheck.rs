//! Reading each selected company again when its turn in a fleet run comes.
//!
//! A run selects its tenants from the master once, at the start; on a
//! thousand tenants the last one starts minutes later, and meanwhile the
//! application may have repointed a company to another database, moved it
//! to another server, suspended or deleted it. Before a tenant's turn its
//! row is read again, in batches of the ones about to start (one query per
//! [`BATCH`] tenants on one master connection, so a deploy costs next to
//! nothing more), and a row that changed or vanished is skipped, saying
//! why, instead of worked on as it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use tokio::sync::Mutex;

use crate::companies::Layout;
use crate::config::MasterConfig;
use crate::connect::Connector;
use crate::fleet::Skip;
use crate::tenant::Tenant;
use crate::text::shown;

/// Rows read per query: the next tenants in the run's order.
pub const BATCH: usize = 64;

/// How long a row read ahead stays good: a run of quick tenants uses a
/// whole batch well within it, while behind a slow tenant (a long
/// migration) the rows after it are read again when their turn comes.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The rows of a run's tenants as the master has them now.
pub struct Recheck {
    connector: Arc<Connector>,
    config: MasterConfig,
    /// The run's tenant ids, in the order given.
    order: Vec<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    master: Option<(PgConnection, Layout)>,
    /// Each id read ahead: when, and its row then (`None`: it was gone).
    read: HashMap<String, (Instant, Option<Tenant>)>,
}

impl Recheck {
    pub fn new(connector: Arc<Connector>, config: MasterConfig, tenants: &[Tenant]) -> Self {
        // The selection's own read counts as the first batch: a run that
        // gets through its tenants within [`MAX_AGE`] of it reads no row
        // again and opens no connection to the master.
        let read = tenants
            .iter()
            .filter_map(|t| Some((t.id.clone(), (t.read_at?, Some(t.clone())))))
            .collect();
        Self {
            connector,
            config,
            order: tenants.iter().map(|t| t.id.clone()).collect(),
            state: Mutex::new(State { master: None, read }),
        }
    }

    /// Fails with [`Skip`] unless the company's row still names the
    /// database, server and state it was selected with.
    pub async fn check(&self, selected: &Tenant) -> anyhow::Result<()> {
        let now = self.current(&selected.id).await?;
        match now {
            None => Err(Skip(
                "no longer in the master (deleted since the run selected it, or now hidden from this role); not touched".to_owned(),
            )
            .into()),
            Some(now) => match difference(selected, &now) {
                None => Ok(()),
                Some(why) => Err(Skip(format!(
                    "its row changed since the run selected it ({why}); not touched: run again to act on it as it is now"
                ))
                .into()),
            },
        }
    }

    /// The row as read in the batch that holds this id (read now if none
    /// does yet).
    async fn current(&self, id: &str) -> anyhow::Result<Option<Tenant>> {
        let mut state = self.state.lock().await;
        if let Some((at, row)) = state.read.remove(id)
            && at.elapsed() < MAX_AGE
        {
            return Ok(row);
        }
        let start = self.order.iter().position(|i| i == id).unwrap_or(0);
        let batch: Vec<String> = std::iter::once(id.to_owned())
            .chain(
                self.order[start..]
                    .iter()
                    .filter(|i| {
                        *i != id
                            && state
                                .read
                                .get(*i)
                                .is_none_or(|(at, _)| at.elapsed() >= MAX_AGE)
                    })
                    .take(BATCH - 1)
                    .cloned(),
            )
            .collect();
        if state.master.is_none() {
            let mut conn = self.connector.connect_master().await?;
            // Autocommit: never an idle transaction held through the run.
            self.connector.unpin(&mut conn).await?;
            let layout = Layout::load(&mut conn, &self.config).await?;
            state.master = Some((conn, layout));
        }
        let (conn, layout) = state.master.as_mut().expect("connected above");
        let now = Instant::now();
        // In a transaction of its own: a parameterized query must not be
        // split across server connections by a pooler nobody declared.
        let read = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let rows = layout.by_ids(&mut tx, &batch).await?;
            tx.commit().await?;
            anyhow::Ok(rows)
        };
        let rows = match read.await {
            Ok(rows) => rows,
            Err(err) => {
                // A broken connection is opened again for the next batch.
                state.master = None;
                return Err(err.context("read the company's row again before its turn"));
            }
        };
        let mut found: HashMap<String, Tenant> =
            rows.into_iter().map(|t| (t.id.clone(), t)).collect();
        let mine = found.remove(id);
        for other in batch.into_iter().skip(1) {
            let row = found.remove(&other);
            state.read.insert(other, (now, row));
        }
        Ok(mine)
    }

    /// Ends the master connection.
    pub async fn close(&self) {
        if let Some((conn, _)) = self.state.lock().await.master.take() {
            let _ = self.connector.release(conn).await;
        }
    }
}

/// What differs between the row as selected and as it is now, in the
/// fields a run acts on.
fn difference(selected: &Tenant, now: &Tenant) -> Option<String> {
    if now.db_name_raw != selected.db_name_raw {
        return Some(format!(
            "database {} then, {} now",
            shown(selected.db_label()),
            shown(now.db_label())
        ));
    }
    if now.server_raw != selected.server_raw {
        return Some(format!(
            "server {} then, {} now",
            shown(selected.server_label()),
            shown(now.server_label())
        ));
    }
    if now.lifecycle != selected.lifecycle || now.status != selected.status {
        return Some(format!(
            "status {} then, {} now",
            shown(selected.status_label()),
            shown(now.status_label())
        ));
    }
    None
}
