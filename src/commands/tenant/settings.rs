//! `tenantctl tenant settings set|get|list`: a tenant's `settings` table.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;

use std::future::Future;
use std::sync::Arc;

use crate::cli::{FilterArgs, FleetArgs, OutputMode};
use crate::context::Context;
use crate::db::{SessionLimits, has_sqlstate};
use crate::error::{Outcome, UsageError};
use crate::fleet::{FleetRun, attempt};
use crate::report::{TenantValue, print_json, table};
use crate::tenant::Tenant;

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Set a setting in one or more tenants; the value is stored as JSON if
    /// it parses as JSON, else as a JSON string
    Set(SetArgs),
    /// Print a setting's value as JSON (a table for several tenants)
    Get(GetArgs),
    /// List every setting of a tenant
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Tenants (slug or id, or --all), then the key, then the value
    #[arg(value_name = "SLUG|ID... KEY VALUE", num_args = 2.., required = true)]
    pub words: Vec<String>,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Tenants (slug or id, or --all), then the key
    #[arg(value_name = "SLUG|ID... KEY", num_args = 1.., required = true)]
    pub words: Vec<String>,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,
}

#[derive(Serialize)]
struct Setting {
    key: String,
    value: serde_json::Value,
    updated_at: DateTime<Utc>,
}

/// A setting's value in one tenant, for fleet reports.
#[derive(Debug, Default, Serialize)]
pub struct SettingValue {
    pub key: String,
    pub value: Option<serde_json::Value>,
}

impl TenantValue for SettingValue {
    fn headers() -> Vec<&'static str> {
        vec!["key", "value"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.key.clone(),
            self.value
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
        ]
    }
}

pub async fn run(command: SettingsCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        SettingsCommand::Set(args) => set(args, ctx).await,
        SettingsCommand::Get(args) => get(args, ctx).await,
        SettingsCommand::List(args) => list(args, ctx).await,
    }
}

/// `"42"` is the number 42, `"{\"a\":1}"` an object, `dark` the string "dark".
pub fn parse_value(raw: &str) -> serde_json::Value {
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

/// Splits `[tenant...] <trailing...>`, checking the tenant part against
/// `--all`.
fn split_words<'a>(
    words: &'a [String],
    trailing: usize,
    filter: &FilterArgs,
) -> Result<(&'a [String], &'a [String]), UsageError> {
    let (tenants, rest) = words.split_at(words.len().saturating_sub(trailing));
    if filter.all && !tenants.is_empty() {
        return Err(UsageError(format!(
            "name tenants or pass --all, not both (got {})",
            tenants.join(" ")
        )));
    }
    Ok((tenants, rest))
}

async fn set(args: SetArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (names, rest) = split_words(&args.words, 2, &args.filter)?;
    let (key, value) = (rest[0].clone(), parse_value(&rest[1]));
    if key.is_empty() {
        return Err(UsageError("a setting key cannot be empty".into()).into());
    }
    let tenants = ctx.select_names(names, &args.filter).await?;
    let run = on_each(ctx, tenants, &args.fleet, move |mut conn| {
        let (key, value) = (key.clone(), value.clone());
        async move {
            let written = write(&mut conn, &key, &value).await;
            let _ = conn.close().await;
            written.map_err(settings_error)?;
            Ok(SettingValue {
                key,
                value: Some(value),
            })
        }
    })
    .await;
    Ok(ctx.finish(&run))
}

async fn get(args: GetArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (names, rest) = split_words(&args.words, 1, &args.filter)?;
    let key = rest[0].clone();
    let single = names.len() == 1 && !args.filter.all;
    let tenants = ctx.select_names(names, &args.filter).await?;
    let run = on_each(ctx, tenants, &args.fleet, move |mut conn| {
        let key = key.clone();
        async move {
            let read = read(&mut conn, Some(&key)).await;
            let _ = conn.close().await;
            let setting = read
                .map_err(settings_error)?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no setting {key:?}"))?;
            Ok(SettingValue {
                key,
                value: Some(setting.value),
            })
        }
    })
    .await;
    match (&run.reports[..], single) {
        // One tenant named: just the value, or the error.
        ([report], true) => {
            if let Some(error) = &report.error {
                anyhow::bail!("tenant {}: {error}", report.tenant);
            }
            let value = report.value.value.clone().unwrap_or_default();
            match ctx.output {
                OutputMode::Table => println!("{value}"),
                mode @ (OutputMode::Json | OutputMode::Jsonl) => print_json(mode, &value),
            }
            Ok(Outcome::Success)
        }
        _ => Ok(ctx.finish(&run)),
    }
}

/// Runs `op` on a connection to each tenant, on the fleet machinery.
async fn on_each<F, Fut>(
    ctx: &Context,
    tenants: Vec<Tenant>,
    fleet_args: &FleetArgs,
    op: F,
) -> FleetRun<SettingValue>
where
    F: Fn(PgConnection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<SettingValue>> + Send + 'static,
{
    let connector = ctx.connector.clone();
    let op = Arc::new(op);
    ctx.fleet(tenants, fleet_args, move |tenant| {
        let (connector, op) = (connector.clone(), op.clone());
        async move {
            attempt(
                async {
                    let conn = connector
                        .connect_tenant(tenant.db_name()?, &SessionLimits::default())
                        .await?;
                    op(conn).await
                }
                .await,
            )
        }
    })
    .await
}

async fn list(args: ListArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (tenant, mut conn) = open(ctx, &args.tenant).await?;
    let result = read(&mut conn, None).await;
    let _ = conn.close().await;
    let settings = result
        .map_err(settings_error)
        .with_context(|| format!("tenant {tenant}"))?;
    match ctx.output {
        OutputMode::Json => print_json(OutputMode::Json, &settings),
        OutputMode::Jsonl => {
            for s in &settings {
                println!("{}", serde_json::to_string(s).expect("settings serialize"));
            }
        }
        OutputMode::Table => {
            let mut out = table(["key", "value", "updated"]);
            for s in &settings {
                out.add_row([
                    s.key.clone(),
                    s.value.to_string(),
                    s.updated_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ]);
            }
            println!("{out}");
        }
    }
    Ok(Outcome::Success)
}

async fn open(ctx: &Context, key: &str) -> anyhow::Result<(Tenant, PgConnection)> {
    let tenant = ctx.tenant(key).await?;
    let conn = async {
        let db = tenant.db_name()?;
        ctx.connector
            .connect_tenant(db, &SessionLimits::default())
            .await
    }
    .await
    .with_context(|| format!("tenant {tenant}"))?;
    Ok((tenant, conn))
}

/// Upserts one setting.
pub async fn write(
    conn: &mut PgConnection,
    key: &str,
    value: &serde_json::Value,
) -> anyhow::Result<()> {
    sqlx::query(
        r#"INSERT INTO settings (key, value, "updatedAt") VALUES ($1, $2, now())
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "updatedAt" = now()"#,
    )
    .bind(key)
    .bind(Json(value))
    .execute(conn)
    .await
    .context("write setting")?;
    Ok(())
}

async fn read(conn: &mut PgConnection, key: Option<&str>) -> anyhow::Result<Vec<Setting>> {
    let rows: Vec<(String, Json<serde_json::Value>, DateTime<Utc>)> = sqlx::query_as(
        r#"SELECT key, value, "updatedAt" FROM settings WHERE $1::text IS NULL OR key = $1 ORDER BY key"#,
    )
    .bind(key)
    .fetch_all(conn)
    .await
    .context("read settings")?;
    Ok(rows
        .into_iter()
        .map(|(key, Json(value), updated_at)| Setting {
            key,
            value,
            updated_at,
        })
        .collect())
}

fn settings_error(err: anyhow::Error) -> anyhow::Error {
    if has_sqlstate(&err, "42P01") {
        err.context(
            "the tenant database has no settings table; run `tenantctl tenant migrate` for it",
        )
    } else {
        err
    }
}
