//! `tenantctl template list|build|prune`: the template databases `tenant
//! create` clones, one per server and migration set.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::Connection as _;

use crate::commands::args::SessionArgs;
use crate::commands::context::Context;
use crate::commands::tenant::provision::{TenantSchema, build_template};
use crate::connect::SessionLimits;
use crate::error::{Outcome, UsageError, render};
use crate::output::{OutputMode, document, format_bytes, line, print_json, shown, table};
use crate::servers::ServerName;
use crate::template::{self, SetHash};

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Each server's template databases: the migration set each holds,
    /// whether it is the current one, its state and size
    List(ServersArgs),
    /// Build the current migration set's template on each server now,
    /// instead of at the first `tenant create`
    Build(BuildArgs),
    /// Drop the templates of migration sets that are no longer current,
    /// and any left half-built (never the current set's sealed template,
    /// never one being built)
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct ServersArgs {
    /// Only this server (repeatable) [default: every configured server]
    #[arg(long = "server", value_name = "NAME")]
    pub servers: Vec<ServerName>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub servers: ServersArgs,

    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub servers: ServersArgs,

    /// Say what would be dropped, drop nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// One template (or one server's failure) as the commands report it.
#[derive(Debug, Serialize)]
struct Row {
    server: String,
    name: Option<String>,
    /// The migration set's hash, as the name carries it.
    hash: Option<String>,
    /// Whether it holds the migration set this tenantctl would create
    /// tenants with.
    current: bool,
    /// `sealed`, `being built` or `half-built`.
    state: Option<&'static str>,
    size_bytes: Option<i64>,
    /// What this run did (`build`, `prune`): `built`, `found`, `dropped`,
    /// `would drop`, `kept`, `kept: another role's` (this master's, built
    /// by another role: its own to prune), `kept: not this master's` (built by another
    /// master sharing the server, or its mark overwritten by a migration's
    /// `COMMENT ON DATABASE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    error: Option<String>,
}

pub async fn run(command: TemplateCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    let schema = TenantSchema::of(ctx).await?;
    let current = schema.template_hash();
    let (rows, action) = match command {
        TemplateCommand::List(args) => (
            list(ctx, &servers(ctx, &args)?, current.as_ref()).await,
            false,
        ),
        TemplateCommand::Build(args) => {
            let hash = current.ok_or_else(|| {
                UsageError(
                    "[tenants.migrator] runs the application's own command, which tenantctl cannot run once into a template: tenants are created without one".into(),
                )
            })?;
            let limits = SessionLimits::from(&args.session);
            let servers = servers(ctx, &args.servers)?;
            (build(ctx, &servers, &schema, &hash, &limits).await, true)
        }
        TemplateCommand::Prune(args) => {
            let servers = servers(ctx, &args.servers)?;
            (
                prune(ctx, &servers, current.as_ref(), args.dry_run).await,
                true,
            )
        }
    };
    print(ctx, &rows, action);
    Ok(if rows.iter().any(|r| r.error.is_some()) {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

/// The servers named, each checked, or every configured one.
fn servers(ctx: &Context, args: &ServersArgs) -> anyhow::Result<Vec<ServerName>> {
    if args.servers.is_empty() {
        return Ok(ctx
            .connector
            .servers()
            .into_iter()
            .filter(|s| s.address.is_some())
            .map(|s| s.name)
            .collect());
    }
    for server in &args.servers {
        ctx.connector
            .check_server(server)
            .map_err(|e| UsageError(format!("--server: {e}")))?;
    }
    Ok(args.servers.clone())
}

fn failed(server: &ServerName, err: &anyhow::Error) -> Row {
    Row {
        server: server.to_string(),
        name: None,
        hash: None,
        current: false,
        state: None,
        size_bytes: None,
        action: None,
        error: Some(render(err)),
    }
}

/// The templates on each server, with the current set's hash for the
/// role tenantctl connects there as.
async fn found_on(
    ctx: &Context,
    servers: &[ServerName],
    set: Option<&SetHash>,
) -> Vec<(
    ServerName,
    anyhow::Result<(Option<SetHash>, Vec<template::Listed>)>,
)> {
    let answers = ctx
        .runner
        .each_server(servers, |_, conn, _| {
            Box::pin(async move {
                let current = match set {
                    Some(set) => Some(set.for_role(&template::role(conn).await?)),
                    None => None,
                };
                Ok((current, template::list(conn).await?))
            })
        })
        .await;
    servers.iter().cloned().zip(answers).collect()
}

/// A template's row, its state read: unsealed is either being built now
/// (its build lock, in the master, is held) or left half-built.
async fn describe(
    ctx: &Context,
    server: &ServerName,
    found: &template::Listed,
    current: Option<&SetHash>,
) -> anyhow::Result<Row> {
    let state = if found.sealed && !found.building {
        "sealed"
    } else {
        let key = found.hash.build_key(server);
        let key = &key;
        let busy = ctx
            .runner
            .with_master(|conn, _, _| Box::pin(template::being_built(conn, key)))
            .await?;
        if busy { "being built" } else { "half-built" }
    };
    Ok(Row {
        server: server.to_string(),
        name: Some(found.name.to_string()),
        current: Some(&found.hash) == current,
        hash: Some(found.hash.to_string()),
        state: Some(state),
        size_bytes: found.size_bytes,
        action: None,
        error: None,
    })
}

async fn list(ctx: &Context, servers: &[ServerName], set: Option<&SetHash>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (server, answer) in found_on(ctx, servers, set).await {
        let described = async {
            let (current, found) = answer?;
            let mut rows = Vec::new();
            for t in &found {
                rows.push(describe(ctx, &server, t, current.as_ref()).await?);
            }
            anyhow::Ok(rows)
        }
        .await;
        rows.extend(described.unwrap_or_else(|err| vec![failed(&server, &err)]));
    }
    rows
}

async fn build(
    ctx: &Context,
    servers: &[ServerName],
    schema: &TenantSchema,
    hash: &SetHash,
    limits: &SessionLimits,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for server in servers {
        let built = async {
            let before = ctx
                .runner
                .with_maintenance(server, |conn, _| {
                    Box::pin(async move {
                        let hash = hash.for_role(&template::role(conn).await?);
                        template::find(conn, &hash).await
                    })
                })
                .await?;
            let source = ctx
                .runner
                .with_master(|master, _, _| {
                    Box::pin(build_template(ctx, master, server, schema, hash, limits))
                })
                .await?;
            anyhow::Ok((before.is_some_and(|t| t.sealed), source))
        }
        .await;
        rows.push(match built {
            Ok((found, source)) => Row {
                server: server.to_string(),
                hash: SetHash::from_name(source.name.as_str()).map(|h| h.to_string()),
                name: Some(source.name.to_string()),
                current: true,
                state: Some("sealed"),
                size_bytes: source.size_bytes,
                action: Some(if found { "found" } else { "built" }),
                error: None,
            },
            Err(err) => failed(server, &err),
        });
    }
    rows
}

async fn prune(
    ctx: &Context,
    servers: &[ServerName],
    set: Option<&SetHash>,
    dry_run: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    // Another master's templates (another installation on this server)
    // are built and pruned under its own locks: never ours to drop.
    let ours = ctx
        .runner
        .with_master(|conn, _, _| Box::pin(template::mark(conn)))
        .await;
    for (server, answer) in found_on(ctx, servers, set).await {
        let pruned = async {
            let (current, found) = answer?;
            let ours = ours.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let mut rows = Vec::new();
            for t in &found {
                let mut row = describe(ctx, &server, t, current.as_ref()).await?;
                let keep = row.state == Some("being built")
                    || (row.current && row.state == Some("sealed"));
                row.action = Some(if t.mark.as_ref() != Some(ours) {
                    "kept: not this master's"
                } else if !t.owned {
                    "kept: another role's"
                } else if keep {
                    "kept"
                } else if dry_run {
                    "would drop"
                } else {
                    drop_unlocked(ctx, &server, t).await?
                });
                rows.push(row);
            }
            anyhow::Ok(rows)
        }
        .await;
        rows.extend(pruned.unwrap_or_else(|err| vec![failed(&server, &err)]));
    }
    rows
}

/// Drops a template holding its build lock, so a build that starts
/// meanwhile waits and then builds afresh; a build already running keeps
/// it.
async fn drop_unlocked(
    ctx: &Context,
    server: &ServerName,
    found: &template::Listed,
) -> anyhow::Result<&'static str> {
    let key = found.hash.build_key(server);
    let key = &key;
    ctx.runner
        .with_master(|lock_conn, _, _| {
            Box::pin(async move {
                let mut tx = lock_conn.begin().await.context("begin")?;
                if !template::try_lock(&mut tx, key).await? {
                    return Ok("kept");
                }
                ctx.runner
                    .with_maintenance(server, |conn, _| {
                        Box::pin(template::discard(conn, &found.name))
                    })
                    .await?;
                tx.commit().await.context("release the template's lock")?;
                Ok("dropped")
            })
        })
        .await
}

fn print(ctx: &Context, rows: &[Row], action: bool) {
    document(ctx.output, &serde_json::json!({ "templates": rows }));
    match ctx.output {
        OutputMode::Json => {}
        OutputMode::Jsonl => rows.iter().for_each(|r| print_json(OutputMode::Jsonl, r)),
        OutputMode::Table | OutputMode::Junit => {
            if rows.is_empty() {
                line(format_args!("no template databases"));
                return;
            }
            let mut headers = vec!["server", "template", "current", "state", "size"];
            if action {
                headers.push("action");
            }
            let mut out = table(headers);
            for r in rows {
                let mut cells = vec![
                    shown(&r.server).clone(),
                    r.name.clone().unwrap_or_default(),
                    if r.current { "yes" } else { "no" }.to_owned(),
                    r.state.map_or_else(
                        || {
                            format!(
                                "error: {}",
                                r.error.as_deref().map(shown).unwrap_or_default()
                            )
                        },
                        str::to_owned,
                    ),
                    r.size_bytes.map(format_bytes).unwrap_or_default(),
                ];
                if action {
                    cells.push(r.action.unwrap_or_default().to_owned());
                }
                out.add_row(cells);
            }
            line(format_args!("{out}"));
        }
    }
}
