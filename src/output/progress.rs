//! Showing a fleet run as it happens, on stderr: a progress bar when stderr
//! is a terminal, and a line per failed tenant. In `jsonl` mode each tenant's
//! report also goes to stdout the moment it finishes.

use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::OutputMode;
use super::report::{TenantValue, tenant_json};
use crate::fleet::{Observer, Report, Stop, Verdict};

/// Why a run stops when nobody reads its output any more.
pub const STDOUT_CLOSED: &str = "stdout was closed";

pub struct Progress {
    bar: ProgressBar,
    stream_json: bool,
    failures: AtomicUsize,
    stop: Stop,
}

impl Progress {
    pub fn new(output: OutputMode, quiet: bool, stop: Stop) -> Self {
        let target = if quiet || !super::person_watching() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} tenants  {msg}  {rate}  eta {eta}")
                .expect("template is valid")
                // indicatif's own {per_sec} prints four decimals.
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1}/s", state.per_sec());
                    },
                ),
        );
        bar.set_message("0 failed");
        Self {
            bar,
            stream_json: output == OutputMode::Jsonl,
            failures: AtomicUsize::new(0),
            stop,
        }
    }
}

impl Progress {
    /// Runs `f` with the bar hidden, for printing around it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Prints a line of data on stdout; once stdout is closed, stops the
    /// run from starting more tenants.
    pub fn data_line(&self, text: &str) {
        if !self.bar.suspend(|| super::line(text)) {
            self.stop.set_because(STDOUT_CLOSED);
        }
    }
}

impl<T: TenantValue> Observer<T> for Progress {
    fn start(&self, total: usize) {
        self.bar.set_length(total as u64);
    }

    fn done(&self, report: &Report<T>) {
        self.bar.inc(1);
        if report.verdict == Verdict::Failed {
            let failures = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
            self.bar.set_message(format!("{failures} failed"));
            // Even under --quiet: a failure is not progress, and a log
            // with no line for it hides why the run failed.
            {
                let line = format!(
                    "failed: tenant {}: {}",
                    report.tenant,
                    super::shown(report.error.as_deref().unwrap_or("unknown error"))
                );
                self.bar.suspend(|| super::warn(line));
            }
        }
        if self.stream_json {
            let line = super::versioned(&tenant_json(report), false).unwrap_or_default();
            self.data_line(&line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
