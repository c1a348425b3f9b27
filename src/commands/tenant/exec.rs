//! `tenantctl tenant exec <selection> -- <program> [args...]`: run a program
//! once per tenant with that tenant's `DATABASE_URL` in its environment, the
//! way the seed's infrastructure runs its ORM's migrate command.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::cli::{FleetArgs, OutputMode, SelectionArgs, parse_duration};
use crate::context::Context;
use crate::db::Connector;
use crate::error::Outcome;
use crate::fleet;
use crate::progress::Progress;
use crate::report::{TenantValue, format_duration, print_fleet};
use crate::tenant::Tenant;

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,

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
            self.progress.suspend(|| {
                if to_stderr {
                    eprintln!("{slug} | {line}");
                } else {
                    println!("{slug} | {line}");
                }
            });
        }
    }
}

pub async fn run(args: ExecArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let tenants = ctx.select(&args.selection).await?;
    // One tenant at a time and a person watching: give the child the
    // terminal, so an interactive tool works.
    let interactive =
        tenants.len() == 1 && args.fleet.concurrency == 1 && ctx.output == OutputMode::Table;
    let connector = ctx.connector.clone();
    let command = args.command.clone();
    let timeout = args.timeout;
    let progress = Arc::new(ctx.progress());
    let lines = Lines {
        progress: progress.clone(),
        stream: ctx.output == OutputMode::Table,
    };
    // An interactive child gets Ctrl-C itself; tenantctl must not also
    // act on it (a second one would exit and orphan the child).
    let stop = if interactive {
        &ctx.stop
    } else {
        ctx.interruptible()
    };
    let run = fleet::run(
        tenants,
        (&args.fleet).into(),
        stop,
        &*progress,
        move |tenant| {
            let (connector, command, lines) = (connector.clone(), command.clone(), lines.clone());
            async move {
                let mut executed = Executed::default();
                let child = Child {
                    command: &command,
                    timeout,
                    interactive,
                    lines: &lines,
                };
                let result = child.run(&connector, &tenant, &mut executed).await;
                (executed, result)
            }
        },
    )
    .await;
    print_fleet(&run, ctx.output);
    Ok(run.outcome())
}

/// How to run the program for each tenant.
struct Child<'a> {
    command: &'a [String],
    timeout: Option<Duration>,
    interactive: bool,
    lines: &'a Lines,
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
        let url = connector.tenant_url(db)?;
        let secrets = Secrets::of(&url);
        let mut cmd = tokio::process::Command::new(program);
        // The URL, password included, goes into the child's environment
        // only: never its arguments, which any user can read from /proc.
        // The child sees its own tenant only, not the server root or master.
        cmd.args(program_args)
            .env_remove("POSTGRES_BASE_URL")
            .env_remove("MASTER_DATABASE_URL")
            .env("DATABASE_URL", url.as_str())
            .env("TENANT_ID", &tenant.id)
            .env("TENANT_SLUG", &tenant.slug)
            .env("TENANT_DB_NAME", db.as_str())
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
        let mut child = cmd.spawn().with_context(|| format!("start {program:?}"))?;
        let readers = [
            child.stdout.take().map(|out| {
                tokio::spawn(pump(
                    out,
                    tenant.slug.clone(),
                    false,
                    self.lines.clone(),
                    secrets.clone(),
                ))
            }),
            child.stderr.take().map(|err| {
                tokio::spawn(pump(
                    err,
                    tenant.slug.clone(),
                    true,
                    self.lines.clone(),
                    secrets.clone(),
                ))
            }),
        ];

        let status = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(status) => Some(status),
                Err(_) => {
                    kill_group(&mut child).await;
                    None
                }
            },
            None => Some(child.wait().await),
        };
        let [out, err] = readers;
        executed.stdout = collect(out).await;
        executed.stderr = collect(err).await;
        let Some(status) = status else {
            anyhow::bail!(
                "{program:?} timed out after {}; killed",
                format_duration(self.timeout.unwrap_or_default())
            );
        };
        let status = status.with_context(|| format!("wait for {program:?}"))?;
        executed.exit_code = status.code();
        anyhow::ensure!(status.success(), "{program:?} exited with {status}");
        Ok(())
    }
}

/// The tenant's password as it may appear in a child's output: plain and
/// percent-encoded. Too short a password would blank out ordinary text,
/// so only passwords of four characters or more are looked for.
#[derive(Clone, Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn of(url: &url::Url) -> Self {
        let Some(encoded) = url.password() else {
            return Self::default();
        };
        let plain = percent_encoding::percent_decode_str(encoded)
            .decode_utf8_lossy()
            .into_owned();
        let mut found: Vec<String> = vec![plain, encoded.to_owned()];
        found.retain(|s| s.len() >= 4);
        found.dedup();
        Self(found)
    }

    fn redact(&self, line: &str) -> String {
        self.0.iter().fold(line.to_owned(), |line, secret| {
            line.replace(secret.as_str(), "***")
        })
    }
}

/// Reads a child's stream line by line: shows each line as it comes and
/// keeps them all for the report, the password redacted in both.
async fn pump(
    stream: impl tokio::io::AsyncRead + Unpin,
    slug: String,
    to_stderr: bool,
    lines: Lines,
    secrets: Secrets,
) -> String {
    use tokio::io::AsyncBufReadExt as _;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut kept = String::new();
    let mut buf = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut buf).await {
        if n == 0 {
            break;
        }
        let line = secrets.redact(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
        lines.show(&slug, to_stderr, &line);
        kept.push_str(&line);
        kept.push('\n');
        buf.clear();
    }
    kept
}

/// What a reader kept. After a kill, a descendant that left the group could
/// hold the pipe open for ever, so waiting is bounded.
async fn collect(reader: Option<tokio::task::JoinHandle<String>>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    match tokio::time::timeout(Duration::from_secs(2), &mut reader).await {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => String::new(),
        Err(_) => {
            reader.abort();
            String::new()
        }
    }
}

/// Kills the child's whole process group, then reaps the child.
async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill().await;
}
