//! Printing results on stdout: tables for people, JSON for machines. Every
//! per-tenant command reports in the same shape.

use serde::Serialize;

use super::{OutputMode, format_duration, line, print_json, shown, table};
use crate::fleet::{FleetRun, Report, Verdict};
use crate::selection::Selection;

/// The command-specific part of a per-tenant report: extra JSON fields
/// (through `Serialize`, flattened into the tenant object) and extra table
/// columns.
pub trait TenantValue: Serialize {
    fn headers() -> Vec<&'static str>;
    fn cells(&self) -> Vec<String>;

    /// Told when the tenant's database could not be connected to, for
    /// commands whose report says why (`status`: the database is missing).
    fn connect_failed(&mut self, _err: &anyhow::Error) {}
}

#[derive(Serialize)]
struct TenantJson<'a, T> {
    id: &'a str,
    slug: Option<&'a str>,
    db_name: Option<&'a str>,
    server: &'a str,
    status: Verdict,
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
    /// Tenants an interrupt cut short (their statement in flight cancelled
    /// on the server); left out when there are none, so the summary of a
    /// run that had none keeps its shape.
    #[serde(skip_serializing_if = "is_zero")]
    pub interrupted: usize,
}

impl Summary {
    pub fn of<T>(run: &FleetRun<T>) -> Self {
        Self {
            ok: run.count(Verdict::Ok),
            failed: run.count(Verdict::Failed),
            skipped: run.count(Verdict::Skipped),
            interrupted: run.count(Verdict::Interrupted),
        }
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One tenant's report, to serialize as JSON (straight from the report,
/// never through `serde_json::Value`: a setting's `1e400` or 30-digit
/// number is printed as stored, not refused or rounded).
pub fn tenant_json<T: TenantValue>(report: &Report<T>) -> impl Serialize + '_ {
    TenantJson {
        id: &report.tenant.id,
        slug: report.tenant.slug.as_deref(),
        db_name: report.tenant.db_name_raw.as_deref(),
        server: report.tenant.server_label(),
        status: report.verdict,
        value: &report.value,
        error: report.error.as_deref(),
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

/// What the summary file, the annotations and `JUnit` read of a tenant:
/// who, how it ended, why; not the command's own fields.
#[derive(Serialize)]
struct TenantFacts<'a> {
    id: &'a str,
    slug: Option<&'a str>,
    server: &'a str,
    status: Verdict,
    error: Option<&'a str>,
    duration_ms: u64,
}

/// Prints the end-of-run report. In `jsonl` mode the tenants were already
/// streamed, so only the summary line is left.
pub fn print_fleet<T: TenantValue>(run: &FleetRun<T>, mode: OutputMode) {
    print_fleet_with(run, mode, &Extra::default());
}

/// What some fleet reports add to the shared shape.
#[derive(Debug, Default)]
pub struct Extra {
    /// The run record this run wrote (`migrate`, `revert`).
    pub run_id: Option<i64>,
    /// The run was refused before anything changed.
    pub refused: bool,
    /// What was selected and why; every fleet run that selected from the
    /// master states it.
    pub selection: Option<Selection>,
    /// Top-level fields a command adds to its JSON report (`drift`: the
    /// reference and the differences across the fleet).
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

/// The JSON document of a fleet run, the one `--output json` prints
/// (`jsonl`'s summary line without `tenants`).
#[derive(Serialize)]
struct FleetJson<'a, P> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tenants: Option<Vec<P>>,
    summary: Summary,
    interrupted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    refused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    selection: Option<&'a Selection>,
    #[serde(flatten)]
    fields: serde_json::Map<String, serde_json::Value>,
}

fn fleet_json<P>(
    run_tenants: Option<Vec<P>>,
    summary: Summary,
    interrupted: bool,
    extra: &Extra,
) -> FleetJson<'_, P> {
    FleetJson {
        tenants: run_tenants,
        summary,
        interrupted,
        run_id: extra.run_id,
        refused: extra.refused,
        selection: extra.selection.as_ref(),
        fields: extra
            .fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    }
}

/// Keeps a fleet run's JSON document for `--report-file`, with what the
/// summary, annotations and `JUnit` read of it, without printing it: for
/// commands that print their own table.
pub fn keep_fleet<T: TenantValue>(run: &FleetRun<T>, extra: &Extra) {
    if let Some(selection) = &extra.selection {
        super::sink::note_selection(selection.describe());
    }
    let facts = run
        .reports
        .iter()
        .map(|r| TenantFacts {
            id: &r.tenant.id,
            slug: r.tenant.slug.as_deref(),
            server: r.tenant.server_label(),
            status: r.verdict,
            error: r.error.as_deref(),
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
        })
        .collect();
    let facts = serde_json::to_value(fleet_json(
        Some(facts),
        Summary::of(run),
        run.interrupted,
        extra,
    ))
    .unwrap_or_default();
    let full = fleet_json(
        Some(run.reports.iter().map(tenant_json).collect()),
        Summary::of(run),
        run.interrupted,
        extra,
    );
    super::document_with(OutputMode::Table, &full, Some(facts));
}

/// [`print_fleet`] with the fields some commands add.
pub fn print_fleet_with<T: TenantValue>(run: &FleetRun<T>, mode: OutputMode, extra: &Extra) {
    let summary = Summary::of(run);
    keep_fleet(run, extra);
    match mode {
        OutputMode::Json => print_json(
            mode,
            &fleet_json(
                Some(run.reports.iter().map(tenant_json).collect()),
                Summary::of(run),
                run.interrupted,
                extra,
            ),
        ),
        OutputMode::Jsonl => print_json(
            mode,
            &fleet_json::<TenantFacts>(None, Summary::of(run), run.interrupted, extra),
        ),
        OutputMode::Junit => {
            if let Some(xml) = super::sink::with_document(super::junit::render) {
                line(xml);
            }
        }
        OutputMode::Table => {
            if !run.reports.is_empty() {
                line(fleet_table(run));
            }
            line(format!(
                "{} ok, {} failed, {} skipped{}{}{}",
                summary.ok,
                summary.failed,
                summary.skipped,
                match (summary.interrupted, run.interrupted) {
                    (0, false) => String::new(),
                    (0, true) => " (interrupted)".to_owned(),
                    (n, _) => format!(", {n} interrupted"),
                },
                if extra.refused {
                    " (refused: nothing was changed)"
                } else {
                    ""
                },
                extra
                    .run_id
                    .map(|id| format!("; recorded as run {id}"))
                    .unwrap_or_default()
            ));
            if let Some(selection) = &extra.selection {
                line(selection.describe());
            }
        }
    }
}

/// One row per tenant: who, what happened, the command's own columns,
/// how long, and (when any tenant has one) the error.
fn fleet_table<T: TenantValue>(run: &FleetRun<T>) -> comfy_table::Table {
    let any_error = run.reports.iter().any(|r| r.error.is_some());
    let mut headers = vec!["tenant", "db name", "server", "result"];
    headers.extend(T::headers());
    headers.push("time");
    if any_error {
        headers.push("error");
    }
    let mut table = table(headers);
    for r in &run.reports {
        let mut row = vec![
            shown(r.tenant.handle()),
            shown(r.tenant.db_label()),
            shown(r.tenant.server_label()),
            r.verdict.as_str().to_owned(),
        ];
        row.extend(r.value.cells());
        row.push(if r.verdict == Verdict::Skipped {
            String::new()
        } else {
            format_duration(r.duration)
        });
        if any_error {
            row.push(shown(r.error.as_deref().unwrap_or_default()));
        }
        table.add_row(row);
    }
    table
}
