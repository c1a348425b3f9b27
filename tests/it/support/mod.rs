//! Test harness: each `TestEnv` owns a uniquely named master database and
//! every database whose name carries its token, and drops them all when it
//! goes out of scope, so tests run in parallel against one server.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

pub mod pooler;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

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
pub fn base_password() -> Option<String> {
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
        // Only the servers a test gives are configured.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("POSTGRES_BASE_URL_") {
                cmd.env_remove(name);
            }
        }
        cmd.current_dir(self.workdir.path())
            .env("POSTGRES_BASE_URL", &self.base_url)
            .env("MASTER_DATABASE_URL", self.master_url())
            .env_remove("TENANT_MIGRATIONS_DIR")
            .env_remove("TENANTCTL_SHARD")
            .env_remove("TENANTCTL_CONCURRENCY")
            .env_remove("TENANTCTL_PER_SERVER")
            .env_remove("TENANTCTL_CONNECT_TIMEOUT")
            .env_remove("TENANTCTL_LOCK_TIMEOUT")
            .env_remove("TENANTCTL_STATEMENT_TIMEOUT");
        cmd
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
