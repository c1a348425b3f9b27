//! `tenantctl tenant list`.

use clap::Args;
use serde::Serialize;

use crate::commands::context::Context;
use crate::error::Outcome;
use crate::output::{OutputMode, document, line, print_json, shown, table, warn};
use crate::tenant::StatusWanted;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only companies with this status (repeatable): provisioning, active,
    /// failed, dropped, moving, or a value of the companies table's own
    /// status column (SUSPENDED, say)
    #[arg(long, value_name = "STATUS", value_parser = StatusWanted::parse)]
    pub status: Vec<StatusWanted>,
}

#[derive(Serialize)]
struct Row<'a> {
    /// `null` for a company still being created where the table cannot
    /// say so: it is only in tenantctl's claims, with no row (and no id) yet.
    id: Option<&'a str>,
    slug: Option<&'a str>,
    name: Option<&'a str>,
    db_name: Option<&'a str>,
    server: &'a str,
    status: Option<&'a str>,
    created_at: Option<String>,
    /// Why the row cannot be used (its database name missing or unsafe).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

// A row whose server name is refused is listed (with its raw name) and
// reported below, like one whose database name is refused.

pub async fn run(args: ListArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (layout, mut tenants, claimed) = ctx
        .runner
        .with_master_read(|conn, layout, _| {
            Box::pin(async move {
                // Listing what we can see is still useful; calling it
                // everything is not.
                if let Some(rls) = layout.visibility.row_security.first() {
                    crate::output::warn(format_args!(
                        "warning: row-level security applies to role {} on table {}: companies its policies hide are not listed",
                        crate::output::shown(&rls.role),
                        crate::output::shown(&rls.table)
                    ));
                }
                let tenants = layout.list(conn).await?;
                let claimed = crate::claims::all(conn).await;
                Ok((layout, tenants, claimed))
            })
        })
        .await?;
    crate::selection::check_statuses(&args.status, &layout, &tenants)?;
    tenants.extend(claimed?.iter().map(crate::claims::Claim::tenant));
    if !args.status.is_empty() {
        tenants.retain(|t| args.status.iter().any(|s| s.matches(t)));
    }

    let rows: Vec<Row> = tenants
        .iter()
        .map(|t| Row {
            id: (!t.id.is_empty()).then_some(t.id.as_str()),
            slug: t.slug.as_deref(),
            name: t.name.as_deref(),
            db_name: t.db_name_raw.as_deref(),
            server: t.server_label(),
            status: t.status.as_deref(),
            created_at: t
                .created_at
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            error: t
                .db
                .as_ref()
                .err()
                .or(t.server.as_ref().err())
                .map(String::as_str),
        })
        .collect();
    print(ctx.output, &rows);
    // Unusable rows are listed, and said so, without hiding the others.
    let broken: Vec<&Row> = rows.iter().filter(|r| r.error.is_some()).collect();
    for row in &broken {
        warn(format_args!(
            "warning: {}",
            shown(row.error.unwrap_or_default())
        ));
    }
    Ok(if broken.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// The rows, as a table or JSON.
fn print(output: OutputMode, rows: &[Row]) {
    document(output, &serde_json::json!({ "tenants": rows }));
    match output {
        OutputMode::Json => {}
        OutputMode::Jsonl => {
            for row in rows {
                print_json(OutputMode::Jsonl, row);
            }
        }
        OutputMode::Table | OutputMode::Junit => {
            let mut out = table([
                "id", "slug", "name", "db name", "server", "status", "created",
            ]);
            for r in rows {
                out.add_row([
                    r.id.map_or_else(|| "(none yet)".to_owned(), shown),
                    shown(r.slug.unwrap_or_default()),
                    shown(r.name.unwrap_or_default()),
                    r.db_name.map_or_else(|| "NULL".to_owned(), shown),
                    shown(r.server),
                    shown(r.status.unwrap_or_default()),
                    r.created_at.clone().unwrap_or_default(),
                ]);
            }
            line(out);
            line(format_args!("{} tenant(s)", rows.len()));
        }
    }
}
