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
use crate::error::UsageError;
use crate::runs::{self, Label, SILENCE_LIMIT, Unfinished};

/// How often the wait reads the records again.
const POLL: Duration = Duration::from_millis(500);

/// What a revert is taking back: one run, or a label's runs.
#[derive(Clone, Copy)]
pub enum Taking<'a> {
    Run,
    Label(&'a Label),
}

/// Settles the runs among `running` (ids of records that had not recorded
/// their end when the revert read them): returns once each is known to be
/// killed (and, unless `dry_run`, its record ended), or refuses while one
/// is alive. A run recorded by a tenantctl that gave no sign of life
/// cannot be told from a killed one: under a label it refuses the revert,
/// and `--run`, which names that one run, takes it back with a warning.
pub async fn settle(
    ctx: &Context,
    taking: Taking<'_>,
    running: &[i64],
    dry_run: bool,
) -> anyhow::Result<()> {
    if running.is_empty() {
        return Ok(());
    }
    let first = read(ctx, running).await?;
    if let Some(old) = first.iter().find(|u| u.alive_at.is_none()) {
        return unknown(taking, old.id);
    }
    let mut told = false;
    loop {
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
            _ => return end_killed(ctx, taking, &now, dry_run).await,
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

/// Ends the records of runs silent for [`SILENCE_LIMIT`] (not on a dry
/// run), and says that they are taken for killed.
async fn end_killed(
    ctx: &Context,
    taking: Taking<'_>,
    killed: &[Unfinished],
    dry_run: bool,
) -> anyhow::Result<()> {
    let wanted: Vec<i64> = killed.iter().map(|u| u.id).collect();
    let silent = killed
        .iter()
        .filter_map(|u| u.silent)
        .min()
        .unwrap_or_default()
        .as_secs();
    if dry_run {
        crate::output::warn(format_args!(
            "warning: run {} has given no sign of life for {silent}s: taken for killed (the revert would end its record as interrupted); only the tenants it recorded as changed would be taken back",
            ids(killed)
        ));
        return Ok(());
    }
    let asked = wanted.clone();
    let ended = ctx
        .runner
        .with_master(|conn, layout, _| {
            Box::pin(async move { runs::take_over(conn, &layout, &asked).await })
        })
        .await?;
    if let Some(back) = wanted.iter().find(|id| !ended.contains(id)) {
        // Ended by another revert that got there first, or renewed.
        return Err(UsageError(format!(
            "run {back}{} changed while this revert ended its record: it gave a sign of life just now (still running), or another revert ended it first; run this again to see which (nothing was reverted)",
            under(taking)
        ))
        .into());
    }
    crate::output::warn(format_args!(
        "warning: run {} gave no sign of life for {silent}s: taken for killed, its record is now ended as interrupted; only the tenants it recorded as changed are taken back (one it was changing when it died is not)",
        ids(killed)
    ));
    Ok(())
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
