//! `tenantctl server ...`: the PostgreSQL servers that hold tenant
//! databases.

use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::commands::context::Context;
use crate::error::{Outcome, render};
use crate::output::{OutputMode, document, format_bytes, line, print_json, shown, table};
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Tenant};

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Each server: where it is, whether it answers, its version, the tenants
    /// placed there and their databases, connections and size
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {}

/// One server as `server list` reports it. Never its URL or password.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    host: Option<String>,
    port: Option<u16>,
    accepts_new: bool,
    reachable: bool,
    /// Why it is not reachable (or not configured).
    error: Option<String>,
    version: Option<String>,
    /// Companies the master places there (dropped ones aside).
    tenants: usize,
    /// Of their databases, how many exist there.
    databases: Option<usize>,
    connections: Option<i64>,
    max_connections: Option<i64>,
    /// Total size of those databases.
    size_bytes: Option<i64>,
}

/// What a reachable server said about itself.
struct Probe {
    version: String,
    connections: i64,
    max_connections: i64,
    databases: usize,
    size_bytes: i64,
}

pub async fn run(command: ServerCommand, ctx: &Context) -> anyhow::Result<Outcome> {
    match command {
        ServerCommand::List(ListArgs {}) => list(ctx).await,
    }
}

async fn list(ctx: &Context) -> anyhow::Result<Outcome> {
    let companies = ctx
        .runner
        .with_master(|conn, layout, _| Box::pin(async move { layout.list(conn).await }))
        .await?;
    let companies: Vec<Tenant> = companies
        .into_iter()
        .filter(|t| !t.has_status(Lifecycle::Dropped))
        .collect();

    let servers = known_servers(ctx, &companies);

    let names: Vec<ServerName> = servers.iter().map(|s| s.name.clone()).collect();
    let answers = ctx
        .runner
        .each_server(&names, |server, conn, _| {
            let dbs: Vec<String> = companies
                .iter()
                .filter(|t| t.server.as_ref() == Ok(server))
                .filter_map(|t| t.db.as_ref().ok().map(|db| db.as_str().to_owned()))
                .collect();
            Box::pin(async move { probe(conn, &dbs).await })
        })
        .await;
    let answers = servers.iter().zip(answers).map(|(server, probe)| {
        let placed = companies
            .iter()
            .filter(|t| t.server.as_ref() == Ok(&server.name))
            .count();
        (placed, probe)
    });
    let rows: Vec<Row> = servers
        .iter()
        .zip(answers)
        .map(|(server, (tenants, probe))| {
            let (host, port) = server.address.clone().unzip();
            let mut row = Row {
                name: server.name.to_string(),
                host,
                port,
                accepts_new: server.accepts_new,
                reachable: false,
                error: None,
                version: None,
                tenants,
                databases: None,
                connections: None,
                max_connections: None,
                size_bytes: None,
            };
            match probe {
                Ok(p) => {
                    row.reachable = true;
                    row.version = Some(p.version);
                    row.databases = Some(p.databases);
                    row.connections = Some(p.connections);
                    row.max_connections = Some(p.max_connections);
                    row.size_bytes = Some(p.size_bytes);
                }
                Err(err) => row.error = Some(render(&err)),
            }
            row
        })
        .collect();
    print(ctx, &rows);
    Ok(if rows.iter().all(|r| r.reachable) {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// The configured servers, and those the master places tenants on that
/// nobody configured, by name.
fn known_servers(ctx: &Context, companies: &[Tenant]) -> Vec<crate::connect::ServerInfo> {
    let mut servers = ctx.connector.servers();
    // Servers the master places tenants on but nobody configured.
    for company in companies {
        if let Ok(name) = &company.server
            && !servers.iter().any(|s| &s.name == name)
        {
            servers.push(crate::connect::ServerInfo {
                name: name.clone(),
                address: None,
                accepts_new: false,
                var: name.default_var(),
            });
        }
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    servers
}

/// Asks one server for its version, connections and the size of the
/// tenant databases placed on it, on a connection that sees its catalog
/// (see [`crate::runner::Runner::each_server`]).
async fn probe(conn: &mut PgConnection, dbs: &[String]) -> anyhow::Result<Probe> {
    // One transaction: parameterized reads stay on one server connection
    // behind a transaction-mode pooler.
    let mut tx = conn.begin().await?;
    let (version, connections, max_connections): (String, i64, i64) = sqlx::query_as(
        "SELECT split_part(current_setting('server_version'), ' ', 1), \
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
                current_setting('max_connections')::bigint",
    )
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    let (databases, size_bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(CASE WHEN has_database_privilege(oid, 'CONNECT') \
                THEN pg_database_size(oid) END), 0)::bigint \
         FROM pg_database WHERE datname = ANY($1)",
    )
    .persistent(false)
    .bind(dbs)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Probe {
        version,
        connections,
        max_connections,
        databases: usize::try_from(databases).unwrap_or_default(),
        size_bytes,
    })
}

fn print(ctx: &Context, rows: &[Row]) {
    document(ctx.output, &serde_json::json!({ "servers": rows }));
    match ctx.output {
        OutputMode::Json => {}
        OutputMode::Jsonl => {
            for row in rows {
                print_json(OutputMode::Jsonl, row);
            }
        }
        OutputMode::Table | OutputMode::Junit => {
            let mut out = table([
                "server",
                "address",
                "new tenants",
                "state",
                "version",
                "tenants",
                "databases",
                "connections",
                "size",
            ]);
            for r in rows {
                let known = |v: Option<String>| v.unwrap_or_default();
                out.add_row([
                    r.name.clone(),
                    match (&r.host, r.port) {
                        (Some(host), Some(port)) => format!("{host}:{port}"),
                        _ => String::new(),
                    },
                    if r.accepts_new { "yes" } else { "no" }.to_owned(),
                    r.error
                        .as_deref()
                        .map_or_else(|| "reachable".to_owned(), shown),
                    known(r.version.clone()),
                    r.tenants.to_string(),
                    known(r.databases.map(|d| d.to_string())),
                    known(
                        r.connections
                            .zip(r.max_connections)
                            .map(|(used, max)| format!("{used}/{max}")),
                    ),
                    known(r.size_bytes.map(format_bytes)),
                ]);
            }
            line(out);
        }
    }
}
