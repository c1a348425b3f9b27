//! `tenantctl tenant settings set|get|list`: a tenant's `settings` table.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;

use crate::cli::OutputMode;
use crate::context::Context;
use crate::db::{SessionLimits, has_sqlstate};
use crate::error::Outcome;
use crate::master;
use crate::report::{print_json, table};
use crate::tenant::Tenant;

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Set a setting; the value is stored as JSON if it parses as JSON, else
    /// as a JSON string
    Set(SetArgs),
    /// Print one setting's value as JSON
    Get(GetArgs),
    /// List every setting of a tenant
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,
    pub key: String,
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

async fn set(args: SetArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!args.key.is_empty(), "a setting key cannot be empty");
    let value = parse_value(&args.value);
    let (tenant, mut conn) = open(ctx, &args.tenant).await?;
    let result = write(&mut conn, &args.key, &value).await;
    let _ = conn.close().await;
    result.map_err(|e| settings_error(e, &tenant))?;
    match ctx.output {
        OutputMode::Table => println!("tenant {}: {} = {value}", tenant.slug, args.key),
        OutputMode::Json | OutputMode::Jsonl => print_json(&serde_json::json!({
            "slug": tenant.slug, "key": args.key, "value": value,
        })),
    }
    Ok(Outcome::Success)
}

async fn get(args: GetArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (tenant, mut conn) = open(ctx, &args.tenant).await?;
    let result = read(&mut conn, Some(&args.key)).await;
    let _ = conn.close().await;
    let setting = result
        .map_err(|e| settings_error(e, &tenant))?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("tenant {}: no setting {:?}", tenant.slug, args.key))?;
    match ctx.output {
        OutputMode::Table => println!("{}", setting.value),
        OutputMode::Json | OutputMode::Jsonl => print_json(&setting.value),
    }
    Ok(Outcome::Success)
}

async fn list(args: ListArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (tenant, mut conn) = open(ctx, &args.tenant).await?;
    let result = read(&mut conn, None).await;
    let _ = conn.close().await;
    let settings = result.map_err(|e| settings_error(e, &tenant))?;
    match ctx.output {
        OutputMode::Json => print_json(&settings),
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
    let mut master_conn = ctx.connector.connect_master().await?;
    let tenant = master::get(&mut master_conn, key).await;
    let _ = master_conn.close().await;
    let tenant = tenant?;
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

fn settings_error(err: anyhow::Error, tenant: &Tenant) -> anyhow::Error {
    let err = if has_sqlstate(&err, "42P01") {
        err.context(
            "the tenant database has no settings table; run `tenantctl tenant migrate` for it",
        )
    } else {
        err
    };
    err.context(format!("tenant {tenant}"))
}
