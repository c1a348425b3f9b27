//! Running one operation across many tenants: bounded concurrency, one
//! report per tenant whatever happened to it, fail-fast and interrupts.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Outcome;
use crate::tenant::Tenant;

/// How a fleet run proceeds.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    pub concurrency: usize,
    pub fail_fast: bool,
}

/// What happened to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Failed,
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One tenant's result. `value` holds what the operation got done even when
/// it then failed (for example the migrations applied before the one that
/// broke).
#[derive(Debug, Clone)]
pub struct Report<T> {
    pub tenant: Tenant,
    pub verdict: Verdict,
    pub value: T,
    pub error: Option<String>,
    pub duration: Duration,
}

/// What an operation returns for a tenant: its partial or full value, and
/// whether it succeeded.
pub type Attempt<T> = (T, anyhow::Result<()>);

/// Turns a plain result into an [`Attempt`].
pub fn attempt<T: Default>(result: anyhow::Result<T>) -> Attempt<T> {
    match result {
        Ok(value) => (value, Ok(())),
        Err(err) => (T::default(), Err(err)),
    }
}

/// Hears about a fleet run as it happens: progress bars, streamed output.
pub trait Observer<T>: Send + Sync {
    fn start(&self, _total: usize) {}
    fn done(&self, _report: &Report<T>) {}
    fn finish(&self) {}
}

/// An observer that does nothing (tests, JSON output).
pub struct Silent;
impl<T> Observer<T> for Silent {}

/// Set on Ctrl-C or SIGTERM: no new tenant starts once it is set. Also
/// knows the process groups of running children (`tenant exec`), which a
/// second interrupt kills before exiting: they are in groups of their own,
/// so the terminal's Ctrl-C never reaches them.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    reason: Arc<std::sync::OnceLock<&'static str>>,
    children: Arc<std::sync::Mutex<Vec<u32>>>,
}

impl Stop {
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Stops the run because of an interrupt.
    pub fn set(&self) {
        self.set_because("interrupted");
    }

    /// Stops the run; `reason` is what skipped tenants report (the first
    /// reason given wins).
    pub fn set_because(&self, reason: &'static str) {
        let _ = self.reason.set(reason);
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<&'static str> {
        self.is_set()
            .then(|| self.reason.get().copied().unwrap_or("interrupted"))
    }

    /// Records a child's process group, to kill on a second interrupt.
    pub fn track_child(&self, pgid: u32) {
        if let Ok(mut children) = self.children.lock() {
            children.push(pgid);
        }
    }

    pub fn untrack_child(&self, pgid: u32) {
        if let Ok(mut children) = self.children.lock() {
            children.retain(|&c| c != pgid);
        }
    }

    fn kill_children(&self) {
        #[cfg(unix)]
        if let Ok(children) = self.children.lock() {
            for &pgid in children.iter() {
                if let Ok(pgid) = i32::try_from(pgid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    /// Listens for Ctrl-C and SIGTERM. The first lets in-flight tenants
    /// finish; a second exits at once (the server rolls back whatever
    /// transaction a dropped connection had open).
    pub fn listen_for_signals(&self) {
        let stop = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                #[cfg(unix)]
                let terminate = async {
                    match term.as_mut() {
                        Some(t) => t.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let terminate = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate => {}
                }
                if stop.is_set() {
                    stop.kill_children();
                    std::process::exit(130);
                }
                stop.set();
                crate::output::warn(
                    "interrupted: starting no new tenant, finishing those in flight (interrupt again to quit now)",
                );
            }
        });
    }
}

/// The reports of a run, in the order the tenants were given.
#[derive(Debug)]
pub struct FleetRun<T> {
    pub reports: Vec<Report<T>>,
    pub interrupted: bool,
}

impl<T> FleetRun<T> {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.reports.iter().filter(|r| r.verdict == verdict).count()
    }

    pub fn outcome(&self) -> Outcome {
        if self.interrupted {
            Outcome::Interrupted
        } else if self.reports.iter().all(|r| r.verdict == Verdict::Ok) {
            Outcome::Success
        } else {
            Outcome::Failed
        }
    }
}

/// Runs `op` for every tenant, at most `concurrency` at a time, each on a
/// task of its own so a panic or a slow tenant affects only itself.
pub async fn run<T, F, Fut>(
    tenants: Vec<Tenant>,
    options: FleetOptions,
    stop: &Stop,
    observer: &dyn Observer<T>,
    op: F,
) -> FleetRun<T>
where
    T: Default + Send + 'static,
    F: Fn(Tenant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Attempt<T>> + Send + 'static,
{
    let total = tenants.len();
    observer.start(total);
    let queue = Arc::new(Queue {
        tenants,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        stop: stop.clone(),
        fail_fast: options.fail_fast,
    });
    let op = Arc::new(op);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..options.concurrency.clamp(1, total.max(1)) {
        tokio::spawn(work(queue.clone(), op.clone(), tx.clone()));
    }
    drop(tx);

    let mut slots: Vec<Option<Report<T>>> = std::iter::repeat_with(|| None).take(total).collect();
    while let Some((index, report)) = rx.recv().await {
        observer.done(&report);
        slots[index] = Some(report);
    }
    observer.finish();
    FleetRun {
        reports: slots.into_iter().flatten().collect(),
        interrupted: stop.is_set(),
    }
}

/// The tenants of a run, shared by its workers, each taking the next.
struct Queue {
    tenants: Vec<Tenant>,
    next: AtomicUsize,
    failed: AtomicBool,
    stop: Stop,
    fail_fast: bool,
}

impl Queue {
    /// Why the next tenant must not start, if it must not.
    fn skip_reason(&self) -> Option<String> {
        if let Some(reason) = self.stop.reason() {
            Some(format!("not started: {reason}"))
        } else if self.fail_fast && self.failed.load(Ordering::SeqCst) {
            Some("not started: an earlier tenant failed (--fail-fast)".to_owned())
        } else {
            None
        }
    }
}

/// One worker: takes tenants off the queue until it is empty, sending a
/// report for each, whether it ran, failed, panicked or was skipped.
async fn work<T, F, Fut>(
    queue: Arc<Queue>,
    op: Arc<F>,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, Report<T>)>,
) where
    T: Default + Send + 'static,
    F: Fn(Tenant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Attempt<T>> + Send + 'static,
{
    loop {
        let index = queue.next.fetch_add(1, Ordering::SeqCst);
        let Some(tenant) = queue.tenants.get(index) else {
            break;
        };
        let report = if let Some(why) = queue.skip_reason() {
            Report {
                tenant: tenant.clone(),
                verdict: Verdict::Skipped,
                value: T::default(),
                error: Some(why),
                duration: Duration::ZERO,
            }
        } else {
            let started = Instant::now();
            // A task of its own, so a panic fails this tenant only.
            let (value, result) = match tokio::spawn(op(tenant.clone())).await {
                Ok(attempt) => attempt,
                Err(join) => (T::default(), Err(anyhow::anyhow!("internal error: {join}"))),
            };
            if result.is_err() {
                queue.failed.store(true, Ordering::SeqCst);
            }
            Report {
                tenant: tenant.clone(),
                verdict: if result.is_ok() {
                    Verdict::Ok
                } else {
                    Verdict::Failed
                },
                value,
                error: result.err().map(|e| crate::error::render(&e)),
                duration: started.elapsed(),
            }
        };
        if tx.send((index, report)).is_err() {
            break;
        }
    }
}
