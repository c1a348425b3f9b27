//! Template databases: on each server, one database per migration set,
//! migrated once, then sealed (`IS_TEMPLATE true`, `ALLOW_CONNECTIONS
//! false`) for `tenant create` to clone. Named after the set's hash, so a
//! changed set never clones a stale schema: it gets a template of its own,
//! and the old one waits for `template prune`.
//!
//! A clone copies what is inside the database, not what the server keeps
//! about it: database-level grants, `ALTER DATABASE ... SET` (and `ALTER
//! ROLE ... IN DATABASE ... SET`) settings, the connection limit and the
//! comment. Those are read
//! from the template here and replayed on each clone.

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _, Row as _};

use crate::connect::has_sqlstate;
use crate::dbname::DbName;
pub use crate::dbname::TEMPLATE_PREFIX;
use crate::servers::ServerName;
use std::sync::Arc;

/// The advisory lock class of template builds (`pg_advisory_xact_lock(int,
/// int)`, whose key space is apart from the single-`bigint` locks the rest
/// of tenantctl takes): the second key is the set's hash.
const LOCK_CLASS: i32 = 0x746d_706c; // "tmpl"

/// Size above which a clone copies files (`STRATEGY FILE_COPY`, two
/// checkpoints) rather than writing every block to the WAL (`WAL_LOG`, the
/// default since PostgreSQL 15); see the book's benchmark chapter (docs/src/benchmark.md).
const FILE_COPY_ABOVE: i64 = 64 * 1024 * 1024;

/// What identifies a migration set's schema: 16 hex digits of a SHA-256
/// over what the set applies and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use]
pub struct SetHash(String);

impl SetHash {
    /// Hashes the parts in order, each length-prefixed so no two lists of
    /// parts hash alike by running into each other.
    pub fn of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hasher = Sha256::new();
        // Bumped when what a template holds changes for the same set
        // (how tenantctl records migrations, say).
        hasher.update(b"tenantctl-template-1");
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        Self(digest[..8].iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        }))
    }

    /// The hash of this set as built by `role`: a template's objects are
    /// owned by the role that built it, as a tenant's are by the role that
    /// migrates it, so each role gets templates of its own.
    pub fn for_role(&self, role: &str) -> Self {
        Self::of([self.0.as_bytes(), role.as_bytes()])
    }

    /// The hash a template's name carries, if it is one of tenantctl's:
    /// a template (`<prefix><hash>`) or one being built under a name of
    /// its own (`<prefix><hash>_<8 hex>`, see [`Self::building`]).
    pub fn from_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(TEMPLATE_PREFIX)?;
        let (hex, suffix) = match rest.split_once('_') {
            Some((hex, suffix)) => (hex, Some(suffix)),
            None => (rest, None),
        };
        let is_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        (is_hex(hex, 16) && suffix.is_none_or(|s| is_hex(s, 8))).then(|| Self(hex.to_owned()))
    }

    /// A name of its own to build the template under, renamed to
    /// [`Self::template`] once sealed: a build never shows a half-made
    /// template under the name creates clone, and two builds that do not
    /// share a lock (two masters on one server) never touch each other's.
    pub fn building(&self) -> DbName {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let salt = nanos ^ std::process::id().rotate_left(16);
        DbName::parse(&format!("{TEMPLATE_PREFIX}{}_{salt:08x}", self.0))
            .expect("a prefix and hex digits make a valid database name")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The template's database name.
    pub fn template(&self) -> DbName {
        DbName::parse(&format!("{TEMPLATE_PREFIX}{}", self.0))
            .expect("a prefix and 16 hex digits make a valid database name")
    }

    /// The key of this template's build lock on `server`. The lock is
    /// taken in the master (see `tenant::provision::build_template`), so
    /// it names the server too.
    pub fn build_key(&self, server: &ServerName) -> Self {
        Self::of([server.as_str().as_bytes(), self.0.as_bytes()])
    }

    fn lock_key(&self) -> i32 {
        u32::from_str_radix(&self.0[..8], 16)
            .expect("hex digits")
            .cast_signed()
    }
}

impl std::fmt::Display for SetHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The templates one run has found ready, per server: looked up (and
/// built, if need be) once per run, whatever the number of tenants it
/// creates.
#[derive(Debug, Default)]
pub struct Ready {
    /// `--no-template`: every tenant is migrated in place.
    off: std::sync::atomic::AtomicBool,
    sources: tokio::sync::Mutex<std::collections::HashMap<ServerName, Arc<Source>>>,
}

impl Ready {
    pub fn turn_off(&self) {
        self.off.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_off(&self) -> bool {
        self.off.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server's template, found or made by `make` the first time
    /// (under this run's lock, so concurrent creates of one run wait for
    /// one build).
    pub async fn get_or_make<F, Fut>(
        &self,
        server: &ServerName,
        make: F,
    ) -> anyhow::Result<Arc<Source>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Source>>,
    {
        let mut sources = self.sources.lock().await;
        if let Some(found) = sources.get(server) {
            return Ok(found.clone());
        }
        let source = Arc::new(make().await?);
        sources.insert(server.clone(), source.clone());
        Ok(source)
    }

    /// The server's template, if this run has found it.
    pub async fn cached(&self, server: &ServerName) -> Option<Arc<Source>> {
        self.sources.lock().await.get(server).cloned()
    }

    /// Remembers the server's template for the rest of the run.
    pub async fn put(&self, server: &ServerName, source: Arc<Source>) {
        self.sources.lock().await.insert(server.clone(), source);
    }

    /// Forgets a server's template (gone when a clone was made: pruned by
    /// another run), so the next create finds or builds it again.
    pub async fn forget(&self, server: &ServerName) {
        self.sources.lock().await.remove(server);
    }
}

/// One of tenantctl's templates on a server, as `pg_database` has it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: DbName,
    pub hash: SetHash,
    /// Named as a build in progress ([`SetHash::building`]), never cloned.
    pub building: bool,
    /// Finished: `IS_TEMPLATE true` and `ALLOW_CONNECTIONS false`. A
    /// template is sealed only once fully migrated, so one that is not is
    /// being built, or was left half-built by a build that died.
    pub sealed: bool,
    /// `None` where the role may not read it: `pg_database_size` needs
    /// CONNECT, which a template's migrations may have revoked from
    /// PUBLIC (another role's template, a stranger's database).
    pub size_bytes: Option<i64>,
    /// Its comment, which says which master's it is (see [`mark`]).
    pub mark: Option<String>,
    /// Owned by the role `conn` works as: another role's templates are
    /// that role's to clone and to prune.
    pub owned: bool,
}

/// Every template of tenantctl's on the server `conn` is connected to.
pub async fn list(conn: &mut PgConnection) -> anyhow::Result<Vec<Listed>> {
    let mut tx = conn.begin().await.context("begin")?;
    let rows = sqlx::query(
        "SELECT datname::text AS name, datistemplate AND NOT datallowconn AS sealed, \
                CASE WHEN pg_catalog.has_database_privilege(oid, 'CONNECT') \
                     OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') \
                THEN pg_catalog.pg_database_size(oid) END AS size, \
                pg_catalog.shobj_description(oid, 'pg_database') AS mark, \
                pg_catalog.pg_get_userbyid(datdba) = current_user AS owned \
         FROM pg_catalog.pg_database WHERE pg_catalog.starts_with(datname::text, $1) \
         ORDER BY datname",
    )
    .persistent(false)
    .bind(TEMPLATE_PREFIX)
    .fetch_all(&mut *tx)
    .await
    .context("list the template databases")?;
    tx.commit().await.context("commit")?;
    let mut listed = Vec::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        // Only names tenantctl makes: anything else with the prefix is
        // not ours to report or prune.
        let (Some(hash), Ok(db)) = (SetHash::from_name(&name), DbName::parse(&name)) else {
            continue;
        };
        listed.push(Listed {
            building: db != hash.template(),
            name: db,
            hash,
            sealed: row.try_get("sealed")?,
            size_bytes: row.try_get("size")?,
            mark: row.try_get("mark")?,
            owned: row.try_get("owned")?,
        });
    }
    Ok(listed)
}

/// The set's template on this server, if there is one.
pub async fn find(conn: &mut PgConnection, hash: &SetHash) -> anyhow::Result<Option<Listed>> {
    Ok(list(conn)
        .await?
        .into_iter()
        .find(|t| &t.hash == hash && !t.building))
}

/// The role this connection works as, whose templates it uses, with the
/// `search_path` its sessions start with: where a migration's unqualified
/// names land, so a role whose `search_path` changed (`ALTER ROLE ... SET
/// search_path`, `options` in the base URL) gets templates of its own
/// rather than clones of a schema made under the old one.
pub async fn role(conn: &mut PgConnection) -> anyhow::Result<String> {
    // Simple protocol, one round trip: no transaction needed behind a
    // transaction-mode pooler. The role's length first: no role and path
    // run into each other.
    // The role's own settings (`ALTER ROLE ... SET search_path`, ...),
    // which every session of the template's build starts with, read from
    // the catalog rather than from this session: the same on whichever
    // database of the server this connection happens to be (the master's
    // own may set its search_path).
    conn.fetch_one(
        "SELECT pg_catalog.length(current_user)::text || ':' || current_user::text \
                || COALESCE((SELECT pg_catalog.array_to_string(s.setconfig, E'\\n') \
                   FROM pg_catalog.pg_db_role_setting s \
                   WHERE s.setdatabase = 0 AND s.setrole = (SELECT r.oid FROM pg_catalog.pg_roles r \
                                                            WHERE r.rolname = current_user)), '')",
    )
    .await
    .and_then(|row| row.try_get(0))
    .context("read the role tenantctl connects as")
}

/// Takes a template's build lock (`key`: [`SetHash::build_key`]) in `tx`,
/// until it ends: two builds of one template on one server, from any
/// number of processes, never overlap. Given up on an interrupt: the lock
/// is asked for again every
/// 100 ms rather than waited for in one statement, so an interrupt while
/// another process builds (which can take as long as the whole migration
/// set) ends the wait at once, with no statement left waiting on the
/// server and the create reported as interrupted, instead of the process
/// dying in the wait with nothing reported.
pub async fn lock_or_stop(
    tx: &mut PgConnection,
    hash: &SetHash,
    stop: &crate::fleet::Stop,
) -> anyhow::Result<()> {
    loop {
        if try_lock(&mut *tx, hash).await? {
            return Ok(());
        }
        if stop.is_set() {
            return Err(anyhow::anyhow!(
                "interrupted while waiting for another build of template {}",
                hash.template()
            )
            .context(crate::error::Cancelled));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Takes the set's build lock in `tx` if it is free; false if a build (or
/// a prune) holds it.
pub async fn try_lock(tx: &mut PgConnection, hash: &SetHash) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)")
        .persistent(false)
        .bind(LOCK_CLASS)
        .bind(hash.lock_key())
        .fetch_one(tx)
        .await
        .context("take a template's build lock")
}

/// Whether a build of the set's template is running now (its lock is
/// held), asked in a transaction of its own that takes and gives the lock
/// straight back.
pub async fn being_built(conn: &mut PgConnection, hash: &SetHash) -> anyhow::Result<bool> {
    let mut tx = conn.begin().await.context("begin")?;
    let free: bool = sqlx::query_scalar("SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)")
        .persistent(false)
        .bind(LOCK_CLASS)
        .bind(hash.lock_key())
        .fetch_one(&mut *tx)
        .await
        .context("ask whether a template is being built")?;
    tx.rollback().await.context("roll back")?;
    Ok(!free)
}

/// Creates the empty database a template is built in, as `tenant create`
/// creates a tenant's without one (from `template1`), marked as the
/// master's (`mark`, see [`mark`]) before anything else can see it.
pub async fn create_empty(
    conn: &mut PgConnection,
    name: &DbName,
    mark: &str,
) -> anyhow::Result<()> {
    conn.execute(format!("CREATE DATABASE {}", name.quoted()).as_str())
        .await
        .with_context(|| format!("create template database {name}"))?;
    let marked = conn
        .execute(
            format!(
                "COMMENT ON DATABASE {} IS {}",
                name.quoted(),
                quote_literal(mark)
            )
            .as_str(),
        )
        .await
        .with_context(|| format!("mark template database {name} as this master's"));
    if let Err(err) = marked {
        let _ = crate::ddl::drop_force(conn, name).await;
        return Err(err);
    }
    Ok(())
}

/// Seals a built template: no one may connect to it any more (a clone
/// needs its source free of sessions), and any role that may create
/// databases may clone it.
pub async fn seal(conn: &mut PgConnection, name: &DbName) -> anyhow::Result<()> {
    // Sessions a pooler keeps open to the database from the build would
    // make every clone fail.
    crate::ddl::end_sessions(conn, name).await?;
    conn.execute(
        format!(
            "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
            name.quoted()
        )
        .as_str(),
    )
    .await
    .with_context(|| format!("seal template database {name}"))?;
    Ok(())
}

/// Gives a built, sealed template its name. `Ok(false)`: a template of
/// that name is there already (another build won), and this one is left
/// for the caller to drop.
pub async fn rename_built(
    conn: &mut PgConnection,
    building: &DbName,
    name: &DbName,
) -> anyhow::Result<bool> {
    let renamed = conn
        .execute(
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                building.quoted(),
                name.quoted()
            )
            .as_str(),
        )
        .await;
    match renamed {
        Ok(_) => Ok(true),
        Err(err) => {
            let err = anyhow::Error::new(err);
            if has_sqlstate(&err, crate::error::sqlstate::DUPLICATE_DATABASE) {
                Ok(false)
            } else {
                Err(err.context(format!("rename template {building} to {name}")))
            }
        }
    }
}

/// Drops a template (sealed or not): a template database cannot be
/// dropped until it is no longer marked one.
pub async fn discard(conn: &mut PgConnection, name: &DbName) -> anyhow::Result<()> {
    conn.execute(format!("ALTER DATABASE {} WITH IS_TEMPLATE false", name.quoted()).as_str())
        .await
        .with_context(|| format!("unmark template database {name}"))?;
    crate::ddl::drop_force(conn, name).await
}

/// How a template's comment begins when it says which installation built
/// it: `template prune` drops only its own master's templates, never
/// those of another master that shares the server.
const MARK_PREFIX: &str = "tenantctl template of master ";

/// The mark of the master `conn` is connected to: its cluster's system
/// identifier and its database's OID, the same whatever URL (direct or
/// through a pooler) reaches it.
pub async fn mark(conn: &mut PgConnection) -> anyhow::Result<String> {
    let id: String = conn
        .fetch_one(
            "SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())::text \
                    || '/' || d.oid::text \
             FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()",
        )
        .await
        .and_then(|row| row.try_get(0))
        .context("read the master's identity (which templates are this master's)")?;
    Ok(format!("{MARK_PREFIX}{id}"))
}

/// What a clone of the template is created with, and replayed on it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: DbName,
    /// `None`: not readable by this role (see [`Listed::size_bytes`]).
    pub size_bytes: Option<i64>,
    /// `STRATEGY` is PostgreSQL 15's; older servers copy files.
    pub strategies: bool,
    /// What gives a clone the template's database-level state.
    pub replay: Vec<Replay>,
    /// The database-level state to check a clone against, when there is
    /// any to replay.
    pub level: Option<String>,
}

/// One statement of the database-level state a clone does not copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The defaults a new database starts with, revoked before the
    /// template's own list is granted.
    RevokeDefaults,
    Grant {
        privilege: String,
        /// `None`: PUBLIC.
        grantee: Option<String>,
        grantable: bool,
    },
    ConnLimit(i32),
    Comment(String),
    Set {
        /// `None`: every role (`ALTER DATABASE ... SET`).
        role: Option<String>,
        name: String,
        values: Vec<String>,
    },
}

impl Replay {
    /// The statement for database `db`: names quoted as identifiers,
    /// values as literals.
    pub fn sql(&self, db: &DbName) -> String {
        let db = db.quoted();
        match self {
            Self::RevokeDefaults => format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            Self::ConnLimit(limit) => format!("ALTER DATABASE {db} CONNECTION LIMIT {limit}"),
            Self::Comment(text) => format!("COMMENT ON DATABASE {db} IS {}", quote_literal(text)),
            Self::Grant {
                privilege,
                grantee,
                grantable,
            } => format!(
                "GRANT {privilege} ON DATABASE {db} TO {}{}",
                grantee.as_deref().map_or("PUBLIC".to_owned(), quote_ident),
                if *grantable { " WITH GRANT OPTION" } else { "" }
            ),
            Self::Set { role, name, values } => {
                let target = match role {
                    Some(role) => format!("ROLE {} IN DATABASE {db}", quote_ident(role)),
                    None => format!("DATABASE {db}"),
                };
                let name: Vec<String> = name.split('.').map(quote_ident).collect();
                let values: Vec<String> = values.iter().map(|v| quote_literal(v)).collect();
                format!(
                    "ALTER {target} SET {} TO {}",
                    name.join("."),
                    if values.is_empty() {
                        "''".to_owned()
                    } else {
                        values.join(", ")
                    }
                )
            }
        }
    }
}

/// How a clone copies the template.
pub fn strategy(source: &Source) -> Option<&'static str> {
    source
        .strategies
        .then_some(if source.size_bytes.unwrap_or(0) > FILE_COPY_ABOVE {
            "FILE_COPY"
        } else {
            "WAL_LOG"
        })
}

/// Creates `db` as a copy of the template. Returns false if `db` exists
/// already (a create resumed, or a concurrent one), touching nothing. The
/// template's database-level state is given afterwards ([`give_state`]),
/// once the clone's ledger is stamped: the stamp's session then sees the
/// database as the in-place migrations' session saw it, without the
/// settings (`default_transaction_read_only`, `search_path`, `role`...)
/// the migrations left for later sessions.
pub async fn clone_into(
    conn: &mut PgConnection,
    source: &Source,
    db: &DbName,
) -> anyhow::Result<bool> {
    let strategy = strategy(source)
        .map(|s| format!(" STRATEGY {s}"))
        .unwrap_or_default();
    let created = conn
        .execute(
            format!(
                "CREATE DATABASE {} TEMPLATE {}{strategy}",
                db.quoted(),
                source.name.quoted()
            )
            .as_str(),
        )
        .await;
    if let Err(err) = created {
        let err = anyhow::Error::new(err);
        if has_sqlstate(&err, crate::error::sqlstate::DUPLICATE_DATABASE)
            || has_sqlstate(&err, crate::error::sqlstate::UNIQUE_VIOLATION)
        {
            return Ok(false);
        }
        return Err(err.context(format!(
            "create database {db} from template {}",
            source.name
        )));
    }
    Ok(true)
}

/// Gives a clone the template's database-level state, and checks it took.
pub async fn give_state(
    conn: &mut PgConnection,
    source: &Source,
    db: &DbName,
) -> anyhow::Result<()> {
    for replay in &source.replay {
        conn.execute(replay.sql(db).as_str())
            .await
            .with_context(|| format!("give database {db} the template's database-level state"))?;
    }
    if let Some(level) = &source.level {
        let now = database_level(conn, db).await?;
        anyhow::ensure!(
            &now == level,
            "database {db} did not take the template's database-level grants and settings ({now} where the template has {level})"
        );
    }
    Ok(())
}

/// The database-level state a clone does not copy, as one comparable
/// text: owner, grants (without grantors) and settings per role.
async fn database_level(conn: &mut PgConnection, db: &DbName) -> anyhow::Result<String> {
    let mut tx = conn.begin().await.context("begin")?;
    let level: Option<String> = sqlx::query_scalar(LEVEL_SQL)
        .persistent(false)
        .bind(db.as_str())
        .fetch_optional(&mut *tx)
        .await
        .with_context(|| format!("read database {db}'s grants and settings"))?;
    tx.commit().await.context("commit")?;
    level.with_context(|| format!("database {db} does not exist"))
}

/// The database-level state of `pg_database` row `d` as one text: owner,
/// connection limit, grants (without grantors) and settings per role,
/// each list sorted by its items' text (the order PostgreSQL keeps an ACL
/// in depends on how it was granted, which a replay cannot reproduce).
macro_rules! level_of_d {
    () => {
        "pg_catalog.concat_ws(' / ', \
       'owner ' || pg_catalog.pg_get_userbyid(d.datdba), \
       'connection limit ' || d.datconnlimit, \
       'grants ' || COALESCE((SELECT pg_catalog.string_agg(g.item, ',' ORDER BY g.item) FROM ( \
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END \
                   || ':' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END AS item \
            FROM pg_catalog.aclexplode(d.datacl) a) g), 'default'), \
       'settings ' || COALESCE((SELECT pg_catalog.string_agg(r.item, ',' ORDER BY r.item) FROM ( \
            SELECT COALESCE(pg_catalog.pg_get_userbyid(NULLIF(s.setrole, 0))::text, '*') || '=' \
                   || pg_catalog.array_to_string(s.setconfig, ';') AS item \
            FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid) r), 'none'))"
    };
}

const LEVEL_SQL: &str = concat!(
    "SELECT ",
    level_of_d!(),
    " FROM pg_catalog.pg_database d WHERE d.datname = $1"
);

/// Reads what clones of the template are made with: its size, and what
/// replays its database-level state (nothing when it has the state a
/// plain `CREATE DATABASE` gives). `None` if there is no such database;
/// the flag says whether it is sealed.
///
/// One simple-protocol round trip (the name is a validated [`DbName`],
/// quoted as a literal): it runs once per create, and behind a
/// transaction-mode pooler needs no transaction.
pub async fn lookup(
    conn: &mut PgConnection,
    name: &DbName,
) -> anyhow::Result<Option<(bool, Source)>> {
    let sql = LOOKUP_SQL.replace("$1", &format!("'{}'", name.as_str().replace('\'', "''")));
    let Some(row) = conn
        .fetch_optional(sql.as_str())
        .await
        .with_context(|| format!("read template {name}"))?
    else {
        return Ok(None);
    };
    let ours: bool = row.try_get("ours")?;
    // Only a template this role owns is cloned: any role with CREATEDB can
    // make a sealed template under any name, and its objects, its data and
    // (replayed) its owner would be every new tenant's. No other role can
    // make a database this one owns.
    let sealed = row.try_get::<bool, _>("sealed")? && ours;
    let has_acl: bool = row.try_get("has_acl")?;
    let grants: sqlx::types::Json<Vec<(String, Option<String>, bool)>> = row.try_get("grants")?;
    let settings: sqlx::types::Json<Vec<(Option<String>, Vec<String>)>> =
        row.try_get("settings")?;
    let connlimit: i32 = row.try_get("connlimit")?;
    let comment: Option<String> = row.try_get("comment")?;
    let mut replay = replay_of(has_acl, grants.0, &settings.0)?;
    if connlimit != -1 {
        replay.push(Replay::ConnLimit(connlimit));
    }
    // The build's mark says whose template it is (see [`mark`]); any
    // other comment is the migrations', which a clone does not copy.
    if let Some(comment) = comment.filter(|c| !c.starts_with(MARK_PREFIX)) {
        replay.push(Replay::Comment(comment));
    }
    let level = if replay.is_empty() {
        None
    } else {
        Some(row.try_get("level")?)
    };
    // From the connection's startup, not a query.
    let major = conn.server_version_num().unwrap_or(0) / 10_000;
    Ok(Some((
        sealed,
        Source {
            name: name.clone(),
            size_bytes: row.try_get("size")?,
            strategies: major >= 15,
            replay,
            level,
        },
    )))
}

/// [`lookup`] of a template that must be there, sealed and this role's.
pub async fn source(conn: &mut PgConnection, name: &DbName) -> anyhow::Result<Source> {
    match lookup(conn, name).await? {
        Some((true, source)) => Ok(source),
        Some((false, _)) => anyhow::bail!(
            "template {name} is not one this role built (not sealed, or owned by another role): it is not cloned; drop it, or pass --no-template"
        ),
        None => anyhow::bail!("template {name} is gone (pruned meanwhile?)"),
    }
}

/// The database's owner, and whether it is the role `conn` works as.
pub async fn owner(
    conn: &mut PgConnection,
    name: &DbName,
) -> anyhow::Result<Option<(String, bool)>> {
    let sql = format!(
        "SELECT pg_catalog.pg_get_userbyid(datdba)::text, pg_catalog.pg_get_userbyid(datdba) = current_user \
         FROM pg_catalog.pg_database WHERE datname = '{}'",
        name.as_str().replace('\'', "''")
    );
    let row = conn
        .fetch_optional(sql.as_str())
        .await
        .with_context(|| format!("read the owner of database {name}"))?;
    row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .transpose()
}

/// Refuses a built template whose migrations gave the database another
/// owner: a template is cloned only when this role owns it (see
/// [`lookup`]), so such a set cannot have one.
pub async fn check_owner(conn: &mut PgConnection, name: &DbName) -> anyhow::Result<()> {
    if let Some((owner, false)) = owner(conn, name).await? {
        anyhow::bail!(
            "the migrations make role {owner:?} the database's owner, and a template is cloned only while owned by the role that built it; pass --no-template to create tenants of this set in place"
        );
    }
    Ok(())
}

/// Refuses a database under the template's name that another role owns:
/// not ours to clone, nor to drop.
pub async fn check_not_squatted(conn: &mut PgConnection, name: &DbName) -> anyhow::Result<()> {
    if let Some((owner, false)) = owner(conn, name).await? {
        anyhow::bail!(
            "database {name} has this migration set's template name but is owned by role {owner:?}, not the role tenantctl connects as: tenantctl neither clones nor drops it; drop or rename it, or pass --no-template"
        );
    }
    Ok(())
}

const LOOKUP_SQL: &str = concat!(
    "SELECT d.datistemplate AND NOT d.datallowconn AS sealed, \
       CASE WHEN pg_catalog.has_database_privilege(d.oid, 'CONNECT') \
                     OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') \
                THEN pg_catalog.pg_database_size(d.oid) END AS size, \
       pg_catalog.pg_get_userbyid(d.datdba)::text AS owner, \
       pg_catalog.pg_get_userbyid(d.datdba) = current_user AS ours, \
       d.datacl IS NOT NULL AS has_acl, \
       d.datconnlimit AS connlimit, \
       pg_catalog.shobj_description(d.oid, 'pg_database') AS comment, \
       COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_array(a.privilege_type, \
                   CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, \
                   a.is_grantable) ORDER BY a.grantee, a.privilege_type) \
                 FROM pg_catalog.aclexplode(d.datacl) a), '[]') AS grants, \
       COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_array( \
                   pg_catalog.pg_get_userbyid(NULLIF(s.setrole, 0))::text, s.setconfig) \
                   ORDER BY s.setrole) \
                 FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid), '[]') AS settings, \
       (SELECT ",
    level_of_d!(),
    ") AS level \
  FROM pg_catalog.pg_database d WHERE d.datname = $1"
);

fn replay_of(
    has_acl: bool,
    grants: Vec<(String, Option<String>, bool)>,
    settings: &[(Option<String>, Vec<String>)],
) -> anyhow::Result<Vec<Replay>> {
    let mut replay = Vec::new();
    if has_acl {
        replay.push(Replay::RevokeDefaults);
        for (privilege, grantee, grantable) in grants {
            // A keyword from aclexplode (CONNECT, CREATE, TEMPORARY): it
            // goes into the statement as it is.
            anyhow::ensure!(
                privilege.bytes().all(|b| b.is_ascii_uppercase()),
                "unexpected database privilege {privilege:?}"
            );
            replay.push(Replay::Grant {
                privilege,
                grantee,
                grantable,
            });
        }
    }
    for (role, config) in settings {
        for item in config {
            let (name, value) = item
                .split_once('=')
                .with_context(|| format!("read the setting {item:?}"))?;
            let values = if LIST_SETTINGS.contains(&name) {
                split_list(value)
            } else {
                vec![value.to_owned()]
            };
            replay.push(Replay::Set {
                role: role.clone(),
                name: name.to_owned(),
                values,
            });
        }
    }
    Ok(replay)
}

/// Settings whose value is a list of names, each quoted on its own
/// (PostgreSQL's `GUC_LIST_QUOTE` ones, as `pg_dump` lists them).
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
    "unix_socket_directories",
];

/// Splits a list setting as PostgreSQL prints it (`"$user", public, "a,b"`)
/// into its names.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' && chars.peek() == Some(&'"') {
                    chars.next();
                    item.push('"');
                } else if c == '"' {
                    break;
                } else {
                    item.push(c);
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                item.push(c);
                chars.next();
            }
            item.truncate(item.trim_end().len());
        }
        items.push(item);
        chars.next(); // the comma
    }
    items
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    // E'' keeps a backslash literal whatever standard_conforming_strings.
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_tell_parts_apart() {
        let a = SetHash::of([b"ab".as_slice(), b"c".as_slice()]);
        let b = SetHash::of([b"a".as_slice(), b"bc".as_slice()]);
        assert_ne!(a, b);
        assert_eq!(a, SetHash::of([b"ab".as_slice(), b"c".as_slice()]));
        assert_eq!(a.as_str().len(), 16);
        assert_eq!(SetHash::from_name(a.template().as_str()), Some(a.clone()));
        assert_eq!(SetHash::from_name("tenantctl_template_xyz"), None);
        let building = a.building();
        assert_eq!(SetHash::from_name(building.as_str()), Some(a.clone()));
        assert_ne!(building, a.template());
        assert_eq!(
            SetHash::from_name(&format!("{}_xyz", a.template())),
            None,
            "only hex suffixes"
        );
        assert_eq!(SetHash::from_name("tenant_acme"), None);
    }

    #[test]
    fn list_settings_split_as_postgres_prints_them() {
        assert_eq!(
            split_list(r#""$user", public, "a,""b""", x"#),
            vec!["$user", "public", "a,\"b\"", "x"]
        );
        assert_eq!(split_list(""), Vec::<String>::new());
        let db = DbName::parse("t_1").expect("valid");
        let replay = replay_of(
            false,
            Vec::new(),
            &[
                (None, vec![r#"search_path="$user", app"#.to_owned()]),
                (
                    Some("r\"x".to_owned()),
                    vec!["app.note=it's {db}".to_owned()],
                ),
            ],
        )
        .expect("replayable");
        let sql: Vec<String> = replay.iter().map(|r| r.sql(&db)).collect();
        assert_eq!(
            sql,
            vec![
                r#"ALTER DATABASE "t_1" SET "search_path" TO '$user', 'app'"#.to_owned(),
                r#"ALTER ROLE "r""x" IN DATABASE "t_1" SET "app"."note" TO 'it''s {db}'"#
                    .to_owned(),
            ]
        );
    }
}
