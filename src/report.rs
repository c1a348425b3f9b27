//! Printing results on stdout: tables for people, JSON for machines. Every
//! per-tenant command reports in the same shape.

use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::cli::OutputMode;
use crate::fleet::{FleetRun, Report, Status};

/// The command-specific part of a per-tenant report: extra JSON fields
/// (through `Serialize`, flattened into the tenant object) and extra table
/// columns.
pub trait TenantValue: Serialize {
    fn headers() -> Vec<&'static str>;
    fn cells(&self) -> Vec<String>;
}

#[derive(Serialize)]
struct TenantJson<'a, T> {
    id: &'a str,
    slug: &'a str,
    db_name: &'a str,
    status: Status,
    #[serde(flatten)]
    value: &'a T,
    error: Option<&'a str>,
    duration_ms: u64,
}

/// Integer counts of each status, the `summary` of every JSON report.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn of<T>(run: &FleetRun<T>) -> Self {
        Self {
            ok: run.count(Status::Ok),
            failed: run.count(Status::Failed),
            skipped: run.count(Status::Skipped),
        }
    }
}

/// One tenant's report as a JSON value.
pub fn tenant_json<T: TenantValue>(report: &Report<T>) -> serde_json::Value {
    serde_json::to_value(TenantJson {
        id: &report.tenant.id,
        slug: &report.tenant.slug,
        db_name: &report.tenant.db_name_raw,
        status: report.status,
        value: &report.value,
        error: report.error.as_deref(),
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
    })
    .expect("reports serialize")
}

/// Prints the end-of-run report. In `jsonl` mode the tenants were already
/// streamed, so only the summary line is left.
pub fn print_fleet<T: TenantValue>(run: &FleetRun<T>, mode: OutputMode) {
    let summary = Summary::of(run);
    match mode {
        OutputMode::Json => print_json(
            mode,
            &serde_json::json!({
                "tenants": run.reports.iter().map(tenant_json).collect::<Vec<_>>(),
                "summary": summary,
                "interrupted": run.interrupted,
            }),
        ),
        OutputMode::Jsonl => print_json(
            mode,
            &serde_json::json!({"summary": summary, "interrupted": run.interrupted}),
        ),
        OutputMode::Table => {
            let any_error = run.reports.iter().any(|r| r.error.is_some());
            let mut headers = vec!["tenant", "db name", "result"];
            headers.extend(T::headers());
            headers.push("time");
            if any_error {
                headers.push("error");
            }
            let mut table = table(headers);
            for r in &run.reports {
                let mut row = vec![
                    r.tenant.slug.clone(),
                    r.tenant.db_name_raw.escape_debug().to_string(),
                    r.status.as_str().to_owned(),
                ];
                row.extend(r.value.cells());
                row.push(if r.status == Status::Skipped {
                    String::new()
                } else {
                    format_duration(r.duration)
                });
                if any_error {
                    row.push(r.error.clone().unwrap_or_default());
                }
                table.add_row(row);
            }
            if !run.reports.is_empty() {
                println!("{table}");
            }
            println!(
                "{} ok, {} failed, {} skipped{}",
                summary.ok,
                summary.failed,
                summary.skipped,
                if run.interrupted {
                    " (interrupted)"
                } else {
                    ""
                }
            );
        }
    }
}

/// A table with our look and the given header.
pub fn table<I, S>(headers: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers);
    table
}

/// Prints JSON on stdout: pretty for `json`, one line for `jsonl`.
pub fn print_json<T: Serialize>(mode: OutputMode, value: &T) {
    let text = if mode == OutputMode::Jsonl {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    println!("{}", text.expect("values serialize"));
}

/// `850ms`, `1.2s`, `3m 05s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}
