//! Turning `<slug|id>...`, `--all`, `--status`, `--server` and `--shard`
//! into the list of tenants a command acts on, with one read of the master.

use std::str::FromStr;

use sqlx::postgres::PgConnection;

use crate::companies::Layout;
use crate::error::UsageError;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, Tenant, find_tenant, unknown_tenant};

/// Part `index` of `count` of the selected tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{raw:?} is not a shard: use I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = raw.split_once('/').ok_or_else(usage)?;
        let index: u32 = i.trim().parse().map_err(|_| usage())?;
        let count: u32 = n.trim().parse().map_err(|_| usage())?;
        if count == 0 || index >= count {
            return Err(usage());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether the tenant with this id falls in this shard. FNV-1a is fixed
    /// by its definition, so the split never changes between runs,
    /// machines or versions of this tool.
    pub fn contains(self, id: &str) -> bool {
        fnv1a(id) % u64::from(self.count) == u64::from(self.index)
    }
}

/// 64-bit FNV-1a of the id's bytes.
fn fnv1a(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Which tenants a command acts on, besides the ones named explicitly.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Every tenant (in the given lifecycle states, else `active`).
    pub all: bool,
    /// Only tenants in one of these states; on its own, every such tenant.
    pub lifecycles: Vec<Lifecycle>,
    /// Only this shard of an `all`/`lifecycles` selection.
    pub shard: Option<Shard>,
    /// Only tenants placed on one of these servers (any, when empty).
    pub servers: Vec<ServerName>,
}

impl Filter {
    /// Whether the tenant is in one of the lifecycle states asked for. A
    /// tenant being moved is an active one: it is selected, and the fleet
    /// run reports it skipped and why, rather than leave it out unsaid.
    fn wants(lifecycles: &[Lifecycle], tenant: &Tenant) -> bool {
        lifecycles.iter().any(|s| {
            tenant.has_status(*s)
                || (*s == Lifecycle::Active && tenant.has_status(Lifecycle::Moving))
        })
    }

    fn on_servers(&self, tenant: &Tenant) -> bool {
        self.servers.is_empty()
            || tenant
                .server
                .as_ref()
                .is_ok_and(|server| self.servers.contains(server))
    }
}

/// Reads the master once and returns the selected tenants: with `--all`
/// ordered by slug, otherwise in the order named.
///
/// A shard splits only a selection the master decides (`--all`,
/// `--status`): tenants named explicitly are always the ones acted on, so a
/// `TENANTCTL_SHARD` left in a pod's environment cannot silently drop them.
///
/// `--server` narrows either kind of selection; it must name a configured
/// server (`configured`) or one some company is placed on.
pub async fn resolve(
    master_conn: &mut PgConnection,
    layout: &Layout,
    names: &[String],
    filter: &Filter,
    configured: &[ServerName],
) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = resolve_unplaced(master_conn, layout, names, filter).await?;
    if !filter.servers.is_empty() {
        let everyone = layout.list(master_conn).await?;
        for server in &filter.servers {
            let known = configured.contains(server)
                || everyone.iter().any(|t| t.server.as_ref() == Ok(server));
            if !known {
                let names: Vec<&str> = configured.iter().map(ServerName::as_str).collect();
                return Err(UsageError(format!(
                    "--server {server}: no such server is configured and no company is placed on it (configured: {})",
                    names.join(", ")
                ))
                .into());
            }
        }
        tenants.retain(|t| filter.on_servers(t));
    }
    Ok(tenants)
}

async fn resolve_unplaced(
    master_conn: &mut PgConnection,
    layout: &Layout,
    names: &[String],
    filter: &Filter,
) -> anyhow::Result<Vec<Tenant>> {
    if !names.is_empty() {
        if filter.all {
            return Err(UsageError(format!(
                "name tenants or pass --all, not both (got {})",
                names.join(" ")
            ))
            .into());
        }
        return by_name(master_conn, layout, names, &filter.lifecycles).await;
    }
    if !filter.all && filter.lifecycles.is_empty() {
        return Err(UsageError(
            "name one or more tenants (slug or id), or pass --all or --status".into(),
        )
        .into());
    }
    // What the master hides from us is not absent: a fleet run over the
    // rows we can see would report a complete deploy that missed some.
    if let Some(refusal) = layout
        .visibility
        .hiding(&layout.label, "to select the whole fleet (--all, --status)")
    {
        return Err(refusal.into());
    }
    let lifecycles = if filter.lifecycles.is_empty() {
        &[Lifecycle::Active][..]
    } else {
        &filter.lifecycles
    };
    let everyone = layout.list(master_conn).await?;
    let mut tenants: Vec<Tenant> = everyone
        .iter()
        .filter(|t| Filter::wants(lifecycles, t))
        .cloned()
        .collect();
    // Only `--all` (which means "active") matching nobody is a mistake to
    // report; `--status failed` finding nothing is good news.
    if tenants.is_empty() && !everyone.is_empty() && filter.lifecycles.is_empty() {
        return Err(nobody_selected(&everyone, lifecycles).into());
    }
    if let Some(shard) = filter.shard {
        tenants.retain(|t| shard.contains(&t.id));
    }
    Ok(tenants)
}

/// A selection that matches none of the companies there are is a mistake
/// to report (an ORM's statuses spelled otherwise, a typo), never a run
/// that "succeeds" by doing nothing.
fn nobody_selected(everyone: &[Tenant], lifecycles: &[Lifecycle]) -> UsageError {
    let mut found: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for t in everyone {
        *found.entry(t.status_label()).or_default() += 1;
    }
    let found: Vec<String> = found
        .into_iter()
        .map(|(status, n)| format!("{} ({n})", crate::output::shown(status)))
        .collect();
    let wanted: Vec<&str> = lifecycles.iter().map(|l| l.as_str()).collect();
    UsageError(format!(
        "no tenant has status {}: the master's {} companies have status {}; pick others with --status, or map the master's values in tenantctl.toml",
        wanted.join(" or "),
        everyone.len(),
        found.join(", ")
    ))
}

/// The named tenants, each found by slug first, then id, then database.
async fn by_name(
    master_conn: &mut PgConnection,
    layout: &Layout,
    names: &[String],
    lifecycles: &[Lifecycle],
) -> anyhow::Result<Vec<Tenant>> {
    let everyone = layout.list(master_conn).await?;
    let mut picked: Vec<Tenant> = Vec::with_capacity(names.len());
    for key in names {
        let found = find_tenant(&everyone, key).ok_or_else(|| {
            let err = unknown_tenant(key);
            // Named tenants still run under row-level security (each is
            // found, or this error says it is not): say it may be hidden.
            match layout.visibility.row_security.first() {
                Some(rls) => err.context(format!(
                    "row-level security on {} may hide it from role {}",
                    crate::output::shown(&rls.table),
                    crate::output::shown(&rls.role)
                )),
                None => err,
            }
        })?;
        if !picked.iter().any(|t| t.id == found.id) {
            picked.push(found.clone());
        }
    }
    if !lifecycles.is_empty() {
        picked.retain(|t| Filter::wants(lifecycles, t));
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shards() {
        assert_eq!("1/4".parse(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "1", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    /// FNV-1a's published test vectors, and a split of fixed ids pinned, so
    /// a wrong or constant hash cannot pass.
    #[test]
    fn shard_hash_is_fnv1a() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
        let in_first: Vec<&str> = ["1", "2", "3", "4", "5", "6", "7", "8"]
            .into_iter()
            .filter(|id| Shard { index: 0, count: 2 }.contains(id))
            .collect();
        assert_eq!(in_first, ["1", "3", "5", "7"]);
    }

    #[test]
    fn every_id_is_in_exactly_one_shard() {
        for count in 1..=7 {
            for n in 0..500 {
                let id = format!("id-{n}");
                let hits = (0..count)
                    .filter(|&index| Shard { index, count }.contains(&id))
                    .count();
                assert_eq!(hits, 1, "{id} in {hits} of {count} shards");
            }
        }
    }
}
