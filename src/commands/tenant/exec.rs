//! `tenantctl tenant exec <selection> -- <program> [args...]`: run a program
//! once per tenant with that tenant's `DATABASE_URL` in its environment, the
//! way the seed's infrastructure runs its ORM's migrate command.
//!
//! A child's environment describes its tenant, not the operator: every
//! inherited variable that configures a server (`PG*`,
//! `POSTGRES_BASE_URL*`, `url_env`s, `MASTER_DATABASE_URL`, `TENANTCTL_*`)
//! or holds a known password is removed ([`ChildEnv`]) and the tenant's
//! own set ([`Connector::tenant_env`]) put in its place. Its output is
//! captured line by line and every configured server's password masked
//! ([`Redactor`]) unless the operator asks for `--interactive`, which
//! hands it the terminal unredacted.

use std::io::IsTerminal as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::child_env::ChildEnv;
use crate::commands::args::{FleetArgs, SelectionArgs, parse_duration};
use crate::commands::context::Context;
use crate::connect::Connector;
use crate::error::{Outcome, UsageError};
use crate::fleet::Stop;
use crate::output::progress::Progress;
use crate::output::report::TenantValue;
use crate::output::{OutputMode, format_duration};
use crate::redact::Redactor;
use crate::tenant::Tenant;

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

    /// Give the child this terminal (for an interactive tool: a REPL,
    /// psql, a prompt) instead of capturing its output. Its output is then
    /// NOT redacted: it can show the tenant's password. Needs exactly one
    /// tenant and a terminal on stdin
    #[arg(long)]
    pub interactive: bool,

    /// Kill a child that runs longer than this (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// The program and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}

/// One child's result. Output is empty when the child had the terminal.
#[derive(Debug, Default, Serialize)]
pub struct Executed {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl TenantValue for Executed {
    fn headers() -> Vec<&'static str> {
        vec!["exit"]
    }

    fn cells(&self) -> Vec<String> {
        vec![self.exit_code.map_or_else(String::new, |c| c.to_string())]
    }
}

/// Where a child's output lines go as they arrive: prefixed with the slug
/// on our stdout and stderr (table mode), or only into the report (JSON).
#[derive(Clone)]
struct Lines {
    progress: Arc<Progress>,
    stream: bool,
}

impl Lines {
    fn show(&self, slug: &str, to_stderr: bool, line: &str) {
        if self.stream {
            let text = format!("{slug} | {line}");
            if to_stderr {
                self.progress.suspend(|| crate::output::warn(text));
            } else {
                // Stops the run (no new tenant) once nobody reads stdout.
                self.progress.data_line(&text);
            }
        }
    }
}

pub async fn run(args: ExecArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    // The terminal goes to a child only when asked for, since its output
    // then bypasses redaction; everywhere else output goes through us.
    let interactive = args.interactive;
    if interactive && !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "--interactive needs a terminal on stdin; without --interactive the output is captured and redacted".into(),
        )
        .into());
    }
    let tenants = ctx.select(&args.selection).await?;
    if interactive && tenants.len() != 1 {
        return Err(UsageError(format!(
            "--interactive runs exactly one tenant; the selection has {}",
            tenants.len()
        ))
        .into());
    }
    let connector = ctx.connector.clone();
    let child_env = Arc::new(connector.child_env());
    let command = args.command.clone();
    let timeout = args.timeout;
    // No progress bar drawing over a child that has the terminal.
    let progress = Arc::new(if interactive {
        Progress::new(ctx.output, true, ctx.stop.clone())
    } else {
        ctx.progress()
    });
    let lines = Lines {
        progress: progress.clone(),
        stream: ctx.output == OutputMode::Table,
    };
    // An interactive child gets Ctrl-C itself (psql cancels a query, a REPL
    // clears its line); tenantctl ignores it meanwhile rather than die and
    // leave the child on the terminal.
    let stop = if interactive {
        tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
        &ctx.stop
    } else {
        ctx.interruptible()
    };
    let tracker = stop.clone();
    let run = ctx
        .runner
        .with_options((&args.fleet).into())
        .each_tenant(tenants, &*progress, move |tenant| {
            let (connector, child_env, command, lines, tracker) = (
                connector.clone(),
                child_env.clone(),
                command.clone(),
                lines.clone(),
                tracker.clone(),
            );
            async move {
                let mut executed = Executed::default();
                let child = Child {
                    command: &command,
                    cwd: None,
                    env: &child_env,
                    timeout,
                    interactive,
                    lines: &lines,
                    tracker: &tracker,
                    url_schema: None,
                };
                let result = child.run(&connector, &tenant, &mut executed).await;
                (executed, result)
            }
        })
        .await;
    Ok(ctx.finish(&run))
}

/// How to run the program for each tenant.
pub(crate) struct Child<'a> {
    command: &'a [String],
    /// Where it runs [default: tenantctl's working directory].
    cwd: Option<&'a std::path::Path>,
    env: &'a ChildEnv,
    timeout: Option<Duration>,
    interactive: bool,
    lines: &'a Lines,
    tracker: &'a Stop,
    /// Prisma's `?schema=` to add to `DATABASE_URL`, for a Prisma
    /// migrator whose schema is not `public`.
    url_schema: Option<&'a str>,
}

impl Child<'_> {
    async fn run(
        &self,
        connector: &Connector,
        tenant: &Tenant,
        executed: &mut Executed,
    ) -> anyhow::Result<()> {
        let db = tenant.db_name()?;
        let (program, program_args) = self
            .command
            .split_first()
            .context("no program given after --")?;
        let mut env = connector.tenant_env(tenant.server()?, db)?;
        if let Some(schema) = self.url_schema {
            with_url_schema(&mut env, schema);
        }
        let redactor = redactor_for(self.env, &env, tenant);
        let mut cmd = self.command_for(program, program_args, &env, tenant, db.as_str());
        let mut child = cmd.spawn().with_context(|| format!("start {program:?}"))?;
        let group = child.id().filter(|_| !self.interactive);
        if let Some(pgid) = group {
            self.tracker.track_child(pgid);
        }
        let (out_text, err_text) = (Kept::default(), Kept::default());
        let slug = tenant.handle();
        let readers = [
            child.stdout.take().map(|out| {
                let pump = pump(
                    out,
                    slug.to_owned(),
                    false,
                    self.lines.clone(),
                    redactor.clone(),
                    out_text.clone(),
                );
                tokio::spawn(pump)
            }),
            child.stderr.take().map(|err| {
                let pump = pump(
                    err,
                    slug.to_owned(),
                    true,
                    self.lines.clone(),
                    redactor.clone(),
                    err_text.clone(),
                );
                tokio::spawn(pump)
            }),
        ];
        let waited = self.wait(&mut child).await;
        if let Some(pgid) = group {
            self.tracker.untrack_child(pgid);
        }
        drain(readers).await;
        executed.stdout = out_text.take();
        executed.stderr = err_text.take();
        let status = match waited {
            Waited::Exited(status) => status,
            Waited::TimedOut => anyhow::bail!(
                "{program:?} timed out after {}; killed",
                format_duration(self.timeout.unwrap_or_default())
            ),
            Waited::Interrupted => {
                return Err(anyhow::anyhow!(
                    "{program:?} was still running when the interrupt's grace period ended; stopped (SIGTERM, then SIGKILL)"
                )
                .context(crate::error::Cancelled));
            }
        };
        let status = status.with_context(|| format!("wait for {program:?}"))?;
        executed.exit_code = status.code();
        anyhow::ensure!(status.success(), "{program:?} exited with {status}");
        Ok(())
    }

    /// The child's command line and environment. The URL and password go
    /// into its environment only: never its arguments, which any user can
    /// read from /proc. The child sees its own tenant only, not the server
    /// roots, the master, or the operator's own PG* settings (another
    /// server, another password).
    fn command_for(
        &self,
        program: &str,
        args: &[String],
        env: &[(&'static str, String)],
        tenant: &Tenant,
        db: &str,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args);
        if let Some(cwd) = self.cwd {
            cmd.current_dir(cwd);
        }
        self.env.scrub(cmd.as_std_mut());
        cmd.envs(env.iter().map(|(name, value)| (name, value)))
            .env("TENANT_ID", &tenant.id)
            .env("TENANT_SLUG", tenant.slug.as_deref().unwrap_or_default())
            .env("TENANT_DB_NAME", db)
            .kill_on_drop(true);
        if !self.interactive {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // A group of its own, so a timeout kills what it started too
            // (`sh -c`, `npx` -> node), not just the child.
            #[cfg(unix)]
            cmd.process_group(0);
        }
        cmd
    }

    /// Waits for the child, until `--timeout` runs out or an interrupt's
    /// grace period ends (then its group gets SIGTERM, and SIGKILL if it
    /// is still there two seconds later): an interrupt never waits on a
    /// child for good. An interactive child has the terminal and its own
    /// Ctrl-C, and is waited for.
    async fn wait(&self, child: &mut tokio::process::Child) -> Waited {
        let limit = async {
            match self.timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let interrupted = async {
            if self.interactive {
                std::future::pending::<()>().await;
            }
            self.tracker.cancel_due().await;
        };
        tokio::select! {
            status = child.wait() => Waited::Exited(status),
            () = limit => {
                kill_group(child).await;
                Waited::TimedOut
            }
            () = interrupted => {
                signal_group(child, nix::sys::signal::Signal::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                    kill_group(child).await;
                }
                Waited::Interrupted
            }
        }
    }
}

/// Adds `schema=<schema>` to the child's `DATABASE_URL` query (Prisma's
/// parameter naming the schema of its tables and `_prisma_migrations`),
/// percent-encoded, never `+` for a space.
fn with_url_schema(env: &mut [(&'static str, String)], schema: &str) {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    if let Some((_, url)) = env.iter_mut().find(|(k, _)| *k == "DATABASE_URL") {
        let value = utf8_percent_encode(schema, NON_ALPHANUMERIC);
        let sep = if url.contains('?') { '&' } else { '?' };
        url.push(sep);
        url.push_str("schema=");
        url.extend(value);
    }
}

/// Runs the application's migrator command for one tenant, as `tenant
/// exec` runs a program (same environment, scrubbed; output captured and
/// redacted), in the command's own folder. A non-zero exit is a failure
/// whose error carries the end of the child's (redacted) output.
/// `url_schema`: see [`Child::url_schema`].
#[allow(clippy::too_many_arguments, reason = "one call per migrator kind")]
pub(crate) async fn run_app_command(
    connector: &Connector,
    child_env: &ChildEnv,
    command: &crate::config::AppCommand,
    url_schema: Option<&str>,
    tenant: &Tenant,
    tracker: &Stop,
    progress: Arc<Progress>,
    executed: &mut Executed,
) -> anyhow::Result<()> {
    let lines = Lines {
        progress,
        stream: false,
    };
    let child = Child {
        command: &command.argv,
        cwd: Some(&command.cwd),
        env: child_env,
        timeout: None,
        interactive: false,
        lines: &lines,
        tracker,
        url_schema,
    };
    let result = child.run(connector, tenant, executed).await;
    result.map_err(|err| {
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(5)..].join(" | ")
        };
        let output = [tail(&executed.stderr), tail(&executed.stdout)]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        if output.is_empty() || err.downcast_ref::<crate::error::Cancelled>().is_some() {
            err
        } else {
            anyhow::anyhow!("{}; its output: {output}", crate::error::render(&err))
        }
    })
}

/// How waiting for a child ended.
enum Waited {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Interrupted,
}

/// Masks every server's password (the tenant's, the others', the
/// master's), told apart from the words its output names anyway (user,
/// host, database, slug, id), which a short or common password may equal.
fn redactor_for(child: &ChildEnv, env: &[(&'static str, String)], tenant: &Tenant) -> Redactor {
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let words = [
        get("PGUSER"),
        get("PGHOST"),
        get("PGPORT"),
        get("PGDATABASE"),
        tenant.slug.as_deref().unwrap_or_default(),
        &tenant.id,
    ];
    child.redactor(&words).with(get("PGPASSWORD"), &words)
}

/// What a reader has kept so far, shared so that it survives the reader
/// being given up on.
#[derive(Clone, Default)]
struct Kept(Arc<std::sync::Mutex<String>>);

impl Kept {
    fn push_line(&self, line: &str) {
        if let Ok(mut text) = self.0.lock() {
            text.push_str(line);
            text.push('\n');
        }
    }

    fn take(&self) -> String {
        self.0
            .lock()
            .map(|mut text| std::mem::take(&mut *text))
            .unwrap_or_default()
    }
}

/// Reads a child's stream line by line: shows each line as it comes and
/// keeps them all for the report, the password redacted in both. Lines
/// are read whole, however many reads they take, so a URL is never split.
async fn pump(
    stream: impl tokio::io::AsyncRead + Unpin,
    slug: String,
    to_stderr: bool,
    lines: Lines,
    redactor: Redactor,
    kept: Kept,
) {
    use tokio::io::AsyncBufReadExt as _;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut buf).await {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = redactor.redact(text.trim_end_matches(['\n', '\r']));
        lines.show(&slug, to_stderr, &line);
        kept.push_line(&line);
        buf.clear();
    }
}

/// Waits for both readers to reach the end of their streams, for two
/// seconds at most after the child is gone: a background process the child
/// left behind may hold the pipes open for ever. What they read so far is
/// kept either way.
async fn drain(readers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    let mut handles: Vec<_> = readers.into_iter().flatten().collect();
    let all = async {
        for handle in &mut handles {
            let _ = handle.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), all)
        .await
        .is_err()
    {
        for handle in &handles {
            handle.abort();
        }
    }
}

/// Kills the child's whole process group, then reaps the child.
async fn kill_group(child: &mut tokio::process::Child) {
    signal_group(child, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill().await;
}

/// Sends `signal` to the child's process group (its own: see
/// `command_for`).
fn signal_group(child: &tokio::process::Child, signal: nix::sys::signal::Signal) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}
