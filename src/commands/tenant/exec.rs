//! `tenantctl tenant exec <selection> -- <program> [args...]`: run a program
//! once per tenant with that tenant's `DATABASE_URL` in its environment, the
//! way the seed's infrastructure runs its ORM's migrate command.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::cli::{FleetArgs, OutputMode, SelectionArgs, parse_duration};
use crate::context::Context;
use crate::db::Connector;
use crate::error::Outcome;
use crate::fleet::{self, FleetOptions, Observer, Report};
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

/// Prints each child's captured output, prefixed with its slug, as soon as
/// it finishes, so tenants running at once never interleave mid-line.
struct Grouped {
    progress: Progress,
    print: bool,
}

impl Observer<Executed> for Grouped {
    fn start(&self, total: usize) {
        Observer::<Executed>::start(&self.progress, total);
    }

    fn done(&self, report: &Report<Executed>) {
        if self.print {
            let slug = &report.tenant.slug;
            self.progress.suspend(|| {
                for line in report.value.stdout.lines() {
                    println!("{slug} | {line}");
                }
                for line in report.value.stderr.lines() {
                    eprintln!("{slug} | {line}");
                }
            });
        }
        self.progress.done(report);
    }

    fn finish(&self) {
        Observer::<Executed>::finish(&self.progress);
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
    let options = FleetOptions {
        concurrency: usize::from(args.fleet.concurrency),
        fail_fast: args.fleet.fail_fast,
    };
    let observer = Grouped {
        progress: ctx.progress(),
        print: ctx.output == OutputMode::Table && !interactive,
    };
    let run = fleet::run(tenants, options, &ctx.stop, &observer, move |tenant| {
        let (connector, command) = (connector.clone(), command.clone());
        async move {
            let mut executed = Executed::default();
            let result = run_child(
                &connector,
                &tenant,
                &command,
                timeout,
                interactive,
                &mut executed,
            )
            .await;
            (executed, result)
        }
    })
    .await;
    print_fleet(&run, ctx.output);
    Ok(run.outcome())
}

async fn run_child(
    connector: &Connector,
    tenant: &Tenant,
    command: &[String],
    timeout: Option<Duration>,
    interactive: bool,
    executed: &mut Executed,
) -> anyhow::Result<()> {
    let db = tenant.db_name()?;
    let (program, program_args) = command.split_first().context("no program given after --")?;
    let mut child = tokio::process::Command::new(program);
    // The URL, password included, goes into the child's environment only:
    // never its arguments, which any user can read from /proc.
    // The child sees its own tenant only: not the server root or the master.
    child
        .args(program_args)
        .env_remove("POSTGRES_BASE_URL")
        .env_remove("MASTER_DATABASE_URL")
        .env("DATABASE_URL", connector.tenant_url(db)?.as_str())
        .env("TENANT_ID", &tenant.id)
        .env("TENANT_SLUG", &tenant.slug)
        .env("TENANT_DB_NAME", db.as_str())
        .kill_on_drop(true);
    if !interactive {
        child
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    let child = child
        .spawn()
        .with_context(|| format!("start {program:?}"))?;
    let waited = child.wait_with_output();
    let output = match timeout {
        // Dropping the timed-out future drops the child, which kills it.
        Some(limit) => tokio::time::timeout(limit, waited).await.map_err(|_| {
            anyhow::anyhow!(
                "{program:?} timed out after {}; killed",
                format_duration(limit)
            )
        })?,
        None => waited.await,
    }
    .with_context(|| format!("wait for {program:?}"))?;
    executed.exit_code = output.status.code();
    executed.stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    executed.stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{program:?} exited with {}",
        output.status
    );
    Ok(())
}
