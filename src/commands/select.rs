//! What a command selected: the tenants its names and filters pick, read
//! from the master through the runner, and what the selection stated (for
//! the report and the run record), with the warnings and refusals that
//! come with reading it (a database several companies name, a company
//! still being created).

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::context::Context;
use crate::commands::args::{FilterArgs, SelectionArgs};
use crate::companies::Layout;
use crate::runs::{self, FailedIn};
use crate::selection::{self, Filter, NotOk, Selection};
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Tenant};

impl Context {
    /// The one tenant with this slug, id or database name, read from the
    /// master, to connect to: one being moved is refused (its database is
    /// out of reach until the move ends).
    pub async fn tenant(&self, key: &str) -> anyhow::Result<Tenant> {
        let tenant = self
            .runner
            .with_master(|conn, layout, _| {
                Box::pin(async move {
                    let tenant = layout.get(conn, key).await;
                    if tenant.is_err()
                        && let Some(err) = claimed(conn, &layout, &[key.to_owned()]).await
                    {
                        return Err(err);
                    }
                    tenant
                })
            })
            .await?;
        if let Some(to) = &tenant.moving_to {
            anyhow::bail!(
                "tenant {tenant} is being moved to server {}: its database is closed until `tenantctl tenant move {} --to {}` finishes (or --abort undoes it)",
                crate::output::shown(to.as_str()),
                crate::output::shown(tenant.handle()),
                crate::output::shown(to.as_str())
            );
        }
        Ok(tenant)
    }

    /// Reads the master once and returns the tenants the selection names.
    pub async fn select(&self, selection: &SelectionArgs) -> anyhow::Result<Vec<Tenant>> {
        self.select_names(&selection.tenants, &selection.filter)
            .await
    }

    /// [`Self::select`] for commands that parse tenant names themselves.
    pub async fn select_names(
        &self,
        names: &[String],
        filter: &FilterArgs,
    ) -> anyhow::Result<Vec<Tenant>> {
        self.runner
            .with_master(|conn, layout, _| {
                Box::pin(async move {
                    self.resolve_in_transaction(conn, &layout, names, filter)
                        .await
                })
            })
            .await
    }

    /// [`Self::resolve`] in a transaction of its own (see [`Self::master`]).
    pub(super) async fn resolve_in_transaction(
        &self,
        conn: &mut PgConnection,
        layout: &Layout,
        names: &[String],
        filter: &FilterArgs,
    ) -> anyhow::Result<Vec<Tenant>> {
        let mut tx = conn.begin().await.context("begin")?;
        let tenants = self.resolve(&mut tx, layout, names, filter).await?;
        tx.commit().await.context("commit")?;
        Ok(tenants)
    }

    async fn resolve(
        &self,
        conn: &mut PgConnection,
        layout: &Layout,
        names: &[String],
        filter_args: &FilterArgs,
    ) -> anyhow::Result<Vec<Tenant>> {
        let mut filter = Filter::from(filter_args);
        // Read in the selection's own transaction, beside the companies.
        if let Some(wanted) = &filter_args.failed_in {
            filter.failed_in = Some(not_ok(conn, layout, wanted).await?);
        }
        let configured: Vec<ServerName> = self
            .connector
            .servers()
            .into_iter()
            .filter(|s| s.address.is_some())
            .map(|s| s.name)
            .collect();
        let selected =
            match selection::resolve(conn, layout, names, &filter, &configured, |a, b| {
                self.same_place(a, b)
            })
            .await
            {
                Ok(selected) => selected,
                Err(err) => return Err(claimed(conn, layout, names).await.unwrap_or(err)),
            };
        let (tenants, gone) = (selected.tenants, selected.gone);
        if !self.quiet {
            warn_shared(&tenants);
        }
        let mut stated = Selection::of(
            names,
            &filter,
            self.origins.shard.clone(),
            selected.companies,
            tenants.len(),
        );
        stated.table = self.table_stated(layout);
        if let Some(failed) = &mut stated.failed_in {
            failed.gone = gone;
            if tenants.is_empty() {
                crate::output::warn(if failed.not_ok == 0 {
                    format!(
                        "nothing selected: every tenant of {} ended ok",
                        crate::output::shown(&failed.source)
                    )
                } else {
                    format!(
                        "nothing selected: the {} tenant(s) not ok in {} are outside this selection (status, server, shard) or no longer in the master",
                        failed.not_ok,
                        crate::output::shown(&failed.source)
                    )
                });
            }
        }
        self.set_selection(stated);
        if tenants.is_empty() && !names.is_empty() {
            // Named tenants filtered away entirely by --status or --server.
            crate::output::warn(if filter.servers.is_empty() {
                "warning: none of the named tenants has the status asked for"
            } else {
                "warning: none of the named tenants has the status asked for and is on the server(s) asked for"
            });
        }
        Ok(tenants)
    }

    /// The companies table as a report states it, when it is not the
    /// seed's own `"Company"` table: its name, what it is if not a plain
    /// table, and the file that named it.
    fn table_stated(&self, layout: &Layout) -> Option<String> {
        let kind = match layout.visibility.relkind {
            'r' | 'p' => None,
            'v' => Some("a view"),
            'm' => Some("a materialized view"),
            'f' => Some("a foreign table"),
            _ => Some("not a plain table"),
        };
        let named_in =
            self.config.source.as_ref().filter(|_| {
                self.config.master.table != crate::config::MasterConfig::default().table
            });
        if kind.is_none() && named_in.is_none() {
            return None;
        }
        let mut about: Vec<String> = kind.map(str::to_owned).into_iter().collect();
        if let Some(path) = named_in {
            about.push(format!("named in {}", path.display()));
        }
        Some(format!("{} ({})", layout.label, about.join(", ")))
    }

    /// Whether two companies' rows put their databases on one server (a
    /// row whose server is refused counts as anywhere).
    pub fn same_place(&self, a: &Tenant, b: &Tenant) -> bool {
        match (&a.server, &b.server) {
            (Ok(x), Ok(y)) => self.connector.same_place(x, y),
            _ => true,
        }
    }

    /// The other companies whose rows name this tenant's database on its
    /// server, read from the master now: what every destructive step asks
    /// before it acts.
    pub async fn sharing(
        &self,
        layout: &Layout,
        conn: &mut PgConnection,
        tenant: &Tenant,
    ) -> anyhow::Result<Vec<Tenant>> {
        let Some(db) = tenant.db_name_raw.as_deref() else {
            return Ok(Vec::new());
        };
        let mut others = Vec::new();
        for other in layout.naming(conn, db).await? {
            if other.id == tenant.id || other.has_status(Lifecycle::Dropped) {
                continue;
            }
            // Asked of the servers themselves: one host has many names.
            let same = match (&other.server, &tenant.server) {
                (Ok(x), Ok(y)) => self.connector.same_server(x, y).await,
                _ => true,
            };
            if same {
                others.push(other);
            }
        }
        Ok(others)
    }

    /// What the last selection picked and why (`None` before any, and for
    /// runs that select otherwise, such as `revert --run`).
    pub fn selection(&self) -> Option<Selection> {
        self.selection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records what a command selected, for its report and run record
    /// (commands that select other than through [`Self::select`]).
    pub fn set_selection(&self, selection: Selection) {
        *self
            .selection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(selection);
    }
}

/// `--failed-in`'s value read against the master's run records.
async fn not_ok(
    conn: &mut PgConnection,
    layout: &Layout,
    wanted: &FailedIn,
) -> anyhow::Result<NotOk> {
    let recorded = runs::recorded(conn, layout, wanted).await?;
    let ids = runs::not_ok(conn, layout, &recorded).await?;
    Ok(NotOk {
        source: recorded.to_string(),
        ids,
    })
}

/// One warning line per database that several selected companies' rows
/// name: the run works on it once and says so, rather than twice or
/// silently.
fn warn_shared(tenants: &[Tenant]) {
    for tenant in tenants {
        if let Some(sharing) = &tenant.sharing
            && sharing.worked_by.is_none()
        {
            crate::output::warn(format_args!(
                "warning: database {} is named by tenant {} and by {}: it is worked on once, under {}; each company needs a database of its own (see `tenantctl doctor`)",
                crate::output::shown(tenant.db_label()),
                crate::output::shown(tenant.handle()),
                sharing.others.join(", "),
                crate::output::shown(tenant.handle())
            ));
        }
    }
}

/// For a name that selects no company: the error to give instead when it
/// names a company still being created, kept in tenantctl's claims (see
/// [`crate::claims`]) and not yet in the companies table.
async fn claimed(
    conn: &mut PgConnection,
    layout: &Layout,
    names: &[String],
) -> Option<anyhow::Error> {
    for key in names {
        let Ok(Some(claim)) = crate::claims::find(conn, Some(key), Some(key)).await else {
            continue;
        };
        return Some(
            crate::error::UsageError(format!(
                "tenant {} is not created yet (status {}{}; not in the master's {} until its database is ready): run `tenantctl tenant create {}` again to finish it, or `tenantctl tenant drop --unfinished {}` to give up",
                claim.slug,
                claim.lifecycle,
                claim
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {}", crate::output::shown(e)))
                    .unwrap_or_default(),
                layout.label,
                claim.slug,
                claim.slug
            ))
            .into(),
        );
    }
    None
}
