//! A PostgreSQL server of a test's own: `initdb` in a temporary directory,
//! `pg_ctl` on a free loopback port, password authentication, stopped and
//! removed when dropped. For tests that change server-wide settings
//! (privileges on `postgres`, what every database sees) and must not
//! disturb the tests sharing the main server.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The superuser's password on private servers (they listen on loopback
/// only and live for one test).
pub const SUPERUSER_PASSWORD: &str = "private-Sup3r-pw";

pub struct PrivateServer {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command for a server program, run as the `postgres` user when we are
/// root (initdb, postgres and pgbouncer refuse to run as root), after
/// handing it `dir`.
pub fn as_server_user(program: &Path, dir: &Path) -> Command {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {} to postgres", dir.display());
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs a server binary to completion.
fn run_server_tool(bin: &Path, dir: &Path, tool: &str, args: &[&str]) {
    let output = as_server_user(&bin.join(tool), dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PrivateServer {
    pub fn start(token: &str) -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("tenantctl-pg-{token}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("server dir");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("password file");
        let data = dir.join("data");
        let (data_s, pw_s) = (
            data.to_str().expect("utf-8").to_owned(),
            pwfile.to_str().expect("utf-8").to_owned(),
        );
        run_server_tool(
            &bin,
            &dir,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--pwfile",
                &pw_s,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        // Sockets in the server's own directory: the system one may not be
        // writable, and a test must not touch another cluster's.
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=50",
            dir.to_str().expect("utf-8")
        );
        let log = dir.join("log").to_str().expect("utf-8").to_owned();
        run_server_tool(
            &bin,
            &dir,
            "pg_ctl",
            &[
                "-D", &data_s, "-l", &log, "-o", &options, "-w", "-t", "30", "start",
            ],
        );
        Self { dir, bin, port }
    }

    /// `postgresql://postgres:...@127.0.0.1:PORT` (no database).
    pub fn base_url(&self) -> String {
        format!(
            "postgresql://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// Runs statements in one of its databases as the superuser.
    pub fn exec(&self, db: &str, sql: &str) {
        super::block_on(async {
            use sqlx::{Connection as _, Executor as _};
            let mut conn =
                sqlx::postgres::PgConnection::connect(&format!("{}/{db}", self.base_url()))
                    .await
                    .expect("connect to the private server");
            conn.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
        });
    }

    /// The base URL for another role.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("postgresql://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if let Some(data) = data.to_str() {
            let _ = as_server_user(&self.bin.join("pg_ctl"), &self.dir)
                .args(["-D", data, "-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
