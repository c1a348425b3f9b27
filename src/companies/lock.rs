//! Session-level advisory locks in the master (per slug, per database)
//! that `create` and `drop` hold across many statements, and the registry
//! of where each was taken, so each is given back on its own server
//! connection even behind a pooler nobody declared.

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use crate::tenant::Slug;

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
        .push((owner(conn), pid, format!("{prefix}{name}")));
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
    Err(give_back_moved(conn, prefix, name, pid, now).await)
}

/// The error for a session whose statements moved from server process
/// `pid` (which holds the lock on `prefix || name`) to `now`: the lock is
/// given back there first, as far as the pooler lets us.
async fn give_back_moved(
    conn: &mut PgConnection,
    prefix: &str,
    name: &str,
    pid: i32,
    now: i32,
) -> anyhow::Error {
    let given_back = match give_back(conn, prefix, name, pid).await {
        Ok(given_back) => given_back,
        Err(err) => return err,
    };
    anyhow::anyhow!(
        "the master is behind a transaction-mode pooler (PgBouncer or similar) that tenantctl.toml does not declare: its statements moved from server process {pid} to {now}, so a lock it must hold across them cannot be kept{}; set pooler = \"transaction\" in tenantctl.toml [servers.default] (the server the master is on), or point the master's URL at a session-mode pool or the server itself; nothing was changed",
        if given_back {
            ""
        } else {
            " (and the lock taken may stay with that server connection until the pooler closes it)"
        }
    )
}

/// Gives back the lock on `prefix || name` that server process `pid`
/// holds, trying until a statement lands there; whether one did.
async fn give_back(
    conn: &mut PgConnection,
    prefix: &str,
    name: &str,
    pid: i32,
) -> anyhow::Result<bool> {
    let key = "hashtextextended($1 || $2, 0)";
    // Only a statement that lands on that server connection can give the
    // lock back; a round-robin pool gets there within a few tries.
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
            return Ok(true);
        }
    }
    Ok(false)
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
    let held: Vec<(i32, String)> = {
        let mut all = HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ours = owner(conn);
        let (mine, others) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|(by, _, _)| *by == ours);
        *all = others;
        mine.into_iter().map(|(_, pid, key)| (pid, key)).collect()
    };
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

/// The session-level locks this process holds in the master (the client
/// connection that took it, server process, key text), to give back where
/// they were taken. By client connection, because one process may hold
/// several at once (`tenant create --from-file`): each gives back its own,
/// and never tries another's, still held on a live server process, as if
/// a pooler had moved it.
static HELD: std::sync::Mutex<Vec<(usize, i32, String)>> = std::sync::Mutex::new(Vec::new());

/// Which client connection took a lock: its address, which stays put from
/// the lock to [`unlock_all`], both on the one connection a command's
/// scope holds (pinned in its future) and ended only after.
fn owner(conn: &PgConnection) -> usize {
    std::ptr::from_ref(conn) as usize
}

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
