//! A real PgBouncer (Debian's package) in front of a private server, on a
//! free loopback port, with its stock settings but for authentication and
//! the pool mode; stopped and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{PrivateServer, SUPERUSER_PASSWORD, as_server_user, free_port};

pub struct PgBouncer {
    dir: PathBuf,
    child: Child,
    pub port: u16,
}

impl PgBouncer {
    /// `mode` is `session` or `transaction`. Users are the server's
    /// superuser and any `(user, password)` given.
    pub fn start(server: &PrivateServer, token: &str, mode: &str, users: &[(&str, &str)]) -> Self {
        // One server connection in transaction mode, so whatever one
        // client leaves on it is what the next one gets.
        let pool = if mode == "transaction" { 1 } else { 20 };
        Self::start_with(server, &format!("{token}-{mode}"), mode, users, pool, "")
    }

    /// [`Self::start`] with a pool of `pool` server connections per
    /// database and user, and `extra` lines for `[pgbouncer]`
    /// (`server_round_robin = 1`, say). `name` names its directory.
    pub fn start_with(
        server: &PrivateServer,
        name: &str,
        mode: &str,
        users: &[(&str, &str)],
        pool: u32,
        extra: &str,
    ) -> Self {
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("PgBouncer is installed (apt-get install pgbouncer)");
        let dir = std::env::temp_dir().join(format!("tenantctl-pgb-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = free_port();
        let mut userlist = format!("\"postgres\" \"{SUPERUSER_PASSWORD}\"\n");
        for (user, password) in users {
            userlist.push_str(&format!("\"{user}\" \"{password}\"\n"));
        }
        std::fs::write(dir.join("userlist.txt"), userlist).expect("userlist");
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\n\
             pool_mode = {mode}\ndefault_pool_size = {pool}\nlogfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n{extra}\n",
            server_port = server.port,
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("ini");
        let child = as_server_user(std::path::Path::new(program), &dir)
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Self { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start listening: {}",
                std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    /// The base URL through the pooler for a user.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("postgresql://{user}:{password}@127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
