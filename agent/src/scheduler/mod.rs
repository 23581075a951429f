//! The scheduler: reconciles the plan in force into running jobs.
//!
//! Every job is keyed by a stable [`JobKey`] (kind, namespace, identity). On a new plan, jobs
//! whose key disappeared stop, new keys start, and a job whose spec changed receives the new
//! spec in place (its task, clock phase and per-job state carry on; a changed interval takes
//! effect from its last tick). Jobs whose spec is equal are not touched at all.
//!
//! Each job runs its [`Work`] every interval, starting at a random offset within the first
//! interval so a fleet does not fire in step. The system families are the exception within one
//! agent: they share one clock, whose phase is drawn at random when the agent starts, so the
//! families due together tick at the same instant (one timer wakeup), are collected in one trip
//! to the blocking pool (the runner gathers them) and their points leave in one batch per
//! namespace (one spool write, one output write) instead of one batch per family; that is most
//! of what an idle agent does (docs/benchmarks.md, "Idle agent"). A run still going when the next tick is due makes
//! that tick skip (counted in `JobCounts.skipped_ticks`): a job never overlaps itself.
//!
//! What a run does is the [`Runner`]'s business: the agent's runner sends collector output to the
//! pipeline ([`runner::AgentRunner`]); tests use a recording one. Adding a job kind (periodic
//! plugins, built-ins) is a [`Work`] variant, a few lines in [`desired`] and an arm in the runner.

pub mod runner;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::api::JobCounts;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::collect::system::Family;
use crate::output::BoxFuture;
use crate::registry::{BuiltinItem, NamespacePlan, Plan, PortItem, ProcItem};
use crate::state::AgentState;

/// How long running jobs get to stop at shutdown.
pub const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// What kind of job a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    /// A system metric family, for every namespace.
    System,
    /// A port check of one namespace.
    Port,
    /// A process check of one namespace.
    Proc,
    /// A periodic script plugin of one namespace.
    Plugin,
    /// A periodic built-in plugin of one namespace.
    Builtin,
}

/// A job's stable identity: the same item in the next plan has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    /// The kind.
    pub kind: JobKind,
    /// The namespace; empty for system families, which serve every namespace.
    pub ns: String,
    /// The item's identity within its kind and namespace (family, `name:port@host`, ...).
    pub id: String,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = format!("{:?}", self.kind).to_lowercase();
        if self.ns.is_empty() {
            write!(f, "{kind} {}", self.id)
        } else {
            write!(f, "{kind} {}/{}", self.ns, self.id)
        }
    }
}

/// What a job does on each tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Collect one system family once and send it to every namespace listed.
    System {
        /// The family.
        family: Family,
        /// The namespaces to send to.
        namespaces: Arc<[String]>,
    },
    /// Connect to a port and report whether it answered.
    Port {
        /// The namespace.
        ns: String,
        /// The check.
        item: PortItem,
    },
    /// Measure the processes matching an item.
    Proc {
        /// The namespace.
        ns: String,
        /// The check.
        item: ProcItem,
    },
    /// Run a periodic script plugin (the plugin manager holds its item and checkout).
    Plugin {
        /// The namespace.
        ns: String,
        /// The project (repository name).
        project: String,
    },
    /// Run a periodic built-in plugin.
    Builtin {
        /// The namespace.
        ns: String,
        /// The item.
        item: BuiltinItem,
    },
}

impl Work {
    /// The kind of job this work makes.
    pub fn kind(&self) -> JobKind {
        match self {
            Work::System { .. } => JobKind::System,
            Work::Port { .. } => JobKind::Port,
            Work::Proc { .. } => JobKind::Proc,
            Work::Plugin { .. } => JobKind::Plugin,
            Work::Builtin { .. } => JobKind::Builtin,
        }
    }
}

/// A job as the plan wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Time between ticks.
    pub interval: Duration,
    /// What each tick does.
    pub work: Work,
}

/// Performs one run of a job. The future must finish by itself (the scheduler drops it on stop
/// or shutdown) and should not block a worker thread.
pub trait Runner: Send + Sync + 'static {
    /// One run of the job `key` as `spec` describes it now.
    fn run(&self, key: &JobKey, spec: &JobSpec) -> BoxFuture<'static, ()>;

    /// Called with every plan reconciled, so per-item state of items gone can be dropped.
    fn retain(&self, _plan: &Plan) {}
}

/// The jobs a plan wants.
///
/// System families: one job each, sent to every namespace, at the family's default interval or
/// the namespaces' override; when namespaces disagree the smallest wins (a namespace without an
/// override wants the default), so every namespace gets its data at least as often as it asked.
/// An interval of 0 turns the family off for that namespace (it is not sent there); a family no
/// namespace wants makes no job.
pub fn desired(plan: &Plan) -> HashMap<JobKey, JobSpec> {
    let mut jobs = system_jobs(plan);
    for (ns, nsp) in &plan.namespaces {
        namespace_jobs(ns, nsp, &mut jobs);
    }
    jobs
}

/// The system family jobs of a plan (none when the host has no namespace).
fn system_jobs(plan: &Plan) -> HashMap<JobKey, JobSpec> {
    let mut jobs = HashMap::with_capacity(Family::ALL.len());
    for family in Family::ALL {
        let default = family.default_interval().as_secs();
        let wanted = plan.namespaces.iter().filter_map(|(name, ns)| {
            match ns.intervals.get(family.name()).copied().unwrap_or(default) {
                0 => None,
                secs => Some((name, secs)),
            }
        });
        let (mut names, mut secs) = (Vec::new(), u64::MAX);
        for (name, s) in wanted {
            names.push(name.clone());
            secs = secs.min(s);
        }
        if names.is_empty() {
            continue;
        }
        insert(
            &mut jobs,
            JobKey {
                kind: JobKind::System,
                ns: String::new(),
                id: family.name().to_owned(),
            },
            secs,
            Work::System {
                family,
                namespaces: names.into(),
            },
        );
    }
    jobs
}

/// The jobs of one namespace's items.
fn namespace_jobs(ns: &str, nsp: &NamespacePlan, jobs: &mut HashMap<JobKey, JobSpec>) {
    for item in &nsp.ports {
        let host = item.host.as_deref().unwrap_or("127.0.0.1");
        let key = JobKey {
            kind: JobKind::Port,
            ns: ns.to_owned(),
            id: format!("{}:{}@{host}", item.name, item.port),
        };
        let work = Work::Port {
            ns: ns.to_owned(),
            item: item.clone(),
        };
        insert(jobs, key, item.interval, work);
    }
    for item in &nsp.procs {
        let key = JobKey {
            kind: JobKind::Proc,
            ns: ns.to_owned(),
            id: item.name.clone(),
        };
        let work = Work::Proc {
            ns: ns.to_owned(),
            item: item.clone(),
        };
        insert(jobs, key, item.interval, work);
    }
    for item in &nsp.plugins {
        // Validation dropped items without a usable project name; interval 0 (on demand only)
        // makes no job.
        let Ok(project) = crate::registry::project_name(&item.git) else {
            continue;
        };
        let key = JobKey {
            kind: JobKind::Plugin,
            ns: ns.to_owned(),
            id: project.clone(),
        };
        let work = Work::Plugin {
            ns: ns.to_owned(),
            project,
        };
        insert(jobs, key, item.interval, work);
    }
    for item in &nsp.builtins {
        let key = JobKey {
            kind: JobKind::Builtin,
            ns: ns.to_owned(),
            id: item.id(),
        };
        let work = Work::Builtin {
            ns: ns.to_owned(),
            item: item.clone(),
        };
        insert(jobs, key, item.interval, work);
    }
}

fn insert(jobs: &mut HashMap<JobKey, JobSpec>, key: JobKey, secs: u64, work: Work) {
    // Validation refuses interval 0 for checks; a job must never spin.
    if secs > 0 {
        let interval = Duration::from_secs(secs);
        jobs.insert(key, JobSpec { interval, work });
    }
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Jobs started.
    pub started: usize,
    /// Jobs stopped.
    pub stopped: usize,
    /// Jobs that received a changed spec in place.
    pub updated: usize,
    /// Jobs left alone.
    pub unchanged: usize,
}

/// A plan and what reconciling it did, for `/update` to wait on.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// The plan reconciled.
    pub plan: Arc<Plan>,
    /// What it did.
    pub report: ReconcileReport,
}

/// The scheduler's counters, shared with `/me/status` and `/update`.
pub struct SchedulerStats {
    counts: Mutex<JobCounts>,
    skipped: AtomicU64,
    started: AtomicU64,
    reconciled: watch::Sender<Option<Reconciled>>,
}

impl Default for SchedulerStats {
    fn default() -> Self {
        SchedulerStats {
            counts: Mutex::default(),
            skipped: AtomicU64::new(0),
            started: AtomicU64::new(0),
            reconciled: watch::channel(None).0,
        }
    }
}

impl SchedulerStats {
    /// Job counts now.
    pub fn counts(&self) -> JobCounts {
        let mut c = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        c.skipped_ticks = self.skipped.load(Ordering::Relaxed);
        c.started_total = self.started.load(Ordering::Relaxed);
        c
    }

    /// Counts a tick that found its job's target still busy (a plugin run on demand, say).
    pub fn count_skipped_tick(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until `plan` (the very `Arc` put in force) has been reconciled, at most `timeout`.
    pub async fn wait_reconciled(
        &self,
        plan: &Arc<Plan>,
        timeout: Duration,
    ) -> Option<ReconcileReport> {
        let mut rx = self.reconciled.subscribe();
        let found = tokio::time::timeout(
            timeout,
            rx.wait_for(|r| r.as_ref().is_some_and(|r| Arc::ptr_eq(&r.plan, plan))),
        )
        .await
        .ok()?
        .ok()?
        .as_ref()
        .map(|r| r.report);
        found
    }
}

struct RunningJob {
    spec: watch::Sender<Arc<JobSpec>>,
    cancel: CancellationToken,
}

/// The running jobs and how to reach them.
pub struct Scheduler<R: Runner> {
    runner: Arc<R>,
    /// Running jobs grouped by namespace (`""` for the system families), so a namespace whose
    /// items did not change is passed over whole: a reconcile costs what changed, not the plan.
    groups: HashMap<String, HashMap<JobKey, RunningJob>>,
    /// The plan last reconciled.
    last: Option<Arc<Plan>>,
    root: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<SchedulerStats>,
    /// The clock the system families share.
    system_clock: SharedClock,
}

impl<R: Runner> Scheduler<R> {
    /// A scheduler with no jobs; its jobs stop when `shutdown` is cancelled.
    pub fn new(runner: Arc<R>, stats: Arc<SchedulerStats>, shutdown: &CancellationToken) -> Self {
        Scheduler {
            runner,
            groups: HashMap::new(),
            last: None,
            root: shutdown.child_token(),
            tracker: TaskTracker::new(),
            stats,
            system_clock: SharedClock::random(),
        }
    }

    /// The same scheduler with its system families on `clock` (the agent's, shared with the
    /// heartbeat) instead of a clock of its own.
    pub fn on_clock(mut self, clock: SharedClock) -> Self {
        self.system_clock = clock;
        self
    }

    /// Makes the running jobs what `plan` wants. Must be called inside a tokio runtime.
    pub fn reconcile(&mut self, plan: &Arc<Plan>) -> ReconcileReport {
        self.runner.retain(plan);
        let last = self.last.replace(Arc::clone(plan));
        let mut report = ReconcileReport::default();
        self.groups.retain(|ns, jobs| {
            if ns.is_empty() || plan.namespaces.contains_key(ns) {
                return true;
            }
            for (key, job) in jobs.drain() {
                stop(&key, &job);
                report.stopped += 1;
            }
            false
        });
        self.sync_group(String::new(), system_jobs(plan), &mut report);
        for (ns, nsp) in &plan.namespaces {
            let same = last.as_ref().and_then(|l| l.namespaces.get(ns)) == Some(nsp);
            if same {
                report.unchanged += self.groups.get(ns).map_or(0, HashMap::len);
                continue;
            }
            let mut want = HashMap::with_capacity(nsp.ports.len() + nsp.procs.len());
            namespace_jobs(ns, nsp, &mut want);
            self.sync_group(ns.clone(), want, &mut report);
        }
        self.groups.retain(|_, jobs| !jobs.is_empty());
        self.count();
        report
    }

    /// Makes one group's jobs `want`.
    fn sync_group(
        &mut self,
        ns: String,
        mut want: HashMap<JobKey, JobSpec>,
        report: &mut ReconcileReport,
    ) {
        let group = self.groups.entry(ns).or_default();
        group.retain(|key, job| match want.remove(key) {
            None => {
                stop(key, job);
                report.stopped += 1;
                false
            }
            Some(spec) => {
                if **job.spec.borrow() == spec {
                    report.unchanged += 1;
                } else {
                    job.spec.send_replace(Arc::new(spec));
                    debug!(job = %key, "Job updated.");
                    report.updated += 1;
                }
                true
            }
        });
        let started: Vec<(JobKey, RunningJob)> = want
            .into_iter()
            .map(|(key, spec)| {
                let job = self.start(&key, spec);
                (key, job)
            })
            .collect();
        report.started += started.len();
        if let Some(ns) = started.first().map(|(k, _)| k.ns.clone()) {
            self.groups.entry(ns).or_default().extend(started);
        }
    }

    fn start(&self, key: &JobKey, spec: JobSpec) -> RunningJob {
        let phase = match spec.work {
            Work::System { .. } => Phase::Shared(self.system_clock),
            _ => Phase::Random,
        };
        let (tx, rx) = watch::channel(Arc::new(spec));
        let cancel = self.root.child_token();
        debug!(job = %key, "Job started.");
        self.tracker.spawn(job_loop(
            key.clone(),
            phase,
            rx,
            Arc::clone(&self.runner),
            Arc::clone(&self.stats),
            cancel.clone(),
        ));
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        RunningJob { spec: tx, cancel }
    }

    fn count(&self) {
        let mut c = JobCounts::default();
        for key in self.groups.values().flat_map(HashMap::keys) {
            c.total += 1;
            match key.kind {
                JobKind::System => c.system += 1,
                JobKind::Port => c.ports += 1,
                JobKind::Proc => c.procs += 1,
                JobKind::Plugin => c.plugins += 1,
                JobKind::Builtin => c.builtins += 1,
            }
        }
        if let Ok(mut counts) = self.stats.counts.lock() {
            *counts = c;
        }
    }

    /// Number of running jobs.
    pub fn len(&self) -> usize {
        self.groups.values().map(HashMap::len).sum()
    }

    /// Whether no job runs.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Stops every job and waits for them, at most `deadline`; false if some did not stop.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        self.root.cancel();
        self.groups.clear();
        self.count();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

fn stop(key: &JobKey, job: &RunningJob) {
    job.cancel.cancel();
    debug!(job = %key, "Job stopped.");
}

/// A clock jobs can share: ticks at `epoch + phase + k * interval` (phase taken modulo the
/// interval), so jobs of the same interval tick together and those of a multiple interval tick
/// on some of the same instants. The agent's ([`AgentState::clock`]) serves the system families
/// and the heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct SharedClock {
    epoch: Instant,
    phase: Duration,
}

impl SharedClock {
    /// A clock with a random phase (up to a day), so hosts started together do not fire together.
    pub fn random() -> Self {
        SharedClock {
            epoch: Instant::now(),
            phase: Duration::from_millis(rand::random_range(0..86_400_000)),
        }
    }

    /// The first tick at or after `t` of a job with this `interval`.
    pub fn tick_at_or_after(&self, interval: Duration, t: Instant) -> Instant {
        let every = interval.as_millis().max(1);
        let phase =
            Duration::from_millis(u64::try_from(self.phase.as_millis() % every).unwrap_or(0));
        let first = self.epoch + phase;
        if first >= t {
            return first;
        }
        on_phase(first, interval.max(Duration::from_millis(1)), t)
    }
}

/// When a job's ticks fall.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// At a random point of the first interval, then every interval from there.
    Random,
    /// On a clock shared with other jobs.
    Shared(SharedClock),
}

impl Phase {
    /// The first tick of a job that starts now.
    fn first(self, interval: Duration) -> Instant {
        match self {
            Phase::Random => first_tick(interval),
            Phase::Shared(clock) => clock.tick_at_or_after(interval, Instant::now()),
        }
    }

    /// The next tick once the interval became `interval`, the last tick having been `last`: at
    /// least one new interval after it, so the change causes no extra run.
    fn after_change(self, last: Instant, interval: Duration) -> Instant {
        let now = Instant::now();
        match self {
            Phase::Random => on_phase(last, interval, now),
            Phase::Shared(clock) => clock.tick_at_or_after(interval, (last + interval).max(now)),
        }
    }
}

/// A random point within the first interval, so hosts started together do not fire together.
fn first_tick(interval: Duration) -> Instant {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Instant::now() + Duration::from_millis(rand::random_range(0..ms))
}

/// The first tick after `now` (or at it) on the clock `last + k * interval`, k >= 1.
fn on_phase(last: Instant, interval: Duration, now: Instant) -> Instant {
    let next = last + interval;
    if next >= now {
        return next;
    }
    let behind = (now - next).as_nanos().div_ceil(interval.as_nanos().max(1));
    next + interval * u32::try_from(behind).unwrap_or(u32::MAX)
}

/// Resolves when the run in flight finishes; never while there is none.
async fn finished(run: &mut Option<BoxFuture<'static, ()>>) {
    match run {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn job_loop<R: Runner>(
    key: JobKey,
    phase: Phase,
    mut spec_rx: watch::Receiver<Arc<JobSpec>>,
    runner: Arc<R>,
    stats: Arc<SchedulerStats>,
    cancel: CancellationToken,
) {
    let mut spec = Arc::clone(&spec_rx.borrow_and_update());
    let mut next = phase.first(spec.interval);
    let mut last_tick: Option<Instant> = None;
    let mut run: Option<BoxFuture<'static, ()>> = None;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            changed = spec_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let new = Arc::clone(&spec_rx.borrow_and_update());
                if new.interval != spec.interval {
                    // Keep the phase: the next tick is one new interval after the last one.
                    next = match last_tick {
                        Some(t) => phase.after_change(t, new.interval),
                        None => phase.first(new.interval),
                    };
                }
                spec = new;
            }
            () = finished(&mut run) => run = None,
            () = tokio::time::sleep_until(next) => {
                last_tick = Some(next);
                if run.is_some() {
                    let skipped = stats.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                    if skipped.is_power_of_two() {
                        warn!(job = %key, skipped, "Job still running at its next tick; tick skipped.");
                    }
                } else {
                    run = Some(runner.run(&key, &spec));
                }
                // After a stall of whole intervals, resume on the phase rather than in a burst.
                next = on_phase(next, spec.interval, Instant::now());
            }
        }
    }
}

/// Reconciles every plan put in force until `shutdown`, then stops the jobs.
pub async fn run<R: Runner>(state: AgentState, runner: Arc<R>, shutdown: CancellationToken) {
    let stats = Arc::clone(state.jobs());
    let mut plans = state.subscribe_plan();
    let mut scheduler =
        Scheduler::new(runner, Arc::clone(&stats), &shutdown).on_clock(state.clock());
    loop {
        let plan = Arc::clone(&plans.borrow_and_update());
        let report = scheduler.reconcile(&plan);
        if report.started + report.stopped + report.updated > 0 {
            info!(
                started = report.started,
                stopped = report.stopped,
                updated = report.updated,
                unchanged = report.unchanged,
                "Jobs reconciled."
            );
        }
        stats
            .reconciled
            .send_replace(Some(Reconciled { plan, report }));
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = plans.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    if !scheduler.shutdown(STOP_DEADLINE).await {
        warn!("Some jobs did not stop in time.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NamespacePlan;
    use std::sync::atomic::AtomicUsize;

    /// Records every run; each run takes `busy` (virtual) time.
    #[derive(Default)]
    struct Recorder {
        runs: Mutex<Vec<(JobKey, Instant, Duration)>>,
        busy: Duration,
        running: Mutex<HashMap<JobKey, usize>>,
        max_running: AtomicUsize,
    }

    impl Runner for Arc<Recorder> {
        fn run(&self, key: &JobKey, spec: &JobSpec) -> BoxFuture<'static, ()> {
            let me = Arc::clone(self);
            let key = key.clone();
            let entry = (key.clone(), Instant::now(), spec.interval);
            Box::pin(async move {
                me.runs.lock().expect("runs").push(entry);
                let now = {
                    let mut running = me.running.lock().expect("running");
                    let n = running.entry(key.clone()).or_default();
                    *n += 1;
                    *n
                };
                me.max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(me.busy).await;
                *me.running.lock().expect("running").entry(key).or_default() -= 1;
            })
        }
    }

    impl Recorder {
        fn times(&self, id: &str) -> Vec<Instant> {
            self.runs
                .lock()
                .expect("runs")
                .iter()
                .filter(|(k, _, _)| k.id == id)
                .map(|(_, t, _)| *t)
                .collect()
        }
    }

    fn port(name: &str, port: u16, interval: u64) -> PortItem {
        PortItem {
            name: name.into(),
            port,
            connect_timeout: 3,
            host: None,
            interval,
        }
    }

    fn plan(items: &[(&str, PortItem)]) -> Arc<Plan> {
        let mut plan = Plan::default();
        for (ns, item) in items {
            plan.namespaces
                .entry((*ns).to_owned())
                .or_insert_with(NamespacePlan::default)
                .ports
                .push(item.clone());
        }
        Arc::new(plan)
    }

    fn scheduler(busy: Duration) -> (Scheduler<Arc<Recorder>>, Arc<Recorder>, Arc<SchedulerStats>) {
        let rec = Arc::new(Recorder {
            busy,
            ..Recorder::default()
        });
        let stats = Arc::new(SchedulerStats::default());
        let s = Scheduler::new(
            Arc::new(Arc::clone(&rec)),
            Arc::clone(&stats),
            &CancellationToken::new(),
        );
        (s, rec, stats)
    }

    fn gaps(times: &[Instant]) -> Vec<u64> {
        times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_job_keeps_its_clock_across_an_unrelated_change() {
        let (mut s, rec, stats) = scheduler(Duration::ZERO);
        let first = s.reconcile(&plan(&[("a", port("web", 80, 10))]));
        assert_eq!(
            first,
            ReconcileReport {
                started: 1 + Family::ALL.len(),
                ..ReconcileReport::default()
            }
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        let before = rec.times("web:80@127.0.0.1");
        assert!(before.len() >= 3, "{before:?}");

        let second = s.reconcile(&plan(&[
            ("a", port("web", 80, 10)),
            ("b", port("db", 5432, 7)),
        ]));
        assert_eq!(
            second,
            ReconcileReport {
                started: 1,
                stopped: 0,
                // The system families now also serve "b": same jobs, new namespace list.
                updated: Family::ALL.len(),
                unchanged: 1,
            }
        );
        tokio::time::sleep(Duration::from_secs(40)).await;

        let web = rec.times("web:80@127.0.0.1");
        assert!(web.len() >= before.len() + 4, "{web:?}");
        assert_eq!(
            &web[..before.len()],
            &before[..],
            "history is the same job's"
        );
        assert!(
            gaps(&web).iter().all(|g| *g == 10_000),
            "one steady 10 s clock across the change: {:?}",
            gaps(&web)
        );
        let cpu = rec.times("CPU");
        assert!(
            gaps(&cpu).iter().all(|g| *g == 10_000),
            "the CPU family job was updated in place, not restarted: {:?}",
            gaps(&cpu)
        );
        let db = rec.times("db:5432@127.0.0.1");
        assert!(gaps(&db).iter().all(|g| *g == 7_000), "{:?}", gaps(&db));
        assert_eq!(stats.counts().started_total, (Family::ALL.len() + 2) as u64);
        assert_eq!(stats.counts().ports, 2);
        assert!(s.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_started_together_first_run_at_random_points_of_their_interval() {
        let (mut s, rec, _) = scheduler(Duration::ZERO);
        let items: Vec<(&str, PortItem)> =
            (0..50).map(|i| ("a", port("p", 1000 + i, 10))).collect();
        let start = Instant::now();
        s.reconcile(&plan(&items));
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        let mut offsets: Vec<u128> = (0..50)
            .map(|i| {
                let times = rec.times(&format!("p:{}@127.0.0.1", 1000 + i));
                assert_eq!(
                    times.len(),
                    1,
                    "one run within the first interval: {times:?}"
                );
                (times[0] - start).as_millis()
            })
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        // 50 uniform draws from 10,000 ms: all in one half, or fewer than 40 distinct, would
        // happen less than once in 10^14 runs; a fixed or missing offset makes it every time.
        assert!(offsets.len() >= 40, "spread: {offsets:?}");
        assert!(
            offsets[0] < 5_000 && offsets[offsets.len() - 1] >= 5_000,
            "{offsets:?}"
        );
        // After the random first tick, each keeps its own phase.
        tokio::time::sleep(Duration::from_secs(20)).await;
        for i in 0..50 {
            let times = rec.times(&format!("p:{}@127.0.0.1", 1000 + i));
            assert!(
                gaps(&times).iter().all(|g| *g == 10_000),
                "{:?}",
                gaps(&times)
            );
        }
        assert!(s.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn system_families_tick_together_on_a_random_phase() {
        let mut phases = Vec::new();
        for _ in 0..5 {
            let (mut s, rec, _) = scheduler(Duration::ZERO);
            let start = Instant::now();
            s.reconcile(&plan(&[("a", port("web", 80, 10))]));
            tokio::time::sleep(Duration::from_secs(301)).await;
            let first: Vec<(Family, Instant)> = Family::ALL
                .iter()
                .map(|f| (*f, rec.times(f.name())[0]))
                .collect();
            // Each family at the same instant as CPU, or a whole number of its interval later
            // when its interval is longer: one timer, and one trip of the runner, per round.
            let cpu = first[0].1;
            for (f, t) in &first {
                let after = (*t - cpu).as_millis() as u64;
                assert_eq!(after % 10_000, 0, "{f} at {after} ms after CPU");
                let every = f.default_interval().as_millis() as u64;
                assert!(
                    gaps(&rec.times(f.name())).iter().all(|g| *g == every),
                    "{f}: {:?}",
                    gaps(&rec.times(f.name()))
                );
            }
            phases.push((cpu - start).as_millis());
            assert!(s.shutdown(Duration::from_secs(1)).await);
        }
        phases.sort_unstable();
        phases.dedup();
        // Five draws from 10,000 ms: the same one twice happens about once in a thousand runs.
        assert!(phases.len() >= 4, "agents differ in phase: {phases:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_system_family_whose_interval_changes_stays_on_the_shared_clock() {
        let (mut s, rec, _) = scheduler(Duration::ZERO);
        s.reconcile(&plan(&[("a", port("web", 80, 10))]));
        tokio::time::sleep(Duration::from_secs(11)).await;
        let cpu = rec.times("CPU")[0];
        let mut p = (*plan(&[("a", port("web", 80, 10))])).clone();
        if let Some(ns) = p.namespaces.get_mut("a") {
            ns.intervals.insert("MEM".into(), 20);
        }
        let changed = tokio::time::Instant::now();
        s.reconcile(&Arc::new(p));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let mem = rec.times("MEM");
        assert!(mem.len() >= 3, "{mem:?}");
        for t in &mem {
            assert_eq!(
                (*t - cpu).as_millis() as u64 % 10_000,
                0,
                "MEM ticks on CPU's clock"
            );
        }
        // From the change on, every 20 s on the clock's 20 s ticks: the first of them is 20 or
        // 30 s after the last 10 s tick, depending on where the clock's phase puts them.
        let after: Vec<_> = mem.iter().copied().filter(|t| *t > changed).collect();
        let last_before = mem.iter().copied().rfind(|t| *t <= changed);
        assert!(after.len() >= 2, "{mem:?}");
        assert!(
            gaps(&after).iter().all(|g| *g == 20_000),
            "{:?}",
            gaps(&mem)
        );
        if let Some(last) = last_before {
            let first_gap = (after[0] - last).as_millis();
            assert!(
                first_gap == 20_000 || first_gap == 30_000,
                "{:?}",
                gaps(&mem)
            );
        }
        assert!(s.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_interval_takes_effect_from_the_last_tick() {
        let (mut s, rec, _) = scheduler(Duration::ZERO);
        s.reconcile(&plan(&[("a", port("web", 80, 10))]));
        tokio::time::sleep(Duration::from_secs(25)).await;
        let before = rec.times("web:80@127.0.0.1");
        let last = *before.last().expect("ran");
        let report = s.reconcile(&plan(&[("a", port("web", 80, 4))]));
        assert_eq!(report.updated, 1);
        assert_eq!(report.started + report.stopped, 0);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after: Vec<Instant> = rec
            .times("web:80@127.0.0.1")
            .into_iter()
            .filter(|t| *t > last)
            .collect();
        assert!(after.len() >= 4, "{after:?}");
        let mut from_last = vec![last];
        from_last.extend(after);
        let g = gaps(&from_last);
        assert!(
            g[0] / 4_000 * 4_000 == g[0] && g[1..].iter().all(|g| *g == 4_000),
            "the new 4 s clock continues the old phase: {g:?}"
        );
        assert!(s.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_job_skips_ticks_and_never_overlaps() {
        let (mut s, rec, stats) = scheduler(Duration::from_secs(25));
        s.reconcile(&plan(&[("a", port("slow", 1, 10))]));
        tokio::time::sleep(Duration::from_secs(100)).await;
        let slow = rec.times("slow:1@127.0.0.1");
        assert!(slow.len() >= 3, "{slow:?}");
        assert!(
            gaps(&slow).iter().all(|g| *g == 30_000),
            "runs at every third tick: {:?}",
            gaps(&slow)
        );
        assert_eq!(
            rec.max_running.load(Ordering::SeqCst),
            1,
            "no job overlaps itself"
        );
        // Two skipped ticks per completed run of the port job (system jobs overrun too).
        assert!(stats.counts().skipped_ticks >= 2 * (slow.len() as u64 - 1));
        assert!(s.shutdown(Duration::from_secs(1)).await);
        assert_eq!(stats.counts().total, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_jobs_stop_and_shutdown_stops_the_rest() {
        let (mut s, rec, stats) = scheduler(Duration::ZERO);
        s.reconcile(&plan(&[
            ("a", port("web", 80, 5)),
            ("a", port("ssh", 22, 5)),
        ]));
        tokio::time::sleep(Duration::from_secs(12)).await;
        let report = s.reconcile(&plan(&[("a", port("web", 80, 5))]));
        assert_eq!(report.stopped, 1);
        let ssh_runs = rec.times("ssh:22@127.0.0.1").len();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(rec.times("ssh:22@127.0.0.1").len(), ssh_runs, "stopped");
        assert_eq!(stats.counts().ports, 1);

        let report = s.reconcile(&Arc::new(Plan::default()));
        assert_eq!(
            report.stopped,
            1 + Family::ALL.len(),
            "no namespace, no system job"
        );
        assert!(s.is_empty());
        assert!(s.shutdown(Duration::from_secs(1)).await);
    }

    #[test]
    fn system_families_take_the_smallest_interval_any_namespace_wants() {
        let mut p = Plan::clone(&plan(&[("a", port("web", 80, 5))]));
        p.namespaces.insert(
            "b".into(),
            NamespacePlan {
                intervals: [
                    ("CPU".to_owned(), 60),
                    ("FS".to_owned(), 120),
                    ("SOCKET".to_owned(), 10),
                ]
                .into(),
                ..NamespacePlan::default()
            },
        );
        let jobs = desired(&p);
        let interval = |family: &str| {
            jobs[&JobKey {
                kind: JobKind::System,
                ns: String::new(),
                id: family.into(),
            }]
                .interval
                .as_secs()
        };
        assert_eq!(interval("CPU"), 10, "a wants the default 10");
        assert_eq!(interval("FS"), 120, "b's override is below the default 300");
        assert_eq!(
            interval("SOCKET"),
            10,
            "b's override is below the default 60"
        );
        assert_eq!(interval("HWMON"), 60, "the default");
        let Work::System { namespaces, .. } = &jobs[&JobKey {
            kind: JobKind::System,
            ns: String::new(),
            id: "MEM".into(),
        }]
            .work
        else {
            panic!("MEM is a system job");
        };
        assert_eq!(&namespaces[..], ["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn an_interval_of_zero_turns_a_family_off_for_that_namespace() {
        let mut p = Plan::clone(&plan(&[("a", port("web", 80, 5))]));
        p.namespaces.insert(
            "b".into(),
            NamespacePlan {
                intervals: [("CPU".to_owned(), 0)].into(),
                ..NamespacePlan::default()
            },
        );
        let system = |p: &Plan, family: &str| {
            desired(p)
                .remove(&JobKey {
                    kind: JobKind::System,
                    ns: String::new(),
                    id: family.into(),
                })
                .map(|spec| match spec.work {
                    Work::System { namespaces, .. } => {
                        (spec.interval.as_secs(), namespaces.to_vec())
                    }
                    other => panic!("not a system job: {other:?}"),
                })
        };
        assert_eq!(system(&p, "CPU"), Some((10, vec!["a".to_owned()])));
        assert_eq!(
            system(&p, "MEM"),
            Some((10, vec!["a".to_owned(), "b".to_owned()]))
        );
        if let Some(a) = p.namespaces.get_mut("a") {
            a.intervals.insert("CPU".into(), 0);
        }
        assert_eq!(system(&p, "CPU"), None, "no namespace wants CPU: no job");
    }
}
