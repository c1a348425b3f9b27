//! Test harness: each `TestEnv` owns a uniquely named master database and
//! every database whose name carries its token, and drops them all when it
//! goes out of scope, so tests run in parallel against one server.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

pub mod expect;
pub mod pooler;
pub mod prisma;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Every variable tenantctl's command line reads (`env = ...` on any flag
/// of any command), from the definitions the binary is built from.
pub fn env_flags() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(name) = arg.get_env() {
                let name = name.to_string_lossy().into_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &<tenantctl::cli::Cli as clap::CommandFactory>::command(),
        &mut out,
    );
    out
}

/// The server under test: `POSTGRES_BASE_URL`, or one built from the PG*
/// variables that `pg_virtualenv` sets.
pub fn base_url() -> String {
    if let Ok(url) = std::env::var("POSTGRES_BASE_URL")
        && !url.is_empty()
    {
        return url.trim_end_matches('/').to_owned();
    }
    let enc = |s: String| {
        percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let user = enc(std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()));
    let password = std::env::var("PGPASSWORD").map(enc).unwrap_or_default();
    let host = std::env::var("PGHOST").unwrap_or_else(|_| "localhost".into());
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
    let auth = if password.is_empty() {
        user
    } else {
        format!("{user}:{password}")
    };
    format!("postgresql://{auth}@{host}:{port}")
}

/// The password in the base URL, to check it never shows up anywhere.
///
/// The suite needs a server that asks for a password (pg_virtualenv's
/// does): without one, nothing about passwords would be tested, so this
/// fails the test with a message saying so instead of letting it pass.
pub fn password() -> String {
    url::Url::parse(&base_url())
        .ok()
        .and_then(|u| {
            u.password().map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
        .filter(|p| !p.is_empty())
        .expect(
            "the test server's URL has no password, so password handling cannot be tested: \
             run the tests against a server with password authentication \
             (`just test` starts one with pg_virtualenv, or put the password in POSTGRES_BASE_URL or PGPASSWORD)",
        )
}

/// [`password`] for callers written as `if let Some(..)`: never `None`, so
/// such a test can no longer skip its password checks silently.
pub fn base_password() -> Option<String> {
    Some(password())
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The report of the tenant with this slug in a fleet command's JSON.
pub fn find<'a>(report: &'a serde_json::Value, slug: &str) -> &'a serde_json::Value {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["slug"] == slug)
        .unwrap_or_else(|| panic!("{slug} not in {report}"))
}

/// Result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts the exit code and returns self.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A master database and a token that names everything the test creates.
pub struct TestEnv {
    pub token: String,
    pub base_url: String,
    pub master: String,
    pub workdir: tempdir::TempDir,
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(token: &str) -> Self {
            let path = std::env::temp_dir().join(format!("tenantctl-test-{token}"));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let token = format!("t{}x{n}x{}", std::process::id(), nanos % 100_000);
        Self {
            master: format!("master_{token}"),
            base_url: base_url(),
            workdir: tempdir::TempDir::new(&token),
            token,
        }
    }

    /// A slug unique to this test.
    pub fn slug(&self, name: &str) -> String {
        format!("{name}-{}", self.token)
    }

    /// The database name `tenant create` derives for `slug(name)`.
    pub fn db(&self, name: &str) -> String {
        format!("tenant_{}", self.slug(name).replace('-', "_"))
    }

    pub fn master_url(&self) -> String {
        format!("{}/{}", self.base_url, self.master)
    }

    pub fn db_url(&self, db: &str) -> String {
        format!("{}/{db}", self.base_url)
    }

    /// The binary, configured for this test's server and master, run in a
    /// scratch directory so no developer's .env leaks in.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
        self.configure(&mut cmd);
        cmd
    }

    /// Gives any command (say, one that runs the binary inside a
    /// pseudo-terminal) the working directory and environment of [`Self::cmd`].
    pub fn configure(&self, cmd: &mut Command) {
        // Only the servers a test gives are configured.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("POSTGRES_BASE_URL_") {
                cmd.env_remove(name);
            }
        }
        // No variable the command line reads (TENANTCTL_CONFIG, say, set
        // for a CI job's own deploy) reaches a test unless it sets it.
        for name in env_flags() {
            cmd.env_remove(name);
        }
        cmd.current_dir(self.workdir.path())
            .env("POSTGRES_BASE_URL", &self.base_url)
            .env("MASTER_DATABASE_URL", self.master_url());
        // The suite runs the same in a CI job as on a laptop: no CI
        // system's variables change what tenantctl shows.
        for name in [
            "CI",
            "BUILDKITE",
            "GITLAB_CI",
            "GITHUB_ACTIONS",
            "TF_BUILD",
            "JENKINS_URL",
            "NO_COLOR",
        ] {
            cmd.env_remove(name);
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("run tenantctl"))
    }

    /// Starts the binary with stdout and stderr captured, without waiting.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tenantctl")
    }

    pub fn run_with(&self, args: &[&str], configure: impl FnOnce(&mut Command)) -> Run {
        let mut cmd = self.cmd();
        configure(&mut cmd);
        Run::from(cmd.args(args).output().expect("run tenantctl"))
    }

    /// `master migrate` then `tenant create` for each name (slug via [`Self::slug`]).
    pub fn with_tenants(&self, names: &[&str]) {
        self.run(&["master", "migrate"]).ok();
        for name in names {
            self.run(&["tenant", "create", &self.slug(name)]).ok();
        }
    }

    /// `master migrate`, then each tenant created with the migrations in
    /// `dir`; returns the slugs in the order given.
    pub fn tenants_with(&self, dir: &Path, names: &[&str]) -> Vec<String> {
        self.run(&["master", "migrate"]).ok();
        let dir = dir.to_str().expect("utf-8 path");
        names
            .iter()
            .map(|name| {
                let slug = self.slug(name);
                self.run(&["tenant", "create", &slug, "--tenant-migrations", dir])
                    .ok();
                slug
            })
            .collect()
    }

    /// Creates an ORM-shaped master by hand: `status` an enum type with these
    /// values, `timestamp(3)` columns, no defaults on id or updatedAt.
    pub fn orm_master(&self, statuses: &[&str]) {
        self.exec("postgres", &format!("CREATE DATABASE \"{}\"", self.master));
        let values: Vec<String> = statuses.iter().map(|s| format!("'{s}'")).collect();
        self.exec(
            &self.master,
            &format!(
                r#"CREATE TYPE "CompanyStatus" AS ENUM ({});
                   CREATE TABLE "Company" (
                     id text PRIMARY KEY, slug text NOT NULL UNIQUE, name text NOT NULL,
                     "dbName" text NOT NULL UNIQUE, status "CompanyStatus" NOT NULL DEFAULT 'provisioning',
                     "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" timestamp(3) NOT NULL);"#,
                values.join(", ")
            ),
        );
    }

    /// A company's status as the master records it.
    pub fn status_of(&self, slug: &str) -> Vec<String> {
        self.query(
            &self.master,
            &format!(r#"SELECT status::text FROM "Company" WHERE slug = '{slug}'"#),
        )
    }

    /// Creates an empty database named `<prefix>_<token>` and returns the
    /// name and a connector for this test's server and master.
    pub fn scratch_db(
        &self,
        prefix: &str,
    ) -> (tenantctl::dbname::DbName, tenantctl::connect::Connector) {
        let db = format!("{prefix}_{}", self.token);
        self.exec("postgres", &format!("CREATE DATABASE \"{db}\""));
        let connector = tenantctl::connect::Connector::new(
            &self.base_url,
            Some(&self.master_url()),
            std::time::Duration::from_secs(5),
        )
        .expect("connector");
        (
            tenantctl::dbname::DbName::parse(&db).expect("valid"),
            connector,
        )
    }

    /// `tenant migrate --all --output json` with the migrations in `dir`.
    pub fn migrate_all(&self, dir: &str) -> Run {
        self.run(&[
            "tenant",
            "migrate",
            "--all",
            "--output",
            "json",
            "--tenant-migrations",
            dir,
        ])
    }

    /// A folder `name` with the tenant schema compiled into tenantctl plus
    /// one more migration file; returns its path.
    pub fn tenant_schema_plus(&self, name: &str, file: &str, sql: &str) -> String {
        let dir = self.workdir.path().join(name);
        std::fs::create_dir_all(&dir).expect("create migrations folder");
        let embedded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenant-migrations");
        for entry in std::fs::read_dir(embedded).expect("tenant-migrations") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy migration");
        }
        std::fs::write(dir.join(file), sql).expect("write migration");
        dir.to_str().expect("utf-8 path").to_owned()
    }

    /// Writes `tenantctl.toml` in the directory the binary runs in.
    pub fn write_config(&self, text: impl AsRef<str>) {
        std::fs::write(self.workdir.path().join("tenantctl.toml"), text.as_ref())
            .expect("write tenantctl.toml");
    }

    /// Copies a fixture migration folder into this test's scratch space.
    pub fn fixture(&self, name: &str) -> PathBuf {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let to = self.workdir.path().join(name);
        std::fs::create_dir_all(&to).expect("create fixture copy");
        for entry in std::fs::read_dir(&from).expect("fixture exists") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy fixture");
        }
        to
    }

    /// A copy of the `reversible` fixture named `name`, with only the
    /// migrations up to version `upto`.
    pub fn reversible_upto(&self, name: &str, upto: i64) -> PathBuf {
        let copy = self.fixture("reversible");
        let dir = copy.with_file_name(name);
        std::fs::rename(&copy, &dir).expect("rename fixture copy");
        for entry in std::fs::read_dir(&dir).expect("fixture") {
            let path = entry.expect("entry").path();
            let version: i64 = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('_').next())
                .and_then(|v| v.parse().ok())
                .expect("versioned file");
            if version > upto {
                std::fs::remove_file(path).expect("remove");
            }
        }
        dir
    }

    pub async fn connect(&self, db: &str) -> PgConnection {
        PgConnection::connect(&self.db_url(db))
            .await
            .unwrap_or_else(|e| panic!("connect {db}: {e}"))
    }

    /// Runs statements in a database.
    pub fn exec(&self, db: &str, sql: &str) {
        block_on(async {
            let mut conn = self.connect(db).await;
            conn.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        });
    }

    /// First column of every row, as text.
    pub fn query(&self, db: &str, sql: &str) -> Vec<String> {
        block_on(async {
            let mut conn = self.connect(db).await;
            let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
            rows.into_iter().map(|(v,)| v.unwrap_or_default()).collect()
        })
    }

    pub fn database_exists(&self, db: &str) -> bool {
        !self
            .query(
                "postgres",
                &format!("SELECT datname::text FROM pg_database WHERE datname = '{db}'"),
            )
            .is_empty()
    }

    /// Versions recorded in a tenant database's `_sqlx_migrations`.
    pub fn applied(&self, db: &str) -> Vec<i64> {
        self.query(
            db,
            "SELECT version::text FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .iter()
        .map(|v| v.parse().expect("version"))
        .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Never panic here: a failing test is already unwinding, and a second
        // panic would abort the whole run.
        let url = format!("{}/postgres", self.base_url);
        let token = self.token.clone();
        let _ = std::thread::spawn(move || {
            block_on(async {
                let Ok(mut conn) = PgConnection::connect(&url).await else {
                    return;
                };
                let names: Vec<(String,)> = sqlx::query_as(
                    "SELECT datname::text FROM pg_database WHERE strpos(datname, $1) > 0",
                )
                .bind(&token)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                for (name,) in names {
                    let _ = conn
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await;
                }
                let roles: Vec<(String,)> = sqlx::query_as(
                    "SELECT rolname::text FROM pg_roles WHERE strpos(rolname, $1) > 0",
                )
                .bind(&token)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                for (role,) in roles {
                    let _ = conn
                        .execute(format!("DROP ROLE IF EXISTS \"{role}\"").as_str())
                        .await;
                }
                let _ = conn.close().await;
            });
        })
        .join();
    }
}

/// Waits for a started binary for at most `limit`; past it, kills the
/// process and fails the test, so a product that hangs (a timeout not
/// applied, a wait that never ends) fails the test instead of hanging the
/// suite.
#[track_caller]
pub fn wait_with_deadline(child: std::process::Child, limit: std::time::Duration) -> Run {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => Run::from(output.expect("wait for tenantctl")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("tenantctl still running after {limit:?}: killed");
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` if
/// that takes longer than `limit`. For waiting on a condition in the server
/// instead of sleeping for a guessed time.
#[track_caller]
pub fn wait_until<T>(
    limit: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// A point where migrations wait until the test lets them through, in
/// every database of the server at once: a migration made of
/// [`Gate::sql`] stays in flight until [`Gate::open`]. It makes "these
/// tenants ran at the same time" something to observe in
/// `pg_stat_activity`, not something to infer from timing.
///
/// The gate is open while a session whose `application_name` is the gate's
/// name exists; a waiting migration looks for it every 20 ms and gives up
/// waiting after about a minute, so a test that fails never leaves a
/// migration running for ever.
pub struct Gate {
    pub name: String,
}

impl Gate {
    pub fn new(env: &TestEnv) -> Self {
        Self {
            name: format!("gate_{}", env.token),
        }
    }

    /// The migration body that waits at the gate. pg_stat_activity is read
    /// once per transaction unless the snapshot is cleared.
    pub fn sql(&self) -> String {
        format!(
            "DO $gate$ BEGIN
               FOR i IN 1..3000 LOOP
                 PERFORM pg_stat_clear_snapshot();
                 EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE application_name = '{}');
                 PERFORM pg_sleep(0.02);
               END LOOP;
             END $gate$;",
            self.name
        )
    }

    /// The databases whose sessions are waiting at the gate now (one entry
    /// per session).
    pub fn waiting(&self, env: &TestEnv) -> Vec<String> {
        env.query(
            "postgres",
            &format!(
                "SELECT datname::text FROM pg_stat_activity
                  WHERE state = 'active' AND query LIKE '%{}%'
                    AND pid <> pg_backend_pid() ORDER BY datname",
                self.name
            ),
        )
    }

    /// Waits until at least `n` sessions wait at the gate; returns their
    /// databases.
    #[track_caller]
    pub fn wait_for(&self, env: &TestEnv, n: usize) -> Vec<String> {
        wait_until(
            std::time::Duration::from_secs(60),
            &format!("{n} session(s) at the gate"),
            || {
                let waiting = self.waiting(env);
                (waiting.len() >= n).then_some(waiting)
            },
        )
    }

    /// Opens the gate until the returned guard is dropped.
    pub fn open(&self, env: &TestEnv) -> OpenGate {
        use sqlx::ConnectOptions as _;
        use std::str::FromStr as _;

        let options = sqlx::postgres::PgConnectOptions::from_str(&env.db_url("postgres"))
            .expect("server URL")
            .application_name(&self.name);
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let conn = options.connect().await.expect("open the gate");
                let _ = opened_tx.send(());
                let _ = tokio::task::spawn_blocking(move || close_rx.recv()).await;
                let _ = conn.close().await;
            });
        });
        opened_rx.recv().expect("gate opened");
        OpenGate {
            close: Some(close_tx),
            thread: Some(thread),
        }
    }
}

/// An open [`Gate`]; closes it when dropped.
pub struct OpenGate {
    close: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OpenGate {
    fn drop(&mut self) {
        drop(self.close.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Base and master URLs that connect as a role of the test's own.
pub struct RoleUrls {
    pub role: String,
    pub base: String,
    pub master: String,
}

impl RoleUrls {
    pub fn configure(&self) -> impl Fn(&mut Command) + '_ {
        |c: &mut Command| {
            c.env("POSTGRES_BASE_URL", &self.base)
                .env("MASTER_DATABASE_URL", &self.master);
        }
    }
}

/// Creates a login role named `<name>_<token>` (dropped with the test's
/// databases) with this password, and fails the test unless the server
/// really asks for the password: a server that lets anyone in would make a
/// redaction test pass without testing anything.
pub fn role_with_password(env: &TestEnv, name: &str, password: &str) -> RoleUrls {
    let role = format!("{name}_{}", env.token);
    env.exec(
        "postgres",
        &format!(
            "CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD '{}'",
            password.replace('\'', "''")
        ),
    );
    let mut url = url::Url::parse(&env.base_url).expect("base url");
    url.set_username(&role).expect("user");
    let encoded =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    url.set_password(Some(&encoded)).expect("password");
    url.set_path("/postgres");
    let with = |password: &str| {
        let mut url = url.clone();
        url.set_password(Some(password)).expect("password");
        url.to_string()
    };
    block_on(async {
        use sqlx::Connection as _;
        match sqlx::PgConnection::connect(&with("not-the-password")).await {
            Ok(_) => panic!(
                "the server let role {role} in with a wrong password: this test needs password \
                 authentication (scram-sha-256 or md5) on {}, as pg_virtualenv's cluster has over TCP",
                url.host_str().unwrap_or("?")
            ),
            Err(e) => assert!(
                e.to_string().contains("password authentication failed"),
                "unexpected error for a wrong password: {e}"
            ),
        }
        let conn = sqlx::PgConnection::connect(&with(&encoded))
            .await
            .unwrap_or_else(|e| panic!("role {role} cannot log in with its password: {e}"));
        let _ = conn.close().await;
    });
    url.set_path("");
    let base = url.to_string();
    url.set_path(&format!("/{}", env.master));
    RoleUrls {
        role,
        base,
        master: url.to_string(),
    }
}
