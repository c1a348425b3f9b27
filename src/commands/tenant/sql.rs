//! `tenantctl tenant sql <selection> (-f FILE | -c SQL) [--dry-run]`: run SQL
//! in one transaction per tenant. Parsing, the refusals and the run itself
//! are in [`crate::script`]; this is the command around them.

use std::path::PathBuf;

use std::fmt::Write as _;
use std::sync::Arc;

use clap::Args;

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::connect::SessionLimits;
use crate::error::{Outcome, UsageError};
use crate::fleet::{FleetRun, Verdict};
use crate::output::confirm::confirm;
use crate::output::report::TenantValue;
use crate::output::{OutputMode, line, shown, table};
use crate::script::{Script, ScriptRun};

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Read the SQL from this file (as given: it is never templated)
    #[arg(
        short = 'f',
        long,
        value_name = "FILE",
        required_unless_present = "command"
    )]
    pub file: Option<PathBuf>,

    /// The SQL to run
    // Hyphen values allowed: a script may well start with a `--` comment.
    #[arg(
        short = 'c',
        long,
        value_name = "SQL",
        conflicts_with = "file",
        allow_hyphen_values = true
    )]
    pub command: Option<String>,

    /// Run it, report what it did, then roll back
    ///
    /// Refused, before any tenant is touched, for a script calling what no
    /// rollback undoes (`nextval`, `setval`, `dblink*`, `lo_export`,
    /// `pg_terminate_backend`, session advisory locks, ...: the book's guide (docs/src/guide/fix.md) lists
    /// them) or copying to or from a file or program on the server. The
    /// report names the sequences the script advanced anyway (a serial
    /// column's default, a trigger) and the code the dry run cannot vouch
    /// for: functions not built into PostgreSQL, `DO` blocks, `CALL`
    #[arg(long)]
    pub dry_run: bool,

    /// Skip the confirmation asked before changing several tenants
    #[arg(long, short = 'y')]
    pub yes: bool,

    #[command(flatten)]
    pub fleet: FleetArgs,

    #[command(flatten)]
    pub session: SessionArgs,
}

impl TenantValue for ScriptRun {
    fn headers() -> Vec<&'static str> {
        vec!["rows"]
    }

    fn cells(&self) -> Vec<String> {
        vec![rows_summary(self)]
    }
}

pub async fn run(args: SqlArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let sql = match (&args.file, &args.command) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("read {}: {e}", path.display())))?,
        (None, Some(sql)) => sql.clone(),
        (None, None) => return Err(UsageError("give the SQL with -c or -f".into()).into()),
    };
    // Refused before any connection: a script that does not parse, has no
    // statements, or would end, reshape or stream outside our transaction.
    let script = Script::parse(sql).map_err(crate::error::Usage::of)?;
    script
        .check_single_transaction()
        .map_err(crate::error::Usage::of)?;
    // A dry run that could not undo what the script does would be a lie:
    // refused before any connection too. A real run does what it is asked.
    if args.dry_run {
        script.check_dry_run().map_err(crate::error::Usage::of)?;
    }

    let tenants = ctx.select(&args.selection).await?;
    if tenants.len() > 1 && !args.dry_run {
        confirm(
            &format!("run this SQL in {} tenant databases", tenants.len()),
            "yes",
            args.yes,
        )?;
    }
    let dry_run = args.dry_run;
    let limits = SessionLimits::from(&args.session);
    let script = Arc::new(script);
    let run = ctx
        .on_each_tenant(tenants, &args.fleet, limits.clone(), {
            let script = script.clone();
            move |_, conn, result: &mut ScriptRun| {
                let (script, limits) = (script.clone(), limits.clone());
                Box::pin(async move {
                    script
                        .run_in_transaction_with(conn, dry_run, &limits, result)
                        .await
                })
            }
        })
        .await;

    if ctx.output == OutputMode::Table {
        print_result_sets(&run, &script);
    }
    let outcome = ctx.finish(&run);
    if dry_run && ctx.output == OutputMode::Table {
        for note in dry_run_note(run.reports.iter().map(|r| (r.tenant.handle(), &r.value))) {
            line(note);
        }
    }
    Ok(outcome)
}

/// One table per statement and shape of result (tenants whose schemas
/// differ get a table each), with the tenant first; rows from tenants that
/// succeeded only. Statements that return no rows get none.
fn print_result_sets(run: &FleetRun<ScriptRun>, script: &Script) {
    type Shape<'a> = (usize, &'a [String]);
    let mut shapes: Vec<(Shape<'_>, Vec<Vec<String>>)> = Vec::new();
    for report in run.reports.iter().filter(|r| r.verdict == Verdict::Ok) {
        for set in report
            .value
            .result_sets
            .iter()
            .filter(|s| !s.columns.is_empty())
        {
            let shape = (set.statement, set.columns.as_slice());
            let index = shapes
                .iter()
                .position(|(s, _)| *s == shape)
                .unwrap_or_else(|| {
                    shapes.push((shape, Vec::new()));
                    shapes.len() - 1
                });
            shapes[index].1.extend(set.rows.iter().map(|row| {
                std::iter::once(shown(report.tenant.handle()))
                    .chain(
                        row.iter()
                            .map(|v| v.as_deref().map_or_else(|| "NULL".into(), shown)),
                    )
                    .collect()
            }));
        }
    }
    // Stable: within a statement, shapes stay in the order first seen.
    shapes.sort_by_key(|((statement, _), _)| *statement);
    let captions = script.statements().len() > 1;
    for ((statement, columns), rows) in shapes {
        if captions {
            let snippet = script
                .statement(statement)
                .map(crate::script::Statement::snippet)
                .unwrap_or_default();
            line(format_args!("statement {statement}: {}", shown(&snippet)));
        }
        let mut out = table(std::iter::once("tenant").chain(columns.iter().map(String::as_str)));
        for row in rows {
            out.add_row(row);
        }
        line(out);
    }
}

/// The last lines of a dry run. They say "rolled back" alone only if no
/// tenant's script ended the transaction it ran in (changes may have been
/// committed there), called code the dry run cannot vouch for, or advanced
/// a sequence: each such tenant gets a line of its own saying which.
fn dry_run_note<'a>(values: impl Iterator<Item = (&'a str, &'a ScriptRun)>) -> Vec<String> {
    let values: Vec<(&str, &ScriptRun)> = values.collect();
    let ended = values.iter().filter(|(_, v)| v.transaction_ended).count();
    if ended > 0 {
        return vec![format!(
            "dry run: in {ended} tenant{} the script ended its transaction; changes may have been committed there",
            if ended == 1 { "" } else { "s" }
        )];
    }
    let incomplete: Vec<&(&str, &ScriptRun)> = values
        .iter()
        .filter(|(_, v)| v.rollback_incomplete())
        .collect();
    if incomplete.is_empty() {
        return vec!["dry run: every transaction was rolled back".to_owned()];
    }
    let mut notes = Vec::new();
    let others = values
        .iter()
        .filter(|(_, v)| v.rolled_back && !v.rollback_incomplete())
        .count();
    for (tenant, value) in incomplete {
        let mut caveats = Vec::new();
        for moved in &value.sequences_advanced {
            let from = moved
                .before
                .map_or_else(|| "unused".to_owned(), |v| v.to_string());
            let to = moved
                .after
                .map_or_else(|| "unused".to_owned(), |v| v.to_string());
            caveats.push(format!(
                "sequence {} advanced ({from} -> {to}); a rollback does not undo it",
                shown(&moved.sequence)
            ));
        }
        if !value.unverified.is_empty() {
            caveats.push(format!(
                "the dry run cannot vouch for {}: {} effects outside the transaction, if any, remain",
                shown(&value.unverified.join(", ")),
                if value.unverified.len() == 1 {
                    "its"
                } else {
                    "their"
                }
            ));
        }
        notes.push(format!(
            "dry run: {}: rolled back, but {}",
            shown(tenant),
            caveats.join("; and ")
        ));
    }
    match others {
        0 => {}
        1 => notes.push("dry run: the other tenant's transaction was rolled back".to_owned()),
        n => notes.push(format!(
            "dry run: the other {n} tenants' transactions were rolled back"
        )),
    }
    notes
}

/// `1 returned`, `3 affected`, `2 returned, 3 affected`: rows returned by
/// statements with columns, rows affected by the others.
fn rows_summary(run: &ScriptRun) -> String {
    let (mut returned, mut affected, mut any_rows) = (0usize, 0u64, false);
    for set in &run.result_sets {
        if set.columns.is_empty() {
            affected += set.rows_affected;
        } else {
            any_rows = true;
            returned += set.rows.len();
        }
    }
    let mut text = String::new();
    if any_rows {
        let _ = write!(text, "{returned} returned");
    }
    if affected > 0 || !any_rows {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let _ = write!(text, "{affected} affected");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{ResultSet, SequenceAdvanced};

    #[test]
    fn rows_summary_counts_returned_and_affected_apart() {
        let set = |columns: &[&str], rows: usize, affected: u64| ResultSet {
            statement: 1,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: vec![vec![]; rows],
            rows_affected: affected,
        };
        let run = |sets: Vec<ResultSet>| ScriptRun {
            result_sets: sets,
            ..ScriptRun::default()
        };
        assert_eq!(rows_summary(&run(vec![])), "0 affected");
        assert_eq!(rows_summary(&run(vec![set(&[], 0, 3)])), "3 affected");
        assert_eq!(rows_summary(&run(vec![set(&["a"], 2, 2)])), "2 returned");
        assert_eq!(
            rows_summary(&run(vec![set(&["a"], 0, 0), set(&[], 0, 4)])),
            "0 returned, 4 affected"
        );
    }

    #[test]
    fn dry_run_note_never_claims_a_rollback_the_wall_did_not_see() {
        let fine = ScriptRun {
            rolled_back: true,
            ..ScriptRun::default()
        };
        let ended = ScriptRun {
            transaction_ended: true,
            ..ScriptRun::default()
        };
        assert_eq!(
            dry_run_note([("a", &fine), ("b", &fine)].into_iter()),
            ["dry run: every transaction was rolled back"]
        );
        let note = dry_run_note([("a", &fine), ("b", &ended)].into_iter()).join("\n");
        assert!(
            !note.contains("rolled back") && note.contains("in 1 tenant the script ended"),
            "{note}"
        );
    }

    #[test]
    fn dry_run_note_names_what_the_rollback_did_not_undo() {
        let fine = ScriptRun {
            rolled_back: true,
            ..ScriptRun::default()
        };
        let moved = ScriptRun {
            rolled_back: true,
            sequences_advanced: vec![SequenceAdvanced {
                sequence: "public.items_id_seq".into(),
                before: None,
                after: Some(2),
            }],
            unverified: vec!["public.f()".into(), "DO block (statement 2, line 1)".into()],
            ..ScriptRun::default()
        };
        let unverified = ScriptRun {
            rolled_back: true,
            unverified: vec!["public.f()".into()],
            ..ScriptRun::default()
        };
        assert_eq!(
            dry_run_note([("a", &fine), ("b", &moved), ("c", &unverified)].into_iter()),
            [
                "dry run: b: rolled back, but sequence public.items_id_seq advanced (unused -> 2); a rollback does not undo it; \
                 and the dry run cannot vouch for public.f(), DO block (statement 2, line 1): their effects outside the transaction, if any, remain",
                "dry run: c: rolled back, but the dry run cannot vouch for public.f(): its effects outside the transaction, if any, remain",
                "dry run: the other tenant's transaction was rolled back",
            ]
        );
    }
}
