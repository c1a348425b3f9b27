//! What makes a new tenant's schema, and applying it to a database: shared
//! by `tenant create` and by `tenant drift`, whose reference is a scratch
//! database migrated exactly as a new tenant is.

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::commands::context::Context;
use crate::config::{AppCommand, Migrator};
use crate::connect::{SessionLimits, has_sqlstate};
use crate::dbname::DbName;
use crate::error::sqlstate;
use crate::migrations::{self, MigrationSet};
use crate::prisma;
use crate::servers::ServerName;
use crate::template::{self, SetHash};

/// What migrates a new tenant's database.
pub enum TenantSchema {
    /// tenantctl's own sqlx migrations.
    Sqlx(std::sync::Arc<MigrationSet>),
    /// The application's Prisma migrations, applied natively (or by its
    /// command with `apply = "command"`).
    Prisma {
        folder: prisma::Folder,
        schema: String,
        search_path: bool,
        command: Option<AppCommand>,
    },
    /// The application's command.
    Command(AppCommand),
}

impl TenantSchema {
    /// Read (and checked) before anything is created.
    pub async fn of(ctx: &Context) -> anyhow::Result<Self> {
        Ok(match &ctx.migrator {
            Migrator::Sqlx { .. } => Self::Sqlx(ctx.tenant_migrations_to_apply().await?),
            Migrator::Prisma {
                migrations,
                schema,
                search_path,
                command,
            } => Self::Prisma {
                folder: prisma::Folder::read(migrations).map_err(crate::error::Usage)?,
                schema: schema.clone(),
                search_path: *search_path,
                command: command.clone(),
            },
            Migrator::Command(command) => Self::Command(command.clone()),
        })
    }
}

/// What provisioning applied.
#[derive(Default)]
pub struct Applied {
    pub versions: Vec<i64>,
    pub names: Vec<String>,
    /// The template the database was cloned from, if it was.
    pub template: Option<DbName>,
    /// The template whose database-level state a resumed create gives the
    /// database it found (see [`give_resumed_state`]).
    pub resumed_from: Option<Arc<template::Source>>,
}

/// Applies the schema natively on `conn`, connected to `db`: tenantctl's
/// migrations, or the application's Prisma migrations as Prisma applies
/// them. An application command is not run here (see `tenant create`).
pub async fn apply_schema(
    ctx: &Context,
    conn: &mut PgConnection,
    db: &DbName,
    migrations: &TenantSchema,
    limits: &SessionLimits,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    match migrations {
        TenantSchema::Sqlx(set) => {
            let mut done = migrations::Done::default();
            let result = migrations::apply_with(conn, db, set, None, limits, &mut done).await;
            applied.versions.append(&mut done.versions);
            result
        }
        TenantSchema::Prisma {
            folder,
            schema,
            search_path,
            ..
        } => {
            let redactor = ctx.connector.child_env().redactor(&[]);
            let redact = move |text: &str| redactor.redact(text).into_owned();
            let mut done = prisma::Applied::default();
            let target = prisma::Target {
                schema,
                search_path: *search_path,
            };
            let result = prisma::apply(conn, folder, target, limits, &redact, &mut done).await;
            applied.names.append(&mut done.names);
            result
        }
        TenantSchema::Command(_) => Ok(()),
    }
}

impl TenantSchema {
    /// The hash a template of this schema is named by: what is applied and
    /// how. `None` where tenantctl does not make the schema itself (the
    /// application's command), so there is nothing it could build once.
    pub fn template_hash(&self) -> Option<SetHash> {
        match self {
            Self::Sqlx(set) => {
                let mut parts: Vec<Vec<u8>> = vec![b"sqlx".to_vec(), set.ledger().into()];
                for m in set.iter() {
                    parts.push(m.version.to_string().into_bytes());
                    parts.push(m.description.as_bytes().to_vec());
                    parts.push(m.checksum.to_vec());
                    parts.push(vec![u8::from(m.no_tx)]);
                }
                Some(SetHash::of(parts.iter().map(Vec::as_slice)))
            }
            Self::Prisma {
                folder,
                schema,
                search_path,
                command: None,
            } => {
                let mut parts: Vec<Vec<u8>> = vec![
                    b"prisma".to_vec(),
                    schema.as_bytes().to_vec(),
                    vec![u8::from(*search_path)],
                ];
                for m in &folder.migrations {
                    parts.push(m.name.as_bytes().to_vec());
                    parts.push(m.script.as_bytes().to_vec());
                }
                Some(SetHash::of(parts.iter().map(Vec::as_slice)))
            }
            Self::Prisma { .. } | Self::Command(_) => None,
        }
    }
}

/// The schema's template on `server`, built now if it is not there (see
/// [`build_template`]); `None` with `--no-template` or where tenantctl
/// does not make the schema itself.
pub async fn template_for(
    ctx: &Context,
    master: &mut PgConnection,
    server: &ServerName,
    schema: &TenantSchema,
    limits: &SessionLimits,
) -> anyhow::Result<Option<Arc<template::Source>>> {
    if ctx.templates.is_off() {
        return Ok(None);
    }
    let Some(hash) = schema.template_hash() else {
        return Ok(None);
    };
    let source = ctx
        .templates
        .get_or_make(server, || {
            build_template(ctx, master, server, schema, &hash, limits)
        })
        .await?;
    Ok(Some(source))
}

/// Finds the set's sealed template on the server, or builds it: under the
/// set's build lock, so two creates (of any processes) never build it
/// twice; a template found unsealed under the lock was left half-built by
/// a build that died, and is dropped and built again. The template is the
/// one of the set as the role tenantctl connects as builds it (see
/// [`SetHash::for_role`]).
///
/// The lock is taken on `master`, the master connection the caller holds,
/// in a transaction (a savepoint on a pinned connection) until the build
/// ends: a transaction held on the server's maintenance database while
/// another connection there creates the template, or on a second master
/// connection, would wait forever behind a pooler with a pool of one.
pub async fn build_template(
    ctx: &Context,
    master: &mut PgConnection,
    server: &ServerName,
    schema: &TenantSchema,
    set: &SetHash,
    limits: &SessionLimits,
) -> anyhow::Result<template::Source> {
    let (hash, found) = sealed_source(ctx, server, set).await?;
    if let Some(source) = found {
        return Ok(source);
    }
    // Listening for interrupts from here: a create waiting for another
    // process's build is stopped by one, not killed.
    let stop = ctx.interruptible().clone();
    let mut tx = master.begin().await.context("begin")?;
    template::lock_or_stop(&mut tx, &hash.build_key(server), &stop).await?;
    let built = match sealed_source(ctx, server, set).await?.1 {
        Some(source) => Ok(source),
        None => {
            let mark = template::mark(&mut tx).await?;
            build_locked(ctx, server, schema, (&hash, &mark), limits).await
        }
    };
    tx.commit()
        .await
        .context("release the template's build lock")?;
    built
}

/// The hash of the set's template for the role on this server, and the
/// template if it is there and sealed.
async fn sealed_source(
    ctx: &Context,
    server: &ServerName,
    set: &SetHash,
) -> anyhow::Result<(SetHash, Option<template::Source>)> {
    ctx.runner
        .with_maintenance(server, |conn, _| {
            Box::pin(async move {
                let hash = set.for_role(&template::role(conn).await?);
                let source = match template::lookup(conn, &hash.template()).await? {
                    Some((true, source)) => Some(source),
                    _ => None,
                };
                Ok((hash, source))
            })
        })
        .await
}

/// Builds the template, the build lock held: created empty under a name
/// of its own, migrated by the code that migrates a tenant in place,
/// sealed, then renamed to the template's name. A build that fails (or is
/// interrupted) drops what it made, so no half-built template is ever
/// cloned.
async fn build_locked(
    ctx: &Context,
    server: &ServerName,
    schema: &TenantSchema,
    (hash, mark): (&SetHash, &str),
    limits: &SessionLimits,
) -> anyhow::Result<template::Source> {
    let (name, building) = (hash.template(), hash.building());
    let (name, building) = (&name, &building);
    ctx.runner
        .with_maintenance(server, |conn, _| {
            Box::pin(async move {
                // Left unsealed under the template's own name (by a build
                // of an older tenantctl, or by hand): never cloned.
                template::check_not_squatted(conn, name).await?;
                if template::find(conn, hash).await?.is_some() {
                    template::discard(conn, name).await?;
                }
                template::create_empty(conn, building, mark).await
            })
        })
        .await?;
    let migrated = migrate_building(ctx, server, building, schema, limits).await;
    ctx.runner
        .with_maintenance(server, |conn, _| {
            Box::pin(async move {
                let migrated = match migrated {
                    Ok(()) => template::check_owner(conn, building).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = migrated {
                    // Best effort: the migration's error is the one to report.
                    let _ = template::discard(conn, building).await;
                    return Err(err.context(format!(
                        "build template {name} on server {server} (dropped, nothing is left of it; fix the cause and run again, or pass --no-template to migrate in place)"
                    )));
                }
                template::seal(conn, building).await?;
                if !template::rename_built(conn, building, name).await? {
                    template::discard(conn, building).await?;
                }
                template::source(conn, name).await
            })
        })
        .await
}

/// Migrates the template being built. An interrupt (after its grace
/// period) ends the build: the caller drops the database, which ends the
/// migration's session on the server, so nothing goes on running there
/// behind an exited process.
async fn migrate_building(
    ctx: &Context,
    server: &ServerName,
    building: &DbName,
    schema: &TenantSchema,
    limits: &SessionLimits,
) -> anyhow::Result<()> {
    let conn = ctx.connector.connect_template(server, building).await?;
    let mut applied = Applied::default();
    let stop = ctx.interruptible().clone();
    let migrating = ctx.runner.scoped(conn, |conn, _| {
        Box::pin(apply_schema(
            ctx,
            conn,
            building,
            schema,
            limits,
            &mut applied,
        ))
    });
    tokio::select! {
        biased;
        migrated = migrating => migrated,
        () = stop.cancel_due() => {
            crate::output::warn(format_args!(
                "interrupted: dropping the template being built on server {server}"
            ));
            Err(anyhow::anyhow!("the template's build was interrupted")
                .context(crate::error::Cancelled))
        }
    }
}

/// Makes `db` a clone of the schema's template. `Ok(false)`: there is no
/// template to use (`--no-template`, the application's command) or `db`
/// exists already (a create resumed): the caller migrates in place.
///
/// The template is looked up and cloned on one maintenance connection;
/// only when it is not there (or was pruned in between) is it built, then
/// cloned.
pub async fn clone_template(
    ctx: &Context,
    master: &mut PgConnection,
    server: &ServerName,
    db: &DbName,
    schema: &TenantSchema,
    limits: &SessionLimits,
    applied: &mut Applied,
) -> anyhow::Result<bool> {
    if ctx.templates.is_off() {
        return Ok(false);
    }
    let Some(set) = schema.template_hash() else {
        return Ok(false);
    };
    let mut cloned = None;
    for _ in 0..3 {
        let cached = ctx.templates.cached(server).await;
        match clone_found(ctx, &mut *master, server, &set, cached, db).await {
            Ok(Found::Cloned(source)) => {
                cloned = Some(source);
                break;
            }
            Ok(Found::Exists(source)) => {
                applied.resumed_from = Some(source);
                return Ok(false);
            }
            Ok(Found::Missing) => {
                template_for(ctx, &mut *master, server, schema, limits).await?;
            }
            // Pruned by another run since this one found it: built again.
            Err(err) if has_sqlstate(&err, sqlstate::INVALID_CATALOG_NAME) => {
                ctx.templates.forget(server).await;
            }
            Err(err) => return Err(err),
        }
    }
    let source = cloned.with_context(|| {
        format!("template of the migration set on server {server} kept disappearing (a `template prune` running in a loop?); run again")
    })?;
    ctx.templates.put(server, source.clone()).await;
    applied.template = Some(source.name.clone());
    ctx.runner
        .with_limits(limits.clone())
        .with_tenant(server, db, |conn, _| {
            Box::pin(stamp_clone(conn, schema, applied))
        })
        .await?;
    if !source.replay.is_empty() {
        ctx.runner
            .with_maintenance(server, |conn, _| {
                Box::pin(template::give_state(conn, &source, db))
            })
            .await?;
    }
    Ok(true)
}

/// Gives a database a resumed create found the set's database-level
/// state, once it is migrated in place: a create that died after its
/// clone, before that state was given, would otherwise end `active`
/// without it. Replaying is idempotent on a database the set's migrations
/// made in place, which already has that state.
pub async fn give_resumed_state(
    ctx: &Context,
    server: &ServerName,
    db: &DbName,
    applied: &Applied,
) -> anyhow::Result<()> {
    let Some(source) = applied
        .resumed_from
        .as_ref()
        .filter(|s| !s.replay.is_empty())
    else {
        return Ok(());
    };
    ctx.runner
        .with_maintenance(server, |conn, _| {
            Box::pin(template::give_state(conn, source, db))
        })
        .await
}

/// What a clone found.
enum Found {
    Cloned(Arc<template::Source>),
    /// The database exists already (the set's template is this).
    Exists(Arc<template::Source>),
    /// No sealed template of the set on the server.
    Missing,
}

/// Looks the set's template up (unless this run knows it) and clones it
/// into `db`, on one connection: the create's own master connection when
/// it can stand for the server's (one connection fewer per create), else
/// a maintenance connection.
async fn clone_found(
    ctx: &Context,
    master: &mut PgConnection,
    server: &ServerName,
    set: &SetHash,
    cached: Option<Arc<template::Source>>,
    db: &DbName,
) -> anyhow::Result<Found> {
    // Not inside a transaction (a pinned connection's): CREATE DATABASE
    // cannot run in one.
    if ctx.connector.master_stands_for(server) && !master.is_in_transaction() {
        return lookup_and_clone(master, set, cached, db).await;
    }
    ctx.runner
        .with_maintenance(server, |conn, _| {
            Box::pin(lookup_and_clone(conn, set, cached, db))
        })
        .await
}

async fn lookup_and_clone(
    conn: &mut PgConnection,
    set: &SetHash,
    cached: Option<Arc<template::Source>>,
    db: &DbName,
) -> anyhow::Result<Found> {
    let source = match cached {
        Some(source) => source,
        None => {
            let hash = set.for_role(&template::role(conn).await?);
            match template::lookup(conn, &hash.template()).await? {
                Some((true, source)) => Arc::new(source),
                _ => return Ok(Found::Missing),
            }
        }
    };
    Ok(if template::clone_into(conn, &source, db).await? {
        Found::Cloned(source)
    } else {
        Found::Exists(source)
    })
}

/// Records the clone's migrations as applied now, and checks it holds
/// exactly the set: the template's ledger rows came with the copy, their
/// times moved to now (their spacing kept), so `status`, `drift`,
/// sqlx-cli and Prisma see a tenant migrated at its creation.
async fn stamp_clone(
    conn: &mut PgConnection,
    schema: &TenantSchema,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("begin")?;
    match schema {
        TenantSchema::Sqlx(set) => {
            migrations::restamp(&mut tx, set.ledger()).await?;
            let plan = migrations::plan(&mut tx, set).await?;
            plan.check()?;
            anyhow::ensure!(
                plan.pending.is_empty(),
                "the template did not hold every migration (pending: {:?})",
                plan.pending
            );
            applied.versions = plan.applied;
        }
        TenantSchema::Prisma { folder, schema, .. } => {
            prisma::restamp(&mut tx, schema).await?;
            let state = prisma::state(&mut tx, folder, schema).await?;
            state.check()?;
            anyhow::ensure!(
                state.pending.is_empty(),
                "the template did not hold every migration (pending: {:?})",
                state.pending
            );
            applied.names = state.applied;
        }
        TenantSchema::Command(_) => {}
    }
    tx.commit().await.context("record the clone's migrations")
}
