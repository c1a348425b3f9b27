//! Copying a database to another server with PostgreSQL's own client
//! tools, `pg_dump | pg_restore`, as a move does. The tools get their
//! connection (and password) through their environment, never their
//! arguments, and what they print is redacted before it is shown.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use crate::child_env::ChildEnv;
use crate::fleet::Stop;

/// `pg_dump` and `pg_restore`, and the version they are.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    /// As `pg_dump --version` says it (`15.18`).
    pub version: String,
    pub major: u32,
}

impl PgTools {
    /// The tools in `dir`, else those on `PATH`; fails when either is
    /// missing or they are not the same version.
    pub async fn find(dir: Option<&Path>) -> anyhow::Result<Self> {
        let tool = |name: &str| dir.map_or_else(|| PathBuf::from(name), |d| d.join(name));
        let (pg_dump, pg_restore) = (tool("pg_dump"), tool("pg_restore"));
        let (dump_version, restore_version) =
            tokio::join!(version_of(&pg_dump), version_of(&pg_restore));
        let (dump_version, restore_version) = (dump_version?, restore_version?);
        anyhow::ensure!(
            dump_version == restore_version,
            "pg_dump is {dump_version} but pg_restore is {restore_version}; point --pg-bin at one PostgreSQL installation's bin directory"
        );
        let major = major_of(&dump_version)
            .with_context(|| format!("read pg_dump's version {dump_version:?}"))?;
        Ok(Self {
            pg_dump,
            pg_restore,
            version: dump_version,
            major,
        })
    }

    /// Refuses a copy these tools or servers cannot make faithfully:
    /// `pg_dump` refuses servers newer than itself, and a dump restored
    /// into an older server may use what that server lacks.
    pub fn check(&self, source_major: u32, target_major: u32) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.major >= source_major,
            "pg_dump {} cannot dump the source server (PostgreSQL {source_major}); install PostgreSQL {source_major}'s client tools or newer and point --pg-bin at them",
            self.version
        );
        anyhow::ensure!(
            target_major >= source_major,
            "the target server runs PostgreSQL {target_major}, older than the source's {source_major}: a move never goes to an older major version"
        );
        Ok(())
    }
}

async fn version_of(program: &Path) -> anyhow::Result<String> {
    // It connects nowhere, so it gets nothing of the environment but the
    // PATH (no server's URL or password; the C locale it then speaks is the
    // one its version line is parsed in).
    let output = Command::new(program)
        .arg("--version")
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!(
                "run {} --version (are PostgreSQL's client tools installed? see --pg-bin)",
                program.display()
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "{} --version failed",
        program.display()
    );
    // `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .with_context(|| format!("{} --version printed {text:?}", program.display()))
}

fn major_of(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
}

/// One end of the copy: the database's name, the libpq environment that
/// connects to it, and the password to mask in what the tool prints.
pub struct End<'a> {
    pub db: &'a str,
    pub env: &'a [(&'static str, String)],
}

/// What `pg_dump` copies besides its source: the snapshot it reads in
/// (exported by a transaction that stays open until the dump is over), and
/// what must be done before `pg_restore` can start (the target created).
pub struct Dump<F> {
    pub snapshot: Option<String>,
    pub target_ready: F,
}

/// Runs `pg_dump` of `from` into `pg_restore` of `to` (an empty database),
/// in one transaction on the target, through an operating-system pipe
/// between the two. `pg_dump` starts first and reads the source's catalog
/// while `dump.target_ready` makes the target (it then waits on the full
/// pipe); `pg_restore` starts once that is done. Stops both tools if `stop`
/// is set meanwhile. `child` says what they may inherit and what is masked
/// in what they print.
pub async fn dump_restore<F>(
    tools: &PgTools,
    child: &ChildEnv,
    (from, to): (&End<'_>, &End<'_>),
    dump: Dump<F>,
    stop: &Stop,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let words = [from.db, to.db, "postgres"];
    let redactor = [from.env, to.env]
        .iter()
        .flat_map(|env| env.iter().filter(|(k, _)| *k == "PGPASSWORD"))
        .fold(child.redactor(&words), |r, (_, p)| r.with(p, &words));
    let mut dumping = tool(&tools.pg_dump, child, from.env);
    dumping
        .args(["--format=custom", "--compress=0"])
        .args(dump.snapshot.map(|id| format!("--snapshot={id}")))
        .arg("--dbname")
        .arg(from.db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut dumping = dumping.spawn().context("start pg_dump")?;
    let dump_err = collect(dumping.stderr.take());
    let piped: Stdio = dumping
        .stdout
        .take()
        .context("pg_dump's output")?
        .try_into()
        .context("pass pg_dump's output to pg_restore")?;
    // pg_dump is killed (kill_on_drop) if the target cannot be made.
    tokio::select! {
        ready = dump.target_ready => ready?,
        () = stopped(stop) => anyhow::bail!("interrupted during the copy"),
    }
    let mut restore = spawn_restore(tools, child, to, piped)?;
    let restore_err = collect(restore.stderr.take());

    let work = async {
        let dumped = dumping.wait().await.context("wait for pg_dump")?;
        let restored = restore.wait().await.context("wait for pg_restore")?;
        anyhow::Ok((dumped, restored))
    };
    let (dumped, restored) = tokio::select! {
        done = work => done?,
        () = stopped(stop) => anyhow::bail!("interrupted during the copy"),
    };
    let shown = |text: String| {
        let text = redactor.redact(text.trim()).into_owned();
        // The last lines say what went wrong; keep the message one line.
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    };
    // pg_restore first: when it fails, pg_dump's broken pipe is only the
    // consequence. When both failed, pg_dump's words follow: pg_restore's
    // "input file is too short" says nothing of why pg_dump stopped.
    let dump_failed = if dumped.success() {
        None
    } else {
        let said = shown(dump_err.await.unwrap_or_default());
        Some(format!("pg_dump failed ({dumped}): {said}"))
    };
    if !restored.success() {
        let restore = shown(restore_err.await.unwrap_or_default());
        match dump_failed {
            Some(dump) => anyhow::bail!("pg_restore failed ({restored}): {restore}; {dump}"),
            None => anyhow::bail!("pg_restore failed ({restored}): {restore}"),
        }
    }
    match dump_failed {
        Some(dump) => anyhow::bail!("{dump}"),
        None => Ok(()),
    }
}

/// Starts `pg_restore` reading the dump from `piped`. The command (and
/// with it this process's end of the pipe) is gone once it runs: if
/// `pg_restore` dies, `pg_dump` then stops on a broken pipe instead of waiting
/// for a reader.
fn spawn_restore(
    tools: &PgTools,
    child: &ChildEnv,
    to: &End<'_>,
    piped: Stdio,
) -> anyhow::Result<tokio::process::Child> {
    let mut restore = tool(&tools.pg_restore, child, to.env);
    restore
        .args([
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--dbname",
        ])
        .arg(to.db)
        .stdin(piped)
        .stdout(Stdio::null());
    restore.spawn().context("start pg_restore")
}

/// A tool with only this end's libpq variables: inherited `PG*` settings
/// and other servers' URLs (another server, another password) never
/// reach it. Its own process group, so the terminal's Ctrl-C reaches
/// tenantctl, which stops it.
fn tool(program: &Path, child: &ChildEnv, env: &[(&'static str, String)]) -> Command {
    let mut cmd = Command::new(program);
    child.scrub(cmd.as_std_mut());
    cmd.envs(
        env.iter()
            .filter(|(k, _)| k.starts_with("PG"))
            .map(|(k, v)| (*k, v.as_str())),
    );
    if !env.iter().any(|(k, _)| *k == "PGAPPNAME") {
        cmd.env("PGAPPNAME", "tenantctl");
    }
    cmd.stderr(Stdio::piped()).kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}

/// Reads a child's stream to the end in the background (at most 64 kB kept).
fn collect<R>(stream: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut kept = Vec::new();
        if let Some(stream) = stream {
            let _ = stream.take(64 * 1024).read_to_end(&mut kept).await;
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// Resolves once the stop flag is set.
pub async fn stopped(stop: &Stop) {
    while !stop.is_set() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(major_of("15.18"), Some(15));
        assert_eq!(major_of("17beta1"), Some(17));
        assert_eq!(major_of("x"), None);
        let tools = PgTools {
            pg_dump: "pg_dump".into(),
            pg_restore: "pg_restore".into(),
            version: "15.18".into(),
            major: 15,
        };
        assert!(tools.check(15, 15).is_ok());
        assert!(tools.check(14, 16).is_ok());
        assert!(
            tools.check(16, 16).is_err(),
            "pg_dump older than the source"
        );
        assert!(tools.check(15, 14).is_err(), "target older than the source");
    }
}
