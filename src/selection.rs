//! Turning `<slug|id>...`, `--all`, `--status`, `--server` and `--shard`
//! into the list of tenants a command acts on, with one read of the master.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;

use crate::companies::Layout;
use crate::error::UsageError;
use crate::servers::ServerName;
use crate::tenant::{Lifecycle, StatusWanted, Tenant, find_tenant, mark_shared, unknown_tenant};

/// Part `index` of `count` of the selected tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.trim() == "auto" {
            return Self::from_ci(|name| std::env::var(name).ok());
        }
        let usage = || {
            format!(
                "{raw:?} is not a shard: use I/N with 0 <= I < N, e.g. 0/4, or auto in a CI job"
            )
        };
        let (i, n) = raw.split_once('/').ok_or_else(usage)?;
        let index: u32 = i.trim().parse().map_err(|_| usage())?;
        let count: u32 = n.trim().parse().map_err(|_| usage())?;
        if count == 0 || index >= count {
            return Err(usage());
        }
        Ok(Self { index, count })
    }
}

/// The variables CI systems set in each job of a parallel set: index,
/// count, and whether the index counts from 1.
const CI_PARALLEL: [(&str, &str, bool); 4] = [
    // GitLab's `parallel: N`.
    ("CI_NODE_INDEX", "CI_NODE_TOTAL", true),
    // Buildkite's `parallelism: N`.
    (
        "BUILDKITE_PARALLEL_JOB",
        "BUILDKITE_PARALLEL_JOB_COUNT",
        false,
    ),
    // CircleCI's `parallelism: N`.
    ("CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", false),
    // Azure Pipelines' `strategy: parallel: N`.
    ("SYSTEM_JOBPOSITIONINPHASE", "SYSTEM_TOTALJOBSINPHASE", true),
];

impl Shard {
    /// `--shard auto`: this job's part of a parallel CI job, from the
    /// variables the CI system sets in each of them, so a pipeline need
    /// not do the arithmetic (GitLab counts from 1, `--shard` from 0).
    pub fn from_ci(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        for (index_var, count_var, from_one) in CI_PARALLEL {
            let (Some(index), Some(count)) = (var(index_var), var(count_var)) else {
                continue;
            };
            let bad = || {
                format!(
                    "--shard auto: {index_var}={index:?} and {count_var}={count:?} are not a job's place in a parallel set"
                )
            };
            let index: u32 = index.trim().parse().map_err(|_| bad())?;
            let count: u32 = count.trim().parse().map_err(|_| bad())?;
            let index = if from_one {
                index.checked_sub(1).ok_or_else(bad)?
            } else {
                index
            };
            if count == 0 || index >= count {
                return Err(bad());
            }
            return Ok(Self { index, count });
        }
        Err(format!(
            "--shard auto found no parallel job: none of {} is set; pass --shard I/N instead (GitHub Actions: a matrix value)",
            CI_PARALLEL
                .iter()
                .map(|(i, n, _)| format!("{i}/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

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
    /// Only tenants with one of these statuses (tenantctl's states or the
    /// application's values); on its own, every such tenant.
    pub lifecycles: Vec<StatusWanted>,
    /// Only this shard of an `all`/`lifecycles` selection.
    pub shard: Option<Shard>,
    /// Only tenants placed on one of these servers (any, when empty).
    pub servers: Vec<ServerName>,
    /// `--failed-in`, read from the run records: like `all`, but only
    /// these companies.
    pub failed_in: Option<NotOk>,
}

/// What `--failed-in` read from the run records: the companies whose
/// result there is not ok.
#[derive(Debug, Clone, Default)]
pub struct NotOk {
    /// `run 12` or `label "deploy-41"`.
    pub source: String,
    /// Their company ids.
    pub ids: Vec<String>,
}

/// How a `--failed-in` selection came about, as a report states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedInStated {
    /// `run 12` or `label "deploy-41"`.
    pub source: String,
    /// Companies whose result there is not ok.
    pub not_ok: usize,
    /// Of those, how many are no longer in the master (never selected).
    pub gone: usize,
}

impl Filter {
    /// Whether the tenant is in one of the lifecycle states asked for. A
    /// tenant being moved is an active one: it is selected, and the fleet
    /// run reports it skipped and why, rather than leave it out unsaid.
    fn wants(lifecycles: &[StatusWanted], tenant: &Tenant) -> bool {
        lifecycles.iter().any(|s| s.matches(tenant))
    }

    fn on_servers(&self, tenant: &Tenant) -> bool {
        self.servers.is_empty()
            || tenant
                .server
                .as_ref()
                .is_ok_and(|server| self.servers.contains(server))
    }
}

/// Where a value that shaped a selection came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// Given on the command line.
    CommandLine,
    /// Not given: tenantctl's default.
    Default,
    /// This variable, in the process's own environment.
    Environment { variable: String },
    /// This variable, set by this `.env` file (the working directory's or
    /// a parent's).
    EnvFile { variable: String, file: String },
}

impl Source {
    /// `flag` when it was given as one, else where the value was found.
    fn describe(&self, flag: &str, value: &str) -> String {
        match self {
            Self::CommandLine => format!("{flag} {value}"),
            Self::Default => format!("{value} (by default)"),
            Self::Environment { variable } => {
                format!("{value} (from {variable} in the environment)")
            }
            Self::EnvFile { variable, file } => {
                format!("{value} (from {variable} in {})", crate::text::shown(file))
            }
        }
    }
}

/// What a fleet run selected and what selected it, stated by every fleet
/// report and run record: a deploy narrowed by a setting the operator did
/// not see (a shard from a `.env` in a parent directory) must not pass for
/// the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Rows in the master's companies table, in every status.
    pub companies: usize,
    /// Tenants selected.
    pub selected: usize,
    /// `--all` was given.
    pub all: bool,
    /// Tenants named on the command line, as named.
    pub tenants: Vec<String>,
    /// Only tenants with these statuses (none: any, for named tenants).
    pub statuses: Vec<String>,
    /// Only tenants on these servers (none: any).
    pub servers: Vec<String>,
    /// The shard `I/N` applied, if any (never to named tenants).
    pub shard: Option<String>,
    /// `revert --run ID`: the tenants that run changed.
    #[serde(default)]
    pub run: Option<i64>,
    /// `--failed-in`: where the tenants not ok came from, and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<FailedInStated>,
    /// `revert --label L`: the label whose runs are taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Where each criterion in use came from, by name (`all`, `tenants`,
    /// `statuses`, `servers`, `shard`, `run`, `failed_in`, `label`).
    pub from: BTreeMap<String, Source>,
    /// The companies table, when it is not the seed's own: a table or a
    /// view `tenantctl.toml` names can itself narrow the fleet (a view
    /// that leaves companies out), so the report says which it is and
    /// where that came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl Selection {
    /// The selection `names` and `filter` made: `companies` rows in the
    /// master, `selected` of them picked. `shard_from` says where the
    /// filter's shard came from.
    pub fn of(
        names: &[String],
        filter: &Filter,
        shard_from: Option<Source>,
        companies: usize,
        selected: usize,
    ) -> Self {
        let mut from = BTreeMap::new();
        if filter.all {
            from.insert("all".to_owned(), Source::CommandLine);
        }
        if !names.is_empty() {
            from.insert("tenants".to_owned(), Source::CommandLine);
        }
        let statuses: Vec<String> = if !filter.lifecycles.is_empty() {
            from.insert("statuses".to_owned(), Source::CommandLine);
            filter
                .lifecycles
                .iter()
                .map(|l| l.as_str().to_owned())
                .collect()
        } else if names.is_empty() {
            // --all and --failed-in select active tenants by default.
            from.insert("statuses".to_owned(), Source::Default);
            vec![Lifecycle::Active.as_str().to_owned()]
        } else {
            Vec::new()
        };
        if !filter.servers.is_empty() {
            from.insert("servers".to_owned(), Source::CommandLine);
        }
        // As in `resolve`: a shard splits only what the master decides.
        let shard = filter.shard.filter(|_| names.is_empty());
        if shard.is_some() {
            from.insert(
                "shard".to_owned(),
                shard_from.unwrap_or(Source::CommandLine),
            );
        }
        Self {
            companies,
            selected,
            all: filter.all,
            tenants: names.to_vec(),
            statuses,
            servers: filter
                .servers
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            shard: shard.map(|s| format!("{}/{}", s.index, s.count)),
            run: None,
            failed_in: filter.failed_in.as_ref().map(|n| {
                from.insert("failed_in".to_owned(), Source::CommandLine);
                FailedInStated {
                    source: n.source.clone(),
                    not_ok: n.ids.len(),
                    gone: 0,
                }
            }),
            label: None,
            from,
            table: None,
        }
    }

    /// The selection of `revert --run ID`: the tenants that run recorded
    /// as changed, `selected` of them still in the master.
    pub fn of_run(id: i64, companies: usize, selected: usize) -> Self {
        Self {
            companies,
            selected,
            all: false,
            tenants: Vec::new(),
            statuses: Vec::new(),
            servers: Vec::new(),
            shard: None,
            run: Some(id),
            failed_in: None,
            label: None,
            from: BTreeMap::from([("run".to_owned(), Source::CommandLine)]),
            table: None,
        }
    }

    /// The selection of `revert --label L`: the tenants its migrate runs
    /// changed, `selected` of them still in the master.
    pub fn of_label(label: &str, companies: usize, selected: usize) -> Self {
        Self {
            run: None,
            label: Some(label.to_owned()),
            from: BTreeMap::from([("label".to_owned(), Source::CommandLine)]),
            ..Self::of_run(0, companies, selected)
        }
    }

    /// One line for the end of a table report: `selected 32 of the
    /// master's 120 companies: --all, status active (by default), shard 1/4
    /// (from TENANTCTL_SHARD in /srv/.env)`.
    pub fn describe(&self) -> String {
        let source = |key: &str| self.from.get(key).cloned().unwrap_or(Source::CommandLine);
        let mut parts: Vec<String> = Vec::new();
        if self.all {
            parts.push("--all".to_owned());
        }
        if !self.tenants.is_empty() {
            const SHOWN: usize = 5;
            let mut named: Vec<String> = self
                .tenants
                .iter()
                .take(SHOWN)
                .map(|t| crate::text::shown(t))
                .collect();
            if self.tenants.len() > SHOWN {
                named.push(format!("and {} more", self.tenants.len() - SHOWN));
            }
            parts.push(format!("named {}", named.join(", ")));
        }
        if !self.statuses.is_empty() {
            let statuses = self.statuses.join(", ");
            parts.push(match source("statuses") {
                Source::CommandLine => format!("--status {statuses}"),
                other => other.describe("--status", &format!("status {statuses}")),
            });
        }
        if !self.servers.is_empty() {
            parts.push(format!("--server {}", self.servers.join(", ")));
        }
        if let Some(id) = self.run {
            parts.push(format!("--run {id} (the tenants it changed)"));
        }
        if let Some(label) = &self.label {
            parts.push(format!(
                "--label {:?} (the tenants its migrate runs changed)",
                crate::text::shown(label)
            ));
        }
        if let Some(failed) = &self.failed_in {
            let mut about = format!(
                "--failed-in {}: {} tenant(s) not ok there",
                crate::text::shown(&failed.source),
                failed.not_ok
            );
            if failed.gone > 0 {
                let _ = write!(
                    about,
                    ", {} of them no longer in the master (not selected)",
                    failed.gone
                );
            }
            parts.push(about);
        }
        if let Some(shard) = &self.shard {
            parts.push(match source("shard") {
                Source::CommandLine => format!("--shard {shard}"),
                other => other.describe("--shard", &format!("shard {shard}")),
            });
        }
        let mut text = format!(
            "selected {} of the master's {} companies",
            self.selected, self.companies
        );
        if let Some(table) = &self.table {
            let _ = write!(text, " in {}", crate::text::shown(table));
        }
        if !parts.is_empty() {
            let _ = write!(text, ": {}", parts.join(", "));
        }
        text
    }
}

/// The selected tenants and how many companies the master holds.
pub struct Selected {
    pub tenants: Vec<Tenant>,
    /// Rows in the companies table, in every status.
    pub companies: usize,
    /// With `--failed-in`: the companies not ok there that the master no
    /// longer has.
    pub gone: usize,
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
///
/// A database that several companies' rows name (on one server, as
/// `same_place` tells) is marked on each of them ([`mark_shared`]).
pub async fn resolve(
    master_conn: &mut PgConnection,
    layout: &Layout,
    names: &[String],
    filter: &Filter,
    configured: &[ServerName],
    same_place: impl Fn(&Tenant, &Tenant) -> bool,
) -> anyhow::Result<Selected> {
    let everyone = layout.list(master_conn).await?;
    let companies = everyone.len();
    let mut tenants = resolve_unplaced(&everyone, layout, names, filter)?;
    // Marked before the shard splits the selection: every shard then agrees
    // which of the rows sharing a database works on it, and only that
    // one's shard does.
    mark_shared(&everyone, &mut tenants, same_place);
    if let Some(not_ok) = &filter.failed_in {
        tenants.retain(|t| not_ok.ids.contains(&t.id));
    }
    if names.is_empty()
        && let Some(shard) = filter.shard
    {
        tenants.retain(|t| shard.contains(&t.id));
    }
    if !filter.servers.is_empty() {
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
    let gone = filter.failed_in.as_ref().map_or(0, |not_ok| {
        not_ok
            .ids
            .iter()
            .filter(|id| !everyone.iter().any(|t| &&t.id == id))
            .count()
    });
    Ok(Selected {
        tenants,
        companies,
        gone,
    })
}

fn resolve_unplaced(
    everyone: &[Tenant],
    layout: &Layout,
    names: &[String],
    filter: &Filter,
) -> anyhow::Result<Vec<Tenant>> {
    if !names.is_empty() {
        if filter.all || filter.failed_in.is_some() {
            return Err(UsageError(format!(
                "name tenants or pass {}, not both (got {})",
                if filter.all { "--all" } else { "--failed-in" },
                names.join(" ")
            ))
            .into());
        }
        check_statuses(&filter.lifecycles, layout, everyone)?;
        return by_name(everyone, layout, names, &filter.lifecycles);
    }
    if !filter.all && filter.lifecycles.is_empty() && filter.failed_in.is_none() {
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
    check_statuses(&filter.lifecycles, layout, everyone)?;
    let active = [StatusWanted::Lifecycle(Lifecycle::Active)];
    let lifecycles = if filter.lifecycles.is_empty() {
        &active[..]
    } else {
        &filter.lifecycles
    };
    let tenants: Vec<Tenant> = everyone
        .iter()
        .filter(|t| Filter::wants(lifecycles, t))
        .cloned()
        .collect();
    // Only `--all` (which means "active") matching nobody is a mistake to
    // report; `--status failed` finding nothing is good news.
    if tenants.is_empty()
        && !everyone.is_empty()
        && filter.lifecycles.is_empty()
        && filter.failed_in.is_none()
    {
        return Err(nobody_selected(everyone, lifecycles).into());
    }
    Ok(tenants)
}

/// A selection that matches none of the companies there are is a mistake
/// to report (an ORM's statuses spelled otherwise, a typo), never a run
/// that "succeeds" by doing nothing.
fn nobody_selected(everyone: &[Tenant], lifecycles: &[StatusWanted]) -> UsageError {
    let mut found: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for t in everyone {
        *found.entry(t.status_label()).or_default() += 1;
    }
    let found: Vec<String> = found
        .into_iter()
        .map(|(status, n)| format!("{} ({n})", crate::text::shown(status)))
        .collect();
    let wanted: Vec<&str> = lifecycles.iter().map(StatusWanted::as_str).collect();
    UsageError(format!(
        "no tenant has status {}: the master's {} companies have status {}; pick others with --status, or map the master's values in tenantctl.toml",
        wanted.join(" or "),
        everyone.len(),
        found.join(", ")
    ))
}

/// Refuses a `--status` value that is neither one of tenantctl's states
/// nor a value the master's status column has (an enum label, or a value
/// some row holds), listing the ones there are: a typo must not select
/// nobody and pass for a fleet with nothing to do.
pub fn check_statuses(
    wanted: &[StatusWanted],
    layout: &Layout,
    everyone: &[Tenant],
) -> Result<(), UsageError> {
    for want in wanted {
        let StatusWanted::App(value) = want else {
            continue;
        };
        let mut known: Vec<String> = layout
            .status
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        for t in everyone {
            if let Some(v) = &t.app_status
                && !known.contains(v)
            {
                known.push(v.clone());
            }
        }
        if known.iter().any(|k| k.eq_ignore_ascii_case(value)) {
            continue;
        }
        let ours = "provisioning, active, failed, dropped, moving";
        return Err(UsageError(if layout.status.is_none() {
            format!(
                "--status {}: not a tenantctl status ({ours}), and {} has no status column of its own",
                crate::text::shown(value),
                crate::text::shown(&layout.label)
            )
        } else {
            known.sort();
            format!(
                "--status {}: not a tenantctl status ({ours}) nor a value of {}'s status column ({})",
                crate::text::shown(value),
                crate::text::shown(&layout.label),
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known
                        .iter()
                        .map(|k| crate::text::shown(k))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        }));
    }
    Ok(())
}

/// The named tenants, each found as [`find_tenant`] finds one.
fn by_name(
    everyone: &[Tenant],
    layout: &Layout,
    names: &[String],
    lifecycles: &[StatusWanted],
) -> anyhow::Result<Vec<Tenant>> {
    let mut picked: Vec<Tenant> = Vec::with_capacity(names.len());
    for key in names {
        let found = find_tenant(everyone, key)?.ok_or_else(|| {
            let err = unknown_tenant(key);
            // Named tenants still run under row-level security (each is
            // found, or this error says it is not): say it may be hidden.
            match layout.visibility.row_security.first() {
                Some(rls) => err.context(format!(
                    "row-level security on {} may hide it from role {}",
                    crate::text::shown(&rls.table),
                    crate::text::shown(&rls.role)
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
    fn shard_auto_reads_each_ci_systems_parallel_job() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            Shard::from_ci(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let shard = |index, count| Ok(Shard { index, count });
        assert_eq!(
            from(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "4")]),
            shard(0, 4)
        );
        assert_eq!(
            from(&[("CI_NODE_INDEX", "4"), ("CI_NODE_TOTAL", "4")]),
            shard(3, 4)
        );
        assert_eq!(
            from(&[
                ("BUILDKITE_PARALLEL_JOB", "0"),
                ("BUILDKITE_PARALLEL_JOB_COUNT", "3")
            ]),
            shard(0, 3)
        );
        assert_eq!(
            from(&[("CIRCLE_NODE_INDEX", "2"), ("CIRCLE_NODE_TOTAL", "3")]),
            shard(2, 3)
        );
        assert_eq!(
            from(&[
                ("SYSTEM_JOBPOSITIONINPHASE", "2"),
                ("SYSTEM_TOTALJOBSINPHASE", "2")
            ]),
            shard(1, 2)
        );
        for bad in [
            &[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "4")][..],
            &[("CI_NODE_INDEX", "5"), ("CI_NODE_TOTAL", "4")],
            &[("CIRCLE_NODE_INDEX", "x"), ("CIRCLE_NODE_TOTAL", "3")],
            &[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "0")],
            &[("CI_NODE_INDEX", "1")],
            &[],
        ] {
            assert!(from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_selection_says_what_chose_it() {
        let shard = Some(Shard { index: 1, count: 4 });
        let from_file = Source::EnvFile {
            variable: "TENANTCTL_SHARD".into(),
            file: "/srv/.env".into(),
        };
        let all = Filter {
            all: true,
            shard,
            ..Filter::default()
        };
        let selection = Selection::of(&[], &all, Some(from_file.clone()), 120, 32);
        assert_eq!(
            selection.describe(),
            "selected 32 of the master's 120 companies: --all, status active (by default), shard 1/4 (from TENANTCTL_SHARD in /srv/.env)"
        );
        assert_eq!(selection.from.get("shard"), Some(&from_file));
        // Named tenants are never sharded, so no shard is claimed; a long
        // list is cut short.
        let slugs: Vec<String> = (1..=7).map(|n| format!("t{n}")).collect();
        let named = Selection::of(&slugs, &all, Some(from_file), 120, 7);
        assert_eq!(named.shard, None);
        assert!(!named.from.contains_key("shard"));
        assert_eq!(
            named.describe(),
            "selected 7 of the master's 120 companies: --all, named t1, t2, t3, t4, t5, and 2 more"
        );
        let env = Selection::of(
            &[],
            &Filter {
                lifecycles: vec![StatusWanted::Lifecycle(Lifecycle::Failed)],
                shard,
                ..Filter::default()
            },
            Some(Source::Environment {
                variable: "TENANTCTL_SHARD".into(),
            }),
            9,
            2,
        );
        assert_eq!(
            env.describe(),
            "selected 2 of the master's 9 companies: --status failed, shard 1/4 (from TENANTCTL_SHARD in the environment)"
        );
        assert_eq!(
            Selection::of_run(42, 9, 3).describe(),
            "selected 3 of the master's 9 companies: --run 42 (the tenants it changed)"
        );
    }

    #[test]
    fn a_failed_in_selection_says_where_from_and_what_is_gone() {
        let filter = Filter {
            failed_in: Some(NotOk {
                source: "label \"ci-41\"".into(),
                ids: vec!["1".into(), "2".into(), "3".into()],
            }),
            ..Filter::default()
        };
        let mut selection = Selection::of(&[], &filter, None, 9, 2);
        if let Some(failed) = &mut selection.failed_in {
            failed.gone = 1;
        }
        assert_eq!(
            selection.describe(),
            "selected 2 of the master's 9 companies: status active (by default), --failed-in label \"ci-41\": 3 tenant(s) not ok there, 1 of them no longer in the master (not selected)"
        );
        assert_eq!(selection.from.get("failed_in"), Some(&Source::CommandLine));
        // Read back from a run record written before the field existed.
        let mut old = serde_json::to_value(Selection::of_run(4, 9, 2)).expect("json");
        old.as_object_mut().expect("object").remove("failed_in");
        let old: Selection = serde_json::from_value(old).expect("old selection");
        assert_eq!(old.failed_in, None);
    }

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
