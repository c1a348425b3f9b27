//! `tenantctl tenant runs [RUN_ID]`: the recorded `migrate` and `revert`
//! runs, newest first, or what one run did to each tenant it changed.

use clap::Args;

use crate::commands::context::Context;
use crate::error::{Outcome, UsageError};
use crate::output::{OutputMode, join_versions, line, print_json, shown, table};
use crate::runs::{self, RunSummary};

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Show the tenants this run changed or failed on, instead of the list
    #[arg(value_name = "RUN_ID")]
    pub run: Option<i64>,

    /// How many recent runs to list
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

pub async fn run(args: RunsArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    match args.run {
        None => {
            let listed = ctx
                .runner
                .with_master(|conn, layout, _| {
                    Box::pin(async move { runs::recent(conn, &layout, args.limit).await })
                })
                .await?;
            print_runs(ctx.output, &listed);
        }
        Some(id) => {
            let found = ctx
                .runner
                .with_master(|conn, layout, _| {
                    Box::pin(async move { runs::get(conn, &layout, id).await })
                })
                .await;
            let Some((summary, tenants)) = found? else {
                return Err(UsageError(format!(
                    "no run {id} is recorded in the master; `tenantctl tenant runs` lists the recorded runs"
                ))
                .into());
            };
            match ctx.output {
                mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(
                    mode,
                    &serde_json::json!({"run": summary, "tenants": tenants}),
                ),
                OutputMode::Table => {
                    print_runs(OutputMode::Table, std::slice::from_ref(&summary));
                    if let Some(selection) = &summary.selection {
                        line(selection.describe());
                    }
                    let mut out = table([
                        "company id",
                        "db name",
                        "server",
                        "before",
                        "after",
                        "versions",
                        "result",
                        "error",
                    ]);
                    let version = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
                    for t in &tenants {
                        out.add_row([
                            shown(&t.company_id),
                            shown(&t.db_name),
                            shown(&t.server),
                            version(t.before),
                            version(t.after),
                            join_versions(&t.versions),
                            t.status.clone(),
                            shown(t.error.as_deref().unwrap_or_default()),
                        ]);
                    }
                    if !tenants.is_empty() {
                        line(out);
                    }
                    line(format_args!(
                        "{} tenant(s) changed or failed in run {id}",
                        tenants.len()
                    ));
                }
            }
        }
    }
    Ok(Outcome::Success)
}

fn print_runs(mode: OutputMode, list: &[RunSummary]) {
    match mode {
        OutputMode::Json => print_json(mode, &serde_json::json!({ "runs": list })),
        OutputMode::Jsonl => {
            for run in list {
                print_json(mode, run);
            }
        }
        OutputMode::Table => {
            let mut out = table([
                "run", "command", "to", "started", "outcome", "tenants", "changed", "ok", "failed",
                "skipped",
            ]);
            let count = |n: Option<i32>| n.map_or_else(String::new, |n| n.to_string());
            for r in list {
                out.add_row([
                    r.id.to_string(),
                    match r.undoes_run {
                        Some(undone) => format!("{} --run {undone}", r.command),
                        None => r.command.clone(),
                    },
                    r.to.map_or_else(String::new, |v| v.to_string()),
                    r.started_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    if r.incomplete {
                        format!("{} (incomplete record)", r.outcome)
                    } else {
                        r.outcome.clone()
                    },
                    r.tenants.to_string(),
                    r.changed.to_string(),
                    count(r.ok),
                    count(r.failed),
                    count(r.skipped),
                ]);
            }
            if list.is_empty() {
                line("no runs recorded yet");
            } else {
                line(out);
            }
        }
    }
}
