//! `tenantctl doctor`: compare the server with the master, read-only.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use serde::Serialize;
use sqlx::Connection as _;

use crate::commands::context::Context;
use crate::connect::SessionLimits;
use crate::dbname::DbName;
use crate::ddl;
use crate::error::Outcome;
use crate::fleet::{self, FleetOptions, Silent, Verdict};
use crate::migrations::{self, MigrationSet, Plan};
use crate::output::{OutputMode, line, print_json, shown, table};
use crate::tenant::{DB_PREFIX, Lifecycle, Tenant};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Databases inspected at once, each on its own connection
    #[arg(long, env = "TENANTCTL_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

/// Something out of order between the server and the master.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// `orphan_database`, `missing_database`, `invalid_db_name`, `stuck`,
    /// `behind`, `migration_problem` or `unreachable`.
    pub kind: &'static str,
    pub slug: Option<String>,
    pub db_name: Option<String>,
    pub detail: String,
}

pub async fn run(args: DoctorArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let migrations = ctx.tenant_migrations().await?;
    let (mut master_conn, layout) = ctx.master().await?;
    let companies = layout.list(&mut master_conn).await;
    // pg_database is shared by every database of a server: read it through
    // the master when that is on the tenants' server, rather than connect
    // to `postgres` (CONNECT on it may well be revoked).
    let on_server = if ctx.connector.master_on_tenant_server() {
        ddl::list(&mut master_conn).await
    } else {
        let mut server = ctx.connector.connect_maintenance().await?;
        let listed = ddl::list(&mut server).await;
        let _ = server.close().await;
        listed
    };
    let _ = ctx.connector.release(master_conn).await;
    let companies = companies?;
    let on_server: BTreeSet<String> = on_server?.into_iter().collect();

    let (mut findings, to_check, unnamed) = compare(ctx, &companies, &on_server);
    findings.extend(find_orphans(ctx, unnamed, &args, &migrations).await);
    findings.extend(check_migrations(ctx, to_check, &args, migrations).await);
    print(ctx, &companies, &findings);
    Ok(if findings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// Findings from the master and the server's database list alone, the
/// tenants whose databases are there to look into, and the databases no
/// company names.
fn compare(
    ctx: &Context,
    companies: &[Tenant],
    on_server: &BTreeSet<String>,
) -> (Vec<Finding>, Vec<Tenant>, Vec<String>) {
    let mut findings = Vec::new();
    let named: BTreeSet<&str> = companies
        .iter()
        .filter_map(|c| c.db_name_raw.as_deref())
        .collect();
    let unnamed = on_server
        .iter()
        .filter(|db| {
            !named.contains(db.as_str())
                && db.as_str() != ctx.connector.master_db().as_str()
                && db.as_str() != "postgres"
        })
        .cloned()
        .collect();
    let mut to_check = Vec::new();
    for company in companies {
        let finding = |kind, detail: String| Finding {
            kind,
            slug: company.slug.clone(),
            db_name: company.db_name_raw.clone(),
            detail,
        };
        if company.has_status(Lifecycle::Provisioning) || company.has_status(Lifecycle::Failed) {
            findings.push(finding(
                "stuck",
                format!(
                    "status {}; `tenantctl tenant create {}` finishes it",
                    company.status_label(),
                    company.handle()
                ),
            ));
        }
        if company.has_status(Lifecycle::Dropped) {
            continue;
        }
        match &company.db {
            Err(err) => findings.push(finding("invalid_db_name", err.clone())),
            Ok(db) if ctx.connector.check_tenant_db(db).is_err() => findings.push(finding(
                "invalid_db_name",
                "names the master database, which is never a tenant database".into(),
            )),
            Ok(db) if !on_server.contains(db.as_str()) => findings.push(finding(
                "missing_database",
                "the company's database is not on the server".into(),
            )),
            // Only tenants `migrate --all` would reach can be behind; an
            // application's own states (SUSPENDED) are its business.
            Ok(_) if company.has_status(Lifecycle::Active) => to_check.push(company.clone()),
            Ok(_) => {}
        }
    }
    (findings, to_check, unnamed)
}

/// Databases no company names that look like tenant databases: named with
/// the tenant prefix, or holding migrations from the tenant set, same
/// version and checksum (databases created with `--db-name` and then
/// forgotten). A database we cannot read is somebody else's, and not
/// reported unless its name has the prefix; one that holds the master's
/// migrations is another master (a staging copy, say), not a tenant.
async fn find_orphans(
    ctx: &Context,
    unnamed: Vec<String>,
    args: &DoctorArgs,
    migrations: &MigrationSet,
) -> Vec<Finding> {
    use futures_util::StreamExt as _;

    let master_set = MigrationSet::embedded_master();
    let checks = unnamed.into_iter().map(|name| {
        let master_set = &master_set;
        async move {
            if name.starts_with(DB_PREFIX) {
                return Some((name, "named like a tenant database"));
            }
            let db = DbName::parse(&name).ok()?;
            let mut conn = ctx
                .connector
                .connect_tenant(&db, &SessionLimits::default())
                .await
                .ok()?;
            let rows = migrations::read_applied(&mut conn).await;
            let _ = ctx.connector.release(conn).await;
            let rows = rows.ok()??;
            let is_master = rows.iter().any(|row| master_set.recorded(row));
            let has_tenant_migrations = rows.iter().any(|row| migrations.recorded(row));
            (has_tenant_migrations && !is_master).then_some((name, "holds tenant migrations"))
        }
    });
    let mut found: Vec<(String, &str)> = futures_util::stream::iter(checks)
        .buffer_unordered(usize::from(args.concurrency))
        .filter_map(|found| async move { found })
        .collect()
        .await;
    found.sort();
    found
        .into_iter()
        .map(|(name, why)| Finding {
            kind: "orphan_database",
            slug: None,
            db_name: Some(name),
            detail: format!("{why}, but no company names it"),
        })
        .collect()
}

/// How far behind each existing tenant database is, and what is wrong with
/// its recorded migrations.
async fn check_migrations(
    ctx: &Context,
    to_check: Vec<Tenant>,
    args: &DoctorArgs,
    migrations: std::sync::Arc<MigrationSet>,
) -> Vec<Finding> {
    let connector = ctx.connector.clone();
    let options = FleetOptions {
        concurrency: usize::from(args.concurrency),
        fail_fast: false,
    };
    let checked = fleet::run(to_check, options, &ctx.stop, &Silent, move |tenant| {
        let (connector, migrations) = (connector.clone(), migrations.clone());
        async move {
            fleet::attempt(
                async {
                    let mut conn = connector
                        .connect_tenant(tenant.db_name()?, &SessionLimits::default())
                        .await?;
                    let plan = migrations::plan(&mut conn, &migrations).await;
                    let _ = connector.release(conn).await;
                    plan
                }
                .await,
            )
        }
    })
    .await;
    checked.reports.iter().flat_map(findings_of).collect()
}

/// What one tenant's migration state says is wrong.
fn findings_of(report: &fleet::Report<Plan>) -> Vec<Finding> {
    let finding = |kind, detail: String| Finding {
        kind,
        slug: report.tenant.slug.clone(),
        db_name: report.tenant.db_name_raw.clone(),
        detail,
    };
    let plan = &report.value;
    if report.verdict != Verdict::Ok {
        return vec![finding(
            "unreachable",
            report.error.clone().unwrap_or_default(),
        )];
    }
    let mut findings = Vec::new();
    if !plan.pending.is_empty() {
        findings.push(finding(
            "behind",
            format!(
                "{} migration(s) pending, latest applied {}",
                plan.pending.len(),
                plan.applied
                    .iter()
                    .max()
                    .map_or_else(|| "none".into(), ToString::to_string)
            ),
        ));
    }
    for problem in &plan.problems {
        findings.push(finding("migration_problem", problem.to_string()));
    }
    findings
}

fn print(ctx: &Context, companies: &[Tenant], findings: &[Finding]) {
    let mut summary: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        *summary.entry(f.kind).or_default() += 1;
    }
    match ctx.output {
        mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(
            mode,
            &serde_json::json!({
                "tenants": companies.len(),
                "findings": findings,
                "summary": summary,
            }),
        ),
        OutputMode::Table => {
            if findings.is_empty() {
                line(format_args!(
                    "no problems: {} companies, every database present and up to date",
                    companies.len()
                ));
            } else {
                let mut out = table(["problem", "tenant", "database", "detail"]);
                for f in findings {
                    out.add_row([
                        f.kind.to_owned(),
                        shown(f.slug.as_deref().unwrap_or_default()),
                        f.db_name
                            .as_deref()
                            .map_or_else(|| "NULL".to_owned(), shown),
                        shown(&f.detail),
                    ]);
                }
                line(out);
                line(format_args!(
                    "{} problem(s) across {} companies",
                    findings.len(),
                    companies.len()
                ));
            }
        }
    }
}
