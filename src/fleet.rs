//! Running one operation across many tenants: bounded concurrency in total
//! and per server, work interleaved across servers from the start, one
//! report per tenant whatever happened to it, fail-fast and interrupts.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument as _;

use crate::error::{Cancelled, Outcome};
use crate::tenant::Tenant;

/// How long tenants in flight get to finish after the first interrupt
/// (Ctrl-C, SIGTERM) before their statements are cancelled on the server:
/// long enough for a migration that is merely running to commit, short
/// enough that one waiting on a lock held elsewhere never holds the run
/// (or a `docker stop`, `timeout`, CI job) hostage.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// After a second interrupt, how long the run waits for the tenants whose
/// statements it has just cancelled to report, before it reports them
/// `interrupted` itself and quits.
pub const QUIT_WAIT: Duration = Duration::from_secs(3);

/// How often a statement still running after its cancel is cancelled again
/// (the cancel can land between two statements, where the server drops
/// it, and the next statement may wait on a lock too).
pub const CANCEL_EVERY: Duration = Duration::from_secs(1);

/// How a fleet run proceeds.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    /// Tenants in flight at once, in total.
    pub concurrency: usize,
    /// Tenants in flight at once on any one server (`None`: no cap beyond
    /// `concurrency`).
    pub per_server: Option<usize>,
    pub fail_fast: bool,
}

/// What happened to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Failed,
    Skipped,
    /// Started, then stopped by an interrupt before it finished: its
    /// statement in flight was cancelled (what it had not committed was
    /// rolled back), or the run quit without waiting for it.
    Interrupted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Interrupted => "interrupted",
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

/// An operation's answer for a tenant it did not work on, and why (its
/// row changed since the selection, say): reported as skipped, not failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Skip(pub String);

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

/// How far an interrupt has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Running,
    /// The first interrupt, at this instant: no new tenant starts, those in
    /// flight get [`INTERRUPT_GRACE`] before they are cancelled.
    Interrupted(Instant),
    /// A second interrupt, at this instant: cancel what is in flight now,
    /// report and quit.
    Quit(Instant),
}

/// Set on Ctrl-C or SIGTERM: no new tenant starts once it is set. Also
/// knows the process groups of running children (`tenant exec`), which a
/// second interrupt kills: they are in groups of their own, so the
/// terminal's Ctrl-C never reaches them.
#[derive(Debug, Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    reason: Arc<std::sync::OnceLock<&'static str>>,
    children: Arc<std::sync::Mutex<Vec<u32>>>,
    level: Arc<tokio::sync::watch::Sender<Level>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            flag: Arc::default(),
            reason: Arc::default(),
            children: Arc::default(),
            level: Arc::new(tokio::sync::watch::Sender::new(Level::Running)),
        }
    }
}

impl Stop {
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Stops the run because of an interrupt: tenants in flight get
    /// [`INTERRUPT_GRACE`] to finish.
    pub fn set(&self) {
        self.set_because("interrupted");
        self.level.send_if_modified(|level| {
            let first = *level == Level::Running;
            if first {
                *level = Level::Interrupted(Instant::now());
            }
            first
        });
    }

    /// A second interrupt: what is in flight is cancelled at once, and the
    /// run reports and quits without waiting for it more than
    /// [`QUIT_WAIT`].
    pub fn quit(&self) {
        self.set_because("interrupted");
        self.level.send_if_modified(|level| {
            let first = !matches!(level, Level::Quit(_));
            if first {
                *level = Level::Quit(Instant::now());
            }
            first
        });
    }

    /// Whether a second interrupt asked to quit.
    pub fn is_quit(&self) -> bool {
        matches!(*self.level.borrow(), Level::Quit(_))
    }

    /// Resolves when statements still in flight are to be cancelled on the
    /// server: [`INTERRUPT_GRACE`] after an interrupt, or at once on a
    /// second one. Never, for a run that is not interrupted (a closed
    /// stdout lets what is in flight finish).
    pub async fn cancel_due(&self) {
        let mut level = self.level.subscribe();
        loop {
            let current = *level.borrow_and_update();
            match current {
                Level::Quit(_) => return,
                Level::Interrupted(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until((at + INTERRUPT_GRACE).into()) => return,
                        _ = level.changed() => {}
                    }
                }
                Level::Running => {
                    if level.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Resolves [`QUIT_WAIT`] after a second interrupt: the moment a run
    /// stops waiting for the tenants in flight.
    pub async fn quit_deadline(&self) {
        self.quit_after(QUIT_WAIT).await;
    }

    /// Resolves `wait` after a second interrupt.
    pub async fn quit_after(&self, wait: Duration) {
        let mut level = self.level.subscribe();
        loop {
            let current = *level.borrow_and_update();
            if let Level::Quit(at) = current {
                tokio::time::sleep_until((at + wait).into()).await;
                return;
            }
            if level.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
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
    /// finish, for [`INTERRUPT_GRACE`]; a second kills running children and
    /// quits: statements in flight are cancelled on the server and the
    /// report printed with what is known (see [`run`]). Neither ends the
    /// process here: the command returns, and `main` maps the outcome to
    /// exit status 130.
    pub fn listen_for_signals(&self) {
        let stop = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let mut first: Option<Instant> = None;
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
                // `timeout` and a terminal's Ctrl-C signal the process and
                // its group at once: one interrupt, delivered twice, not
                // the second one that means "quit now".
                if first.is_some_and(|at| at.elapsed() < SAME_INTERRUPT) {
                    continue;
                }
                first.get_or_insert_with(Instant::now);
                if stop.is_set() {
                    stop.kill_children();
                    if !stop.is_quit() {
                        crate::output::warn(
                            "interrupted again: cancelling the statements in flight, then quitting",
                        );
                    }
                    stop.quit();
                    continue;
                }
                stop.set();
                crate::output::warn(format_args!(
                    "interrupted: starting no new tenant, giving those in flight {} to finish before cancelling them (interrupt again to cancel them now)",
                    humantime::format_duration(INTERRUPT_GRACE)
                ));
            }
        });
    }
}

/// Signals this close to the first interrupt are the same interrupt (one
/// sent to the process and to its group), not a second one.
const SAME_INTERRUPT: Duration = Duration::from_millis(50);

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

/// Runs `op` for every tenant, at most `concurrency` at a time and at most
/// `per_server` on one server, each on a task of its own so a panic or a
/// slow tenant affects only itself. Tenants start round-robin across their
/// servers (in each server's own order), so every server is busy from the
/// start; reports come back in the order the tenants were given.
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
    let queue = Arc::new(Queue::new(tenants, &options, stop));
    let op = Arc::new(op);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..workers(&options, total) {
        tokio::spawn(work(queue.clone(), op.clone(), tx.clone()));
    }
    drop(tx);
    collect(&queue, rx, stop, observer).await
}

/// [`run`] for work that borrows the caller's state (`tenant create
/// --from-file`: the context, the migrations read once): the tenants run
/// concurrently on the caller's task instead of tasks of their own, under
/// the same limits, stop flag and reports. A panic still fails its tenant
/// only.
pub async fn run_borrowing<'a, T, F, Fut>(
    tenants: Vec<Tenant>,
    options: FleetOptions,
    stop: &Stop,
    observer: &dyn Observer<T>,
    op: F,
) -> FleetRun<T>
where
    T: Default + 'a,
    F: Fn(Tenant) -> Fut + 'a,
    Fut: Future<Output = Attempt<T>> + 'a,
{
    use futures_util::FutureExt as _;
    let total = tenants.len();
    observer.start(total);
    let queue = Queue::new(tenants, &options, stop);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let call = |tenant: Tenant| {
        let scope = statement_scope(&tenant);
        std::panic::AssertUnwindSafe(op(tenant).instrument(scope))
            .catch_unwind()
            .map(|caught| {
                caught.unwrap_or_else(|_| {
                    (
                        T::default(),
                        Err(anyhow::anyhow!("internal error: panicked")),
                    )
                })
            })
    };
    let workers = futures_util::future::join_all(
        (0..workers(&options, total)).map(|_| work_with(&queue, &call, tx.clone())),
    );
    drop(tx);
    let collected = collect(&queue, rx, stop, observer);
    tokio::pin!(workers, collected);
    let mut working = true;
    loop {
        tokio::select! {
            biased;
            run = &mut collected => return run,
            _ = &mut workers, if working => working = false,
        }
    }
}

/// Where `--verbose` says a tenant's statements went.
fn statement_scope(tenant: &Tenant) -> tracing::Span {
    crate::statement_log::scope(&format!("tenant {}", tenant.handle()))
}

/// How many workers a run of `total` tenants needs.
fn workers(options: &FleetOptions, total: usize) -> usize {
    options.concurrency.clamp(1, total.max(1))
}

/// Receives the workers' reports until they are all in (or, after a second
/// interrupt, until [`QUIT_WAIT`] is over), tells the observer, and puts
/// them in the order the tenants were given.
async fn collect<T: Default>(
    queue: &Queue,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Report<T>)>,
    stop: &Stop,
    observer: &dyn Observer<T>,
) -> FleetRun<T> {
    let total = queue.tenants.len();
    let mut slots: Vec<Option<Report<T>>> = std::iter::repeat_with(|| None).take(total).collect();
    loop {
        // Reports first; after a second interrupt, stop waiting for them
        // once the tenants in flight have had [`QUIT_WAIT`] to answer their
        // cancel.
        let next = tokio::select! {
            biased;
            next = rx.recv() => next,
            () = stop.quit_deadline() => None,
        };
        let Some((index, report)) = next else { break };
        observer.done(&report);
        slots[index] = Some(report);
    }
    // Only after a second interrupt can a tenant be left without a report.
    for (index, slot) in slots.iter_mut().enumerate() {
        if slot.is_none() {
            let report = queue.unreported(index);
            observer.done(&report);
            *slot = Some(report);
        }
    }
    observer.finish();
    FleetRun {
        reports: slots.into_iter().flatten().collect(),
        interrupted: stop.is_set(),
    }
}

/// The tenants of one server waiting to start, and how many are running.
struct Lane {
    waiting: VecDeque<usize>,
    in_flight: usize,
}

/// Which tenant starts next: the next server in turn that has one waiting
/// and room under its cap.
struct Schedule {
    lanes: Vec<Lane>,
    /// The lane to look at first, so servers take turns.
    turn: usize,
    left: usize,
}

/// The tenants of a run, shared by its workers, each taking the next.
struct Queue {
    tenants: Vec<Tenant>,
    schedule: Mutex<Schedule>,
    /// Woken when a tenant finishes and its server has room again.
    room: tokio::sync::Notify,
    per_server: Option<usize>,
    failed: AtomicBool,
    stop: Stop,
    fail_fast: bool,
    /// When each tenant started, for those that did.
    started: Mutex<Vec<Option<Instant>>>,
}

impl Queue {
    fn new(tenants: Vec<Tenant>, options: &FleetOptions, stop: &Stop) -> Self {
        let mut servers: Vec<&str> = Vec::new();
        let mut lanes: Vec<Lane> = Vec::new();
        for (index, tenant) in tenants.iter().enumerate() {
            let server = tenant.server_label();
            let lane = match servers.iter().position(|s| *s == server) {
                Some(lane) => lane,
                None => {
                    servers.push(server);
                    lanes.push(Lane {
                        waiting: VecDeque::new(),
                        in_flight: 0,
                    });
                    lanes.len() - 1
                }
            };
            lanes[lane].waiting.push_back(index);
        }
        let left = tenants.len();
        Self {
            started: Mutex::new(vec![None; left]),
            schedule: Mutex::new(Schedule {
                lanes,
                turn: 0,
                left,
            }),
            tenants,
            room: tokio::sync::Notify::new(),
            per_server: options.per_server,
            failed: AtomicBool::new(false),
            stop: stop.clone(),
            fail_fast: options.fail_fast,
        }
    }

    /// The next tenant to start and its lane, waiting while every server
    /// with tenants left is at its cap; `None` once none are left.
    async fn take(&self) -> Option<(usize, usize)> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before looking, so a finish in between is not missed.
            room.as_mut().enable();
            {
                let mut schedule = self
                    .schedule
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if schedule.left == 0 {
                    return None;
                }
                let count = schedule.lanes.len();
                for step in 0..count {
                    let lane = (schedule.turn + step) % count;
                    let has_room = self
                        .per_server
                        .is_none_or(|cap| schedule.lanes[lane].in_flight < cap);
                    if has_room && let Some(index) = schedule.lanes[lane].waiting.pop_front() {
                        schedule.lanes[lane].in_flight += 1;
                        schedule.left -= 1;
                        schedule.turn = (lane + 1) % count;
                        return Some((index, lane));
                    }
                }
            }
            room.await;
        }
    }

    /// A tenant of this lane finished (or never started).
    fn finished(&self, lane: usize) {
        {
            let mut schedule = self
                .schedule
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            schedule.lanes[lane].in_flight -= 1;
        }
        self.room.notify_waiters();
    }

    fn start(&self, index: usize) -> Instant {
        let now = Instant::now();
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[index] = Some(now);
        now
    }

    /// The report of a tenant the run quit without hearing from (after a
    /// second interrupt): interrupted if it had started, else skipped.
    fn unreported<T: Default>(&self, index: usize) -> Report<T> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[index];
        let tenant = self.tenants[index].clone();
        match started {
            Some(at) => Report {
                tenant,
                verdict: Verdict::Interrupted,
                value: T::default(),
                error: Some(
                    "interrupted: quit at the second interrupt before it finished (its statement in flight was cancelled on the server, which rolls back what it had not committed)"
                        .to_owned(),
                ),
                duration: at.elapsed(),
            },
            None => Report {
                tenant,
                verdict: Verdict::Skipped,
                value: T::default(),
                error: Some("not started: interrupted".to_owned()),
                duration: Duration::ZERO,
            },
        }
    }

    /// Why the next tenant must not start, if it must not.
    fn skip_reason(&self, tenant: &Tenant) -> Option<String> {
        if let Some(reason) = self.stop.reason() {
            Some(format!("not started: {reason}"))
        } else if self.fail_fast && self.failed.load(Ordering::SeqCst) {
            Some("not started: an earlier tenant failed (--fail-fast)".to_owned())
        } else if let Some(to) = &tenant.moving_to {
            Some(format!(
                "moving to server {}: a `tenantctl tenant move` has it (rerun it to finish)",
                crate::text::shown(to.as_str())
            ))
        } else {
            let sharing = tenant.sharing.as_ref()?;
            let lead = sharing.worked_by.as_ref()?;
            Some(format!(
                "database {} is also named by {}: worked on once, under tenant {}",
                crate::text::shown(tenant.db_label()),
                sharing.others.join(", "),
                crate::text::shown(lead)
            ))
        }
    }
}

/// One worker of [`run`]: each tenant's work on a task of its own.
async fn work<T, F, Fut>(
    queue: Arc<Queue>,
    op: Arc<F>,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, Report<T>)>,
) where
    T: Default + Send + 'static,
    F: Fn(Tenant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Attempt<T>> + Send + 'static,
{
    // A task of its own, so a panic fails this tenant only.
    let call = |tenant: Tenant| {
        let scope = statement_scope(&tenant);
        let spawned = tokio::spawn(op(tenant).instrument(scope));
        async move {
            match spawned.await {
                Ok(attempt) => attempt,
                Err(join) => (T::default(), Err(anyhow::anyhow!("internal error: {join}"))),
            }
        }
    };
    work_with(&queue, &call, tx).await;
}

/// One worker: takes tenants off the queue until it is empty, sending a
/// report for each, whether it ran, failed, panicked or was skipped.
async fn work_with<T, C, CFut>(
    queue: &Queue,
    call: &C,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, Report<T>)>,
) where
    T: Default,
    C: Fn(Tenant) -> CFut,
    CFut: Future<Output = Attempt<T>>,
{
    while let Some((index, lane)) = queue.take().await {
        let tenant = &queue.tenants[index];
        let report = if let Some(why) = queue.skip_reason(tenant) {
            Report {
                tenant: tenant.clone(),
                verdict: Verdict::Skipped,
                value: T::default(),
                error: Some(why),
                duration: Duration::ZERO,
            }
        } else {
            let started = queue.start(index);
            let (value, result) = call(tenant.clone()).await;
            // A row that changed since the selection was not worked on:
            // skipped, and no reason for --fail-fast to stop the rest.
            let verdict = match &result {
                Ok(()) => Verdict::Ok,
                Err(err) if err.is::<Skip>() => Verdict::Skipped,
                Err(err) if err.downcast_ref::<Cancelled>().is_some() => Verdict::Interrupted,
                Err(_) => Verdict::Failed,
            };
            if verdict == Verdict::Failed {
                queue.failed.store(true, Ordering::SeqCst);
            }
            Report {
                tenant: tenant.clone(),
                verdict,
                value,
                error: result.err().map(|e| crate::error::render(&e)),
                duration: started.elapsed(),
            }
        };
        queue.finished(lane);
        if tx.send((index, report)).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, server: Option<&str>) -> Tenant {
        Tenant::new(
            id.to_owned(),
            Some(id.to_owned()),
            None,
            Some(format!("db_{id}")),
            Some("active".into()),
            None,
        )
        .with_server(server.map(str::to_owned))
    }

    /// Starts interleave across servers from the first, no server ever
    /// has more than `per_server` in flight, and reports keep the order
    /// the tenants were given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interleaves_servers_and_caps_each() {
        let tenants: Vec<Tenant> = (0..6)
            .map(|i| tenant(&format!("a{i}"), None))
            .chain((0..6).map(|i| tenant(&format!("b{i}"), Some("eu2"))))
            .collect();
        let started = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(Mutex::new((0_usize, 0_usize, 0_usize, 0_usize)));
        let (s, f) = (started.clone(), in_flight.clone());
        let run = run(
            tenants,
            FleetOptions {
                concurrency: 8,
                per_server: Some(2),
                fail_fast: false,
            },
            &Stop::default(),
            &Silent,
            move |tenant| {
                let (started, in_flight) = (s.clone(), f.clone());
                async move {
                    let eu2 = tenant.server_label() == "eu2";
                    if let Ok(mut started) = started.lock() {
                        started.push(tenant.server_label().to_owned());
                    }
                    if let Ok(mut n) = in_flight.lock() {
                        if eu2 {
                            n.1 += 1;
                            n.3 = n.3.max(n.1);
                        } else {
                            n.0 += 1;
                            n.2 = n.2.max(n.0);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    if let Ok(mut n) = in_flight.lock() {
                        if eu2 {
                            n.1 -= 1;
                        } else {
                            n.0 -= 1;
                        }
                    }
                    ((), Ok(()))
                }
            },
        )
        .await;
        let order: Vec<&str> = run.reports.iter().map(|r| r.tenant.id.as_str()).collect();
        assert_eq!(order[0], "a0");
        assert_eq!(order[6], "b0");
        assert_eq!(run.count(Verdict::Ok), 12);
        let started = started.lock().expect("started").clone();
        // Interleaved from the start: with two per server, the first four
        // to start are two of each (which spawned task runs first is the
        // scheduler's choice, so their order is not).
        let eu2_first = started[..4].iter().filter(|s| *s == "eu2").count();
        assert_eq!(eu2_first, 2, "{started:?}");
        let peaks = *in_flight.lock().expect("peaks");
        assert_eq!((peaks.2, peaks.3), (2, 2), "{peaks:?}");
    }

    /// After a second interrupt the run stops waiting for a tenant that
    /// does not end (here: never) within [`QUIT_WAIT`]: the one started is
    /// reported interrupted, the one not started skipped, and the one that
    /// finished keeps its own report.
    #[tokio::test]
    async fn a_second_interrupt_reports_what_is_in_flight_as_interrupted() {
        let stop = Stop::default();
        let quitter = stop.clone();
        let started = Instant::now();
        let run = run(
            vec![tenant("a", None), tenant("b", None), tenant("c", None)],
            FleetOptions {
                concurrency: 1,
                per_server: None,
                fail_fast: false,
            },
            &stop,
            &Silent,
            move |tenant| {
                let quitter = quitter.clone();
                async move {
                    if tenant.id == "b" {
                        quitter.set();
                        quitter.quit();
                        std::future::pending::<()>().await;
                    }
                    ((), Ok(()))
                }
            },
        )
        .await;
        let verdicts: Vec<Verdict> = run.reports.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Ok, Verdict::Interrupted, Verdict::Skipped]
        );
        assert!(started.elapsed() < QUIT_WAIT * 2, "{:?}", started.elapsed());
        assert!(run.interrupted);
        assert_eq!(run.outcome(), Outcome::Interrupted);
    }

    /// The grace period runs from the first interrupt; a second one cuts
    /// it short; a stop that is not an interrupt (stdout closed) never
    /// cancels.
    #[tokio::test]
    async fn cancels_fall_due_after_the_grace_period_or_at_once_on_a_second_interrupt() {
        let closed = Stop::default();
        closed.set_because("stdout was closed");
        let waited = tokio::time::timeout(Duration::from_millis(200), closed.cancel_due()).await;
        assert!(waited.is_err(), "a closed stdout cancels nothing");

        let stop = Stop::default();
        stop.set();
        let early = tokio::time::timeout(Duration::from_millis(200), stop.cancel_due()).await;
        assert!(early.is_err(), "not before the grace period");
        let at = Instant::now();
        let quitter = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            quitter.quit();
        });
        stop.cancel_due().await;
        assert!(at.elapsed() < INTERRUPT_GRACE, "{:?}", at.elapsed());
    }

    #[tokio::test]
    async fn a_moving_tenant_is_skipped_and_says_why() {
        let mut moving = tenant("m", None);
        moving.moving_to = Some(crate::tenant::MovingTo::Server(
            crate::servers::ServerName::parse("eu2").expect("valid"),
        ));
        let run = run(
            vec![tenant("a", None), moving],
            FleetOptions {
                concurrency: 2,
                per_server: None,
                fail_fast: false,
            },
            &Stop::default(),
            &Silent,
            |_| async { ((), Ok(())) },
        )
        .await;
        assert_eq!(run.reports[1].verdict, Verdict::Skipped);
        assert!(
            run.reports[1]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("moving to server eu2")),
            "{:?}",
            run.reports[1].error
        );
        assert_eq!(run.outcome(), Outcome::Failed);
    }
}
