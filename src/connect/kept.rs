//! Connections a run's first pass keeps open for its second: `tenant
//! revert` plans every tenant before it touches any, and reverting on the
//! connection the plan was read on spares each tenant a second connection
//! (for a small migration, most of a tenant's time).
//!
//! Kept within a bound, because an idle connection still takes one of the
//! server's `max_connections` from the application: on each server, at
//! most what leaves a tenth of them free (at least [`MIN_HEADROOM`]) (and of the role's
//! `CONNECTION LIMIT`, if it has one) beside the run's own `--concurrency`,
//! measured on the first connection offered there; and at most [`MAX`] in
//! all, so a fleet of thousands never holds thousands of sockets. What is
//! not kept is released as usual, and its tenant connects again in the
//! second pass. A pinned connection (behind a transaction-mode pooler) is
//! never kept: it would hold its transaction, and the pooler's server
//! connection, open between the passes.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::{BackendKey, Connector};
use crate::servers::ServerName;

/// Connections kept at most, over every server.
pub const MAX: usize = 256;

/// The fewest connections left free for the application on a server
/// while connections are kept (a tenth of its `max_connections` when that
/// is more), and of the role's `CONNECTION LIMIT`.
pub const MIN_HEADROOM: i64 = 10;

/// What is left to keep on one server: `None` while its room is measured.
type Room = Option<usize>;

/// Connections kept between two passes, by the key the caller gives (a
/// tenant's id), each with its cancel key.
#[derive(Default)]
pub struct Kept {
    state: Mutex<State>,
    /// New connections the second pass may open at once (its
    /// `--concurrency`), also left free on each server.
    in_flight: usize,
}

#[derive(Default)]
struct State {
    conns: HashMap<String, (PgConnection, BackendKey)>,
    room: HashMap<ServerName, Room>,
}

impl Kept {
    /// A store whose second pass opens up to `in_flight` connections at once.
    pub fn new(in_flight: usize) -> Self {
        Self {
            state: Mutex::default(),
            in_flight,
        }
    }

    /// Keeps `conn` under `key` if the bound allows; otherwise hands it
    /// back, to be released as any other.
    pub async fn offer(
        &self,
        key: &str,
        server: &ServerName,
        mut conn: PgConnection,
        backend: BackendKey,
    ) -> Option<(PgConnection, BackendKey)> {
        if conn.is_in_transaction() {
            return Some((conn, backend));
        }
        let measure = {
            let mut state = self.lock();
            match state.room.get(server) {
                None => {
                    state.room.insert(server.clone(), None);
                    true
                }
                Some(_) => false,
            }
        };
        if measure {
            // Not measured: nothing kept there (a role that may not read
            // the settings, say), every tenant connects again.
            let room = room(&mut conn, self.in_flight).await.unwrap_or(0);
            self.lock().room.insert(server.clone(), Some(room));
        }
        let mut state = self.lock();
        let total = state.conns.len();
        match state.room.get_mut(server) {
            Some(Some(room)) if *room > 0 && total < MAX => {
                *room -= 1;
                state.conns.insert(key.to_owned(), (conn, backend));
                None
            }
            _ => Some((conn, backend)),
        }
    }

    /// The connection kept under `key`, if any: the caller now ends it.
    pub fn take(&self, key: &str) -> Option<(PgConnection, BackendKey)> {
        self.lock().conns.remove(key)
    }

    /// The keys of the connections kept now.
    pub fn keys(&self) -> std::collections::HashSet<String> {
        self.lock().conns.keys().cloned().collect()
    }

    /// How many are kept now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Releases every connection still kept (the second pass did not run,
    /// or did not reach them), by the one rule.
    pub async fn release_all(&self, connector: &Connector) {
        let conns: Vec<PgConnection> = {
            let mut state = self.lock();
            state.conns.drain().map(|(_, (conn, _))| conn).collect()
        };
        for conn in conns {
            let _ = connector.release(conn).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding it left plain data: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How many more connections may be kept on this connection's server:
/// its free slots (for the role too, when it has a `CONNECTION LIMIT`)
/// less the headroom and the second pass's new connections. One
/// simple-protocol round trip; every value is the server's own.
async fn room(conn: &mut PgConnection, in_flight: usize) -> anyhow::Result<usize> {
    use sqlx::Row as _;
    // `reserved_connections` is PostgreSQL 16's; missing_ok gives NULL
    // before it. Counted: client backends, whoever's (an idle one of the
    // application takes a slot as much as a busy one).
    let sql = "SELECT current_setting('max_connections')::int8 AS max, \
         current_setting('superuser_reserved_connections')::int8 \
           + coalesce(current_setting('reserved_connections', true)::int8, 0) AS reserved, \
         (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity \
           WHERE backend_type = 'client backend') AS used, \
         (SELECT r.rolconnlimit::int8 - (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a \
             WHERE a.usename = r.rolname) \
           FROM pg_catalog.pg_roles r WHERE r.rolname = current_user AND r.rolconnlimit >= 0) AS role_free";
    let rows = sqlx::Executor::fetch_all(&mut *conn, sql).await?;
    let row = rows.first().ok_or_else(|| anyhow::anyhow!("no settings"))?;
    let max: i64 = row.try_get("max")?;
    let reserved: i64 = row.try_get("reserved")?;
    let used: i64 = row.try_get("used")?;
    let role_free: Option<i64> = row.try_get("role_free")?;
    let headroom = (max / 10).max(MIN_HEADROOM);
    let spare = i64::try_from(in_flight).unwrap_or(i64::MAX);
    let mut free = max - reserved - used - headroom - spare;
    if let Some(role_free) = role_free {
        free = free.min(role_free - MIN_HEADROOM - spare);
    }
    Ok(usize::try_from(free).unwrap_or(0))
}
