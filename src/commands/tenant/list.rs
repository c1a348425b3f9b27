//! `tenantctl tenant list`.

use clap::Args;
use serde::Serialize;
use sqlx::Connection as _;

use crate::cli::OutputMode;
use crate::context::Context;
use crate::error::Outcome;
use crate::master;
use crate::report::{print_json, table};
use crate::tenant::TenantStatus;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only companies with this status (repeatable)
    #[arg(long, value_enum)]
    pub status: Vec<TenantStatus>,
}

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    slug: &'a str,
    name: &'a str,
    db_name: &'a str,
    status: &'a str,
    created_at: String,
}

pub async fn run(args: ListArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let mut conn = ctx.connector.connect_master().await?;
    let statuses = (!args.status.is_empty()).then_some(args.status.as_slice());
    let tenants = master::list(&mut conn, statuses).await?;
    let _ = conn.close().await;

    let rows: Vec<Row> = tenants
        .iter()
        .map(|t| Row {
            id: &t.id,
            slug: &t.slug,
            name: &t.name,
            db_name: &t.db_name_raw,
            status: &t.status,
            created_at: t
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .collect();
    match ctx.output {
        OutputMode::Json => print_json(OutputMode::Json, &rows),
        OutputMode::Jsonl => {
            for row in &rows {
                println!("{}", serde_json::to_string(row).expect("rows serialize"));
            }
        }
        OutputMode::Table => {
            let mut out = table(["id", "slug", "name", "db name", "status", "created"]);
            for r in &rows {
                out.add_row([
                    r.id,
                    r.slug,
                    r.name,
                    &r.db_name.escape_debug().to_string(),
                    r.status,
                    &r.created_at,
                ]);
            }
            println!("{out}");
            println!("{} tenant(s)", rows.len());
        }
    }
    Ok(Outcome::Success)
}
