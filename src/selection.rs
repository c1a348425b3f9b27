//! Turning `<slug|id>...`, `--all`, `--status` and `--shard` into the list of
//! tenants a command acts on, with one read of the master.

use std::str::FromStr;

use sqlx::postgres::PgConnection;

use crate::cli::FilterArgs;
use crate::error::UsageError;
use crate::master;
use crate::tenant::{Tenant, TenantStatus};

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
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

/// Reads the master once and returns the selected tenants: with `--all`
/// ordered by slug, otherwise in the order named.
pub async fn resolve(
    master_conn: &mut PgConnection,
    names: &[String],
    args: &FilterArgs,
) -> anyhow::Result<Vec<Tenant>> {
    let statuses = if args.status.is_empty() {
        None
    } else {
        Some(args.status.as_slice())
    };
    let mut tenants = if args.all {
        let statuses = statuses.unwrap_or(&[TenantStatus::Active]);
        master::list(master_conn, Some(statuses)).await?
    } else if names.is_empty() {
        return Err(
            UsageError("name one or more tenants (slug or id), or pass --all".into()).into(),
        );
    } else {
        let everyone = master::list(master_conn, None).await?;
        let mut picked: Vec<Tenant> = Vec::with_capacity(names.len());
        for key in names {
            let found = everyone
                .iter()
                .find(|t| &t.slug == key)
                .or_else(|| everyone.iter().find(|t| &t.id == key))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown tenant {key:?}: no company has that slug or id (see `tenantctl tenant list`)"
                    )
                })?;
            if !picked.iter().any(|t| t.id == found.id) {
                picked.push(found.clone());
            }
        }
        if let Some(statuses) = statuses {
            picked.retain(|t| statuses.iter().any(|s| t.has_status(*s)));
        }
        picked
    };
    if let Some(shard) = args.shard {
        tenants.retain(|t| shard.contains(&t.id));
    }
    Ok(tenants)
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
