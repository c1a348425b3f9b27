//! Runs that have not recorded their end, as `tenant revert` meets them.
//!
//! A run renews a sign of life in its record while it lives
//! ([`runs::HEARTBEAT`]); a run killed outright stops renewing it. So a
//! revert can tell the two apart by waiting: a record renewed while the
//! revert watches belongs to a live run, which would go on changing
//! tenants after the revert and leave the fleet half taken back, so the
//! revert is refused; a record silent for [`runs::SILENCE_LIMIT`] belongs
//! to a killed run, whose record the revert ends (`interrupted`) before
//! taking back what it recorded. A CI rollback job started right after a
//! shard's job was killed thus waits at most that long, and no one has to
//! find the killed shard's run id.

use std::time::Duration;

use crate::commands::context::Context;
use crate::error::{Interrupted, UsageError};
use crate::runs::{self, Label, SILENCE_LIMIT, Unfinished};

/// How often the wait reads the records again.
const POLL: Duration = Duration::from_millis(500);

/// What a revert is taking back: one run, or a label's runs.
#[derive(Clone, Copy)]
pub enum Taking<'a> {
    Run,
    Label(&'a Label),
}

/// Runs a revert took for killed, whose records it ends only once it goes
/// ahead ([`Killed::end`], after its plan and its confirmation): a revert
/// that is refused, declined or interrupted changes nothing, and a run
/// that was only paused is not stopped for a revert that never happened.
#[derive(Default)]
pub struct Killed {
    label: Option<Label>,
    runs: Vec<Unfinished>,
}

/// Settles the runs among `running` (ids of records that had not recorded
/// their end when the revert read them): returns once each is known to be
/// killed (their records still to be ended, see [`Killed`]), or refuses
/// while one is alive. A run recorded by a tenantctl that gave no sign of
/// life cannot be told from a killed one: under a label it refuses the
/// revert, and `--run`, which names that one run, takes it back with a
/// warning.
pub async fn settle(
    ctx: &Context,
    taking: Taking<'_>,
    running: &[i64],
    dry_run: bool,
) -> anyhow::Result<Killed> {
    if running.is_empty() {
        return Ok(Killed::default());
    }
    let first = read(ctx, running).await?;
    if let Some(old) = first.iter().find(|u| u.alive_at.is_none()) {
        return unknown(taking, old.id).map(|()| Killed::default());
    }
    // Up to 30 s of waiting: an interrupt meanwhile ends the revert with
    // its report (exit 130), like one anywhere else, not the process.
    let stop = ctx.interruptible().clone();
    let mut told = false;
    loop {
        if stop.is_set() {
            return Err(Interrupted(format!(
                "interrupted while waiting to tell whether run {} is still running or was killed; nothing was changed",
                ids(&first)
            ))
            .into());
        }
        let now = read(ctx, running).await?;
        refuse_if_alive(taking, &first, &now)?;
        let quietest = now.iter().filter_map(|u| u.silent).min();
        match quietest {
            Some(silent) if silent < SILENCE_LIMIT => {
                let left = SILENCE_LIMIT.saturating_sub(silent);
                if !told {
                    told = true;
                    crate::output::warn(format_args!(
                        "run {} has not recorded its end and gave its last sign of life {}s ago: waiting up to {}s more to tell whether it is still running or was killed",
                        ids(&now),
                        silent.as_secs(),
                        left.as_secs() + 1
                    ));
                }
                tokio::time::sleep(POLL.min(left)).await;
            }
            _ => return Ok(killed(taking, now, dry_run)),
        }
    }
}

/// The records of `ids` that still have not recorded their end.
async fn read(ctx: &Context, ids: &[i64]) -> anyhow::Result<Vec<Unfinished>> {
    let ids = ids.to_vec();
    ctx.runner
        .with_master(|conn, layout, _| {
            Box::pin(async move { runs::unfinished(conn, &layout, &ids).await })
        })
        .await
}

/// Refuses the revert if a record was renewed, or ended, since `first`:
/// its run was alive while the revert watched.
fn refuse_if_alive(
    taking: Taking<'_>,
    first: &[Unfinished],
    now: &[Unfinished],
) -> anyhow::Result<()> {
    for before in first {
        let after = now.iter().find(|u| u.id == before.id);
        let why = match after {
            None => "its record was ended while this revert watched it (the run ended, or another revert took it for killed first)".to_owned(),
            Some(after) if after.alive_at != before.alive_at => format!(
                "it is still running (its record was renewed {}s ago)",
                after.silent.unwrap_or_default().as_secs()
            ),
            Some(_) => continue,
        };
        return Err(UsageError(format!(
            "run {}{} had not recorded its end: {why}; what it recorded may have changed, so wait for it to end (`tenantctl tenant runs {}` shows it), then run this again (nothing was changed)",
            before.id,
            under(taking),
            before.id
        ))
        .into());
    }
    Ok(())
}

/// Says that runs silent for [`SILENCE_LIMIT`] are taken for killed, and
/// keeps them for [`Killed::end`] (never called on a dry run).
fn killed(taking: Taking<'_>, runs: Vec<Unfinished>, dry_run: bool) -> Killed {
    let silent = runs
        .iter()
        .filter_map(|u| u.silent)
        .min()
        .unwrap_or_default()
        .as_secs();
    let ended = if dry_run {
        "the revert would end its record as interrupted"
    } else {
        "its record is ended as interrupted once this revert goes ahead"
    };
    crate::output::warn(format_args!(
        "warning: run {} has given no sign of life for {silent}s: taken for killed ({ended}); only the tenants it recorded as changed are taken back (one it was changing when it died is not)",
        ids(&runs)
    ));
    Killed {
        label: match taking {
            Taking::Run => None,
            Taking::Label(label) => Some(label.clone()),
        },
        runs,
    }
}

impl Killed {
    /// Whether run `id` is among them.
    pub fn has(&self, id: i64) -> bool {
        self.runs.iter().any(|u| u.id == id)
    }

    /// Adds the runs another wait took for killed.
    pub fn absorb(&mut self, other: Self) {
        if self.label.is_none() {
            self.label = other.label;
        }
        self.runs.extend(other.runs);
    }

    /// Ends the records of the runs taken for killed, as `interrupted`, in
    /// one statement that checks each is still as the revert saw it:
    /// silent, and not renewed since (a paused run that resumed meanwhile
    /// refuses the revert, nothing changed).
    pub async fn end(&self, ctx: &Context) -> anyhow::Result<()> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let seen: Vec<_> = self
            .runs
            .iter()
            .filter_map(|u| Some((u.id, u.alive_at?)))
            .collect();
        let asked = seen.clone();
        let ended = ctx
            .runner
            .with_master(|conn, layout, _| {
                Box::pin(async move { runs::take_over(conn, &layout, &asked).await })
            })
            .await?;
        let taking = self.label.as_ref().map_or(Taking::Run, Taking::Label);
        if let Some((back, _)) = seen.iter().find(|(id, _)| !ended.contains(id)) {
            // Renewed since, ended by the run, or by another revert first.
            return Err(UsageError(format!(
                "run {back}{} changed since this revert took it for killed: it gave a sign of life (still running), or its record was ended meanwhile (by the run, or another revert first); run this again to see which (nothing was reverted)",
                under(taking)
            ))
            .into());
        }
        crate::output::warn(format_args!(
            "warning: run {} taken for killed: its record is now ended as interrupted",
            ids(&self.runs)
        ));
        Ok(())
    }
}

/// A record without a sign of life, from a tenantctl that kept none.
fn unknown(taking: Taking<'_>, id: i64) -> anyhow::Result<()> {
    match taking {
        Taking::Label(label) => Err(UsageError(format!(
            "run {id} under label {label} has not recorded its end and was recorded by a tenantctl that kept no sign of life: it is still running, or it was killed; wait for it to end, or, if it was killed, take it back with `tenantctl tenant revert --run {id}` (nothing was changed)"
        ))
        .into()),
        Taking::Run => {
            crate::output::warn(format_args!(
                "warning: run {id} has not recorded its end (still running, or killed): only the tenants it recorded as changed are taken back"
            ));
            Ok(())
        }
    }
}

fn under(taking: Taking<'_>) -> String {
    match taking {
        Taking::Run => String::new(),
        Taking::Label(label) => format!(" under label {label}"),
    }
}

fn ids(runs: &[Unfinished]) -> String {
    runs.iter()
        .map(|u| u.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
