//! How a connection ends: the one rule, in one place. Every connection
//! opened for a piece of work is handed to a closure and then ended here,
//! whatever the closure returns and however it fails: it goes to
//! [`Connector::release`]. Behind a transaction-mode pooler that cleans
//! the session and COMMITs, so a pinned connection's partial work (the
//! migrations applied before a failing one, say) is kept, as it would be
//! on a direct connection where each statement commits as it goes; on a
//! direct connection it simply closes. After a closure that succeeded,
//! release's own error is the result (a write whose commit fails is not a
//! success); after one that failed, the closure's error stands.
//!
//! Exceptions are asked for by name: [`Connector::scoped_all_or_nothing`]
//! closes a connection whose closure failed without committing, so behind
//! a pooler the pinned transaction's work is dropped with it; and
//! [`Connector::abandon`] ends a long-lived connection (a run record's) that
//! broke, or whose first write failed, the same way. Nothing else in
//! tenantctl closes a connection.
//!
//! The runner ([`crate::runner`]) builds every way of reaching a database
//! on these; the work modules below it (a move's copy, say) use them
//! directly.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::Connector;
use crate::servers::ServerName;

/// The future a closure given a connection returns; it borrows the
/// connection, which is ended afterwards.
pub type ConnFuture<'c, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'c>>;

/// The last argument of a scoped closure, there only for its type: it
/// tells the compiler that what the closure borrows from its caller
/// (`'e`) outlives the connection's loan (`'c`), so the closure's future
/// may borrow both. Closures ignore it (`|conn, _| ...`).
pub struct Borrows<'c, 'e>(PhantomData<&'c &'e ()>);

/// The one value of [`Borrows`].
pub(crate) const fn borrows<'c, 'e>() -> Borrows<'c, 'e> {
    Borrows(PhantomData)
}

/// The one rule's result: the work's error stands; after success, the
/// ending's.
pub(crate) fn ended<T>(
    result: anyhow::Result<T>,
    released: anyhow::Result<()>,
) -> anyhow::Result<T> {
    result.and_then(|value| released.map(|()| value))
}

impl Connector {
    /// Runs `op` on `conn` and ends the connection by the one rule.
    pub async fn scoped<'e, T, F>(&self, mut conn: PgConnection, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        let result = op(&mut conn, borrows()).await;
        ended(result, self.release(conn).await)
    }

    /// [`Self::scoped`], but a connection whose `op` failed is closed
    /// without committing: behind a pooler its pinned transaction, and all
    /// `op` did in it, is dropped (`master migrate`, which runs every step
    /// in one transaction and must keep none of it on failure; a run
    /// record whose first write failed).
    pub async fn scoped_all_or_nothing<'e, T, F>(
        &self,
        mut conn: PgConnection,
        op: F,
    ) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        match op(&mut conn, borrows()).await {
            Ok(value) => self.release(conn).await.map(|()| value),
            Err(err) => {
                self.abandon(conn).await;
                Err(err)
            }
        }
    }

    /// Closes a connection without committing what a pinned transaction
    /// holds: for one that broke, or whose work must not be kept. Its
    /// error is of no use (the connection is being given up).
    pub async fn abandon(&self, conn: PgConnection) {
        let _ = conn.close().await;
    }

    /// A connection to a server's maintenance database, for creating,
    /// renaming and dropping databases and reading its catalog.
    pub async fn with_maintenance<'e, T, F>(&self, server: &ServerName, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        let conn = self.connect_maintenance(server).await?;
        self.scoped(conn, op).await
    }

    /// [`Self::with_maintenance`] on the master's server.
    pub async fn with_master_maintenance<'e, T, F>(&self, op: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, T>,
    {
        let conn = self.connect_master_maintenance().await?;
        self.scoped(conn, op).await
    }
}
