//! `tenantctl tenant settings set|get|list`: a tenant's `settings` table.

use crate::error::sqlstate;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::postgres::PgConnection;

use crate::commands::args::{FilterArgs, FleetArgs, SessionArgs};
use crate::commands::context::Context;
use crate::connect::has_sqlstate;
use crate::error::{Outcome, UsageError};
use crate::output::report::TenantValue;
use crate::output::{OutputMode, document, line, print_json, shown, table};
use crate::runner::{Borrows, ConnFuture};
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

    #[command(flatten)]
    pub session: SessionArgs,
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

    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Tenant slug or id
    #[arg(value_name = "SLUG|ID")]
    pub tenant: String,

    #[command(flatten)]
    pub session: SessionArgs,
}

/// One setting as stored. The value is jsonb's own text, carried as raw
/// JSON so that numbers keep every digit (`12345678901234567890123` is not
/// rounded through a float on its way in or out).
#[derive(Serialize)]
struct Setting {
    key: String,
    value: Box<RawValue>,
    updated_at: DateTime<Utc>,
}

/// The document of `settings get` and `settings list` on one tenant:
/// serialized as it is (not through `serde_json::Value`), so a value's
/// numbers keep every digit.
#[derive(Serialize)]
struct OneTenant<'a> {
    id: &'a str,
    slug: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<&'a [Setting]>,
}

/// A setting's value in one tenant, for fleet reports.
#[derive(Debug, Default, Serialize)]
pub struct SettingValue {
    pub key: String,
    pub value: Option<Box<RawValue>>,
}

impl TenantValue for SettingValue {
    fn headers() -> Vec<&'static str> {
        vec!["key", "value"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            shown(&self.key),
            self.value
                .as_ref()
                .map_or_else(String::new, |v| shown(v.get())),
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

/// The JSON text to store for what the operator typed: the text itself when
/// it is valid JSON (`42`, `{"a": 1}`, `"quoted"`), so it is stored exactly
/// as typed, else the text as a JSON string (`dark` becomes `"dark"`).
pub fn json_text(raw: &str) -> String {
    if serde_json::from_str::<&RawValue>(raw).is_ok() {
        raw.to_owned()
    } else {
        serde_json::Value::String(raw.to_owned()).to_string()
    }
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
    let (key, value) = (rest[0].clone(), json_text(&rest[1]));
    if key.is_empty() {
        return Err(UsageError("a setting key cannot be empty".into()).into());
    }
    let tenants = ctx.select_names(names, &args.filter).await?;
    let run = ctx
        .fleet_runner(&args.fleet, (&args.session).into())
        .on_each_tenant_limited(
            tenants,
            &ctx.progress(),
            move |_, conn, setting: &mut SettingValue| {
                let (key, value) = (key.clone(), value.clone());
                Box::pin(async move {
                    setting.key.clone_from(&key);
                    let stored = write(conn, &key, &value).await.map_err(settings_error)?;
                    setting.value = Some(stored);
                    Ok(())
                })
            },
        )
        .await;
    Ok(ctx.finish(&run))
}

async fn get(args: GetArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (names, rest) = split_words(&args.words, 1, &args.filter)?;
    let key = rest[0].clone();
    // JUnit reports a fleet run: one tenant named is a fleet of one.
    if let [name] = names
        && !args.filter.all
        && ctx.output != OutputMode::Junit
    {
        return get_one(ctx, name, &key, &args.session).await;
    }
    let tenants = ctx.select_names(names, &args.filter).await?;
    let run = ctx
        .fleet_runner(&args.fleet, (&args.session).into())
        .on_each_tenant_limited(
            tenants,
            &ctx.progress(),
            move |_, conn, setting: &mut SettingValue| {
                let key = key.clone();
                Box::pin(async move {
                    setting.key.clone_from(&key);
                    setting.value = Some(read_one(conn, &key).await?);
                    Ok(())
                })
            },
        )
        .await;
    Ok(ctx.finish(&run))
}

/// One tenant named: just the value, or one error.
async fn get_one(
    ctx: &Context,
    name: &str,
    key: &str,
    session: &SessionArgs,
) -> anyhow::Result<Outcome> {
    let (tenant, value) = on_tenant(ctx, name, session, |conn, _| {
        Box::pin(async move { Ok(read_one(conn, key).await) })
    })
    .await?;
    let value = value.with_context(|| format!("tenant {tenant}"))?;
    // An object, not the bare value, so the document has its
    // schema_version and says whose key it is.
    let json = OneTenant {
        id: &tenant.id,
        slug: tenant.slug.as_deref(),
        key: Some(key),
        value: Some(&value),
        settings: None,
    };
    document(ctx.output, &json);
    match ctx.output {
        OutputMode::Table | OutputMode::Junit => {
            line(value.get());
        }
        OutputMode::Jsonl => print_json(ctx.output, &json),
        OutputMode::Json => {}
    }
    Ok(Outcome::Success)
}

async fn list(args: ListArgs, ctx: &Context) -> anyhow::Result<Outcome> {
    let (tenant, result) = on_tenant(ctx, &args.tenant, &args.session, |conn, _| {
        Box::pin(async move { Ok(read(conn, None).await) })
    })
    .await?;
    let settings = result
        .map_err(settings_error)
        .with_context(|| format!("tenant {tenant}"))?;
    document(
        ctx.output,
        &OneTenant {
            id: &tenant.id,
            slug: tenant.slug.as_deref(),
            key: None,
            value: None,
            settings: Some(&settings),
        },
    );
    match ctx.output {
        OutputMode::Json => {}
        OutputMode::Jsonl => {
            for s in &settings {
                print_json(OutputMode::Jsonl, s);
            }
        }
        OutputMode::Table | OutputMode::Junit => {
            let mut out = table(["key", "value", "updated"]);
            for s in &settings {
                out.add_row([
                    shown(&s.key),
                    shown(s.value.get()),
                    s.updated_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ]);
            }
            line(out);
        }
    }
    Ok(Outcome::Success)
}

/// Runs `op` on the database of the one tenant named, through the
/// runner: the tenant, and what `op` got (its own error kept apart from
/// the connection's, which names the tenant).
async fn on_tenant<'e, T, F>(
    ctx: &'e Context,
    key: &str,
    session: &SessionArgs,
    op: F,
) -> anyhow::Result<(Tenant, anyhow::Result<T>)>
where
    T: Send,
    F: for<'c> FnOnce(&'c mut PgConnection, Borrows<'c, 'e>) -> ConnFuture<'c, anyhow::Result<T>>
        + Send
        + 'e,
{
    let tenant = ctx.tenant(key).await?;
    let got = async {
        let (server, db) = (tenant.server()?, tenant.db_name()?);
        ctx.runner
            .with_limits(session.into())
            .with_tenant_read(server, db, op)
            .await
    }
    .await
    .with_context(|| format!("tenant {tenant}"))?;
    Ok((tenant, got))
}

/// Upserts one setting from its JSON text; returns the value as stored.
pub async fn write(
    conn: &mut PgConnection,
    key: &str,
    json: &str,
) -> anyhow::Result<Box<RawValue>> {
    let (stored,): (String,) = sqlx::query_as(
        r#"INSERT INTO settings (key, value, "updatedAt") VALUES ($1, $2::jsonb, now())
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "updatedAt" = now()
           RETURNING value::text"#,
    )
    .persistent(false)
    .bind(key)
    .bind(json)
    .fetch_one(conn)
    .await
    .context("write setting")?;
    raw(stored)
}

/// The value of one setting, or an error naming the key.
async fn read_one(conn: &mut PgConnection, key: &str) -> anyhow::Result<Box<RawValue>> {
    read(conn, Some(key))
        .await
        .map_err(settings_error)?
        .pop()
        .map(|setting| setting.value)
        .ok_or_else(|| anyhow::anyhow!("no setting {:?}", shown(key)))
}

async fn read(conn: &mut PgConnection, key: Option<&str>) -> anyhow::Result<Vec<Setting>> {
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        r#"SELECT key, value::text, "updatedAt" FROM settings WHERE $1::text IS NULL OR key = $1 ORDER BY key"#,
    ).persistent(false)
    .bind(key)
    .fetch_all(conn)
    .await
    .context("read settings")?;
    rows.into_iter()
        .map(|(key, value, updated_at)| {
            Ok(Setting {
                key,
                value: raw(value)?,
                updated_at,
            })
        })
        .collect()
}

/// jsonb's text output is always valid JSON.
fn raw(text: String) -> anyhow::Result<Box<RawValue>> {
    RawValue::from_string(text).context("read a stored value as JSON")
}

fn settings_error(err: anyhow::Error) -> anyhow::Error {
    if has_sqlstate(&err, sqlstate::UNDEFINED_TABLE) {
        err.context(
            "the tenant database has no settings table; run `tenantctl tenant migrate` for it",
        )
    } else {
        err
    }
}
