//! `tenantctl tenant runs [RUN_ID]`: the recorded `migrate` and `revert`
//! runs, newest first, or what one run did to each tenant it changed.

use clap::Args;

use crate::commands::context::Context;
use crate::error::{Outcome, UsageError};
use crate::output::{OutputMode, document, join_versions, line, print_json, shown, table};
use crate::runs::{self, Label, RunSummary};

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Show what this run recorded of each tenant (changed, failed,
    /// skipped, or pending: never reached), instead of the list
    #[arg(value_name = "RUN_ID")]
    pub run: Option<i64>,

    /// How many recent runs to list
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,

    /// Only the runs recorded under this label (a deploy's shards, its
    /// reruns and its rollback), newest first
    #[arg(long, value_name = "TEXT", conflicts_with = "run", value_parser = clap::builder::ValueParser::new(|raw: &str| raw.parse::<Label>()))]
    pub label: Option<Label>,
}

pub async fn run(args: RunsArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    match args.run {
        None => {
            let label = args.label.clone();
            let listed = ctx
                .runner
                .with_master(|conn, layout, _| {
                    Box::pin(async move {
                        runs::recent(conn, &layout, args.limit, label.as_ref()).await
                    })
                })
                .await?;
            if let Some(label) = &args.label
                && listed.is_empty()
            {
                return Err(UsageError(format!(
                    "no run is recorded under label {label}; `tenantctl tenant runs` lists the recorded runs and their labels"
                ))
                .into());
            }
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
            let value = serde_json::json!({"run": summary, "tenants": tenants});
            document(ctx.output, &value);
            match ctx.output {
                OutputMode::Jsonl => print_json(ctx.output, &value),
                OutputMode::Json => {}
                OutputMode::Table | OutputMode::Junit => {
                    show_runs(OutputMode::Table, std::slice::from_ref(&summary));
                    if let Some(selection) = &summary.selection {
                        line(selection.describe());
                    }
                    let mut out = table([
                        "company id",
                        "slug",
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
                            shown(t.slug.as_deref().unwrap_or("-")),
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
                    line(tally(id, &tenants));
                }
            }
        }
    }
    Ok(Outcome::Success)
}

/// The per-run view's last line: how many tenants the run recorded, by
/// result (`pending`: selected, never finished: the run was killed).
fn tally(id: i64, tenants: &[runs::RunTenant]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for t in tenants {
        *counts.entry(t.status.as_str()).or_default() += 1;
    }
    let changed = tenants.iter().filter(|t| !t.versions.is_empty()).count();
    let by_status: Vec<String> = counts
        .into_iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    format!(
        "{} tenant(s) recorded in run {id} ({}), {changed} changed",
        tenants.len(),
        if by_status.is_empty() {
            "none".to_owned()
        } else {
            by_status.join(", ")
        }
    )
}

fn print_runs(mode: OutputMode, list: &[RunSummary]) {
    document(mode, &serde_json::json!({ "runs": list }));
    show_runs(mode, list);
}

/// The runs on stdout, without handing a document to the report file: the
/// per-run view prints its run's line this way above its own document.
fn show_runs(mode: OutputMode, list: &[RunSummary]) {
    match mode {
        OutputMode::Json => {}
        OutputMode::Jsonl => {
            for run in list {
                print_json(mode, run);
            }
        }
        OutputMode::Table | OutputMode::Junit => {
            let mut out = table([
                "run", "command", "label", "to", "started", "outcome", "tenants", "changed", "ok",
                "failed", "skipped",
            ]);
            let count = |n: Option<i32>| n.map_or_else(String::new, |n| n.to_string());
            for r in list {
                out.add_row([
                    r.id.to_string(),
                    match r.undoes_run {
                        Some(undone) => format!("{} --run {undone}", r.command),
                        None => r.command.clone(),
                    },
                    shown(r.label.as_deref().unwrap_or_default()),
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
