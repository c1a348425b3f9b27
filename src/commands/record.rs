//! The end of a fleet run, and the record of one that changes tenants:
//! the run opened in the master before any tenant is touched, closed with
//! its outcome, and the report that names it.

use std::sync::Arc;

use tracing::Instrument as _;

use super::context::Context;

use crate::commands::args::SelectionArgs;
use crate::error::Outcome;
use crate::fleet::{FleetRun, Verdict};
use crate::output::OutputMode;
use crate::output::report::{Extra, TenantValue, print_fleet_with};
use crate::runs::{Ended, RunLog, RunRequest};
use crate::tenant::Tenant;

impl Context {
    /// [`Self::select`] for a run that changes tenants, on the same master
    /// connection: the run is recorded (see [`RunLog`]) before any tenant
    /// is touched, and the connection stays open to record each tenant.
    pub async fn select_for_run(
        &self,
        selection: &SelectionArgs,
        request: impl FnOnce(usize) -> RunRequest,
    ) -> anyhow::Result<(Vec<Tenant>, Arc<RunLog>)> {
        self.select_and_record(selection, request)
            .instrument(crate::statement_log::scope("master"))
            .await
    }

    async fn select_and_record(
        &self,
        selection: &SelectionArgs,
        request: impl FnOnce(usize) -> RunRequest,
    ) -> anyhow::Result<(Vec<Tenant>, Arc<RunLog>)> {
        let (mut conn, layout) = self.master().await?;
        let tenants = match self
            .resolve_in_transaction(&mut conn, &layout, &selection.tenants, &selection.filter)
            .await
        {
            Ok(tenants) => tenants,
            Err(err) => {
                // Nothing was written: the connection is not worth a commit.
                self.connector.abandon(conn).await;
                return Err(err);
            }
        };
        let request = request(tenants.len());
        let log = RunLog::start(
            self.connector.clone(),
            conn,
            &layout,
            request,
            (self.selection().as_ref(), self.runner.stop()),
            &tenants,
        )
        .await?;
        Ok((tenants, log))
    }

    /// Prints a fleet run's report and turns it into the exit outcome.
    pub fn finish<T: TenantValue>(&self, run: &FleetRun<T>) -> Outcome {
        let extra = Extra {
            selection: self.selection(),
            ..Extra::default()
        };
        print_fleet_with(run, self.output, &extra);
        run.outcome()
    }

    /// Opens a run record in the master for a run about to change
    /// `tenants`.
    pub async fn start_run(
        &self,
        request: RunRequest,
        tenants: &[Tenant],
    ) -> anyhow::Result<Arc<RunLog>> {
        async {
            let (conn, layout) = self.master().await?;
            RunLog::start(
                self.connector.clone(),
                conn,
                &layout,
                request,
                (self.selection().as_ref(), self.runner.stop()),
                tenants,
            )
            .await
        }
        .instrument(crate::statement_log::scope("master"))
        .await
    }

    /// [`Self::finish`] for a run with a run record: closes the record with
    /// the outcome and names the run in the report.
    pub async fn finish_run<T: TenantValue>(
        &self,
        run: &FleetRun<T>,
        log: Option<&RunLog>,
    ) -> Outcome {
        let mut outcome = run.outcome();
        if let Some(log) = log {
            // The record has no column of its own for tenants cut short
            // by an interrupt: they count as failed there (the run's
            // outcome says `interrupted`).
            let ended: Vec<Ended> = run
                .reports
                .iter()
                .map(|r| Ended {
                    company_id: r.tenant.id.clone(),
                    status: r.verdict.as_str(),
                    error: r.error.clone(),
                })
                .collect();
            let taken_over = log
                .finish(
                    outcome,
                    [
                        run.count(Verdict::Ok),
                        run.count(Verdict::Failed) + run.count(Verdict::Interrupted),
                        run.count(Verdict::Skipped),
                    ],
                    &ended,
                )
                .await;
            // A revert took the record over before the run ended: not a
            // success, whatever the tenants did.
            if taken_over && outcome == Outcome::Success {
                outcome = Outcome::Failed;
            }
        }
        let label = log.and_then(|l| l.label.clone());
        let extra = Extra {
            run_id: log.map(|l| l.id),
            refused: false,
            selection: self.selection(),
            // Documented as present only when the run has one (docs/src/json.md).
            fields: match (&label, log) {
                (Some(label), Some(_)) => vec![("label", label.as_str().into())],
                _ => Vec::new(),
            },
        };
        print_fleet_with(run, self.output, &extra);
        if let Some(label) = &label
            && self.output == OutputMode::Table
        {
            crate::output::line(format_args!(
                "label: {}",
                crate::output::shown(label.as_str())
            ));
        }
        outcome
    }
}
