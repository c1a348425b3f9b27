//! `tenantctl tenant sql <selection> (-f FILE | -c SQL) [--dry-run]`: run SQL
//! in one transaction per tenant.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use futures_util::TryStreamExt as _;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{Column as _, Connection as _, Executor as _, Row as _, ValueRef as _};

use crate::commands::args::{FleetArgs, SelectionArgs, SessionArgs};
use crate::commands::context::Context;
use crate::connect::SessionLimits;
use crate::error::{Outcome, UsageError};
use crate::fleet::Verdict;
use crate::output::OutputMode;
use crate::output::confirm::confirm;
use crate::output::report::TenantValue;
use crate::output::table;
use crate::sqltext::transaction_control;

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
    #[arg(short = 'c', long, value_name = "SQL", conflicts_with = "file")]
    pub command: Option<String>,

    /// Run it, report what it did, then roll back
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

/// What the SQL did in one tenant. Values are PostgreSQL's text form.
#[derive(Debug, Default, Serialize)]
pub struct SqlResult {
    pub rows_affected: u64,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    pub rolled_back: bool,
}

impl TenantValue for SqlResult {
    fn headers() -> Vec<&'static str> {
        vec!["rows"]
    }

    fn cells(&self) -> Vec<String> {
        vec![if self.columns.is_empty() {
            format!("{} affected", self.rows_affected)
        } else {
            format!("{} returned", self.rows.len())
        }]
    }
}

pub async fn run(args: SqlArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let sql = match (&args.file, &args.command) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("read {}: {e}", path.display())))?,
        (None, Some(sql)) => sql.clone(),
        (None, None) => return Err(UsageError("give the SQL with -c or -f".into()).into()),
    };
    if sql.trim().is_empty() {
        return Err(UsageError("the SQL is empty".into()).into());
    }
    if let Some(keyword) = transaction_control(&sql) {
        return Err(UsageError(format!(
            "the SQL contains {keyword}: tenant sql runs it in a transaction of its own (committed, or rolled back with --dry-run), so leave transaction control out"
        ))
        .into());
    }
    let tenants = ctx.select(&args.selection).await?;
    if tenants.len() > 1 && !args.dry_run {
        confirm(
            &format!("run this SQL in {} tenant databases", tenants.len()),
            "yes",
            args.yes,
        )?;
    }
    let connector = ctx.connector.clone();
    let limits = SessionLimits::from(&args.session);
    let dry_run = args.dry_run;
    let sql = std::sync::Arc::new(sql);
    let run = ctx
        .fleet(tenants, &args.fleet, move |tenant| {
            let (connector, limits, sql) = (connector.clone(), limits.clone(), sql.clone());
            async move {
                let mut result = SqlResult::default();
                let outcome = async {
                    let mut conn = connector.connect_tenant(tenant.db_name()?, &limits).await?;
                    let ran = run_in_transaction(&mut conn, &sql, dry_run, &mut result).await;
                    let _ = conn.close().await;
                    ran
                }
                .await;
                (result, outcome)
            }
        })
        .await;

    if ctx.output == OutputMode::Table {
        // One combined table of every row returned, tenant first.
        let columns = run
            .reports
            .iter()
            .find(|r| !r.value.columns.is_empty())
            .map(|r| r.value.columns.clone());
        if let Some(columns) = columns {
            let mut out = table(std::iter::once("tenant".to_owned()).chain(columns));
            for report in run.reports.iter().filter(|r| r.verdict == Verdict::Ok) {
                for row in &report.value.rows {
                    out.add_row(
                        std::iter::once(report.tenant.handle().to_owned()).chain(
                            row.iter()
                                .map(|v| v.clone().unwrap_or_else(|| "NULL".into())),
                        ),
                    );
                }
            }
            crate::output::line(out);
        }
    }
    let outcome = ctx.finish(&run);
    if dry_run && ctx.output == OutputMode::Table {
        crate::output::line("dry run: every transaction was rolled back");
    }
    Ok(outcome)
}

/// Runs the SQL in a transaction and commits it, or rolls it back for a dry
/// run. On an error the transaction is rolled back when dropped.
async fn run_in_transaction(
    conn: &mut PgConnection,
    sql: &str,
    dry_run: bool,
    result: &mut SqlResult,
) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    {
        // The simple query protocol: several statements in one string are
        // fine, and every value comes back as text.
        let mut stream = tx.fetch_many(sql);
        while let Some(step) = stream.try_next().await? {
            match step {
                sqlx::Either::Left(done) => result.rows_affected += done.rows_affected(),
                sqlx::Either::Right(row) => {
                    if result.columns.is_empty() {
                        result.columns =
                            row.columns().iter().map(|c| c.name().to_owned()).collect();
                    }
                    let values = (0..row.len())
                        .map(|i| {
                            let raw = row.try_get_raw(i)?;
                            if raw.is_null() {
                                Ok(None)
                            } else {
                                raw.as_str()
                                    .map(|s| Some(s.to_owned()))
                                    .map_err(sqlx::Error::Decode)
                            }
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()?;
                    result.rows.push(values);
                }
            }
        }
    }
    // Fails if the script ended our transaction after all (the check above
    // reads SQL's lexical rules, not the server's), so that is never
    // reported as success.
    tx.execute("SAVEPOINT tenantctl_still_in_transaction")
        .await
        .context("the SQL ended the transaction it was run in")?;
    if dry_run {
        tx.rollback().await.context("roll back")?;
        result.rolled_back = true;
    } else {
        tx.commit().await.context("commit")?;
    }
    Ok(())
}
